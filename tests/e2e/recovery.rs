//! Recovery by liveness: a daemon killed with SIGKILL in the middle of a
//! send, and what it had claimed delivered within seconds, by its restart
//! (SQLite, PostgreSQL) or by another instance (PostgreSQL), not when its
//! five-minute lease runs out. And one `serve` per SQLite file.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{
    free_port, sqlite_delivery_counts, sqlite_pairs, wait_until, Install, Sink, ADMIN_TOKEN,
};
use crate::postgres::{query_pairs, PgDatabase};

const READERS: usize = 5000;
/// The send that is killed ten times.
const MANY_READERS: usize = 20_000;
const KILLS: usize = 10;
/// `smtp.concurrency` (8 by default) × the unrecorded sends allowed per
/// connection (8): what may be accepted and not yet recorded at a SIGKILL.
const IN_FLIGHT: usize = 64;

/// An install sending to `sink`, with `readers` confirmed readers and one
/// post queued. The lease stays at its five-minute default: recovery must
/// not wait for it.
fn install_with(dir: &Path, sink: &Sink, database_url: Option<&str>, readers: usize) -> Install {
    let mut install = Install::new(dir)
        .set("TIDINGS_SMTP__URL", sink.url())
        .set("TIDINGS_ADMIN__TOKEN", ADMIN_TOKEN);
    if let Some(url) = database_url {
        install = install.set("TIDINGS_DATABASE__URL", url);
    }
    install.ok(&["subscriber", "generate", "--count", &readers.to_string()]);
    install.queue_post("The tip", "A tip worth waiting for.\n");
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

/// The tally of sends, which each write of outcomes keeps: it
/// must count every send once, kills and restarts or not.
fn tallied_sent(dir: &Path, database_url: Option<&str>) -> i64 {
    let sql = "SELECT 'sent', sent FROM issue_tallies";
    match database_url {
        None => sqlite_pairs(&dir.join("tidings.db"), sql)[0].1,
        Some(url) => query_pairs(url, sql)[0].1,
    }
}

fn install(dir: &Path, sink: &Sink, database_url: Option<&str>) -> Install {
    install_with(dir, sink, database_url, READERS)
}

/// Waits until every delivery is `sent`, at most `within`.
fn wait_all_sent(dir: &Path, database_url: Option<&str>, within: Duration) {
    wait_until("every delivery sent", within, || {
        sent_count(dir, database_url) == READERS as i64
    });
}

fn every_reader_once_or_resent_in_flight(sink: &Sink) -> usize {
    every_reader_once_or_resent_after(sink, READERS, 1)
}

/// Every reader got the issue; a reader who got it more than once got the
/// same Message-ID each time, and the copies beyond the first are no more
/// than were in flight at the `kills`. Returns those extra copies.
fn every_reader_once_or_resent_after(sink: &Sink, readers: usize, kills: usize) -> usize {
    let mut by_reader: HashMap<String, Vec<String>> = HashMap::new();
    wait_until("every message written out", Duration::from_secs(30), || {
        by_reader.clear();
        for message in sink.messages() {
            let id = message.header("message-id").unwrap().to_owned();
            by_reader.entry(message.recipient).or_default().push(id);
        }
        by_reader.len() == readers
    });
    let mut extra = 0;
    for ids in by_reader.values().filter(|ids| ids.len() > 1) {
        assert!(
            ids.iter().all(|id| id == &ids[0]),
            "a resend keeps its Message-ID: {ids:?}"
        );
        assert!(
            ids.len() <= 1 + kills,
            "resent once a kill at most: {ids:?}"
        );
        extra += ids.len() - 1;
    }
    assert!(
        extra <= IN_FLIGHT * kills,
        "{extra} copies sent again; at most {IN_FLIGHT} were in flight at each of {kills} kills"
    );
    extra
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
    assert_eq!(tallied_sent(dir.path(), database_url), READERS as i64);
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

/// Kills the daemon ten times in the middle of a 20,000-recipient send,
/// restarting it at once each time, and measures the time from the last
/// restart to the last delivery.
fn killed_ten_times(backend: &str, database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    let install = install_with(dir.path(), &sink, database_url, MANY_READERS);
    let mut daemon = install.serve(free_port());
    assert_eq!(daemon.send_now()["recipients"], MANY_READERS);
    let mut last_restart = Instant::now();
    for kill in 1..=KILLS {
        // Spread over the first two thirds of the send.
        sink.wait_for(kill * MANY_READERS / 16, Duration::from_secs(120));
        daemon.signal("KILL");
        assert!(!daemon.wait_exit(Duration::from_secs(5)));
        last_restart = Instant::now();
        daemon = install.serve(free_port());
    }
    let at_last = sent_count(dir.path(), database_url);
    wait_until("every delivery sent", Duration::from_secs(60), || {
        sent_count(dir.path(), database_url) == MANY_READERS as i64
    });
    let recovery = last_restart.elapsed();
    let extra = every_reader_once_or_resent_after(&sink, MANY_READERS, KILLS);
    assert_eq!(tallied_sent(dir.path(), database_url), MANY_READERS as i64);
    eprintln!(
        "recovery ({backend}, {KILLS} kills): {at_last} of {MANY_READERS} sent at the last \
         restart; all sent {:.1} s after it; 0 lost; {extra} copies sent twice",
        recovery.as_secs_f64()
    );
}

#[test]
fn ten_sigkills_in_a_20000_recipient_send_on_sqlite_lose_nothing() {
    killed_ten_times("sqlite", None);
}

#[test]
fn ten_sigkills_in_a_20000_recipient_send_on_postgres_lose_nothing() {
    let database = PgDatabase::create();
    killed_ten_times("postgres", Some(&database.url));
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
