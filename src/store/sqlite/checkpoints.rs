//! WAL checkpoints, from a connection of their own.
//!
//! SQLite's automatic checkpoint runs inside whichever COMMIT takes the WAL
//! past 1000 pages, on the writer, and waits for two fsyncs there. Under a
//! burst of signups that was several times a second, and every signup
//! waiting on the writer waited with it.
//!
//! Here a passive checkpoint copies the WAL into the database beside the
//! writer, without blocking it. That alone never lets the WAL start over
//! from its beginning: SQLite restarts it only in a write transaction that
//! began with every frame copied, and the writer commits again while each
//! checkpoint runs, so the file grew by hundreds of MB. So a second pass
//! runs while holding the write lock; it has only the last moment's frames
//! to copy, and the next write transaction can restart the WAL. It is
//! skipped while the disk is slow (the first pass took long): its fsyncs
//! would then hold up every writer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, SqliteConnection};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::Writer;

/// Often enough that the WAL stays a few MB at the highest write rates.
const INTERVAL: Duration = Duration::from_millis(250);
/// A pass this quick leaves little for the one under the write lock.
const SLOW_PASS: Duration = Duration::from_millis(10);
/// Passes that may be slow before this tick gives up on restarting the WAL.
const MAX_PASSES: usize = 4;

/// Runs until aborted (the store aborts it when dropped).
pub(super) async fn start(
    options: &SqliteConnectOptions,
    writer: Arc<Mutex<Writer>>,
) -> sqlx::Result<JoinHandle<()>> {
    let mut connection = options.connect().await?;
    Ok(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if catch_up(&mut connection).await {
                let _no_writes = writer.lock().await;
                checkpoint(&mut connection).await;
            }
        }
    }))
}

/// Passes beside the writer, each copying what was written during the one
/// before, until one is quick; whether one was.
async fn catch_up(connection: &mut SqliteConnection) -> bool {
    for _ in 0..MAX_PASSES {
        let started = Instant::now();
        if !checkpoint(connection).await {
            return false;
        }
        if started.elapsed() < SLOW_PASS {
            return true;
        }
    }
    false
}

/// Whether the checkpoint ran.
async fn checkpoint(connection: &mut SqliteConnection) -> bool {
    match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .execute(&mut *connection)
        .await
    {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(%error, "WAL checkpoint failed; trying again shortly");
            false
        }
    }
}
