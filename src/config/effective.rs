//! The configuration as the daemon runs with it, for the admin's settings
//! page: every key with its value, and every secret redacted. A password
//! in a URL shows as `****`; a token only says whether it is set.

use super::{redact, Settings};

/// One key and the value in effect, fit to show.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShownKey {
    pub key: &'static str,
    pub value: String,
}

/// A `[section]` of the config file and its keys.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShownSection {
    pub name: &'static str,
    pub keys: Vec<ShownKey>,
}

fn token(value: &Option<String>) -> String {
    match value {
        Some(_) => "set (hidden)".to_owned(),
        None => "not set".to_owned(),
    }
}

fn duration(value: std::time::Duration) -> String {
    humantime::format_duration(value).to_string()
}

fn section(name: &'static str, keys: Vec<(&'static str, String)>) -> ShownSection {
    ShownSection {
        name,
        keys: keys
            .into_iter()
            .map(|(key, value)| ShownKey { key, value })
            .collect(),
    }
}

/// Every key of `config/default.toml`, in its order, as in effect.
pub fn effective(settings: &Settings) -> Vec<ShownSection> {
    let s = settings;
    let proxies = s.http.trusted_proxies.iter().map(ToString::to_string);
    let dkim = s.smtp.dkim.as_ref();
    vec![
        section(
            "newsletter",
            vec![
                ("name", s.newsletter.name.clone()),
                ("from", s.newsletter.from.to_string()),
                ("base_url", s.newsletter.base_url.clone()),
                ("postal_address", s.newsletter.postal_address.clone()),
            ],
        ),
        section(
            "http",
            vec![
                ("bind", s.http.bind.to_string()),
                (
                    "subscribe_per_ip_per_hour",
                    s.http.subscribe_per_ip_per_hour.to_string(),
                ),
                (
                    "failed_auth_per_ip_per_minute",
                    s.http.failed_auth_per_ip_per_minute.to_string(),
                ),
                ("confirmation_window", duration(s.http.confirmation_window)),
                ("trusted_proxies", proxies.collect::<Vec<_>>().join(", ")),
                ("header_read_timeout", duration(s.http.header_read_timeout)),
                ("idle_timeout", duration(s.http.idle_timeout)),
                ("body_read_timeout", duration(s.http.body_read_timeout)),
                ("max_connections", s.http.max_connections.to_string()),
                (
                    "max_body_bytes_in_flight",
                    s.http.max_body_bytes_in_flight.to_string(),
                ),
            ],
        ),
        section(
            "database",
            vec![
                ("url", redact(&s.database.url)),
                ("max_connections", s.database.max_connections.to_string()),
                ("min_free_space", s.database.min_free_space.to_string()),
            ],
        ),
        section(
            "smtp",
            vec![
                (
                    "url",
                    s.smtp
                        .url
                        .as_deref()
                        .map_or_else(|| "not set: emails go to the outbox".into(), redact),
                ),
                ("outbox_dir", s.smtp.outbox_dir.display().to_string()),
                ("concurrency", s.smtp.concurrency.to_string()),
                ("rate_per_second", s.smtp.rate_per_second.to_string()),
                ("max_attempts", s.smtp.max_attempts.to_string()),
                ("retry_base", duration(s.smtp.retry_base)),
                ("lease", duration(s.smtp.lease)),
                ("batch_size", s.smtp.batch_size.to_string()),
                ("timeout", duration(s.smtp.timeout)),
                (
                    "helo_name",
                    s.smtp
                        .helo_name
                        .clone()
                        .unwrap_or_else(|| "automatic".into()),
                ),
            ],
        ),
        section(
            "smtp.dkim",
            vec![
                (
                    "domain",
                    dkim.map_or("not set: emails go out unsigned".into(), |dkim| {
                        dkim.domain().to_owned()
                    }),
                ),
                (
                    "selector",
                    dkim.map_or(String::new(), |dkim| dkim.selector().to_owned()),
                ),
                (
                    "private_key_file",
                    dkim.map_or(String::new(), |_| "set (hidden)".to_owned()),
                ),
            ],
        ),
        section(
            "schedule",
            vec![
                ("cron", s.schedule.cron.to_string()),
                ("timezone", s.schedule.timezone.name().to_owned()),
                ("mode", s.schedule.mode.as_str().to_owned()),
                ("catch_up", duration(s.schedule.catch_up)),
            ],
        ),
        section("admin", vec![("token", token(&s.admin.token))]),
        section("metrics", vec![("token", token(&s.metrics.token))]),
        section(
            "templates",
            vec![("dir", s.templates.dir.display().to_string())],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_secret_is_shown() {
        let mut settings = crate::config::defaults();
        settings.database.url = "postgres://tidings:db-secret-1@db:5432/news".into();
        settings.smtp.url = Some("smtp://mailer:smtp-secret-2@mail.example.org:587".into());
        settings.admin.token = Some("admin-secret-3-abcdefgh".into());
        settings.metrics.token = Some("metrics-secret-4-abcdefgh".into());
        let shown = serde_json::to_string(&effective(&settings)).unwrap();
        for secret in [
            "db-secret-1",
            "smtp-secret-2",
            "admin-secret-3",
            "metrics-secret-4",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("postgres://tidings:****@db:5432/news"),
            "{shown}"
        );
        assert!(shown.contains("set (hidden)"));
    }

    #[test]
    fn every_key_of_the_reference_file_is_shown() {
        let shown = effective(&crate::config::defaults());
        let reference = include_str!("../../config/default.toml");
        let mut current = "";
        for line in reference.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                current = name;
            } else if let Some((key, _)) = line.split_once(" = ").filter(|_| !line.starts_with('#'))
            {
                let found = shown
                    .iter()
                    .find(|section| section.name == current)
                    .is_some_and(|section| section.keys.iter().any(|k| k.key == key));
                assert!(found, "{current}.{key} is not on the settings page");
            }
        }
    }
}
