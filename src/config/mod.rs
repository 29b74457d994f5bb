//! Configuration: compiled-in defaults, an optional TOML file, then
//! `TIDINGS_<SECTION>__<KEY>` environment variables. Raw values are parsed
//! into typed settings once, so a bad value stops the daemon at start with
//! an error that names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono_tz::Tz;
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use ipnet::IpNet;
use lettre::message::Mailbox;
use serde::{Deserialize, Deserializer};

pub use crate::domain::issue::ScheduleMode;
pub use dkim::DkimSigner;
pub use secrets::redact;
use secrets::{secret_token, whitespace_tokens_in_environment};

mod dkim;
pub mod effective;
mod file;
mod secrets;
mod size;

/// The defaults, also shipped as `config/default.toml` for people to read.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Load(String),
    #[error("config key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub newsletter: NewsletterSettings,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub smtp: SmtpSettings,
    pub schedule: ScheduleSettings,
    pub admin: AdminSettings,
    pub templates: TemplateSettings,
    pub metrics: MetricsSettings,
}

#[derive(Debug, Clone)]
pub struct NewsletterSettings {
    pub name: String,
    pub from: Mailbox,
    /// Without a trailing slash, so links can be built as `{base_url}/path`.
    pub base_url: String,
    pub postal_address: String,
}

impl NewsletterSettings {
    /// The domain of the From address; Message-IDs and List-Id use it.
    pub fn from_domain(&self) -> &str {
        self.from.email.domain()
    }
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub bind: SocketAddr,
    pub subscribe_per_ip_per_hour: u32,
    pub failed_auth_per_ip_per_minute: u32,
    pub confirmation_window: Duration,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// A client that has not sent a whole request head by then is dropped.
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// A request body that is not all in by then is cut off.
    pub body_read_timeout: Duration,
    /// Open connections at most (lowered to fit the descriptor limit).
    pub max_connections: usize,
    /// Request-body bytes buffered at once, over all requests.
    pub max_body_bytes_in_flight: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: String,
    pub backend: Backend,
    pub max_connections: u32,
    /// Signups stop below this many free bytes on a SQLite file's disk; 0: off.
    pub min_free_space: u64,
}

/// `database.min_free_space` in `config/default.toml`.
pub const DEFAULT_MIN_FREE_SPACE: u64 = 256 << 20;

impl DatabaseSettings {
    /// With the default free-space guard.
    pub fn from_url(url: &str, max_connections: u32) -> Result<Self, ConfigError> {
        let backend = backend_of(url).map_err(|reason| invalid("database.url", reason))?;
        Ok(Self {
            url: url.to_owned(),
            backend,
            max_connections,
            min_free_space: DEFAULT_MIN_FREE_SPACE,
        })
    }
}

pub fn backend_of(url: &str) -> Result<Backend, String> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        // Not shown even redacted: a value that is no URL (`postgres:/u:pw@db`,
        // a bare password) has no `user:pass@` for redact() to find.
        Err(
            "is neither a sqlite: nor a postgres:// URL (the value is not shown, \
             as it may hold a password)"
                .to_owned(),
        )
    }
}

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// `None` writes `.eml` files to `outbox_dir` instead of using SMTP.
    pub url: Option<String>,
    pub outbox_dir: PathBuf,
    pub concurrency: usize,
    pub rate_per_second: u32,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub lease: Duration,
    pub batch_size: u32,
    pub timeout: Duration,
    /// `None`: the host's name if fully qualified, else the From domain.
    pub helo_name: Option<String>,
    /// `None`: emails go out unsigned.
    pub dkim: Option<DkimSigner>,
}

#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    pub cron: cron::Schedule,
    pub timezone: Tz,
    pub mode: ScheduleMode,
    pub catch_up: Duration,
}

#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// `None` means the admin API is switched off.
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// `None` means `/metrics` takes the admin token (or nobody, without one).
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TemplateSettings {
    pub dir: PathBuf,
}

/// Loads defaults, then `file` (if any), then the environment.
pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
    load_layers(file, true)
}

/// The compiled-in defaults alone, without any file or environment.
pub fn defaults() -> Settings {
    load_layers(None, false).expect("the built-in defaults are valid")
}

