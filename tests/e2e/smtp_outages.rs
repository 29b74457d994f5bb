//! The SMTP server going away: a restart in the middle of a send, and a
//! server that takes connections and then stops answering. Neither may
//! cost a delivery an attempt, and a short restart must cost little time.
//! Each runs on SQLite and on a PostgreSQL database of its own.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::faults::{install_with_readers_on, stats};
use crate::harness::{free_port, wait_until, Daemon, Install, Sink};
use crate::postgres::PgDatabase;

/// The deliveries' counts by status, from the admin API.
fn deliveries(daemon: &Daemon) -> Value {
    stats(daemon)["deliveries"].clone()
}

fn install(
    dir: &std::path::Path,
    readers: usize,
    smtp_port: u16,
    database: Option<&PgDatabase>,
) -> Install {
    let smtp_url = format!("smtp://127.0.0.1:{smtp_port}");
    let database_url = database.map(|database| database.url.as_str());
    install_with_readers_on(dir, readers, &smtp_url, database_url)
}

#[test]
fn a_smtp_restart_under_a_second_costs_under_two_seconds_of_sending_on_sqlite() {
    smtp_restart_under_a_second(None);
}

#[test]
fn a_smtp_restart_under_a_second_costs_under_two_seconds_of_sending_on_postgres() {
    smtp_restart_under_a_second(Some(&PgDatabase::create()));
}

fn smtp_restart_under_a_second(database: Option<&PgDatabase>) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let readers = 1500;
    // Paced, so that the send is still going when the server restarts; a
    // message cut off at the stop is retried a second later (the install's
    // smtp.retry_base).
    let install =
        install(dir.path(), readers, port, database).set("TIDINGS_SMTP__RATE_PER_SECOND", "500");
    let first = Sink::start_on(port, &[]);
    let daemon = install.serve(free_port());
    daemon.send_now();
    first.wait_for(200, Duration::from_secs(30));

    let stopped = Instant::now();
    let before_restart = first.kill();
    let second = Sink::start_on(port, &[]);
    let restart = stopped.elapsed();
    assert!(restart < Duration::from_secs(1), "restart took {restart:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while second.messages().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no message within 10 s of the restart; the daemon's log:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pause = stopped.elapsed();
    let backend = if database.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    eprintln!("{backend}: server down {restart:?}; sending again {pause:?} after it stopped");
    assert!(pause < Duration::from_secs(2), "{pause:?} without sending");

    wait_until("every delivery sent", Duration::from_secs(60), || {
        deliveries(&daemon)["sent"] == readers
    });
    let counts = deliveries(&daemon);
    assert_eq!(counts["failed"], 0, "{counts}");
    // Everyone has the issue; the only doubles are messages in flight at
    // the stop, each under its first Message-ID.
    let dumped = [before_restart, second.messages()].concat();
    let mut by_recipient: HashMap<String, Vec<String>> = HashMap::new();
    for message in dumped {
        let id = message.header("Message-ID").unwrap_or_default().to_owned();
        by_recipient.entry(message.recipient).or_default().push(id);
    }
    assert_eq!(by_recipient.len(), readers, "nobody missed");
    let doubled: Vec<_> = by_recipient.values().filter(|ids| ids.len() > 1).collect();
    assert!(doubled.len() <= 8, "only what was in flight: {doubled:?}");
    assert!(doubled.iter().all(|ids| ids.iter().all(|id| *id == ids[0])));
    eprintln!(
        "{backend}: all {readers} sent after the restart; 0 lost; {} sent twice",
        doubled.len()
    );
}

/// An SMTP server that greets, answers EHLO, and then never says another
/// word: a hung mail server, or a stuck network path.
struct HangingServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HangingServer {
    fn start(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        held.push(std::thread::spawn(move || greet_then_hang(stream)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            // Dropping the listener frees the port; the held connections
            // end when the daemon gives up on them.
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HangingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn greet_then_hang(mut stream: TcpStream) {
    let _ = stream.write_all(b"220 hanging.example ESMTP\r\n");
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
        let command = line.to_ascii_uppercase();
        if command.starts_with("EHLO") || command.starts_with("HELO") {
            let _ = stream.write_all(b"250-hanging.example\r\n250 PIPELINING\r\n");
        }
        // MAIL, RCPT, DATA: no answer, ever.
        line.clear();
    }
}

#[test]
fn a_server_that_stops_answering_pauses_sending_and_costs_no_attempt_on_sqlite() {
    hanging_server(None);
}

#[test]
fn a_server_that_stops_answering_pauses_sending_and_costs_no_attempt_on_postgres() {
    hanging_server(Some(&PgDatabase::create()));
}

fn hanging_server(database: Option<&PgDatabase>) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let hanging = HangingServer::start(port);
    let install = install(dir.path(), 3, port, database)
        .set("TIDINGS_SMTP__TIMEOUT", "1s")
        .set("TIDINGS_SMTP__MAX_ATTEMPTS", "2");
    let daemon = install.serve(free_port());
    daemon.send_now();
    // Seven timeouts among three deliveries: one of them has timed out at
    // least three times, and with two attempts allowed it would have
    // failed if a timeout before the message cost an attempt.
    let unanswered = "tidings_send_failures_total{kind=\"transient\"}";
    wait_until("seven unanswered sends", Duration::from_secs(60), || {
        daemon.metric(unanswered) >= 7
    });
    let counts = deliveries(&daemon);
    assert_eq!(counts["failed"], 0, "{counts}");
    assert_eq!(counts["sent"], 0, "{counts}");
    assert!(
        daemon.log_text().contains("pausing all sends"),
        "the breaker opened:\n{}",
        daemon.log_text()
    );

    drop(hanging);
    let healthy = Sink::start_on(port, &[]);
    let answering = Instant::now();
    let messages = healthy.wait_for(3, Duration::from_secs(60));
    wait_until("all three sent", Duration::from_secs(10), || {
        deliveries(&daemon)["sent"] == 3
    });
    assert_eq!(messages.len(), 3, "each once");
    assert_eq!(deliveries(&daemon)["failed"], 0);
    eprintln!(
        "{}: {} unanswered sends cost no attempt; all 3 sent {:.1} s after a server \
         answered again; 0 lost; 0 sent twice",
        if database.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        daemon.metric(unanswered),
        answering.elapsed().as_secs_f64()
    );
}
