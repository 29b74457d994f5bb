//! The SMTP server the integration tests send to: a real one (mailin) in
//! the test process, which records every message and can be told to answer
//! a recipient with chosen replies.

use std::collections::{HashMap, VecDeque};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::ports::free_port;
use crate::ports::is_reserved;
use mailin_embedded::response::OK;
use mailin_embedded::{Handler, Response, Server, SslConfig};

/// One message as the SMTP server received it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub to: Vec<String>,
    pub data: Vec<u8>,
}

impl ReceivedMail {
    pub fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.data)
            .expect("a parsable message")
    }

    pub fn subject(&self) -> String {
        self.parsed().subject().unwrap_or_default().to_owned()
    }

    /// The plain-text part, with the wire's CRLF line ends made `\n`.
    pub fn text(&self) -> String {
        self.parsed()
            .body_text(0)
            .unwrap_or_default()
            .replace("\r\n", "\n")
    }

    pub fn html(&self) -> String {
        self.parsed().body_html(0).unwrap_or_default().into_owned()
    }

    /// A raw header value, unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = String::from_utf8_lossy(&self.data);
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    /// The first link in the text part that starts with `prefix`.
    pub fn link(&self, prefix: &str) -> String {
        let text = self.text();
        let start = text
            .find(prefix)
            .unwrap_or_else(|| panic!("no {prefix} link in:\n{text}"));
        text[start..]
            .split(|c: char| c.is_whitespace() || c == '>' || c == ')')
            .next()
            .unwrap()
            .to_owned()
    }
}

/// What the server answers at the end of DATA for one recipient, in order.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// 451: try again later.
    Temporary,
    /// 550 5.1.1: never, this mailbox does not exist.
    Permanent,
    /// 554 5.7.1: refused by the server's policy (spam rules and the like).
    Policy,
    /// 421 and the server closes the connection.
    HangUp,
}

#[derive(Default)]
struct Mailbox {
    received: Vec<ReceivedMail>,
    /// Every message that reached the end of DATA, accepted or not.
    attempted: Vec<ReceivedMail>,
    faults: HashMap<String, VecDeque<Reply>>,
    attempts: HashMap<String, usize>,
}

#[derive(Clone)]
struct SinkHandler {
    mailbox: Arc<Mutex<Mailbox>>,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Handler for SinkHandler {
    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.to = to.to_vec();
        self.data.clear();
        mailin_embedded::response::START_DATA
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mut mailbox = self.mailbox.lock().unwrap();
        let recipient = self.to.first().cloned().unwrap_or_default();
        *mailbox.attempts.entry(recipient.clone()).or_default() += 1;
        let attempt = ReceivedMail {
            to: self.to.clone(),
            data: self.data.clone(),
        };
        mailbox.attempted.push(attempt);
        let fault = mailbox
            .faults
            .get_mut(&recipient)
            .and_then(|queue| queue.pop_front());
        // mailin stays in its DATA state after an error reply, so every
        // fault also closes the connection, as many real servers do.
        let hang_up = |mut response: Response| {
            response.action = mailin_embedded::Action::Close;
            response
        };
        match fault {
            Some(Reply::Temporary) => {
                hang_up(Response::custom(451, "4.3.0 Try again later".into()))
            }
            Some(Reply::Permanent) => hang_up(Response::custom(550, "5.1.1 No such user".into())),
            Some(Reply::Policy) => hang_up(Response::custom(
                554,
                "5.7.1 Message rejected as spam".into(),
            )),
            Some(Reply::HangUp) => {
                hang_up(Response::custom(421, "4.4.2 Closing connection".into()))
            }
            None => {
                mailbox.received.push(ReceivedMail {
                    to: std::mem::take(&mut self.to),
                    data: std::mem::take(&mut self.data),
                });
                OK
            }
        }
    }
}

/// A real SMTP server (mailin-embedded) on a loopback port.
#[derive(Clone)]
pub struct MailServer {
    pub port: u16,
    mailbox: Arc<Mutex<Mailbox>>,
}

impl MailServer {
    pub fn start() -> Self {
        loop {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            if !is_reserved(port) {
                return Self::serve(listener, port);
            }
        }
    }

    /// Starts on a port chosen earlier, e.g. after the app found it closed.
    pub fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        Self::serve(listener, port)
    }

    fn serve(listener: TcpListener, port: u16) -> Self {
        let mailbox = Arc::new(Mutex::new(Mailbox::default()));
        let handler = SinkHandler {
            mailbox: mailbox.clone(),
            to: Vec::new(),
            data: Vec::new(),
        };
        std::thread::spawn(move || {
            let mut server = Server::new(handler);
            server
                .with_name("sink.test")
                .with_ssl(SslConfig::None)
                .unwrap()
                .with_num_threads(16)
                .with_tcp_listener(listener);
            let _ = server.serve();
        });
        Self { port, mailbox }
    }

    /// Answers the next messages to `recipient` with these replies.
    pub fn fail_next(&self, recipient: &str, replies: &[Reply]) {
        self.mailbox
            .lock()
            .unwrap()
            .faults
            .entry(recipient.to_owned())
            .or_default()
            .extend(replies.iter().copied());
    }

    pub fn received(&self) -> Vec<ReceivedMail> {
        self.mailbox.lock().unwrap().received.clone()
    }

    pub fn received_by(&self, recipient: &str) -> Vec<ReceivedMail> {
        self.received()
            .into_iter()
            .filter(|mail| mail.to.iter().any(|to| to == recipient))
            .collect()
    }

    /// Every message to `recipient` that reached the end of DATA, accepted or not.
    pub fn attempted_by(&self, recipient: &str) -> Vec<ReceivedMail> {
        self.mailbox
            .lock()
            .unwrap()
            .attempted
            .iter()
            .filter(|mail| mail.to.iter().any(|to| to == recipient))
            .cloned()
            .collect()
    }

    /// DATA commands that ended for `recipient`, accepted or not.
    pub fn attempts_for(&self, recipient: &str) -> usize {
        self.mailbox
            .lock()
            .unwrap()
            .attempts
            .get(recipient)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until `count` messages have arrived for `recipient`.
    pub async fn wait_for(&self, recipient: &str, count: usize) -> Vec<ReceivedMail> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mails = self.received_by(recipient);
            if mails.len() >= count {
                return mails;
            }
            assert!(
                Instant::now() < deadline,
                "waited 20 s for {count} emails to {recipient}; got {}",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until `count` messages have arrived in total.
    pub async fn wait_for_total(&self, count: usize) -> Vec<ReceivedMail> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mails = self.received();
            if mails.len() >= count {
                return mails;
            }
            assert!(
                Instant::now() < deadline,
                "waited 30 s for {count} emails; got {}",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