fn load_layers(file: Option<&Path>, with_environment: bool) -> Result<Settings, ConfigError> {
    let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
    if let Some(file) = file {
        figment = figment.merge(file::read(file)?);
    }
    // Only `SECTION__KEY` variables are config; TIDINGS_CONFIG names the file.
    if with_environment {
        figment = figment.merge(
            Env::prefixed("TIDINGS_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
    }
    if with_environment {
        whitespace_tokens_in_environment()?;
    }
    let raw: RawSettings = figment.extract().map_err(|error| {
        let key = error.path.join(".");
        let message = error.to_string();
        ConfigError::Load(if key.is_empty() || message.contains(&key) {
            message
        } else {
            format!("key `{key}`: {message}")
        })
    })?;
    raw.parse()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    newsletter: RawNewsletter,
    http: RawHttp,
    database: RawDatabase,
    smtp: RawSmtp,
    schedule: RawSchedule,
    admin: RawAdmin,
    templates: RawTemplates,
    metrics: RawMetrics,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNewsletter {
    #[serde(deserialize_with = "lenient_string")]
    name: String,
    #[serde(deserialize_with = "lenient_string")]
    from: String,
    #[serde(deserialize_with = "lenient_string")]
    base_url: String,
    #[serde(deserialize_with = "lenient_string")]
    postal_address: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(deserialize_with = "lenient_string")]
    bind: String,
    subscribe_per_ip_per_hour: u32,
    failed_auth_per_ip_per_minute: u32,
    #[serde(deserialize_with = "lenient_string")]
    confirmation_window: String,
    trusted_proxies: Vec<String>,
    #[serde(deserialize_with = "lenient_string")]
    header_read_timeout: String,
    #[serde(deserialize_with = "lenient_string")]
    idle_timeout: String,
    #[serde(deserialize_with = "lenient_string")]
    body_read_timeout: String,
    max_connections: u32,
    max_body_bytes_in_flight: u64,
    /// The old switch, kept only to say what replaced it.
    #[serde(default)]
    trust_forwarded_for: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    #[serde(deserialize_with = "lenient_string")]
    url: String,
    max_connections: u32,
    #[serde(deserialize_with = "lenient_string")]
    min_free_space: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    #[serde(deserialize_with = "lenient_string")]
    url: String,
    #[serde(deserialize_with = "lenient_string")]
    outbox_dir: String,
    concurrency: u32,
    rate_per_second: u32,
    max_attempts: u32,
    #[serde(deserialize_with = "lenient_string")]
    retry_base: String,
    #[serde(deserialize_with = "lenient_string")]
    lease: String,
    batch_size: u32,
    #[serde(deserialize_with = "lenient_string")]
    timeout: String,
    helo_name: String,
    dkim: dkim::RawDkim,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    #[serde(deserialize_with = "lenient_string")]
    cron: String,
    #[serde(deserialize_with = "lenient_string")]
    timezone: String,
    #[serde(deserialize_with = "lenient_string")]
    mode: String,
    #[serde(deserialize_with = "lenient_string")]
    catch_up: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(deserialize_with = "lenient_string")]
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    #[serde(deserialize_with = "lenient_string")]
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplates {
    #[serde(deserialize_with = "lenient_string")]
    dir: String,
}

/// Environment values arrive typed by guesswork (`TIDINGS_ADMIN__TOKEN=1234`
/// is a number to figment); every string key accepts any scalar.
fn lenient_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Integer(i64),
        Float(f64),
        Bool(bool),
    }
    Ok(match Scalar::deserialize(deserializer)? {
        Scalar::Text(text) => text,
        Scalar::Integer(number) => number.to_string(),
        Scalar::Float(number) => number.to_string(),
        Scalar::Bool(flag) => flag.to_string(),
    })
}

pub fn parse_duration(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|error| {
        invalid(
            key,
            format!("`{text}` is not a duration like 30s, 5m or 6h ({error})"),
        )
    })
}

fn positive(key: &'static str, value: u32) -> Result<u32, ConfigError> {
    if value == 0 {
        Err(invalid(key, "must be at least 1"))
    } else {
        Ok(value)
    }
}

impl RawSettings {
    fn parse(self) -> Result<Settings, ConfigError> {
        let newsletter = self.newsletter.parse()?;
        let http = self.http.parse()?;
        let database = DatabaseSettings {
            min_free_space: size::parse_size(
                "database.min_free_space",
                &self.database.min_free_space,
            )?,
            ..DatabaseSettings::from_url(
                self.database.url.trim(),
                positive("database.max_connections", self.database.max_connections)?,
            )?
        };
        let smtp = self.smtp.parse()?;
        let schedule = self.schedule.parse()?;
        Ok(Settings {
            newsletter,
            http,
            database,
            smtp,
            schedule,
            admin: AdminSettings {
                token: secret_token("admin.token", &self.admin.token, "the admin API")?,
            },
            templates: TemplateSettings {
                dir: PathBuf::from(self.templates.dir),
            },
            metrics: MetricsSettings {
                token: secret_token("metrics.token", &self.metrics.token, "its own token")?,
            },
        })
    }
}

