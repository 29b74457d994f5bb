//! `[smtp.dkim]`: all three keys or none. The private key is read and
//! parsed here, at start, so a key that cannot sign stops the daemon
//! before the first email instead of failing every one.

use std::path::Path;

use serde::Deserialize;

use super::{invalid, lenient_string, ConfigError};
pub use crate::domain::dkim::DkimSigner;
use crate::domain::dkim::{parse_selector, parse_signing_domain, DkimKey};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDkim {
    #[serde(deserialize_with = "lenient_string")]
    domain: String,
    #[serde(deserialize_with = "lenient_string")]
    selector: String,
    #[serde(deserialize_with = "lenient_string")]
    private_key_file: String,
}

const KEYS: [&str; 3] = [
    "smtp.dkim.domain",
    "smtp.dkim.selector",
    "smtp.dkim.private_key_file",
];

impl RawDkim {
    pub(super) fn parse(self) -> Result<Option<DkimSigner>, ConfigError> {
        let values = [
            self.domain.trim(),
            self.selector.trim(),
            self.private_key_file.trim(),
        ];
        if values.iter().all(|value| value.is_empty()) {
            return Ok(None);
        }
        if let Some(missing) = values.iter().position(|value| value.is_empty()) {
            let set: Vec<&str> = KEYS
                .iter()
                .zip(values)
                .filter(|(_, value)| !value.is_empty())
                .map(|(key, _)| *key)
                .collect();
            return Err(invalid(
                KEYS[missing],
                format!(
                    "is empty while {} is set; DKIM signing needs all three of {} (or none)",
                    set.join(" and "),
                    KEYS.join(", ")
                ),
            ));
        }
        let [domain, selector, path] = values;
        let domain = parse_signing_domain(domain).map_err(|reason| invalid(KEYS[0], reason))?;
        let selector = parse_selector(selector).map_err(|reason| invalid(KEYS[1], reason))?;
        let key = read_key(Path::new(path))?;
        Ok(Some(DkimSigner::new(domain, selector, key)))
    }
}

/// The error names the file and the reason, never what the file holds.
fn read_key(path: &Path) -> Result<DkimKey, ConfigError> {
    let pem = std::fs::read(path)
        .map_err(|error| invalid(KEYS[2], format!("cannot read {}: {error}", path.display())))?;
    DkimKey::from_pem(&pem)
        .map_err(|reason| invalid(KEYS[2], format!("{} {reason}", path.display())))
}
