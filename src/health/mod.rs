//! Whether this instance can do its work now, for `/healthz` and for the
//! signup path. Cheap enough to be asked often: a dead task is a flag, the
//! free space is read at most once a second, and the database is judged
//! by the last write the daemon made (signups, heartbeats). Only when no
//! write is known from the last two seconds, or the last one failed, does
//! a check write one small row itself, one check at a time, and at most
//! once a second.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::DatabaseSettings;
use crate::store::{Store, StoreError, StoreResult};

pub mod disk;

pub use disk::{DiskGuard, LowDisk};

/// A successful write this recent vouches for the database.
const WRITE_VOUCHES_FOR: Duration = Duration::from_secs(2);
/// A failed write this recent is believed without writing again.
const FAILURE_BELIEVED_FOR: Duration = Duration::from_secs(1);
/// A check's own write that takes longer counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// After such a write, a read that takes longer means no connection.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the instance is not healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A supervised task (the delivery worker, the scheduler, the signup
    /// writer) has ended; the daemon is stopping.
    TaskStopped(&'static str),
    DiskNearlyFull(LowDisk),
    /// The database answers, but refuses writes (a full disk, read-only).
    NotWritable,
    /// No connection, or no answer in time.
    Unreachable,
}

impl Problem {
    /// A stable name for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            Problem::TaskStopped(_) => "task_stopped",
            Problem::DiskNearlyFull(_) => "disk_nearly_full",
            Problem::NotWritable => "database_not_writable",
            Problem::Unreachable => "database_unreachable",
        }
    }

    /// For people; says nothing about the machine beyond what an operator
    /// configured.
    pub fn describe(&self) -> String {
        match self {
            Problem::TaskStopped(task) => format!("{task} has stopped; the daemon is stopping"),
            Problem::DiskNearlyFull(low) => format!(
                "free space on the database's filesystem ({} MiB) is below \
                 database.min_free_space ({} MiB)",
                low.free >> 20,
                low.min_free >> 20
            ),
            Problem::NotWritable => "the database does not take writes".to_owned(),
            Problem::Unreachable => "the database is not answering".to_owned(),
        }
    }
}

#[derive(Clone, Copy)]
struct LastWrite {
    at: Instant,
    /// `None` when it succeeded.
    problem: Option<WriteProblem>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WriteProblem {
    NotWritable,
    Unreachable,
}

pub struct Health {
    disk: Option<DiskGuard>,
    last_write: Mutex<Option<LastWrite>>,
    /// One check writes at a time; the others wait and read its result.
    probing: tokio::sync::Mutex<()>,
    stopped_task: Mutex<Option<&'static str>>,
}

impl Health {
    pub fn new(database: &DatabaseSettings) -> Self {
        Self::with_disk_guard(DiskGuard::for_database(database))
    }

    pub fn with_disk_guard(disk: Option<DiskGuard>) -> Self {
        Self {
            disk,
            last_write: Mutex::new(None),
            probing: tokio::sync::Mutex::new(()),
            stopped_task: Mutex::new(None),
        }
    }

    /// Free space below `database.min_free_space` (SQLite only).
    pub fn disk_nearly_full(&self) -> Option<LowDisk> {
        self.disk.as_ref()?.check()
    }

    /// The result of a write the daemon made. Errors that are not an outage
    /// (a bug, bad data) say nothing about the database and are left out.
    pub fn record_write<T>(&self, result: &StoreResult<T>) {
        let problem = match result {
            Ok(_) => None,
            Err(error) if error.is_outage() => Some(write_problem(error)),
            Err(_) => return,
        };
        *lock(&self.last_write) = Some(LastWrite {
            at: Instant::now(),
            problem,
        });
    }

    /// Called by the supervisor when a task ends before it was told to.
    pub fn task_stopped(&self, task: &'static str) {
        lock(&self.stopped_task).get_or_insert(task);
    }

    /// The task that stopped, if one did.
    pub fn stopped_task(&self) -> Option<&'static str> {
        *lock(&self.stopped_task)
    }

    /// The first problem found, cheapest check first; `None` when healthy.
    pub async fn check(&self, store: &dyn Store) -> Option<Problem> {
        if let Some(task) = self.stopped_task() {
            return Some(Problem::TaskStopped(task));
        }
        if let Some(low) = self.disk_nearly_full() {
            return Some(Problem::DiskNearlyFull(low));
        }
        if let Some(known) = self.known_write_state() {
            return known;
        }
        let _turn = self.probing.lock().await;
        // Whoever had the turn before may have just written.
        if let Some(known) = self.known_write_state() {
            return known;
        }
        let problem = match tokio::time::timeout(PROBE_TIMEOUT, store.probe_write()).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => {
                // An error that is no outage by its kind is a failed write all the same.
                let problem = match error.is_outage() {
                    true => write_problem(&error),
                    false => WriteProblem::NotWritable,
                };
                self.log_failure(Some(anyhow::Error::from(error)));
                Some(problem)
            }
            // A write still waiting: for a connection (PostgreSQL away),
            // or behind a long write (SQLite has one writer). A read tells
            // which.
            Err(_) => {
                self.log_failure(None);
                match tokio::time::timeout(PING_TIMEOUT, store.ping()).await {
                    Ok(Ok(())) => Some(WriteProblem::NotWritable),
                    _ => Some(WriteProblem::Unreachable),
                }
            }
        };
        let previous = lock(&self.last_write).replace(LastWrite {
            at: Instant::now(),
            problem,
        });
        if problem.is_none() && previous.is_some_and(|p| p.problem.is_some()) {
            tracing::info!("health check: the database takes writes again");
        }
        problem.map(Problem::from)
    }

    /// Once per outage, not once per check.
    fn log_failure(&self, error: Option<anyhow::Error>) {
        let failing = (*lock(&self.last_write)).is_some_and(|last| last.problem.is_some());
        if failing {
            return;
        }
        match error {
            Some(error) => {
                tracing::warn!(error = ?error, "health check: the database did not take a write")
            }
            None => tracing::warn!(
                "health check: the database did not take a write within {PROBE_TIMEOUT:?}"
            ),
        }
    }

    /// `Some(verdict)` when a recent write settles it.
    fn known_write_state(&self) -> Option<Option<Problem>> {
        let last = (*lock(&self.last_write))?;
        let age = last.at.elapsed();
        match last.problem {
            None if age < WRITE_VOUCHES_FOR => Some(None),
            Some(problem) if age < FAILURE_BELIEVED_FOR => Some(Some(problem.into())),
            _ => None,
        }
    }
}

impl From<WriteProblem> for Problem {
    fn from(problem: WriteProblem) -> Self {
        match problem {
            WriteProblem::NotWritable => Problem::NotWritable,
            WriteProblem::Unreachable => Problem::Unreachable,
        }
    }
}

/// No connection, or a connection lost, is unreachable; an answer that
/// refuses the write is not writable.
fn write_problem(error: &StoreError) -> WriteProblem {
    let unreachable = match error {
        StoreError::Database(error) => matches!(
            error,
            sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
        ),
        StoreError::PartlyWritten(error) => return write_problem(error),
        _ => false,
    };
    if unreachable {
        WriteProblem::Unreachable
    } else {
        WriteProblem::NotWritable
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
