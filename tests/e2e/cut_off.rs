//! One of two PostgreSQL instances cut off from the database while it
//! keeps running: it must stop sending before the other takes its claims
//! over, the other delivers them, and once it can write again it carries
//! on without sending anything a second time.
//!
//! The cut: each instance connects as a role of its own on a cluster the
//! test starts, and the cut-off instance's role is refused logins and its
//! sessions are ended (`ALTER ROLE ... NOLOGIN`, `pg_terminate_backend`).
//! The server and the other instance's sessions carry on, as when one
//! host loses its network to the database; every statement of the cut-off
//! instance then fails at once rather than hanging.
//!
//! Messages are told apart by instance: each sends to an smtp-sink of its
//! own, which stamps every message with the time it arrived. The cut-off
//! instance sends slowly (4 a second) and claims 30 at a time, so it holds
//! more than it could send before the others count it dead, and its
//! window of unrecorded sends (64) takes longer than that to fill. So what
//! stops it in time is its own silent heartbeat, not the back-pressure of
//! outcomes it cannot write: without the first, it is still sending when
//! the other takes its claims over.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};

use crate::cluster::PgCluster;
use crate::harness::{
    free_port, log_field, wait_until, Daemon, Dumped, Install, Sink, ADMIN_TOKEN,
};
use crate::postgres::query_pairs;
use tidings::domain::instance::SILENT_AFTER;

const READERS: usize = 3000;
/// How long the instance stays cut off: the others count it dead after
/// 10 s without a heartbeat, and take its claims at their next check.
const CUT: Duration = Duration::from_secs(20);
/// `smtp.concurrency` (8) × the unrecorded sends allowed per connection
/// (8): what may have been accepted and not yet recorded at the cut.
const IN_FLIGHT: usize = 64;
/// An SMTP conversation the cut-off instance had already begun when it
/// fell silent may still end after that.
const LAST_CONVERSATION: Duration = Duration::from_secs(1);

/// The time at the head of a log line (RFC 3339, UTC).
fn logged_at(line: &str) -> DateTime<Utc> {
    let stamp = line.split_whitespace().next().unwrap_or_default();
    DateTime::parse_from_rfc3339(stamp)
        .unwrap_or_else(|_| panic!("no time at the head of {line:?}"))
        .into()
}

/// The first line of the daemon's log that contains every one of `parts`.
fn log_line(daemon: &Daemon, parts: &[&str]) -> Option<String> {
    daemon
        .log_text()
        .lines()
        .find(|line| parts.iter().all(|part| line.contains(part)))
        .map(str::to_owned)
}

/// The value of `field=` in a log line.
fn counts(url: &str) -> HashMap<String, i64> {
    query_pairs(
        url,
        "SELECT status, COUNT(*) FROM deliveries GROUP BY status",
    )
    .into_iter()
    .collect()
}

fn seconds(from: SystemTime, to: impl Into<SystemTime>) -> f64 {
    to.into()
        .duration_since(from)
        .map_or_else(|early| -early.duration().as_secs_f64(), |d| d.as_secs_f64())
}

