//! A PostgreSQL cluster of a test's own, on a port of its own, that the
//! test may stop and start again: an outage without touching the shared
//! server on 5432. Made with initdb in a temporary folder, run as the
//! `postgres` user when the tests run as root, and removed at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::{free_port, is_root};

pub struct PgCluster {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
}

/// The newest installed server's programs (Debian: /usr/lib/postgresql/N/bin).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server programs must be installed (/usr/lib/postgresql)")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no initdb under /usr/lib/postgresql")
        .1
}

impl PgCluster {
    /// A new cluster, running, with trust authentication for `postgres`.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tidings-pg-")
            .tempdir()
            .unwrap();
        if is_root() {
            let owned = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(owned.success());
        }
        let cluster = Self {
            dir,
            port: free_port(),
            bin: bin_dir(),
        };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"],
        );
        cluster.resume();
        cluster
    }

    /// The cluster's own `postgres` database: the daemon migrates into it.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A new database in the cluster, and its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.sql(&format!("CREATE DATABASE {name}"));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Cuts every connection to `name` and refuses new ones, the server
    /// still running: each write fails at once, as on a full disk.
    pub fn refuse_connections(&self, name: &str) {
        self.sql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"));
        self.end_sessions(&format!("datname = '{name}'"));
    }

    pub fn allow_connections(&self, name: &str) {
        self.sql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"));
    }

    /// A role of its own for one instance, so that it alone can be cut off.
    /// A superuser, as `postgres` is: the tables are `postgres`'s.
    pub fn create_role(&self, role: &str) {
        self.sql(&format!("CREATE ROLE {role} LOGIN SUPERUSER"));
    }

    /// The URL of database `name` as `role`.
    pub fn url_as(&self, role: &str, name: &str) -> String {
        format!("postgres://{role}@127.0.0.1:{}/{name}", self.port)
    }

    /// Cuts every session of `role` and refuses it new ones; the server and
    /// every other role carry on: the instance that connects as `role` is
    /// cut off from the database while it keeps running.
    pub fn refuse_role(&self, role: &str) {
        self.sql(&format!("ALTER ROLE {role} NOLOGIN"));
        self.end_sessions(&format!("usename = '{role}'"));
    }

    pub fn allow_role(&self, role: &str) {
        self.sql(&format!("ALTER ROLE {role} LOGIN"));
    }

    /// Ends the sessions that `filter` (a condition on `pg_stat_activity`)
    /// picks out.
    fn end_sessions(&self, filter: &str) {
        self.sql(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {filter}"
        ));
    }

    fn sql(&self, statement: &str) {
        let port = self.port.to_string();
        self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-qc",
                statement,
            ],
        );
    }

    /// Starts the stopped cluster and waits until it takes connections.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        let (data, log) = (self.data(), log.display().to_string());
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        );
    }

    /// Stops the cluster: sessions are cut at once, as in a server crash
    /// or an operator's fast shutdown.
    pub fn stop(&self) {
        let data = self.data();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self
            .command(program)
            .args(args)
            .current_dir(Path::new("/"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
