//! One `serve` per SQLite file: an exclusive lock on `<database>.lock`,
//! held for the daemon's life and let go by the OS however it ends. Whoever
//! holds it knows that every earlier `serve` on the file is dead, so it
//! can take their claims back at once rather than wait for a heartbeat to
//! go stale. The file holds the lease owner name of the `serve` that holds
//! it, which is how the next one finds its predecessor's claims.
//!
//! The other commands (`send-now` included) do not take it: they work
//! while the daemon runs.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another tidings serve is running on this database: {} is locked (one serve per SQLite file)",
        .0.display()
    )]
    Held(PathBuf),
    #[error("cannot lock {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database.url is not a SQLite URL")]
    Url(#[source] sqlx::Error),
}

/// The held lock; dropping it lets go.
#[derive(Debug)]
pub struct DatabaseLock {
    file: File,
    path: PathBuf,
    /// The lease owner of the `serve` that held it last, if it wrote one.
    predecessor: Option<String>,
}

impl DatabaseLock {
    /// Locks the file beside the database that `url` names; `None` for an
    /// in-memory database, which no other process can open.
    pub fn acquire(url: &str) -> Result<Option<Self>, LockError> {
        let options = SqliteConnectOptions::from_str(url).map_err(LockError::Url)?;
        let database = options.get_filename();
        // sqlx names an in-memory database `file:sqlx-in-memory-…`.
        if database.as_os_str().is_empty() || database.to_string_lossy().starts_with("file:") {
            return Ok(None);
        }
        let mut path = database.as_os_str().to_owned();
        path.push(".lock");
        Self::acquire_path(PathBuf::from(path)).map(Some)
    }

    fn acquire_path(path: PathBuf) -> Result<Self, LockError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| LockError::Io {
                path: path.clone(),
                source,
            })?;
        // The error names the file in full: the URL may be relative.
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(LockError::Held(path)),
            Err(TryLockError::Error(source)) => return Err(LockError::Io { path, source }),
        }
        let mut text = String::new();
        // Unreadable means no predecessor we can name; its claims then come
        // back when its heartbeat goes stale.
        let predecessor = file
            .read_to_string(&mut text)
            .ok()
            .map(|_| text.trim().to_owned())
            .filter(|owner| !owner.is_empty());
        Ok(Self {
            file,
            path,
            predecessor,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn predecessor(&self) -> Option<&str> {
        self.predecessor.as_deref()
    }

    /// Writes `owner` into the file for the next holder, before it claims
    /// anything.
    pub fn record_holder(&mut self, owner: &str) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.file.write_all(owner.as_bytes())?;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_the_next_one_finds_its_predecessor() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tidings.db").display());
        let mut first = DatabaseLock::acquire(&url).unwrap().unwrap();
        assert_eq!(first.path(), dir.path().join("tidings.db.lock"));
        assert_eq!(first.predecessor(), None);
        first.record_holder("host-1-first").unwrap();

        let refused = DatabaseLock::acquire(&url).unwrap_err();
        assert_eq!(
            refused.to_string(),
            format!(
                "another tidings serve is running on this database: {} is locked \
                 (one serve per SQLite file)",
                dir.path().join("tidings.db.lock").display()
            )
        );

        drop(first);
        let second = DatabaseLock::acquire(&url).unwrap().unwrap();
        assert_eq!(second.predecessor(), Some("host-1-first"));
    }

    #[test]
    fn an_in_memory_database_needs_no_lock() {
        assert!(DatabaseLock::acquire("sqlite::memory:").unwrap().is_none());
    }
}
