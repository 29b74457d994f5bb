//! Sizes in the config (`database.min_free_space`): a whole number of
//! bytes with an optional unit. As in PostgreSQL's config, kB, MB, GB and
//! TB are powers of 1024; KiB, MiB, GiB and TiB say the same explicitly.

use super::{invalid, ConfigError};

const UNITS: [(&str, u64); 9] = [
    ("b", 1),
    ("kb", 1 << 10),
    ("kib", 1 << 10),
    ("mb", 1 << 20),
    ("mib", 1 << 20),
    ("gb", 1 << 30),
    ("gib", 1 << 30),
    ("tb", 1 << 40),
    ("tib", 1 << 40),
];

/// `256MB`, `1 GB`, `4096`, `0`: the size in bytes.
pub fn parse_size(key: &'static str, text: &str) -> Result<u64, ConfigError> {
    let trimmed = text.trim();
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits);
    let unit = unit.trim().to_ascii_lowercase();
    let multiplier = match unit.as_str() {
        "" => Some(1),
        unit => UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, bytes)| *bytes),
    };
    let bytes = number
        .parse::<u64>()
        .ok()
        .zip(multiplier)
        .and_then(|(number, multiplier)| number.checked_mul(multiplier));
    bytes.ok_or_else(|| {
        invalid(
            key,
            format!("`{text}` is not a size like 256MB, 1GB or 0 (whole numbers; kB, MB, GB, TB)"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_every_unit() {
        for (text, bytes) in [
            ("0", 0),
            ("4096", 4096),
            ("512B", 512),
            ("64kB", 64 << 10),
            ("256MB", 256 << 20),
            ("256 MiB", 256 << 20),
            (" 1gb ", 1 << 30),
            ("2TB", 2 << 40),
        ] {
            assert_eq!(parse_size("database.min_free_space", text).unwrap(), bytes);
        }
    }

    #[test]
    fn a_bad_size_names_the_key() {
        for text in ["", "MB", "1.5GB", "-1MB", "12 parsecs", "99999999999999TB"] {
            let error = parse_size("database.min_free_space", text)
                .expect_err(text)
                .to_string();
            assert!(error.contains("database.min_free_space"), "{error}");
        }
    }
}
