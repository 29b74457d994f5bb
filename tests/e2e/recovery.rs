//! Recovery by liveness: a daemon killed with SIGKILL in the middle of a
//! send, and what it had claimed delivered within seconds, by its restart
//! (SQLite, PostgreSQL) or by another instance (PostgreSQL), not when its
//! five-minute lease runs out. And one `serve` per SQLite file.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{free_port, sqlite_delivery_counts, wait_until, Install, Sink, ADMIN_TOKEN};
use crate::postgres::{query_pairs, PgDatabase};

const READERS: usize = 5000;
/// `smtp.concurrency` (8 by default) × the unrecorded sends allowed per
/// connection (8): what may be accepted and not yet recorded at a SIGKILL.
const IN_FLIGHT: usize = 64;

/// An install sending to `sink`, with `READERS` confirmed readers and one
/// post queued. The lease stays at its five-minute default: recovery must
/// not wait for it.
fn install(dir: &Path, sink: &Sink, database_url: Option<&str>) -> Install {
    let mut install = Install::new(dir)
        .set("TIDINGS_SMTP__URL", sink.url())
        .set("TIDINGS_ADMIN__TOKEN", ADMIN_TOKEN);
    if let Some(url) = database_url {
        install = install.set("TIDINGS_DATABASE__URL", url);
    }
    install.ok(&["subscriber", "generate", "--count", &READERS.to_string()]);
    let post = dir.join("post.md");
    std::fs::write(&post, "A tip worth waiting for.\n").unwrap();
    install.ok(&[
        "post",
        "add",
        "--subject",
        "The tip",
        post.to_str().unwrap(),
    ]);
    install
}

/// How many deliveries are `sent`, wherever the database is.
fn sent_count(dir: &Path, database_url: Option<&str>) -> i64 {
    match database_url {
        None => sqlite_delivery_counts(&dir.join("tidings.db"))
            .get("sent")
            .copied()
            .unwrap_or(0),
        Some(url) => {
            query_pairs(
                url,
                "SELECT 'sent', COUNT(*) FROM deliveries WHERE status = 'sent'",
            )[0]
            .1
        }
    }
}

/// Waits until every delivery is `sent`, at most `within`.
fn wait_all_sent(dir: &Path, database_url: Option<&str>, within: Duration) {
    wait_until("every delivery sent", within, || {
        sent_count(dir, database_url) == READERS as i64
    });
}

/// Every reader got the issue; a reader who got it twice got the same
/// Message-ID twice, and no more readers than were in flight did.
fn every_reader_once_or_resent_in_flight(sink: &Sink) -> usize {
    let mut by_reader: HashMap<String, Vec<String>> = HashMap::new();
    wait_until("every message written out", Duration::from_secs(30), || {
        by_reader.clear();
        for message in sink.messages() {
            let id = message.header("message-id").unwrap().to_owned();
            by_reader.entry(message.recipient).or_default().push(id);
        }
        by_reader.len() == READERS
    });
    let resent: Vec<_> = by_reader.values().filter(|ids| ids.len() > 1).collect();
    for ids in &resent {
        assert!(
            ids.iter().all(|id| id == &ids[0]),
            "a resend keeps its Message-ID: {ids:?}"
        );
        assert_eq!(ids.len(), 2, "resent once at most: {ids:?}");
    }
    assert!(
        resent.len() <= IN_FLIGHT,
        "{} readers got the issue twice; at most {IN_FLIGHT} were in flight",
        resent.len()
    );
    resent.len()
}

/// Kills the daemon in the middle of the send, restarts it at once, and
/// checks that the rest is delivered within 15 s of the restart.
fn killed_and_restarted(backend: &str, database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    let install = install(dir.path(), &sink, database_url);
    let mut daemon = install.serve(free_port());
    assert_eq!(daemon.send_now()["recipients"], READERS);
    sink.wait_for(READERS / 5, Duration::from_secs(60));
    daemon.signal("KILL");
    assert!(!daemon.wait_exit(Duration::from_secs(5)));
    let at_kill = sent_count(dir.path(), database_url);

    let restarted_at = Instant::now();
    let restarted = install.serve(free_port());
    wait_all_sent(dir.path(), database_url, Duration::from_secs(15));
    let recovery = restarted_at.elapsed();
    let resent = every_reader_once_or_resent_in_flight(&sink);
    let log = restarted.log_text();
    assert!(
        log.contains("took back the claims of"),
        "the restart says what it took back:\n{log}"
    );
    eprintln!(
        "recovery ({backend}): SIGKILL with {at_kill} of {READERS} sent; the rest sent {:.1} s \
         after the restart; 0 lost; {resent} sent twice",
        recovery.as_secs_f64()
    );
}

#[test]
fn a_sigkill_and_a_restart_on_sqlite_deliver_the_rest_within_15_s() {
    killed_and_restarted("sqlite", None);
}

#[test]
fn a_sigkill_and_a_restart_on_postgres_deliver_the_rest_within_15_s() {
    let database = PgDatabase::create();
    killed_and_restarted("postgres", Some(&database.url));
}

#[test]
fn when_one_of_two_postgres_instances_dies_the_other_delivers_its_claims_within_20_s() {
    let database = PgDatabase::create();
    let url = Some(database.url.as_str());
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    let install = install(dir.path(), &sink, url);
    let mut doomed = install.serve(free_port());
    let survivor = install.serve(free_port());
    assert_eq!(doomed.send_now()["recipients"], READERS);
    sink.wait_for(READERS / 5, Duration::from_secs(60));
    doomed.signal("KILL");
    let killed_at = Instant::now();
    assert!(!doomed.wait_exit(Duration::from_secs(5)));
    let at_kill = sent_count(dir.path(), url);

    wait_all_sent(dir.path(), url, Duration::from_secs(20));
    let recovery = killed_at.elapsed();
    let resent = every_reader_once_or_resent_in_flight(&sink);
    let log = survivor.log_text();
    assert!(
        log.contains("took back the claims of an instance that stopped beating"),
        "{log}"
    );
    eprintln!(
        "recovery (postgres, two instances): SIGKILL of one with {at_kill} of {READERS} sent; \
         all sent {:.1} s after the kill; 0 lost; {resent} sent twice",
        recovery.as_secs_f64()
    );
}

#[test]
fn a_second_serve_on_the_same_sqlite_file_refuses_to_start_and_the_cli_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path());
    let _daemon = install.serve(free_port());
    let second = install
        .clone()
        .set("TIDINGS_HTTP__BIND", format!("127.0.0.1:{}", free_port()))
        .run_within(&["serve"], Duration::from_secs(20));
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    let lock = std::fs::canonicalize(dir.path().join("tidings.db.lock")).unwrap();
    assert_eq!(
        stderr.lines().last().unwrap_or_default(),
        format!(
            "error: another tidings serve is running on this database: {} is locked \
             (one serve per SQLite file)",
            lock.display()
        )
    );
    // Every other command works beside the daemon.
    install.ok(&["subscriber", "add", "ada@example.com", "--confirmed"]);
    assert!(install
        .ok(&["subscriber", "list"])
        .contains("ada@example.com"));
    assert!(install.ok(&["post", "list"]).contains("Pitfall 1 of 10"));
}
