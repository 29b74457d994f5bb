//! Outcomes are never given up: the database refuses every connection for
//! 20 s in the middle of a send, on a PostgreSQL cluster this test makes and
//! removes itself (the shared server on 5432 is never touched). Each write
//! then fails at once, as on a full disk: the recorder used to give a group
//! up after eight tries, about 16 s, and send it again when its lease ran
//! out; now it retries, and no more is sent meanwhile than the unrecorded
//! window allows. And the same cluster stopped for 20 s and started again,
//! where writes wait for a connection instead of failing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::cluster::PgCluster;
use crate::harness::{free_port, wait_until, Install, Sink, ADMIN_TOKEN};
use crate::postgres::query_pairs;
use crate::unrecorded::assert_window_held;

const READERS: usize = 600;
const OUTAGE: Duration = Duration::from_secs(20);

fn sent(url: &str) -> i64 {
    query_pairs(
        url,
        "SELECT 'sent', COUNT(*) FROM deliveries WHERE status = 'sent'",
    )[0]
    .1
}

fn messages_by_reader(sink: &Sink) -> HashMap<String, usize> {
    let mut by_reader = HashMap::new();
    for message in sink.messages() {
        *by_reader.entry(message.recipient).or_default() += 1;
    }
    by_reader
}

#[derive(Clone, Copy, PartialEq)]
enum Outage {
    /// Connections refused, the server up: writes fail at once.
    Refused,
    /// The server stopped: writes wait for a connection.
    Stopped,
}

#[test]
fn a_20_s_database_outage_mid_send_sends_nothing_twice_and_loses_nothing() {
    outage_mid_send(Outage::Refused);
}

#[test]
fn a_database_stopped_and_started_mid_send_sends_nothing_twice_and_loses_nothing() {
    outage_mid_send(Outage::Stopped);
}

fn outage_mid_send(outage: Outage) {
    let cluster = PgCluster::start();
    let url = cluster.create_database("tidings");
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    // At 100 sends a second, the send outlasts the outage's start.
    let install = Install::new(dir.path())
        .set("TIDINGS_DATABASE__URL", &url)
        .set("TIDINGS_SMTP__URL", sink.url())
        .set("TIDINGS_ADMIN__TOKEN", ADMIN_TOKEN)
        .set("TIDINGS_SMTP__RATE_PER_SECOND", "100");
    install.ok(&["subscriber", "generate", "--count", &READERS.to_string()]);
    install.queue_post("The tip", "Worth the wait.\n");
    let daemon = install.serve(free_port());
    assert_eq!(daemon.send_now()["recipients"], READERS);
    sink.wait_for(READERS / 5, Duration::from_secs(30));

    match outage {
        Outage::Refused => cluster.refuse_connections("tidings"),
        Outage::Stopped => cluster.stop(),
    }
    let stopped_at = Instant::now();
    let at_stop = messages_by_reader(&sink).len();
    std::thread::sleep(OUTAGE.saturating_sub(stopped_at.elapsed()));
    let before_restart = messages_by_reader(&sink).len();
    match outage {
        Outage::Refused => cluster.allow_connections("tidings"),
        Outage::Stopped => cluster.resume(),
    }
    assert!(
        before_restart < READERS,
        "the send was still going when the database stopped: {before_restart}"
    );

    wait_until("every delivery sent", Duration::from_secs(30), || {
        sent(&url) == READERS as i64
    });
    let mut by_reader = HashMap::new();
    wait_until("every message written out", Duration::from_secs(30), || {
        by_reader = messages_by_reader(&sink);
        by_reader.len() == READERS
    });
    let twice: Vec<_> = by_reader.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    // The tally, written with each group of outcomes, counted
    // every send once through the failed and retried writes.
    assert_eq!(
        query_pairs(&url, "SELECT 'sent', sent FROM issue_tallies")[0].1,
        READERS as i64
    );
    let log = daemon.log_text();
    let expected_lines = match outage {
        Outage::Refused => &[
            "recording outcomes failed; retrying until it succeeds",
            "recording outcomes succeeded after failing",
            "cannot write the heartbeat; no new claims or sends until it can",
            "heartbeat written again; claiming and sending resume",
        ][..],
        Outage::Stopped => &[][..],
    };
    for line in expected_lines {
        assert!(log.contains(line), "{line} in:\n{log}");
    }
    assert!(!log.contains("stopping with outcomes unrecorded"), "{log}");
    // Sending stopped while outcomes could not be written. A stopped
    // server may keep writes waiting for a connection rather than failing.
    let what = match outage {
        Outage::Refused => "connections refused",
        Outage::Stopped => "database stopped",
    };
    let stretches = assert_window_held(what, &log, &sink.messages());
    assert!(stretches > 0 || outage == Outage::Stopped, "{log}");
    eprintln!(
        "outage ({}): {at_stop} readers had the issue when the database went away, {before_restart} \
         when it came back {:.0} s later; all {READERS} once each",
        if outage == Outage::Refused { "refused" } else { "stopped" },
        OUTAGE.as_secs_f64()
    );
}
