//! The embedded backend: the store itself, its one writer connection and
//! the parts every aggregate's file shares. Write transactions start with
//! `BEGIN IMMEDIATE` on the writer. Times are stored as epoch milliseconds
//! ([`Millis`]).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, SqlitePool, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use super::rows::Millis;
use super::sql::SqlBackend;
use super::StoreResult;
use crate::config::{Backend, DatabaseSettings};

pub use lock::{DatabaseLock, LockError};

mod checkpoints;
mod deliveries;
mod issues;
mod lock;
mod outcomes;
mod signup;
mod subscribers;
#[cfg(test)]
mod tests;

pub struct SqliteStore {
    /// For reads, and for the data transfer between backends (`pool()`).
    pool: SqlitePool,
    /// One connection for every write, reached only through its lock.
    /// SQLite drops a connection's whole page cache when another connection
    /// has written since it last read; writes taking turns over the pool's
    /// connections re-read their pages from the OS on every transaction.
    /// And SQLite has one writer at a time: writers queue on this lock, in
    /// order, instead of in SQLite's busy handler, which sleeps in steps of
    /// up to 100 ms and gave signups a p99 of 600 ms under load. A bare
    /// connection, not a pool of one: a pool pings each connection given
    /// back to it, one more round trip to SQLite's thread that the next
    /// writer waited for.
    writer: Arc<Mutex<Writer>>,
    /// Copies the WAL into the database beside the writer (see
    /// `checkpoints`); stopped with the store.
    checkpointer: tokio::task::JoinHandle<()>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.checkpointer.abort();
    }
}

type Tx<'c> = Transaction<'c, Sqlite>;

pub(super) struct Writer {
    connection: SqliteConnection,
    /// A transaction was begun by hand, inside a statement list, and has not
    /// been committed or rolled back yet (see [`WriteLock::begin_by_hand`]).
    open_by_hand: bool,
}

/// The locked writer connection; it derefs to the connection.
pub(super) struct WriteLock<'a>(MutexGuard<'a, Writer>);

impl std::ops::Deref for WriteLock<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.0.connection
    }
}

impl std::ops::DerefMut for WriteLock<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.0.connection
    }
}

impl WriteLock<'_> {
    /// For a transaction whose `BEGIN IMMEDIATE` goes in one statement
    /// list with its first statements, and its `COMMIT` with its last:
    /// each statement list is one round trip to SQLite's thread, against
    /// one per statement through sqlx's `Transaction`. Call this before the
    /// first list, and [`Self::finish_by_hand`] with how it ended.
    pub(super) fn begin_by_hand(&mut self) {
        self.0.open_by_hand = true;
    }

    /// After the `COMMIT` went through, or with the error that stopped the
    /// transaction, which is then rolled back and returned.
    pub(super) async fn finish_by_hand<T>(&mut self, result: StoreResult<T>) -> StoreResult<T> {
        if result.is_err() {
            self.roll_back_by_hand().await;
        } else {
            self.0.open_by_hand = false;
        }
        result
    }

    /// Rolls the transaction begun by hand back if `result` failed.
    async fn finish_if_failed<T>(&mut self, result: Result<T, sqlx::Error>) -> StoreResult<T> {
        match result {
            Ok(value) => Ok(value),
            Err(error) => self.finish_by_hand(Err(error.into())).await,
        }
    }

    async fn roll_back_by_hand(&mut self) {
        // Fails harmlessly when the error came before `BEGIN` took effect
        // or SQLite rolled back on its own.
        if let Err(error) = sqlx::query("ROLLBACK").execute(&mut **self).await {
            tracing::debug!(%error, "no transaction to roll back");
        }
        self.0.open_by_hand = false;
    }
}

fn millis(time: DateTime<Utc>) -> Millis {
    Millis::from(time)
}

/// A JSON array for `json_each(?)`: how one statement takes many rows.
fn to_json(rows: &impl serde::Serialize) -> String {
    serde_json::to_string(rows).expect("plain rows serialise")
}

impl SqliteStore {
    pub async fn connect(settings: &DatabaseSettings) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(&settings.url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL survives a process crash; only an OS crash can
            // lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // Page caches are most of the daemon's memory in a large send, one
        // per connection. The writer's 4 MB holds the pages every write
        // touches (the due index, the newest rows); reads are point lookups
        // and counts that scan more than any cache holds, so 2 MB each.
        let reader_options = options.clone().pragma("cache_size", "-2000");
        // Checkpoints are the checkpointer's job (see `checkpoints`), not
        // the writer's. The writer restarts the WAL after them, cutting the
        // file back to 32 MB if a slow moment let it grow.
        let writer_options = options
            .clone()
            .pragma("cache_size", "-4000")
            .pragma("wal_autocheckpoint", "0")
            .pragma("journal_size_limit", "33554432");
        // A file has no far end to hang up; the default ping before every
        // acquire is one more round trip to SQLite's thread.
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(reader_options)
            .await?;
        let connection = SqliteConnection::connect_with(&writer_options).await?;
        let writer = Arc::new(Mutex::new(Writer {
            connection,
            open_by_hand: false,
        }));
        let checkpointer = checkpoints::start(&options, writer.clone()).await?;
        Ok(Self {
            pool,
            writer,
            checkpointer,
        })
    }

    /// The writer connection: for a single statement that writes, or for a
    /// write transaction through [`begin`].
    async fn lock(&self) -> WriteLock<'_> {
        let mut writer = WriteLock(self.writer.lock().await);
        if writer.0.open_by_hand {
            // Whoever began it was dropped halfway (a cancelled future).
            writer.roll_back_by_hand().await;
        }
        writer
    }
}

/// A write transaction on the locked writer connection.
async fn begin(writer: &mut SqliteConnection) -> StoreResult<Tx<'_>> {
    Ok(writer.begin_with("BEGIN IMMEDIATE").await?)
}

/// A write transaction for the SQL both backends share: the locked writer
/// with `BEGIN IMMEDIATE` run by hand, so it can own its lock. Dropped
/// without a commit, the next writer rolls it back (see `lock`).
pub(super) struct WriteTx<'a>(WriteLock<'a>);

impl std::ops::Deref for WriteTx<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.0
    }
}

impl std::ops::DerefMut for WriteTx<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.0
    }
}

#[async_trait]
impl SqlBackend for SqliteStore {
    const KIND: Backend = Backend::Sqlite;
    type Db = Sqlite;
    type Tx<'a> = WriteTx<'a>;

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn write(&self) -> StoreResult<WriteTx<'_>> {
        let mut writer = self.lock().await;
        writer.begin_by_hand();
        let begun = sqlx::query("BEGIN IMMEDIATE").execute(&mut *writer).await;
        writer.finish_if_failed(begun).await?;
        Ok(WriteTx(writer))
    }

    async fn commit(mut tx: WriteTx<'_>) -> StoreResult<()> {
        let committed = sqlx::query("COMMIT").execute(&mut *tx.0).await;
        tx.0.finish_by_hand(committed.map(drop).map_err(Into::into))
            .await
    }

    async fn roll_back(mut tx: WriteTx<'_>) -> StoreResult<()> {
        tx.0.roll_back_by_hand().await;
        Ok(())
    }

    async fn apply_migrations(&self) -> StoreResult<()> {
        // Through the pool, with the lock held so that nothing else writes:
        // the migrator takes an `Acquire`, which a borrowed connection in
        // this async trait cannot give.
        let _writer = self.lock().await;
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await?;
        Ok(())
    }
}
