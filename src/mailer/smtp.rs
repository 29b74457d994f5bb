//! An SMTP client on lettre's connection type, over sockets we open
//! ourselves so that we can set TCP_NODELAY. lettre writes the message and
//! the final `.` as two writes; with Nagle's algorithm on, the second one
//! waits for the server's delayed ACK, about 40 ms per message.
//! Connections are kept and reused: one per sender task at most.
//!
//! The message itself goes out as one write, dot-stuffed with a memchr
//! scan: lettre's `message()` stuffs byte by byte and writes the final `.`
//! separately, which was a tenth of a send's CPU.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{MailerError, SendResult};

/// A kept connection older than this is closed rather than reused: servers
/// drop idle clients, and a dead connection would cost a failed attempt.
const MAX_IDLE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    Plain,
    StartTls {
        required: bool,
    },
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

/// An open session, and whether the server takes commands pipelined
/// (RFC 2920), which lettre's connection does not tell us.
struct Session {
    smtp: AsyncSmtpConnection,
    pipelining: bool,
}

struct Idle {
    session: Session,
    since: Instant,
}

pub struct SmtpClient {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
    idle: Mutex<Vec<Idle>>,
}

fn url_error(reason: impl Into<String>) -> MailerError {
    MailerError::Url(reason.into())
}

