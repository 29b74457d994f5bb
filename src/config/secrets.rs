//! Secrets in the config: URLs with passwords and bearer tokens. None of
//! them ever goes into a log line or an error.

use super::{invalid, ConfigError};

/// A URL fit for a log line or an error: no password, even when the URL
/// does not parse (`user:pass@` is cut out by hand then).
pub fn redact(url: &str) -> String {
    if let Ok(mut parsed) = url::Url::parse(url) {
        if parsed.password().is_some() && parsed.set_password(Some("****")).is_ok() {
            return parsed.to_string();
        }
        if parsed.password().is_none() {
            return url.to_owned();
        }
    }
    let authority_start = url.find("://").map_or(0, |at| at + 3);
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if rest[..at].contains(':') => {
            let user_info = &rest[..at];
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{}{user}:****{}", &url[..authority_start], &rest[at..])
        }
        _ => url.to_owned(),
    }
}

/// Figment trims environment values, so `TIDINGS_ADMIN__TOKEN="   "` would
/// arrive as empty and quietly switch the API off: look at the raw values.
pub(super) fn whitespace_tokens_in_environment() -> Result<(), ConfigError> {
    for (variable, key) in [
        ("TIDINGS_ADMIN__TOKEN", "admin.token"),
        ("TIDINGS_METRICS__TOKEN", "metrics.token"),
    ] {
        let value = std::env::var_os(variable).unwrap_or_default();
        let text = value.to_string_lossy();
        if !text.is_empty() && text.trim().is_empty() {
            return Err(invalid(
                key,
                format!("({variable}) is only whitespace; set a secret of at least 16 characters, or unset it"),
            ));
        }
    }
    Ok(())
}

/// A bearer token: empty means none; a value of spaces alone is a mistake
/// (an unset variable in a template, say), not a wish to switch it off.
/// The value itself never goes into the error.
pub(super) fn secret_token(
    key: &'static str,
    text: &str,
    empty_means: &str,
) -> Result<Option<String>, ConfigError> {
    if text.is_empty() {
        return Ok(None);
    }
    let token = text.trim();
    if token.is_empty() {
        return Err(invalid(
            key,
            format!("is only whitespace; set a secret of at least 16 characters, or leave it empty for {empty_means}"),
        ));
    }
    if token.chars().count() < 16 || token.chars().any(char::is_whitespace) {
        return Err(invalid(
            key,
            format!("must be at least 16 characters without spaces (or empty for {empty_means})"),
        ));
    }
    Ok(Some(token.to_owned()))
}
