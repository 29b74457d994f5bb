//! The free-space guard, as Postfix's `queue_minfree`: below
//! `database.min_free_space` on the filesystem that holds the SQLite file,
//! signups are refused (503 with Retry-After) and `/healthz` answers 503,
//! before SQLite runs out of room mid-write. PostgreSQL's disk is the
//! server's, so there is no guard for it.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;

use crate::config::{Backend, DatabaseSettings};

/// A statfs is cheap, but signups come by the thousand a second.
const READ_EVERY: Duration = Duration::from_secs(1);

/// Free space below the minimum, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowDisk {
    pub free: u64,
    pub min_free: u64,
}

pub struct DiskGuard {
    /// The folder of the database file (its WAL lives there too).
    folder: PathBuf,
    min_free: u64,
    last: Mutex<Option<Reading>>,
}

#[derive(Clone, Copy)]
struct Reading {
    at: Instant,
    /// `None` when the filesystem could not be read.
    free: Option<u64>,
}

impl DiskGuard {
    /// `None` for PostgreSQL, an in-memory database, or a minimum of 0.
    pub fn for_database(settings: &DatabaseSettings) -> Option<Self> {
        if settings.backend != Backend::Sqlite || settings.min_free_space == 0 {
            return None;
        }
        let file = sqlite_file(&settings.url)?;
        let folder = match file.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        Some(Self::new(folder, settings.min_free_space))
    }

    pub fn new(folder: PathBuf, min_free: u64) -> Self {
        Self {
            folder,
            min_free,
            last: Mutex::new(None),
        }
    }

    /// Whether free space is below the minimum, read at most once a second.
    /// A warning is logged when it falls below, and a note when it is back:
    /// once per crossing, not per request.
    pub fn check(&self) -> Option<LowDisk> {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let reading = match *last {
            Some(reading) if reading.at.elapsed() < READ_EVERY => reading,
            previous => {
                let reading = Reading {
                    at: Instant::now(),
                    free: self.read(previous),
                };
                self.log_crossing(previous.and_then(|p| p.free), reading.free);
                *last = Some(reading);
                reading
            }
        };
        let free = reading.free?;
        (free < self.min_free).then_some(LowDisk {
            free,
            min_free: self.min_free,
        })
    }

    fn read(&self, previous: Option<Reading>) -> Option<u64> {
        match free_bytes(&self.folder) {
            Ok(free) => Some(free),
            Err(error) => {
                // Logged when it starts failing; the guard stays open meanwhile,
                // since an unreadable folder says nothing about its space.
                if previous.is_none_or(|p| p.free.is_some()) {
                    tracing::warn!(
                        folder = %self.folder.display(),
                        error = ?anyhow::Error::from(error),
                        "cannot read the free space of the database's filesystem; \
                         database.min_free_space is not enforced until it can"
                    );
                }
                None
            }
        }
    }

    fn log_crossing(&self, before: Option<u64>, now: Option<u64>) {
        let Some(free) = now else { return };
        let was_low = before.map(|before| before < self.min_free);
        let is_low = free < self.min_free;
        if is_low && was_low != Some(true) {
            tracing::warn!(
                folder = %self.folder.display(),
                free_bytes = free,
                min_free_bytes = self.min_free,
                "free space on the database's filesystem is below database.min_free_space: \
                 signups get 503 until there is room again"
            );
        } else if !is_low && was_low == Some(true) {
            tracing::info!(
                folder = %self.folder.display(),
                free_bytes = free,
                "free space on the database's filesystem is back above \
                 database.min_free_space: signups are taken again"
            );
        }
    }
}

/// Bytes an unprivileged process may still write on `path`'s filesystem.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stats = rustix::fs::statvfs(path)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// The database file a `sqlite:` URL names, unless it is in memory.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    if url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let options = SqliteConnectOptions::from_str(url).ok()?;
    Some(options.get_filename().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, min_free_space: u64) -> DatabaseSettings {
        DatabaseSettings {
            min_free_space,
            ..DatabaseSettings::from_url(url, 1).unwrap()
        }
    }

    #[test]
    fn the_guard_watches_the_folder_of_a_sqlite_file_only() {
        let guard = DiskGuard::for_database(&settings("sqlite:///var/lib/t/t.db", 1)).unwrap();
        assert_eq!(guard.folder, Path::new("/var/lib/t"));
        let guard = DiskGuard::for_database(&settings("sqlite://tidings.db", 1)).unwrap();
        assert_eq!(guard.folder, Path::new("."));
        assert!(DiskGuard::for_database(&settings("sqlite://t.db", 0)).is_none());
        assert!(DiskGuard::for_database(&settings("sqlite::memory:", 1)).is_none());
        assert!(DiskGuard::for_database(&settings("postgres://db/t", 1)).is_none());
    }

    #[test]
    fn below_the_minimum_is_low_and_the_reading_is_kept_for_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        let roomy = DiskGuard::new(dir.path().to_owned(), 1);
        assert_eq!(roomy.check(), None);
        let cramped = DiskGuard::new(dir.path().to_owned(), u64::MAX);
        let low = cramped.check().expect("nobody has u64::MAX bytes free");
        assert_eq!(low.min_free, u64::MAX);
        // Within the second, the same reading answers.
        assert_eq!(cramped.check(), Some(low));
    }

    #[test]
    fn an_unreadable_folder_leaves_the_guard_open() {
        let guard = DiskGuard::new(PathBuf::from("/nonexistent/tidings"), u64::MAX);
        assert_eq!(guard.check(), None);
    }
}