impl SmtpClient {
    /// Reads a lettre-style URL: `smtp://user:pass@host:port[?tls=required|opportunistic]`
    /// or `smtps://…`.
    /// `helo_name` is given in EHLO; a path in the URL, the older way to
    /// set it, still wins.
    pub fn from_url(url: &str, timeout: Duration, helo_name: &str) -> Result<Self, MailerError> {
        let parsed = url::Url::parse(url).map_err(|error| url_error(error.to_string()))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| url_error("no host"))?
            .trim_matches(|c| c == '[' || c == ']')
            .to_owned();
        let tls_query = parsed
            .query_pairs()
            .find(|(key, _)| key == "tls")
            .map(|(_, value)| value.into_owned());
        let (security, default_port) = match (parsed.scheme(), tls_query.as_deref()) {
            ("smtp", None) => (Security::Plain, 25),
            ("smtp", Some("required")) => (Security::StartTls { required: true }, 587),
            ("smtp", Some("opportunistic")) => (Security::StartTls { required: false }, 587),
            ("smtps", None) => (Security::Implicit, 465),
            (scheme, tls) => {
                return Err(url_error(format!(
                    "unknown scheme `{scheme}` or tls={tls:?} (use smtp://, smtp://…?tls=required or smtps://)"
                )))
            }
        };
        let decode = |text: &str| {
            percent_encoding_decode(text)
                .ok_or_else(|| url_error("credentials are not valid UTF-8"))
        };
        let credentials = match parsed.password() {
            Some(password) => Some(Credentials::new(
                decode(parsed.username())?,
                decode(password)?,
            )),
            None => None,
        };
        let hello = match parsed.path().trim_matches('/') {
            "" => ClientId::Domain(helo_name.to_owned()),
            name => ClientId::Domain(name.to_owned()),
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|error| url_error(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            port: parsed.port().unwrap_or(default_port),
            host,
            security,
            credentials,
            hello,
            timeout,
            tls: Arc::new(tls),
            idle: Mutex::new(Vec::new()),
        })
    }

    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> SendResult {
        // A kept connection may have died since (the server restarted, or
        // dropped us while idle). If it fails before the server has the
        // message, nothing was delivered: try once on a new connection.
        if let Some(session) = self.checkout() {
            match self.send_on(session, envelope, message).await {
                SendResult::Unreachable(_) => {}
                result => return result,
            }
        }
        // Failing to connect or log in says nothing about the recipient.
        match self.connect().await {
            Ok(session) => self.send_on(session, envelope, message).await,
            Err(error) => SendResult::Unreachable(error),
        }
    }

    /// One message on one session. A failure with no reply from the server
    /// before it had the message is `Unreachable`: the message was not
    /// delivered, and the recipient has nothing to do with it. After the
    /// message went out, a lost connection or a timeout may hide a
    /// delivery, so it is `Transient`, retried with the same Message-ID.
    async fn send_on(
        &self,
        mut session: Session,
        envelope: &Envelope,
        message: &[u8],
    ) -> SendResult {
        let parameters = match mail_parameters(&session.smtp, envelope, message) {
            Ok(parameters) => parameters,
            Err(refusal) => return SendResult::Permanent(refusal),
        };
        let mut handed_over = false;
        let sending = transmit(
            &mut session,
            envelope,
            message,
            parameters,
            &mut handed_over,
        );
        match tokio::time::timeout(self.timeout, sending).await {
            Ok(Ok(response)) => {
                self.checkin(session);
                SendResult::Accepted {
                    reply: format!(
                        "{} {}",
                        response.code(),
                        response.message().collect::<Vec<_>>().join(" ")
                    ),
                }
            }
            // After an error the connection is dropped, never reused.
            Ok(Err(error)) if error.is_permanent() => SendResult::Permanent(describe(&error)),
            Ok(Err(error)) if error.is_transient() || handed_over => {
                SendResult::Transient(describe(&error))
            }
            Ok(Err(error)) => SendResult::Unreachable(describe(&error)),
            Err(_) if handed_over => SendResult::Transient(format!(
                "no answer within {:?} after the message",
                self.timeout
            )),
            Err(_) => SendResult::Unreachable(format!(
                "no answer within {:?} before the message",
                self.timeout
            )),
        }
    }

    /// The name given in EHLO, as `tidings check` judges it.
    pub fn helo_name(&self) -> String {
        match &self.hello {
            ClientId::Domain(name) => name.clone(),
            literal => literal.to_string(),
        }
    }

    /// Connects, greets and logs in, for `tidings check`.
    pub async fn verify(&self) -> Result<(), String> {
        let mut session = self.connect().await?;
        let _ = session.smtp.quit().await;
        Ok(())
    }

    fn checkout(&self) -> Option<Session> {
        let mut idle = self.idle.lock().expect("smtp pool lock");
        while let Some(kept) = idle.pop() {
            if kept.since.elapsed() < MAX_IDLE && !kept.session.smtp.has_broken() {
                return Some(kept.session);
            }
        }
        None
    }

    fn checkin(&self, session: Session) {
        self.idle.lock().expect("smtp pool lock").push(Idle {
            session,
            since: Instant::now(),
        });
    }

    async fn connect(&self) -> Result<Session, String> {
        let connecting = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|error| {
                    format!("cannot connect to {}:{}: {error}", self.host, self.port)
                })?;
            tcp.set_nodelay(true).map_err(|error| error.to_string())?;
            let stream: Box<dyn AsyncTokioStream> = if self.security == Security::Implicit {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|error| format!("{}: {error}", self.host))?;
                let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|error| format!("TLS with {}: {error}", self.host))?;
                Box::new(TlsStream(tls))
            } else {
                Box::new(tcp)
            };
            let mut connection = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
                .await
                .map_err(|error| describe(&error))?;
            if let Security::StartTls { required } = self.security {
                if connection.can_starttls() {
                    let parameters =
                        TlsParameters::new(self.host.clone()).map_err(|error| describe(&error))?;
                    connection
                        .starttls(parameters, &self.hello)
                        .await
                        .map_err(|error| describe(&error))?;
                } else if required {
                    return Err(format!("{} does not offer STARTTLS", self.host));
                }
            }
            // lettre keeps only the extensions it uses; ask again (before
            // logging in, as a new EHLO may end a login on some servers).
            let hello = connection
                .command(Ehlo::new(self.hello.clone()))
                .await
                .map_err(|error| describe(&error))?;
            let pipelining = hello
                .message()
                .any(|line| line.split_whitespace().next() == Some("PIPELINING"));
            if let Some(credentials) = &self.credentials {
                connection
                    .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                    .await
                    .map_err(|error| format!("login failed: {}", describe(&error)))?;
            }
            Ok(Session {
                smtp: connection,
                pipelining,
            })
        };
        tokio::time::timeout(self.timeout, connecting)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "{}:{} did not answer within {:?}",
                    self.host, self.port, self.timeout
                ))
            })
    }
}