impl RawHttp {
    fn parse(self) -> Result<HttpSettings, ConfigError> {
        if self.trust_forwarded_for.is_some() {
            return Err(invalid(
                "http.trust_forwarded_for",
                "was replaced by http.trusted_proxies, a list of the proxies' CIDRs \
                 (e.g. [\"127.0.0.1/32\"]); remove it and list your reverse proxies there",
            ));
        }
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .map(|text| parse_cidr(text.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HttpSettings {
            bind: self
                .bind
                .parse()
                .map_err(|error| invalid("http.bind", format!("`{}`: {error}", self.bind)))?,
            subscribe_per_ip_per_hour: self.subscribe_per_ip_per_hour,
            failed_auth_per_ip_per_minute: self.failed_auth_per_ip_per_minute,
            confirmation_window: parse_duration(
                "http.confirmation_window",
                &self.confirmation_window,
            )?,
            trusted_proxies,
            header_read_timeout: nonzero_duration(
                "http.header_read_timeout",
                &self.header_read_timeout,
            )?,
            idle_timeout: nonzero_duration("http.idle_timeout", &self.idle_timeout)?,
            body_read_timeout: nonzero_duration("http.body_read_timeout", &self.body_read_timeout)?,
            max_connections: positive("http.max_connections", self.max_connections)? as usize,
            max_body_bytes_in_flight: match self.max_body_bytes_in_flight {
                bytes if bytes < 1024 * 1024 => {
                    return Err(invalid(
                        "http.max_body_bytes_in_flight",
                        "must be at least 1048576 (1 MiB, the largest body one request may send)",
                    ))
                }
                bytes => usize::try_from(bytes).unwrap_or(usize::MAX),
            },
        })
    }
}

/// A CIDR, or a bare address meaning just that host.
fn parse_cidr(text: &str) -> Result<IpNet, ConfigError> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            invalid(
                "http.trusted_proxies",
                format!("`{text}` is not a CIDR like 10.0.0.0/8 or ::1/128"),
            )
        })
}

impl RawNewsletter {
    fn parse(self) -> Result<NewsletterSettings, ConfigError> {
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(invalid(
                "newsletter.name",
                "must be non-empty and free of control characters",
            ));
        }
        let from = Mailbox::from_str(self.from.trim()).map_err(|error| {
            invalid(
                "newsletter.from",
                format!("`{}` is not an address: {error}", self.from),
            )
        })?;
        let base_url = url::Url::parse(self.base_url.trim()).map_err(|error| {
            invalid(
                "newsletter.base_url",
                format!("`{}`: {error}", self.base_url),
            )
        })?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.host().is_none() {
            return Err(invalid(
                "newsletter.base_url",
                "must be an http:// or https:// URL",
            ));
        }
        Ok(NewsletterSettings {
            name,
            from,
            base_url: base_url.as_str().trim_end_matches('/').to_owned(),
            postal_address: self.postal_address.trim().to_owned(),
        })
    }
}

impl RawSmtp {
    fn parse(self) -> Result<SmtpSettings, ConfigError> {
        let url = self.url.trim().to_owned();
        if !url.is_empty() {
            let parsed = url::Url::parse(&url)
                .map_err(|error| invalid("smtp.url", format!("not a URL: {error}")))?;
            if !matches!(parsed.scheme(), "smtp" | "smtps") || parsed.host().is_none() {
                return Err(invalid(
                    "smtp.url",
                    "must look like smtp://user:pass@host:port or smtps://host",
                ));
            }
        }
        if self.outbox_dir.trim().is_empty() {
            return Err(invalid("smtp.outbox_dir", "must not be empty"));
        }
        Ok(SmtpSettings {
            url: (!url.is_empty()).then_some(url),
            outbox_dir: PathBuf::from(self.outbox_dir.trim()),
            concurrency: positive("smtp.concurrency", self.concurrency)? as usize,
            rate_per_second: self.rate_per_second,
            max_attempts: positive("smtp.max_attempts", self.max_attempts)?,
            retry_base: parse_duration("smtp.retry_base", &self.retry_base)?,
            lease: nonzero_duration("smtp.lease", &self.lease)?,
            batch_size: positive("smtp.batch_size", self.batch_size)?,
            timeout: nonzero_duration("smtp.timeout", &self.timeout)?,
            helo_name: match self.helo_name.trim() {
                "" => None,
                name => Some(
                    crate::domain::helo::parse_helo_name(name)
                        .map_err(|reason| invalid("smtp.helo_name", reason))?,
                ),
            },
            dkim: self.dkim.parse()?,
        })
    }
}

fn nonzero_duration(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
    let duration = parse_duration(key, text)?;
    if duration.is_zero() {
        return Err(invalid(key, "must be longer than zero"));
    }
    Ok(duration)
}

impl RawSchedule {
    fn parse(self) -> Result<ScheduleSettings, ConfigError> {
        let cron = cron::Schedule::from_str(self.cron.trim()).map_err(|error| {
            invalid(
                "schedule.cron",
                format!(
                    "`{}` is not a cron with a seconds field ({error})",
                    self.cron
                ),
            )
        })?;
        let timezone: Tz = self.timezone.trim().parse().map_err(|_| {
            invalid(
                "schedule.timezone",
                format!(
                    "`{}` is not an IANA time zone such as Europe/Berlin",
                    self.timezone
                ),
            )
        })?;
        let mode = match self.mode.trim() {
            "broadcast" => ScheduleMode::Broadcast,
            "sequence" => ScheduleMode::Sequence,
            other => {
                return Err(invalid(
                    "schedule.mode",
                    format!("`{other}` is neither broadcast nor sequence"),
                ))
            }
        };
        Ok(ScheduleSettings {
            cron,
            timezone,
            mode,
            catch_up: parse_duration("schedule.catch_up", &self.catch_up)?,
        })
    }
}

#[cfg(test)]
mod tests;