#[test]
fn an_instance_cut_off_from_postgres_stops_sending_and_the_other_delivers_its_claims() {
    let cluster = PgCluster::start();
    let url = cluster.create_database("tidings");
    cluster.create_role("cut_off");
    cluster.create_role("survivor");
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path())
        .set("TIDINGS_DATABASE__URL", url.clone())
        .set("TIDINGS_ADMIN__TOKEN", ADMIN_TOKEN);
    install.ok(&["subscriber", "generate", "--count", &READERS.to_string()]);
    install.queue_post("The tip", "A tip worth waiting for.\n");

    let (slow, fast) = (Sink::start(&[]), Sink::start(&[]));
    let instance = |role: &str, sink: &Sink, rate: &str, batch: &str| {
        install
            .clone()
            .set("TIDINGS_DATABASE__URL", cluster.url_as(role, "tidings"))
            .set("TIDINGS_SMTP__URL", sink.url())
            .set("TIDINGS_SMTP__RATE_PER_SECOND", rate)
            .set("TIDINGS_SMTP__BATCH_SIZE", batch)
            .serve(free_port())
    };
    let cut_off = instance("cut_off", &slow, "4", "30");
    let survivor = instance("survivor", &fast, "100", "200");
    assert_eq!(survivor.send_now()["recipients"], READERS);
    slow.wait_for(10, Duration::from_secs(30));

    cluster.refuse_role("cut_off");
    let (cut_at, cut) = (SystemTime::now(), Instant::now());
    // What the cut-off instance holds: claimed, sent or not, unrecorded.
    let marker = format!("-{}-", cut_off.pid());
    let held: Vec<i64> = query_pairs(
        &url,
        "SELECT lease_owner, id::bigint FROM deliveries WHERE status = 'sending'",
    )
    .into_iter()
    .filter(|(owner, _)| owner.contains(&marker))
    .map(|(_, id)| id)
    .collect();
    assert!(!held.is_empty(), "the cut-off instance held claims");

    let failing = "cannot write the heartbeat; no new claims or sends until it can";
    let mut line = None;
    wait_until(
        "the cut-off instance to say so",
        Duration::from_secs(10),
        || {
            line = log_line(&cut_off, &[failing]);
            line.is_some()
        },
    );
    let owner = log_field(line.as_deref().unwrap(), "owner").to_owned();
    assert!(owner.contains(&marker), "{owner} is the cut-off process");

    let took_back = "took back the claims of an instance that stopped beating";
    let from = format!("from={owner}");
    let mut rescue = None;
    wait_until("the survivor to take its claims", CUT, || {
        rescue = log_line(&survivor, &[took_back, &from]);
        rescue.is_some()
    });
    let taken_over_at = logged_at(rescue.as_deref().unwrap());
    let held_list = held
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let held_sent = format!(
        "SELECT 'sent', COUNT(*) FROM deliveries WHERE status = 'sent' AND id IN ({held_list})"
    );
    wait_until("the survivor to deliver its claims", CUT, || {
        query_pairs(&url, &held_sent)[0].1 == held.len() as i64
    });
    let held_delivered = cut.elapsed();
    assert!(held_delivered < CUT, "delivered while it was still cut off");
    // The cut lasts its full time, as a lost network would: long after
    // the takeover, with the instance still running.
    std::thread::sleep(CUT - held_delivered);
    cluster.allow_role("cut_off");
    let restored_at = SystemTime::now();

    wait_until(
        "the cut-off instance to beat again",
        Duration::from_secs(10),
        || {
            log_line(
                &cut_off,
                &["heartbeat written again; claiming and sending resume"],
            )
            .is_some()
        },
    );
    wait_until("every delivery sent", Duration::from_secs(45), || {
        counts(&url).get("sent").copied() == Some(READERS as i64)
    });
    let done = cut.elapsed();
    // Every row is sent, so the servers have taken every message they
    // ever will; wait only for smtp-sink to finish writing them out.
    wait_until("every message written out", Duration::from_secs(30), || {
        let mut readers: Vec<_> = slow.messages();
        readers.extend(fast.messages());
        let readers: HashSet<_> = readers.into_iter().map(|m| m.recipient).collect();
        readers.len() == READERS
    });
    assert_eq!(
        counts(&url).len(),
        1,
        "nothing but sent: {:?}",
        counts(&url)
    );
    assert_eq!(
        query_pairs(&url, "SELECT 'sent', sent FROM issue_tallies"),
        [("sent".to_owned(), READERS as i64)]
    );

    // It stopped claiming once silent: during the cut, each claim it
    // tries fails, and says so.
    let silent_by = DateTime::<Utc>::from(cut_at + SILENT_AFTER + LAST_CONVERSATION);
    let log = cut_off.log_text();
    let late_claims: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("claiming deliveries failed"))
        .filter(|line| logged_at(line) > silent_by)
        .collect();
    assert!(
        late_claims.is_empty(),
        "the cut-off instance still tried to claim after it fell silent:\n{}",
        late_claims.join("\n")
    );

    // It fell silent before the survivor took over, within its own rule.
    let by_cut_off = slow.messages();
    let during: Vec<SystemTime> = by_cut_off
        .iter()
        .map(|message| message.received)
        .filter(|at| *at > cut_at && *at < restored_at)
        .collect();
    let last = during.iter().max().copied().unwrap_or(cut_at);
    assert!(
        during.len() <= IN_FLIGHT,
        "{} sent after the cut; at most {IN_FLIGHT} in flight",
        during.len()
    );
    assert!(
        seconds(cut_at, last) <= (SILENT_AFTER + LAST_CONVERSATION).as_secs_f64(),
        "the cut-off instance still sent {:.1} s after the cut",
        seconds(cut_at, last)
    );
    assert!(
        DateTime::<Utc>::from(last) < taken_over_at,
        "the cut-off instance sent at {} after the survivor took over at {taken_over_at}",
        DateTime::<Utc>::from(last)
    );
    // And it sends again once it can write: claims of its own, after it
    // took none of its old ones.
    let resumed = by_cut_off
        .iter()
        .filter(|message| message.received > restored_at)
        .count();
    assert!(resumed > 0, "the cut-off instance resumed sending");

    let resent = every_reader_with_resends_from_before_the_takeover(
        &by_cut_off,
        &fast.messages(),
        taken_over_at,
    );
    // Each copy sent twice is an outcome the cut-off instance wrote too
    // late: the survivor had taken the claim back by then.
    let refused: usize = log
        .lines()
        .filter(|line| line.contains("some claims were taken back before their outcome"))
        .map(|line| log_field(line, "lost").parse::<usize>().unwrap())
        .sum();
    assert_eq!(refused, resent, "outcomes refused, copies sent twice");
    eprintln!(
        "cut off (postgres, two instances): {} of {READERS} held by the cut-off instance; \
         survivor took them back {:.1} s after the cut and delivered them by {:.1} s; \
         the cut-off instance sent {} after the cut, the last {:.1} s after it, {resumed} after \
         the role came back; all sent {:.1} s after the cut; \
         0 lost; {resent} sent twice",
        held.len(),
        seconds(cut_at, taken_over_at),
        held_delivered.as_secs_f64(),
        during.len(),
        seconds(cut_at, last),
        done.as_secs_f64(),
    );
}