/// MAIL FROM parameters, as lettre's own `send` picks them; `Err` when
/// this server cannot take the message at all.
fn mail_parameters(
    connection: &AsyncSmtpConnection,
    envelope: &Envelope,
    message: &[u8],
) -> Result<Vec<MailParameter>, String> {
    let server = connection.server_info();
    let mut parameters = Vec::new();
    let non_ascii = |address: &lettre::Address| !AsRef::<str>::as_ref(address).is_ascii();
    if envelope.from().is_some_and(non_ascii) || envelope.to().iter().any(non_ascii) {
        if !server.supports_feature(Extension::SmtpUtfEight) {
            return Err("the address is not ASCII and the server does not offer SMTPUTF8".into());
        }
        parameters.push(MailParameter::SmtpUtfEight);
    }
    if !message.is_ascii() {
        if !server.supports_feature(Extension::EightBitMime) {
            return Err("the message is not ASCII and the server does not offer 8BITMIME".into());
        }
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    Ok(parameters)
}

/// MAIL, RCPT and DATA, in one write where the server takes them
/// pipelined (half the round trips and system calls of one at a time),
/// then the message. `handed_over` is set once the message starts to go.
async fn transmit(
    session: &mut Session,
    envelope: &Envelope,
    message: &[u8],
    parameters: Vec<MailParameter>,
    handed_over: &mut bool,
) -> Result<Response, lettre::transport::smtp::Error> {
    let connection = &mut session.smtp;
    let mail = Mail::new(envelope.from().cloned(), parameters);
    let recipients = envelope
        .to()
        .iter()
        .map(|to| Rcpt::new(to.clone(), Vec::new()));
    if session.pipelining {
        let mut commands = mail.to_string();
        for recipient in recipients {
            commands.push_str(&recipient.to_string());
        }
        commands.push_str(&Data.to_string());
        // `command` answers with the first reply (MAIL's); the others
        // follow in order. After any refusal the session is dropped.
        connection.command(commands).await?;
        for _ in envelope.to() {
            connection.read_response().await?;
        }
        connection.read_response().await?;
    } else {
        connection.command(mail).await?;
        for recipient in recipients {
            connection.command(recipient).await?;
        }
        connection.command(Data).await?;
    }
    // From here on the server may have the message, whatever happens.
    *handed_over = true;
    match std::str::from_utf8(message) {
        // `command` writes what it is given as it is: here the whole
        // message, dot-stuffed, with the closing `.` line.
        Ok(text) => connection.command(DataPayload(text)).await,
        Err(_) => connection.message(message).await,
    }
}

/// A message as sent after DATA: every line that starts with `.` gets one
/// more (RFC 5321, 4.5.2), then CRLF `.` CRLF ends it.
struct DataPayload<'a>(&'a str);

impl std::fmt::Display for DataPayload<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0;
        if text.starts_with('.') {
            formatter.write_str(".")?;
        }
        let mut start = 0;
        for found in memchr::memmem::find_iter(text.as_bytes(), "\r\n.") {
            // Up to and including the CRLF and the dot, then the extra dot.
            formatter.write_str(&text[start..found + 3])?;
            formatter.write_str(".")?;
            start = found + 3;
        }
        formatter.write_str(&text[start..])?;
        formatter.write_str("\r\n.\r\n")
    }
}

fn percent_encoding_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The error and its causes. lettre's own text already ends with its
/// first cause (the server's reply, for a refusal), so the chain is
/// followed from the cause after that: it was said twice.
fn describe(error: &lettre::transport::smtp::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error).and_then(std::error::Error::source);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// lettre takes any stream that names its peer; a TLS stream is one.
#[derive(Debug)]
struct TlsStream(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(context, buffer)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(context, buffer)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_security_port_and_login() {
        let client =
            SmtpClient::from_url("smtp://127.0.0.1:2525", Duration::from_secs(1), "a.example")
                .unwrap();
        assert_eq!((client.security, client.port), (Security::Plain, 2525));
        let client = SmtpClient::from_url(
            "smtps://u%40x:p%25w@mail.example.com",
            Duration::from_secs(1),
            "a.example",
        )
        .unwrap();
        assert_eq!((client.security, client.port), (Security::Implicit, 465));
        assert!(client.credentials.is_some());
        let client = SmtpClient::from_url(
            "smtp://mail.example.com?tls=required",
            Duration::from_secs(1),
            "a.example",
        )
        .unwrap();
        assert_eq!(client.security, Security::StartTls { required: true });
        assert_eq!(client.port, 587);
        assert!(SmtpClient::from_url(
            "smtp://h?tls=sometimes",
            Duration::from_secs(1),
            "a.example"
        )
        .is_err());
        assert_eq!(percent_encoding_decode("u%40x").as_deref(), Some("u@x"));
    }

    #[test]
    fn lines_that_start_with_a_dot_are_stuffed() {
        let sent = DataPayload(".first\r\nplain\r\n.\r\n..two\r\nend.").to_string();
        assert_eq!(sent, "..first\r\nplain\r\n..\r\n...two\r\nend.\r\n.\r\n");
        assert_eq!(DataPayload("a.b\r\nc").to_string(), "a.b\r\nc\r\n.\r\n");
    }
}
