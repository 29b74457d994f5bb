//! The config file, read once and checked for TOML syntax before figment
//! sees it. The TOML parser's own error quotes the offending line, and that
//! line may be `url = "postgres://user:password@…` or an `admin.token`: our
//! error names the file, line, column and key, and never shows the text.

use std::path::{Path, PathBuf};

use figment::value::{Dict, Map};
use figment::{Metadata, Profile, Provider};

use super::ConfigError;

/// The file's text, once it is known to be TOML.
pub(super) fn read(path: &Path) -> Result<CheckedToml, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigError::Load(match error.kind() {
            std::io::ErrorKind::NotFound => {
                format!("config file {} does not exist", path.display())
            }
            _ => format!("cannot read config file {}: {error}", path.display()),
        })
    })?;
    if let Err(error) = text.parse::<toml::Table>() {
        return Err(ConfigError::Load(syntax_error(path, &text, &error)));
    }
    Ok(CheckedToml {
        path: path.to_owned(),
        text,
    })
}

/// Where the file is broken and what the parser expected, without any of
/// the file's text but the key's name.
fn syntax_error(path: &Path, text: &str, error: &toml::de::Error) -> String {
    let what = error.message().trim().replace('\n', "; ");
    let Some(span) = error.span() else {
        return format!("{}: not valid TOML: {what}", path.display());
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let column = before[line_start..].chars().count() + 1;
    let key = key_on_line(text, line)
        .map(|key| format!(" (key `{key}`)"))
        .unwrap_or_default();
    format!(
        "{}: not valid TOML at line {line}, column {column}{key}: {what} \
         (the line is not shown, as it may hold a password or token)",
        path.display()
    )
}

/// `section.key` when line `number` (1-based) starts `key =` under a
/// `[section]` header; `None` when the line is anything else.
fn key_on_line(text: &str, number: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let (name, _) = lines.get(number - 1)?.split_once('=')?;
    let name = bare_key(name)?;
    let table = lines[..number - 1].iter().rev().find_map(|line| {
        let header = line.trim().strip_prefix('[')?.split(']').next()?;
        bare_key(header.trim_start_matches('['))
    });
    Some(match table {
        Some(table) => format!("{table}.{name}"),
        None => name.to_owned(),
    })
}

/// A bare (possibly dotted) key, or `None` for anything that might be data.
fn bare_key(text: &str) -> Option<&str> {
    let text = text.trim();
    let bare = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    (!text.is_empty() && text.chars().all(bare)).then_some(text)
}

/// Figment's TOML provider over text already checked, keeping the file's
/// name for the errors that later name a key.
pub(super) struct CheckedToml {
    path: PathBuf,
    text: String,
}

impl Provider for CheckedToml {
    fn metadata(&self) -> Metadata {
        Metadata::from("TOML file", self.path.as_path())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        use figment::providers::{Format, Toml};
        // Checked already; should it fail anyway, say so without its text.
        Toml::string(&self.text)
            .data()
            .map_err(|_| figment::Error::from(format!("{}: not valid TOML", self.path.display())))
    }
}
