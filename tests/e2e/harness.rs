//! Processes for the end-to-end tests: the daemon, the CLI and smtp-sink.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";

pub use crate::ports::free_port;

/// Postfix's smtp-sink, dumping every message it accepts into a folder.
pub struct Sink {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Sink {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_on(free_port(), extra)
    }

    /// `extra` injects faults: `-r .` answers 4xx, `-f .` 5xx and `-q .`
    /// hangs up, each at the end of DATA.
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // smtp-sink drops privileges to `nobody`, which must write here.
        Command::new("chmod")
            .arg("0777")
            .arg(dir.path())
            .status()
            .unwrap();
        let mut command = Command::new("smtp-sink");
        if is_root() {
            command.args(["-u", "nobody"]);
        }
        let child = command
            .args(extra)
            .arg("-d")
            .arg(format!("{}/%H%M%S.", dir.path().display()))
            .arg(format!("127.0.0.1:{port}"))
            .arg("256")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink must be installed (apt-get install postfix)");
        let sink = Self { port, dir, child };
        wait_for_port(port);
        sink
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every complete message dumped so far, each with when smtp-sink
    /// finished writing it (`received`): at the end of DATA, just before
    /// its 250 reply.
    pub fn messages(&self) -> Vec<Dumped> {
        let mut messages = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if let Ok(text) = std::fs::read_to_string(&path) {
                if let Some(mut message) = Dumped::parse(&text) {
                    message.received = std::fs::metadata(&path).unwrap().modified().unwrap();
                    messages.push(message);
                }
            }
        }
        messages
    }

    pub fn wait_for(&self, count: usize, within: Duration) -> Vec<Dumped> {
        let deadline = Instant::now() + within;
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "waited {within:?} for {count} messages at smtp-sink; got {}",
                messages.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Sink {
    /// Stops the server at once, as a crash would, and returns every
    /// message it had dumped.
    pub fn kill(mut self) -> Vec<Dumped> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.messages()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One message from an smtp-sink dump file.
#[derive(Debug, Clone)]
pub struct Dumped {
    pub recipient: String,
    /// What the client said in EHLO (or HELO).
    pub helo: String,
    pub headers: HashMap<String, String>,
    pub body: String,
    /// When smtp-sink finished writing it (the dump file's time).
    pub received: SystemTime,
}

impl Dumped {
    fn parse(text: &str) -> Option<Self> {
        let recipient = text
            .lines()
            .find_map(|line| line.strip_prefix("X-Rcpt-Args: "))?
            .trim_start_matches("TO:")
            .trim_start_matches('<')
            .split('>')
            .next()?
            .to_owned();
        let helo = text
            .lines()
            .find_map(|line| line.strip_prefix("X-Helo-Args: "))
            .unwrap_or_default()
            .trim()
            .to_owned();
        // The client's message starts after smtp-sink's Received header.
        let start = text.find("\nFrom: ").or_else(|| text.find("\nDate: "))? + 1;
        let message = &text[start..];
        let (head, body) = message.split_once("\n\n")?;
        // A dump is complete once the closing boundary is there.
        if !body.trim_end().ends_with("--") {
            return None;
        }
        let unfolded = head.replace("\n ", " ").replace("\n\t", " ");
        let headers = unfolded
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(key, value)| (key.to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Some(Self {
            recipient,
            helo,
            headers,
            body: decode_quoted_printable(body),
            received: SystemTime::UNIX_EPOCH,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The first link in the body that starts with `prefix`.
    pub fn link(&self, prefix: &str) -> String {
        let start = self
            .body
            .find(prefix)
            .unwrap_or_else(|| panic!("no {prefix} in {}", self.body));
        self.body[start..]
            .split(|c: char| c.is_whitespace() || c == '"' || c == '<' || c == '>')
            .next()
            .unwrap()
            .to_owned()
    }
}

fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'=' && index + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&joined[index + 1..index + 3], 16) {
                out.push(byte);
                index += 3;
                continue;
            }
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Environment for one tidings installation: its folder and settings.
#[derive(Clone)]
pub struct Install {
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Install {
    /// The weekly slot is moved out of the way: a test run on a Monday
    /// morning would otherwise also send the issue that `schedule.catch_up`
    /// owes for 09:00. Tests that want a schedule set their own.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            env: Vec::new(),
        }
        .set("TIDINGS_SCHEDULE__CRON", "0 0 0 1 1 * 2099")
    }

    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
        command
            .args(args)
            .current_dir(&self.dir)
            .env_remove("RUST_LOG");
        // Only this install's settings: nothing from the developer's shell.
        for (key, _) in std::env::vars() {
            if key.starts_with("TIDINGS_") {
                command.env_remove(key);
            }
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    /// Runs a CLI command to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs a CLI command to completion with `input` on its standard input,
    /// as a script piping into it would.
    pub fn run_with_input(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must end by itself within `within` (a `serve`
    /// that is meant to refuse to start); kills it and fails otherwise.
    pub fn run_within(&self, args: &[&str], within: Duration) -> Output {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + within;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "tidings {args:?} still ran after {within:?}:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "tidings {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Queues a post with the CLI, as an operator would.
    pub fn queue_post(&self, subject: &str, markdown: &str) {
        let count = std::fs::read_dir(&self.dir).unwrap().count();
        let file = self.dir.join(format!("post-{count}.md"));
        std::fs::write(&file, markdown).unwrap();
        self.ok(&["post", "add", "--subject", subject, file.to_str().unwrap()]);
    }

    pub fn serve(&self, port: u16) -> Daemon {
        self.serve_with(port, self.command(&["serve"]))
    }

    /// `serve` with its file-descriptor limit (soft and hard) set to `limit`.
    pub fn serve_with_descriptor_limit(&self, port: u16, limit: u64) -> Daemon {
        self.serve_with_descriptor_limits(port, limit, limit)
    }

    /// `serve` started with descriptor limits `soft` and `hard`.
    pub fn serve_with_descriptor_limits(&self, port: u16, soft: u64, hard: u64) -> Daemon {
        use std::os::unix::process::CommandExt;
        let mut command = self.command(&["serve"]);
        // SAFETY: setrlimit is async-signal-safe, and nothing else runs
        // between fork and exec.
        unsafe {
            command.pre_exec(move || rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard));
        }
        self.serve_with(port, command)
    }

    fn serve_with(&self, port: u16, mut command: Command) -> Daemon {
        let log = self.dir.join(format!("serve-{port}.log"));
        let child = command
            .env("TIDINGS_HTTP__BIND", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let daemon = Daemon {
            child,
            port,
            log,
            client: reqwest::blocking::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        };
        daemon.wait_healthy();
        daemon
    }
}

pub struct Daemon {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    pub client: reqwest::blocking::Client,
}

impl Daemon {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = self.client.get(self.url("/healthz")).send() {
                if response.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not become healthy:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A link from an email, pointed at this daemon.
    pub fn local(&self, link: &str) -> String {
        link.replace(
            "http://127.0.0.1:8080",
            &format!("http://127.0.0.1:{}", self.port),
        )
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// `POST /api/admin/send-now`, which must answer 202; returns its JSON.
    pub fn send_now(&self) -> serde_json::Value {
        let response = self
            .admin(reqwest::Method::POST, "/api/admin/send-now")
            .send()
            .unwrap();
        assert_eq!(response.status(), 202);
        response.json().unwrap()
    }

    /// One sample from `/metrics`, by its name and labels as written there,
    /// e.g. `tidings_send_failures_total{kind="transient"}`.
    pub fn metric(&self, series: &str) -> i64 {
        let metrics = self
            .client
            .get(self.url("/metrics"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .unwrap()
            .text()
            .unwrap();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
            .trim()
            .parse()
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: &str) {
        send_signal(self.child.id(), signal);
    }

    /// Waits for the process to exit by itself; returns whether it exited 0.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts deliveries by status straight from a SQLite database file.
pub fn sqlite_delivery_counts(db: &Path) -> HashMap<String, i64> {
    sqlite_pairs(
        db,
        "SELECT status, COUNT(*) FROM deliveries GROUP BY status",
    )
    .into_iter()
    .collect()
}

/// The `(text, number)` rows of a query on a SQLite file.
/// Sends `signal` (`KILL`, `STOP`, …) to process `pid`.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// The value of `name=` in a log line (the daemon logs fields as
/// `name=value`), panicking when the line has none.
pub fn log_field<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line
        .find(&format!(" {name}="))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        + name.len()
        + 2;
    line[start..].split_whitespace().next().unwrap()
}

pub fn sqlite_pairs(db: &Path, sql: &str) -> Vec<(String, i64)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use sqlx::Connection;
        let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query_as::<_, (String, i64)>(sql)
            .fetch_all(&mut connection)
            .await
            .unwrap()
    })
}

/// One number from a query against a SQLite database file.
pub fn sqlite_count(db: &Path, sql: &str) -> i64 {
    sqlite_scalar(db, sql)
}

/// One text value from a query against a SQLite database file.
pub fn sqlite_text(db: &Path, sql: &str) -> String {
    sqlite_scalar(db, sql)
}

fn sqlite_scalar<T>(db: &Path, sql: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + Send + Unpin,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}?mode=ro", db.display());
        let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_scalar::<_, T>(sql)
            .fetch_one(&mut connection)
            .await
            .unwrap()
    })
}

pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
