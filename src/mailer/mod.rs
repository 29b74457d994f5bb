//! Sending one email: over SMTP (lettre's protocol code on our own reused,
//! TCP_NODELAY connections, see `smtp`), or,
//! when no SMTP server is configured, as an `.eml` file in the outbox folder.

use std::path::PathBuf;

use lettre::address::Envelope;

use crate::config::SmtpSettings;

mod smtp;

use crate::domain::helo::default_helo_name;
use smtp::SmtpClient;

/// What the far side said, sorted by what we should do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// The server took responsibility (250); its reply is kept as proof.
    Accepted { reply: String },
    /// 4xx, or a timeout or dropped connection once the message had gone
    /// out (the server may have it): try again later, same Message-ID.
    Transient(String),
    /// 5xx: this address will not take this message.
    Permanent(String),
    /// We could not reach or log in to the server, or it stopped answering
    /// before it had the message. Nothing about this message or recipient:
    /// the worker pauses instead of retrying it, and charges no attempt.
    Unreachable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("smtp.url is not usable: {0}")]
    Url(String),
    #[error("cannot reach the SMTP server: {0}")]
    Connect(String),
    #[error("cannot use the outbox folder {path}: {source}")]
    Outbox {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The host's name as the system knows it (often bare, such as `vm`).
fn hostname_of_this_machine() -> Option<String> {
    match lettre::transport::smtp::extension::ClientId::default() {
        lettre::transport::smtp::extension::ClientId::Domain(name) => Some(name),
        _ => None,
    }
}

pub enum Mailer {
    Smtp { client: SmtpClient, display: String },
    Outbox { dir: PathBuf },
}

impl Mailer {
    /// `from_domain` (newsletter.from's) names us in EHLO when neither
    /// `smtp.helo_name` nor the host's own name will do.
    pub fn from_settings(settings: &SmtpSettings, from_domain: &str) -> Result<Self, MailerError> {
        let Some(url) = &settings.url else {
            std::fs::create_dir_all(&settings.outbox_dir).map_err(|source| {
                MailerError::Outbox {
                    path: settings.outbox_dir.display().to_string(),
                    source,
                }
            })?;
            return Ok(Mailer::Outbox {
                dir: settings.outbox_dir.clone(),
            });
        };
        let helo_name = settings.helo_name.clone().unwrap_or_else(|| {
            let host = hostname_of_this_machine();
            default_helo_name(host.as_deref(), from_domain)
        });
        let client = SmtpClient::from_url(url, settings.timeout, &helo_name)?;
        Ok(Mailer::Smtp {
            client,
            display: redact_url(url),
        })
    }

    /// Where emails go, for the start-up log line; never shows a password.
    pub fn describe(&self) -> String {
        match self {
            Mailer::Smtp { display, .. } => format!("SMTP server {display}"),
            Mailer::Outbox { dir } => format!(".eml files in {}/", dir.display()),
        }
    }

    /// The name given in EHLO; none when emails go to the outbox.
    pub fn helo_name(&self) -> Option<String> {
        match self {
            Mailer::Smtp { client, .. } => Some(client.helo_name()),
            Mailer::Outbox { .. } => None,
        }
    }

    /// Opens (and closes) a connection, for `tidings check`.
    pub async fn verify(&self) -> Result<(), MailerError> {
        match self {
            Mailer::Smtp { client, .. } => client.verify().await.map_err(MailerError::Connect),
            Mailer::Outbox { dir } => {
                let probe = dir.join(".tidings-write-test");
                std::fs::write(&probe, b"ok")
                    .and_then(|_| std::fs::remove_file(&probe))
                    .map_err(|source| MailerError::Outbox {
                        path: dir.display().to_string(),
                        source,
                    })
            }
        }
    }

    pub async fn send(&self, envelope: &Envelope, message: &[u8], file_stem: &str) -> SendResult {
        match self {
            Mailer::Smtp { client, .. } => client.send(envelope, message).await,
            Mailer::Outbox { dir } => write_eml(dir, file_stem, message).await,
        }
    }
}

/// Written to a temporary name first, so a reader never sees half a file.
async fn write_eml(dir: &std::path::Path, file_stem: &str, message: &[u8]) -> SendResult {
    let stem: String = file_stem
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect();
    let final_path = dir.join(format!("{stem}.eml"));
    let temporary = dir.join(format!(".{stem}.eml.tmp"));
    let written = async {
        tokio::fs::write(&temporary, message).await?;
        tokio::fs::rename(&temporary, &final_path).await
    }
    .await;
    match written {
        Ok(()) => SendResult::Accepted {
            reply: format!("250 written to {}", final_path.display()),
        },
        Err(error) => {
            SendResult::Transient(format!("cannot write {}: {error}", final_path.display()))
        }
    }
}

fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("****"));
            }
            parsed.to_string()
        }
        Err(_) => "(unparsable URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_log() {
        let shown = redact_url("smtp://user:secret@mail.example.com:587");
        assert!(!shown.contains("secret"));
        assert!(shown.contains("mail.example.com:587"));
    }
}
