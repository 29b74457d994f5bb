//! The recorder: writes what the senders report, in groups, and never gives
//! an outcome up while the daemon runs. A write that fails is tried again,
//! 100 ms apart doubling to 2 s, until it succeeds. Meanwhile the senders'
//! permits for unrecorded sends stay taken, so once `smtp.concurrency` ×
//! `UNRECORDED_PER_CONNECTION` sends are waiting to be recorded no new send
//! starts: an outage of the database costs time, not a second copy.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::{DeliveryWorker, UNRECORDED_PER_CONNECTION};
use crate::domain::delivery::DeliveryOutcome;
use crate::store::StoreResult;

const MAX_OUTCOMES_PER_WRITE: usize = 1000;
/// While outcomes trickle in (confirmation emails during a burst of
/// signups), the recorder waits this long for more before it writes: every
/// write takes SQLite's one write lock, and the signups queue for it too.
const RECORD_LINGER: Duration = Duration::from_millis(10);
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(2);
/// After a stop is asked for, how long writes may keep failing before the
/// recorder gives up, so that the process still exits (see [`Drain`]).
const DRAIN_WRITES: Duration = Duration::from_secs(10);

pub(super) enum Record {
    /// The permit is given back once the outcome is committed.
    Outcome(DeliveryOutcome, OwnedSemaphorePermit),
    /// Claimed but not attempted: give it back without counting an attempt.
    Release(i64),
}

/// When to stop retrying: never while the daemon runs. Once it is told to
/// stop, writes that keep failing are given up `DRAIN_WRITES` after the
/// first such failure, and the process exits. What was given up stays
/// `sending` under this instance's lease. Its heartbeat stops with it, so
/// the next `serve` on the SQLite file takes those claims back as it
/// starts, and on PostgreSQL any instance takes them back once the
/// heartbeat is ten seconds old. Those the server had accepted are then sent
/// a second time, with their Message-ID: at most the unrecorded window.
struct Drain {
    shutdown: CancellationToken,
    give_up_at: Option<Instant>,
}

impl Drain {
    fn gives_up(&mut self) -> bool {
        if !self.shutdown.is_cancelled() {
            return false;
        }
        let give_up_at = *self
            .give_up_at
            .get_or_insert_with(|| Instant::now() + DRAIN_WRITES);
        Instant::now() >= give_up_at
    }
}

impl DeliveryWorker {
    /// Writes outcomes in groups: whatever piled up while the last write ran.
    pub(super) async fn record(
        &self,
        mut record_rx: mpsc::Receiver<Record>,
        shutdown: CancellationToken,
    ) {
        let mut drain = Drain {
            shutdown,
            give_up_at: None,
        };
        // Half the sends allowed unrecorded: the senders never wait on a
        // write that is lingering for company.
        let enough = (self.settings.concurrency * UNRECORDED_PER_CONNECTION / 2).max(1);
        while let Some(first) = record_rx.recv().await {
            let mut outcomes = Vec::new();
            let mut permits = Vec::new();
            let mut releases = Vec::new();
            let linger_until = tokio::time::Instant::now() + RECORD_LINGER;
            let mut next = Some(first);
            while let Some(record) = next {
                match record {
                    Record::Outcome(outcome, permit) => {
                        outcomes.push(outcome);
                        permits.push(permit);
                    }
                    Record::Release(id) => releases.push(id),
                }
                next = if outcomes.len() + releases.len() >= MAX_OUTCOMES_PER_WRITE {
                    None
                } else if outcomes.len() < enough {
                    tokio::time::timeout_at(linger_until, record_rx.recv())
                        .await
                        .ok()
                        .flatten()
                } else {
                    record_rx.try_recv().ok()
                };
            }
            if !outcomes.is_empty() {
                let written = self
                    .until_written("recording outcomes", &mut drain, || {
                        self.store.record_outcomes(&self.owner, &outcomes)
                    })
                    .await;
                match written {
                    Some(applied) if applied < outcomes.len() as u64 => tracing::warn!(
                        lost = outcomes.len() as u64 - applied,
                        "some claims were taken back before their outcome was recorded"
                    ),
                    Some(_) => {}
                    None => tracing::error!(
                        count = outcomes.len(),
                        "stopping with outcomes unrecorded; these deliveries will be sent again"
                    ),
                }
            }
            drop(permits);
            if !releases.is_empty() {
                let released = self
                    .until_written("handing claims back", &mut drain, || {
                        self.store.release_claims(&self.owner, &releases)
                    })
                    .await;
                if released.is_none() {
                    tracing::error!(
                        count = releases.len(),
                        "stopping with claims not handed back; they are taken back once this instance is known to be dead"
                    );
                }
            }
        }
    }

    /// Runs `write` until it succeeds, or until `drain` gives up (`None`).
    async fn until_written<T, F, W>(&self, what: &str, drain: &mut Drain, write: W) -> Option<T>
    where
        W: Fn() -> F,
        F: Future<Output = StoreResult<T>>,
    {
        let mut delay = FIRST_RETRY;
        let mut failures = 0u32;
        loop {
            match write().await {
                Ok(value) => {
                    if failures > 0 {
                        tracing::info!(failures, "{what} succeeded after failing");
                    }
                    return Some(value);
                }
                Err(error) => {
                    // The first failure of a run is logged with its cause;
                    // the rest of the run would only repeat it.
                    if failures == 0 {
                        tracing::error!(error = ?anyhow::Error::from(error), "{what} failed; retrying until it succeeds");
                    } else {
                        tracing::debug!(failures, "{what} failed again");
                    }
                    failures += 1;
                }
            }
            if drain.gives_up() {
                return None;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY);
        }
    }
}