/// Every reader got the issue. A reader who got it twice got it once from
/// each instance, with one Message-ID, and the cut-off instance's copy
/// left before the survivor took its claims over. Returns those readers.
fn every_reader_with_resends_from_before_the_takeover(
    by_cut_off: &[Dumped],
    by_survivor: &[Dumped],
    taken_over_at: DateTime<Utc>,
) -> usize {
    let mut copies: HashMap<&str, Vec<(Option<SystemTime>, &str)>> = HashMap::new();
    let all = by_cut_off
        .iter()
        .map(|message| (Some(message.received), message))
        .chain(by_survivor.iter().map(|message| (None, message)));
    for (at, message) in all {
        let id = message.header("message-id").unwrap();
        copies.entry(&message.recipient).or_default().push((at, id));
    }
    assert_eq!(copies.len(), READERS, "every reader got the issue");
    let twice: Vec<_> = copies.values().filter(|sent| sent.len() > 1).collect();
    for sent in &twice {
        assert!(
            sent.iter().all(|(_, id)| *id == sent[0].1),
            "a resend keeps its Message-ID: {sent:?}"
        );
        let from_cut_off: Vec<_> = sent.iter().filter_map(|(at, _)| *at).collect();
        assert!(
            sent.len() == 2 && from_cut_off.len() == 1,
            "once from each instance: {sent:?}"
        );
        assert!(
            DateTime::<Utc>::from(from_cut_off[0]) < taken_over_at,
            "sent twice only what the cut-off instance sent before the takeover: {sent:?}"
        );
    }
    assert!(
        twice.len() <= IN_FLIGHT,
        "{} sent twice; at most {IN_FLIGHT} were in flight",
        twice.len()
    );
    twice.len()
}
