//! Recovery by liveness: a daemon killed with SIGKILL in the middle of a
//! send, and what it had claimed delivered within seconds, by its restart
//! (SQLite, PostgreSQL) or by another instance (PostgreSQL), not when its
//! five-minute lease runs out. And one `serve` per SQLite file, beside
//! which a `send-now` keeps its claims while it lives.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{
    free_port, log_field, send_signal, sqlite_delivery_counts, sqlite_pairs, wait_until, Install,
    Sink, ADMIN_TOKEN,
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

/// Claims held now, by the process id in each lease owner's name
/// (`host-pid-time-suffix`, `tidings::delivery::new_owner`).
fn claims_by_pid(dir: &Path, database_url: Option<&str>) -> HashMap<u32, i64> {
    let sql = "SELECT lease_owner, COUNT(*) FROM deliveries \
               WHERE status = 'sending' GROUP BY lease_owner";
    let rows = match database_url {
        None => sqlite_pairs(&dir.join("tidings.db"), sql),
        Some(url) => query_pairs(url, sql),
    };
    rows.into_iter()
        .map(|(owner, count)| (owner_pid(&owner), count))
        .collect()
}

/// Waits until no session but the asking one is open on the database. A
/// SIGKILLed client's sessions end only once PostgreSQL has finished what
/// it had been sent: a COMMIT of a claim or of outcomes can land after the
/// kill, so claims counted before it are off by that group.
fn wait_sessions_ended(url: &str) {
    let sql = "SELECT 'sessions', COUNT(*) FROM pg_stat_activity \
               WHERE datname = current_database() AND pid <> pg_backend_pid()";
    wait_until(
        "the killed daemon's sessions ended",
        Duration::from_secs(10),
        || query_pairs(url, sql)[0].1 == 0,
    );
}

fn owner_pid(owner: &str) -> u32 {
    let pid = owner.rsplit('-').nth(2);
    pid.and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no process id in the lease owner {owner}"))
}

/// The log's lines that say `what`: from whose process, and how many.
fn taken_back(log: &str, what: &str) -> Vec<(u32, i64)> {
    log.lines()
        .filter(|line| line.contains(what))
        .map(|line| {
            let (from, count) = (log_field(line, "from"), log_field(line, "count"));
            (owner_pid(from), count.parse().unwrap())
        })
        .collect()
}

const TOOK_OVER: &str = "took back the claims of the daemon that ran before on this file";
const RESCUED: &str = "took back the claims of an instance that stopped beating";

