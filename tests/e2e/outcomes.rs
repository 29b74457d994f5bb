//! Outcomes are never given up: the database refuses every connection for
//! 20 s in the middle of a send, on a PostgreSQL cluster this test makes and
//! removes itself (the shared server on 5432 is never touched). Each write
//! then fails at once, as on a full disk: the recorder used to give a group
//! up after eight tries, about 16 s, and send it again when its lease ran
//! out.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{free_port, wait_until, Install, Sink, ADMIN_TOKEN};
use crate::postgres::query_pairs;

const READERS: usize = 600;
const OUTAGE: Duration = Duration::from_secs(20);

/// A PostgreSQL cluster of the test's own, run as the `postgres` user in a
/// temporary folder; stopped and removed when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl Cluster {
    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries in /usr/lib/postgresql")
            .flatten()
            .map(|version| version.path().join("bin"))
            .find(|bin| bin.join("initdb").exists())
            .expect("initdb in /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        as_postgres(&format!("chown postgres {}", dir.path().display()), true);
        let cluster = Self {
            dir,
            bin,
            port: free_port(),
        };
        cluster.pg(&format!(
            "initdb -D {} -A trust -U postgres --no-sync",
            cluster.data().display()
        ));
        cluster.pg(&format!(
            "pg_ctl -D {} -l {}/log -w -o '-p {} -k {} -c listen_addresses=127.0.0.1' start",
            cluster.data().display(),
            cluster.dir.path().display(),
            cluster.port,
            cluster.dir.path().display()
        ));
        cluster.sql("CREATE DATABASE tidings");
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The database tidings uses; the cluster's `postgres` one is for us.
    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/tidings", self.port)
    }

    fn sql(&self, statement: &str) {
        self.pg(&format!(
            "psql -h 127.0.0.1 -p {} -U postgres -d postgres -v ON_ERROR_STOP=1 -qc \"{statement}\"",
            self.port
        ));
    }

    /// Every connection to `tidings` is cut, and every new one refused.
    fn refuse(&self) {
        self.sql("ALTER DATABASE tidings ALLOW_CONNECTIONS false");
        self.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'tidings'",
        );
    }

    fn accept(&self) {
        self.sql("ALTER DATABASE tidings ALLOW_CONNECTIONS true");
    }

    fn pg(&self, command: &str) {
        as_postgres(&format!("{}/{command}", self.bin.display()), false);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data().display().to_string(), "-m", "immediate"])
            .arg("stop")
            .output();
    }
}

/// Runs a shell command as `postgres` (or as ourselves, for `chown`).
fn as_postgres(command: &str, as_root: bool) {
    let output = if as_root {
        Command::new("sh").args(["-c", command]).output()
    } else {
        Command::new("runuser")
            .args(["-u", "postgres", "--", "sh", "-c", command])
            .output()
    }
    .unwrap();
    assert!(
        output.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

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

#[test]
fn a_20_s_database_outage_mid_send_sends_nothing_twice_and_loses_nothing() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    // At 100 sends a second, the send outlasts the outage's start.
    let install = Install::new(dir.path())
        .set("TIDINGS_DATABASE__URL", cluster.url())
        .set("TIDINGS_SMTP__URL", sink.url())
        .set("TIDINGS_ADMIN__TOKEN", ADMIN_TOKEN)
        .set("TIDINGS_SMTP__RATE_PER_SECOND", "100");
    install.ok(&["subscriber", "generate", "--count", &READERS.to_string()]);
    let post = dir.path().join("post.md");
    std::fs::write(&post, "Worth the wait.\n").unwrap();
    install.ok(&[
        "post",
        "add",
        "--subject",
        "The tip",
        post.to_str().unwrap(),
    ]);
    let daemon = install.serve(free_port());
    assert_eq!(daemon.send_now()["recipients"], READERS);
    sink.wait_for(READERS / 5, Duration::from_secs(30));

    cluster.refuse();
    let stopped_at = Instant::now();
    let at_stop = messages_by_reader(&sink).len();
    std::thread::sleep(OUTAGE.saturating_sub(stopped_at.elapsed()));
    let before_restart = messages_by_reader(&sink).len();
    cluster.accept();
    assert!(
        before_restart < READERS,
        "the send was still going when the database stopped: {before_restart}"
    );

    let url = cluster.url();
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
    let log = daemon.log_text();
    for line in [
        "recording outcomes failed; retrying until it succeeds",
        "recording outcomes succeeded after failing",
        "cannot write the heartbeat; no new claims or sends until it can",
        "heartbeat written again; claiming and sending resume",
    ] {
        assert!(log.contains(line), "{line} in:\n{log}");
    }
    assert!(!log.contains("stopping with outcomes unrecorded"), "{log}");
    eprintln!(
        "outage: {at_stop} readers had the issue when the database went away, {before_restart} \
         when it came back {:.0} s later; all {READERS} once each",
        OUTAGE.as_secs_f64()
    );
}
