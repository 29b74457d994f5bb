//! Faults injected by smtp-sink: 4xx, 5xx and hang-ups, and SIGTERM mid-send.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{free_port, sqlite_delivery_counts, wait_until, Install, Sink, ADMIN_TOKEN};

pub fn install_with_readers(dir: &std::path::Path, readers: usize, smtp_url: &str) -> Install {
    install_with_readers_on(dir, readers, smtp_url, None)
}

/// The same, on the PostgreSQL database at `database_url` when given.
pub fn install_with_readers_on(
    dir: &std::path::Path,
    readers: usize,
    smtp_url: &str,
    database_url: Option<&str>,
) -> Install {
    let mut install = Install::new(dir)
        .set("TIDINGS_SMTP__URL", smtp_url)
        .set("TIDINGS_ADMIN__TOKEN", ADMIN_TOKEN)
        .set("TIDINGS_SMTP__RETRY_BASE", "1s")
        .set("TIDINGS_SMTP__MAX_ATTEMPTS", "20");
    if let Some(url) = database_url {
        install = install.set("TIDINGS_DATABASE__URL", url);
    }
    let csv = dir.join("readers.csv");
    let rows: String = (1..=readers)
        .map(|n| format!("reader{n}@example.com,Reader {n},confirmed\n"))
        .collect();
    std::fs::write(&csv, format!("email,name,status\n{rows}")).unwrap();
    install.ok(&["subscriber", "import", csv.to_str().unwrap()]);
    install
}

pub fn stats(daemon: &crate::harness::Daemon) -> Value {
    daemon
        .admin(Method::GET, "/api/admin/stats")
        .send()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
fn a_5xx_from_smtp_sink_fails_the_delivery_without_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&["-f", "."]);
    let install = install_with_readers(dir.path(), 3, &sink.url());
    let daemon = install.serve(free_port());
    daemon.send_now();
    wait_until("three failed deliveries", Duration::from_secs(20), || {
        stats(&daemon)["deliveries"]["failed"] == 3
    });
    // Every delivery has ended, so nothing more will be attempted: one
    // attempt each means none was retried.
    let stats = stats(&daemon);
    assert_eq!(
        stats["deliveries"],
        json!({ "pending": 0, "sending": 0, "sent": 0, "failed": 3, "skipped": 0 }),
        "{stats}"
    );
    assert_eq!(
        daemon.metric("tidings_send_attempts_total"),
        3,
        "never retried"
    );
    assert_eq!(
        daemon.metric("tidings_send_failures_total{kind=\"permanent\"}"),
        3
    );
    assert_eq!(
        stats["subscribers"]["confirmed"], 3,
        "one bounce is not three"
    );
}

#[test]
fn a_4xx_or_a_hang_up_is_retried_until_the_server_takes_it() {
    for fault in ["-r", "-q"] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let faulty = Sink::start_on(port, &[fault, "."]);
        let install = install_with_readers(dir.path(), 2, &faulty.url());
        let daemon = install.serve(free_port());
        daemon.send_now();
        // The faulty server has refused a couple of tries, and they are
        // counted; the deliveries wait to be retried.
        let transient = "tidings_send_failures_total{kind=\"transient\"}";
        wait_until("two transient failures", Duration::from_secs(20), || {
            daemon.metric(transient) >= 2
        });
        let before = stats(&daemon);
        assert_eq!(before["deliveries"]["sent"], 0, "{fault}: {before}");
        assert_eq!(before["deliveries"]["failed"], 0, "{fault}: {before}");
        assert_eq!(
            before["deliveries"]["pending"].as_i64().unwrap()
                + before["deliveries"]["sending"].as_i64().unwrap(),
            2,
            "{fault}: {before}"
        );
        drop(faulty);
        let healthy = Sink::start_on(port, &[]);
        let messages = healthy.wait_for(2, Duration::from_secs(30));
        wait_until("both sent", Duration::from_secs(10), || {
            stats(&daemon)["deliveries"]["sent"] == 2
        });
        let mut recipients: Vec<_> = messages.iter().map(|m| m.recipient.clone()).collect();
        recipients.sort();
        assert_eq!(
            recipients,
            ["reader1@example.com", "reader2@example.com"],
            "{fault}"
        );
    }
}

#[test]
fn sigterm_drains_the_sends_in_flight_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A slow server (1 s per DATA), so sends are in flight at SIGTERM.
    let port = free_port();
    let slow = Sink::start_on(port, &["-w", "1"]);
    let install =
        install_with_readers(dir.path(), 60, &slow.url()).set("TIDINGS_SMTP__CONCURRENCY", "4");
    let mut daemon = install.serve(free_port());
    let created = daemon.send_now();
    assert_eq!(created["recipients"], 60);
    slow.wait_for(4, Duration::from_secs(20));
    daemon.signal("TERM");
    assert!(
        daemon.wait_exit(Duration::from_secs(20)),
        "exit 0 after draining"
    );
    let delivered = slow.messages().len() as i64;
    let counts = sqlite_delivery_counts(&dir.path().join("tidings.db"));
    assert_eq!(
        counts.get("sending"),
        None,
        "nothing left leased: {counts:?}"
    );
    assert_eq!(
        counts.get("sent").copied().unwrap_or(0),
        delivered,
        "{counts:?}"
    );
    assert!(delivered < 60, "it stopped early: {delivered}");

    // The next start picks up where the last one stopped.
    let _daemon = install.serve(free_port());
    slow.wait_for(60, Duration::from_secs(60));
    wait_until("all 60 sent", Duration::from_secs(30), || {
        sqlite_delivery_counts(&dir.path().join("tidings.db")).get("sent") == Some(&60)
    });
    let mut seen: Vec<_> = slow.messages().into_iter().map(|m| m.recipient).collect();
    assert_eq!(seen.len(), 60, "no message twice");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 60, "everyone once");
}