/// Kills the daemon ten times in the middle of a 20,000-recipient send,
/// restarting it at once each time. Each kill comes once the daemon has
/// sent since it started and holds claims; what it held is taken back, on
/// SQLite by the restart as it starts, on PostgreSQL by whichever daemon
/// runs when its heartbeat is 10 s old. The rest is sent within 30 s of
/// the last restart.
fn killed_ten_times(backend: &str, database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    let install = install_with(dir.path(), &sink, database_url, MANY_READERS);
    let mut daemon = install.serve(free_port());
    assert_eq!(daemon.send_now()["recipients"], MANY_READERS);
    let mut last_restart = Instant::now();
    // Each killed daemon's process id and the claims it held.
    let mut killed = Vec::new();
    let mut logs = Vec::new();
    for kill in 1..=KILLS {
        let sent_at_start = sent_count(dir.path(), database_url);
        // Spread over the first two thirds of the send.
        let due = (kill * MANY_READERS / 16) as i64;
        let pid = daemon.pid();
        wait_until(
            "the daemon in the middle of sending",
            Duration::from_secs(120),
            || {
                let sent = sent_count(dir.path(), database_url);
                sent > sent_at_start
                    && sent >= due
                    && claims_by_pid(dir.path(), database_url)
                        .get(&pid)
                        .is_some_and(|held| *held > 0)
            },
        );
        daemon.signal("KILL");
        assert!(!daemon.wait_exit(Duration::from_secs(5)));
        if let Some(url) = database_url {
            wait_sessions_ended(url);
        }
        let held = claims_by_pid(dir.path(), database_url)
            .get(&pid)
            .copied()
            .unwrap_or(0);
        killed.push((pid, held));
        logs.push(daemon.log.clone());
        last_restart = Instant::now();
        daemon = install.serve(free_port());
        if database_url.is_none() {
            let expected = if held > 0 { vec![(pid, held)] } else { vec![] };
            assert_eq!(
                taken_back(&daemon.log_text(), TOOK_OVER),
                expected,
                "the restart takes back what the daemon before it held:\n{}",
                daemon.log_text()
            );
        }
    }
    let at_last = sent_count(dir.path(), database_url);
    wait_until("every delivery sent", Duration::from_secs(60), || {
        sent_count(dir.path(), database_url) == MANY_READERS as i64
    });
    let recovery = last_restart.elapsed();
    logs.push(daemon.log.clone());
    if database_url.is_some() {
        let rescued: Vec<(u32, i64)> = logs
            .iter()
            .flat_map(|log| taken_back(&std::fs::read_to_string(log).unwrap(), RESCUED))
            .collect();
        for &(pid, held) in &killed {
            let back: i64 = rescued
                .iter()
                .filter(|(p, _)| *p == pid)
                .map(|(_, n)| n)
                .sum();
            assert_eq!(
                back, held,
                "claims of process {pid} taken back: {rescued:?}"
            );
        }
    }
    let extra = every_reader_once_or_resent_after(&sink, MANY_READERS, KILLS);
    assert_eq!(tallied_sent(dir.path(), database_url), MANY_READERS as i64);
    let held: Vec<i64> = killed.iter().map(|(_, held)| *held).collect();
    eprintln!(
        "recovery ({backend}, {KILLS} kills): claims held at the kills {held:?}, all taken back; \
         {at_last} of {MANY_READERS} sent at the last restart; all sent {:.1} s after it; \
         0 lost; {extra} copies sent twice",
        recovery.as_secs_f64()
    );
    assert!(
        recovery < Duration::from_secs(30),
        "{recovery:?} from the last restart to the last send"
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

/// A `send-now` takes no lock, so a `serve` that starts beside it cannot
/// tell it from a dead one but by its heartbeat, and a live one keeps
/// sending what it claimed until its heartbeat is 6 s old: the serve takes
/// back at start only its predecessor's claims, never a send-now's, even
/// one whose heartbeat is seconds old. Had it taken them, the send-now
/// would send them too and find its outcomes fenced off. Killed, the
/// send-now's claims come back once its heartbeat is 10 s old.
#[test]
fn a_serve_leaves_a_live_send_now_its_claims_and_takes_them_back_once_it_is_killed() {
    const SEND_NOW_READERS: usize = 4000;
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    // Both paced, so that both are still sending at the kill.
    let install = install_with(dir.path(), &sink, None, SEND_NOW_READERS)
        .set("TIDINGS_SMTP__RATE_PER_SECOND", "100");
    let log = dir.path().join("send-now.log");
    let mut send_now = install
        .command(&["send-now"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = send_now.id();
    let claims_of = |pid: u32| {
        claims_by_pid(dir.path(), None)
            .get(&pid)
            .copied()
            .unwrap_or(0)
    };
    wait_until("the send-now sending", Duration::from_secs(60), || {
        sent_count(dir.path(), None) >= 200 && claims_of(pid) > 0
    });

    // Paused (a slow disk, a stalled VM) long enough for its heartbeat to
    // be seconds old when the serve starts, and short of the 6 s after
    // which it would stop sending by itself.
    send_signal(pid, "STOP");
    let paused_at = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let daemon = install.serve(free_port());
    send_signal(pid, "CONT");
    let paused = paused_at.elapsed();
    let joined_at = sent_count(dir.path(), None);
    // A few of the serve's 2 s checks for dead instances pass meanwhile.
    wait_until("the serve sending too", Duration::from_secs(60), || {
        sent_count(dir.path(), None) >= joined_at + 600 && claims_of(daemon.pid()) > 0
    });
    let beside = daemon.log_text();
    assert!(taken_back(&beside, TOOK_OVER).is_empty(), "{beside}");
    assert!(taken_back(&beside, RESCUED).is_empty(), "{beside}");
    assert!(claims_of(pid) > 0, "the send-now kept its claims");

    send_now.kill().unwrap();
    send_now.wait().unwrap();
    let killed_at = Instant::now();
    let held = claims_of(pid);
    assert!(held > 0, "the send-now held claims at the kill");
    wait_until(
        "the send-now's claims taken back",
        Duration::from_secs(30),
        || claims_of(pid) == 0,
    );
    let back_after = killed_at.elapsed();
    assert_eq!(taken_back(&daemon.log_text(), RESCUED), [(pid, held)]);
    wait_until("every delivery sent", Duration::from_secs(90), || {
        sent_count(dir.path(), None) == SEND_NOW_READERS as i64
    });
    let resent = every_reader_once_or_resent_after(&sink, SEND_NOW_READERS, 1);
    let send_now_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !send_now_log.contains("taken back before their outcome was recorded"),
        "{send_now_log}"
    );
    eprintln!(
        "send-now beside a serve (sqlite): paused {:.1} s as the serve started, kept its \
         claims; {held} taken back {:.1} s after its SIGKILL; 0 lost; {resent} sent twice",
        paused.as_secs_f64(),
        back_after.as_secs_f64()
    );
    // Its last heartbeat is at most 2 s old at the kill, and the serve
    // checks every 2 s: 10 s to count as dead, and some slack.
    assert!(back_after < Duration::from_secs(15), "{back_after:?}");
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
