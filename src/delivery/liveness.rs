//! The worker's heartbeat, and what it lets the worker do. Every
//! `HEARTBEAT_EVERY` the worker writes its heartbeat; then, if it is
//! alive, it takes back the claims of instances that stopped beating, and
//! every few seconds those whose lease expired (the last resort: an
//! instance that beats but has stalled). A worker that cannot write its
//! heartbeat claims nothing and starts no send until it can again
//! (`crate::domain::instance` has the rules and their times).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::DeliveryWorker;
use crate::domain::instance::{self, Rescue, HEARTBEAT_EVERY};

/// Expired leases are looked for this often.
const LEASE_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Whether this instance may claim and send, from its own heartbeats.
#[derive(Default)]
pub struct Liveness {
    beats: Mutex<Beats>,
    changed: Notify,
}

#[derive(Default)]
struct Beats {
    /// When the last heartbeat that was written began; none yet at start.
    last: Option<Instant>,
    /// Heartbeat gaps long enough for others to have taken our claims
    /// over: a claim taken before one is handed back, never sent.
    takeovers: u64,
}

impl Liveness {
    pub fn may_send(&self) -> bool {
        let beats = self.beats.lock().expect("liveness lock");
        beats
            .last
            .is_some_and(|last| instance::may_send(last.elapsed()))
    }

    /// Changes when other instances may have taken this one's claims; a
    /// claim is sent only while it has not changed since the claim.
    pub fn takeovers(&self) -> u64 {
        self.beats.lock().expect("liveness lock").takeovers
    }

    /// A heartbeat that began at `began` was written by `written`. Until
    /// then the database showed the last one, which was as old as it began:
    /// a write that hung for a while leaves as much of a gap as no write.
    fn beat(&self, began: Instant, written: Instant) {
        let mut beats = self.beats.lock().expect("liveness lock");
        if let Some(last) = beats.last {
            if instance::may_have_been_taken_over(written.saturating_duration_since(last)) {
                beats.takeovers += 1;
            }
        }
        beats.last = Some(beats.last.map_or(began, |last| last.max(began)));
        drop(beats);
        self.changed.notify_waiters();
    }

    /// Waits until this instance may send; `false` if `shutdown` came first.
    pub async fn wait_until_may_send(&self, shutdown: &CancellationToken) -> bool {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so no beat slips between them.
            changed.as_mut().enable();
            if self.may_send() {
                return true;
            }
            tokio::select! {
                () = changed => {}
                () = shutdown.cancelled() => return false,
            }
        }
    }
}

impl DeliveryWorker {
    /// Beats until `stop`, which the worker gives once its last outcome is
    /// written: a worker that is draining is still alive, and its claims
    /// are still its own.
    pub(super) async fn keep_alive(&self, stop: CancellationToken) {
        let mut next_lease_check = Instant::now();
        let mut failing = false;
        loop {
            let began = Instant::now();
            let now = self.clock.now();
            let written = self.store.heartbeat(&self.owner, now).await;
            self.health.record_write(&written);
            match written {
                Ok(()) => {
                    self.liveness.beat(began, Instant::now());
                    if failing {
                        tracing::info!(owner = %self.owner, "heartbeat written again; claiming and sending resume");
                        failing = false;
                    }
                }
                Err(error) => {
                    if !failing {
                        tracing::error!(
                            owner = %self.owner,
                            error = ?anyhow::Error::from(error),
                            "cannot write the heartbeat; no new claims or sends until it can"
                        );
                        failing = true;
                    }
                }
            }
            // Judging others is only fair while our own view is current.
            if self.liveness.may_send() {
                // Read again after the write, which may have hung a while.
                let now = self.clock.now();
                self.rescue(now).await;
                if Instant::now() >= next_lease_check {
                    self.reclaim_expired(self.clock.now()).await;
                    next_lease_check = Instant::now() + LEASE_CHECK_EVERY;
                }
            }
            tokio::select! {
                () = tokio::time::sleep_until((began + HEARTBEAT_EVERY).into()) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    async fn rescue(&self, now: chrono::DateTime<chrono::Utc>) {
        match self
            .store
            .rescue_claims(&Rescue::at(&self.owner, now))
            .await
        {
            Ok(rescued) => {
                for claims in &rescued {
                    tracing::warn!(
                        count = claims.count,
                        from = %claims.owner,
                        "took back the claims of an instance that stopped beating"
                    );
                }
                if !rescued.is_empty() {
                    self.wake.ring();
                }
            }
            Err(error) => {
                tracing::error!(error = ?anyhow::Error::from(error), "taking back the claims of dead instances failed")
            }
        }
    }

    async fn reclaim_expired(&self, now: chrono::DateTime<chrono::Utc>) {
        match self.store.reclaim_expired_leases(now).await {
            Ok(0) => {}
            Ok(count) => {
                tracing::warn!(count, "took back deliveries whose lease expired");
                self.wake.ring();
            }
            Err(error) => {
                tracing::error!(error = ?anyhow::Error::from(error), "reclaiming leases failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_is_sent_before_the_first_beat_nor_after_a_silence() {
        let liveness = Liveness::default();
        assert!(!liveness.may_send(), "not before the first heartbeat");
        let start = Instant::now();
        let after = |seconds| start + Duration::from_secs(seconds);
        liveness.beat(start, start);
        assert!(liveness.may_send());
        assert_eq!(liveness.takeovers(), 0);

        // A beat after a short gap is no takeover...
        liveness.beat(after(3), after(3));
        assert_eq!(liveness.takeovers(), 0);
        // ...but one after a gap in which we counted as dead is, whether
        // no write was tried or one hung.
        liveness.beat(after(14), after(14));
        assert_eq!(liveness.takeovers(), 1);
        liveness.beat(after(16), after(30));
        assert_eq!(liveness.takeovers(), 2);
    }

    #[tokio::test]
    async fn a_waiting_sender_goes_on_at_the_next_beat_or_at_shutdown() {
        let liveness = std::sync::Arc::new(Liveness::default());
        let shutdown = CancellationToken::new();
        let waiting = tokio::spawn({
            let (liveness, shutdown) = (liveness.clone(), shutdown.clone());
            async move { liveness.wait_until_may_send(&shutdown).await }
        });
        liveness.beat(Instant::now(), Instant::now());
        assert!(tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .unwrap()
            .unwrap());

        let silent = Liveness::default();
        shutdown.cancel();
        assert!(!silent.wait_until_may_send(&shutdown).await);
    }
}
