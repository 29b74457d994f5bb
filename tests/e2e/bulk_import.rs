//! `tidings subscriber import` of a large file: bounded transactions keep
//! SQLite's write-ahead log near its size limit (32 MiB, the writer's
//! `journal_size_limit`), and an import cut off by SIGKILL keeps what it
//! committed and can simply be run again.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{free_port, sqlite_count, Install};

const ROWS: usize = 20_000;
/// The writer's `journal_size_limit`.
const WAL_LIMIT: u64 = 32 << 20;
/// What "near" allows above it.
const WAL_SLACK: u64 = 4 << 20;

/// `count` rows, every other one pending.
fn write_csv(dir: &Path, count: usize) -> PathBuf {
    let mut text = String::from("email,name,status\n");
    for n in 0..count {
        let status = if n % 2 == 0 { "confirmed" } else { "pending" };
        text.push_str(&format!("reader{n}@example.com,Reader {n},{status}\n"));
    }
    let path = dir.join("readers.csv");
    std::fs::write(&path, text).unwrap();
    path
}

/// Samples the size of `db`'s WAL until stopped; the largest seen.
struct WalWatch {
    stop: Arc<AtomicBool>,
    largest: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WalWatch {
    fn start(db: &Path) -> Self {
        let wal = PathBuf::from(format!("{}-wal", db.display()));
        let stop = Arc::new(AtomicBool::new(false));
        let largest = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, largest) = (stop.clone(), largest.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(meta) = std::fs::metadata(&wal) {
                        largest.fetch_max(meta.len(), Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Self {
            stop,
            largest,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.largest.load(Ordering::SeqCst)
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

#[test]
fn importing_20000_rows_beside_a_running_daemon_keeps_the_wal_near_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tidings.db");
    let install = Install::new(dir.path()).set(
        "TIDINGS_DATABASE__URL",
        format!("sqlite://{}", db.display()),
    );
    // The daemon keeps the database open, as in production: its WAL is not
    // removed when the import's connections close.
    let daemon = install.serve(free_port());
    let csv = write_csv(dir.path(), ROWS);
    let watch = WalWatch::start(&db);
    let started = Instant::now();
    let output = install.ok(&["subscriber", "import", csv.to_str().unwrap()]);
    let took = started.elapsed();
    let largest = watch.finish();
    assert!(output.contains(&format!("{ROWS} added")), "{output}");
    assert_eq!(
        sqlite_count(&db, "SELECT COUNT(*) FROM subscribers"),
        ROWS as i64
    );
    let after = std::fs::metadata(format!("{}-wal", db.display()))
        .map(|meta| meta.len())
        .unwrap_or(0);
    let db_size = std::fs::metadata(&db).unwrap().len();
    println!(
        "import of {ROWS} rows: {:.1} s; WAL largest {:.1} MiB, after {:.1} MiB; database {:.1} MiB",
        took.as_secs_f64(),
        mib(largest),
        mib(after),
        mib(db_size)
    );
    assert!(
        largest <= WAL_LIMIT + WAL_SLACK,
        "the WAL grew to {:.1} MiB",
        mib(largest)
    );
    drop(daemon);
}

#[test]
fn an_import_killed_midway_and_run_again_leaves_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tidings.db");
    let install = Install::new(dir.path()).set(
        "TIDINGS_DATABASE__URL",
        format!("sqlite://{}", db.display()),
    );
    install.ok(&["migrate"]);
    let csv = write_csv(dir.path(), ROWS);
    let args = [
        "subscriber",
        "import",
        "--send-confirmations",
        csv.to_str().unwrap(),
    ];
    let mut import = install
        .command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let count = || sqlite_count(&db, "SELECT COUNT(*) FROM subscribers");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count() < 2_000 {
        assert!(Instant::now() < deadline, "the import wrote nothing");
        assert!(
            import.try_wait().unwrap().is_none(),
            "the import ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    import.kill().unwrap();
    import.wait().unwrap();
    let kept = count();
    println!("SIGKILL mid-import kept {kept} of {ROWS} rows");
    assert!(kept < ROWS as i64, "the import finished before the kill");

    // Running it again adds the rest and leaves the rows already in alone.
    let output = install.ok(&args);
    let added = ROWS as i64 - kept;
    assert!(
        output.contains(&format!("{added} added, {kept} already present")),
        "{output}"
    );
    assert_eq!(count(), ROWS as i64);
    assert_eq!(
        sqlite_count(&db, "SELECT COUNT(DISTINCT email) FROM subscribers"),
        ROWS as i64
    );
    assert_eq!(
        sqlite_count(
            &db,
            "SELECT COUNT(*) FROM consent_events WHERE kind = 'operator_add'"
        ),
        ROWS as i64,
        "each row's consent recorded once"
    );
    assert_eq!(
        sqlite_count(
            &db,
            "SELECT COUNT(*) FROM deliveries WHERE kind = 'confirmation'"
        ),
        ROWS as i64 / 2,
        "one confirmation email per pending row, none twice"
    );
}
