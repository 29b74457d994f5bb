//! The delivery worker: one machine for confirmation emails and weekly
//! issues alike. It claims a batch of due deliveries with a lease, sends
//! each over `smtp.concurrency` connections, and records every outcome,
//! fenced on its lease, as soon as the database writer is free.
//!
//! Crash safety: a row is `sending` (leased) before we talk to SMTP and
//! `sent` right after the 250 reply, so a crash can only resend the
//! messages in flight, and they keep their Message-ID. The worker beats a
//! heartbeat (`liveness`), so that the claims of a worker that died are
//! taken back within seconds, and its outcomes are never given up while
//! it runs (`recorder`).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use tokio::sync::{mpsc, Mutex, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::SmtpSettings;
use crate::domain::delivery::{ClaimRequest, ClaimedDelivery, DeliveryOutcome};
use crate::health::Health;
use crate::mailer::{Mailer, SendResult};
use crate::metrics::Metrics;
use crate::store::SharedStore;
pub use breaker::Breaker;

mod breaker;
pub mod compose;
mod headers;
mod liveness;
mod prepared;
mod recorder;

pub use liveness::Liveness;
use recorder::Record;

/// The delivery worker's wake-up. The service (`crate::newsletter`) rings
/// it, and only it, right after it has queued email; the worker waits on it
/// between polls.
#[derive(Clone, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    pub(crate) fn ring(&self) {
        self.0.notify_one();
    }

    /// Resolves at the next ring (or at once for one nobody heard yet).
    pub async fn rung(&self) {
        self.0.notified().await;
    }
}

use compose::{Composed, Composer};

const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// Sends per connection that may be accepted by the server but not yet
/// recorded. This bounds what a SIGKILL can make us send twice:
/// `smtp.concurrency` × this, while outcomes are still written in groups.
pub const UNRECORDED_PER_CONNECTION: usize = 8;

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub rate_per_second: u32,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub lease: Duration,
    pub batch_size: u32,
    /// How often to look for due work when nobody wakes us.
    pub poll_interval: Duration,
}

impl WorkerSettings {
    pub fn from_smtp(smtp: &SmtpSettings) -> Self {
        Self {
            concurrency: smtp.concurrency,
            rate_per_second: smtp.rate_per_second,
            max_attempts: smtp.max_attempts,
            retry_base: smtp.retry_base,
            lease: smtp.lease,
            batch_size: smtp.batch_size,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Exponential backoff from `base`, doubled per attempt, ±20 % jitter, at most 1 h.
pub fn retry_delay(base: Duration, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    let delay = base.saturating_mul(1 << doublings).min(MAX_RETRY_DELAY);
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    delay.mul_f64(jitter).min(MAX_RETRY_DELAY)
}

/// A claim waiting for a free connection, with when we took it.
struct Claim {
    delivery: ClaimedDelivery,
    claimed_at: Instant,
    /// [`Liveness::takeovers`] when it was claimed.
    takeovers: u64,
}

pub struct DeliveryWorker {
    pub store: SharedStore,
    pub mailer: Arc<Mailer>,
    pub composer: Arc<Composer>,
    pub settings: WorkerSettings,
    pub clock: SharedClock,
    pub wake: Wake,
    pub metrics: Arc<Metrics>,
    /// Unique per process; every lease and update is fenced on it.
    pub owner: String,
    pub breaker: Breaker,
    pub liveness: Liveness,
    /// Told of every heartbeat write, so `/healthz` need not write its own.
    pub health: Arc<Health>,
}

impl DeliveryWorker {
    /// Runs until `shutdown`, then finishes the sends in flight, records
    /// them, and hands unstarted claims back. It beats its heartbeat all
    /// along, and forgets its instance row once done.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let beats = CancellationToken::new();
        // On this task, not spawned: a panic in either ends the worker,
        // which the supervisor reports.
        tokio::join!(self.keep_alive(beats.clone()), async {
            self.clone().work(shutdown).await;
            beats.cancel();
        });
        if let Err(error) = self.store.deregister(&self.owner).await {
            tracing::error!(
                owner = %self.owner,
                error = ?anyhow::Error::from(error),
                "cannot remove this instance's row; it goes when its heartbeat is stale"
            );
        }
        tracing::info!(owner = %self.owner, "delivery worker stopped");
    }

    async fn work(self: Arc<Self>, shutdown: CancellationToken) {
        let capacity = self.settings.batch_size as usize;
        let (work_tx, work_rx) = mpsc::channel::<Claim>(capacity);
        let work_rx = Arc::new(Mutex::new(work_rx));
        let (record_tx, record_rx) = mpsc::channel::<Record>(capacity * 2);
        let limiter = NonZeroU32::new(self.settings.rate_per_second)
            .map(|rate| Arc::new(RateLimiter::direct(Quota::per_second(rate))));

        let unrecorded = Arc::new(Semaphore::new(
            self.settings.concurrency * UNRECORDED_PER_CONNECTION,
        ));
        let recorder = tokio::spawn({
            let worker = self.clone();
            let shutdown = shutdown.clone();
            async move { worker.record(record_rx, shutdown).await }
        });
        let senders: Vec<_> = (0..self.settings.concurrency)
            .map(|_| {
                tokio::spawn(self.clone().send_loop(
                    work_rx.clone(),
                    record_tx.clone(),
                    limiter.clone(),
                    unrecorded.clone(),
                    shutdown.clone(),
                ))
            })
            .collect();
        drop(record_tx);

        self.claim_loop(work_tx, &shutdown).await;
        for sender in senders {
            let _ = sender.await;
        }
        let _ = recorder.await;
    }

    async fn claim_loop(&self, work_tx: mpsc::Sender<Claim>, shutdown: &CancellationToken) {
        while !shutdown.is_cancelled() {
            // No claims while the SMTP server is unreachable, nor while our
            // heartbeat cannot be written.
            self.breaker.wait(shutdown).await;
            if !self.liveness.wait_until_may_send(shutdown).await {
                break;
            }
            let takeovers = self.liveness.takeovers();
            let now = self.clock.now();
            let limit = self.settings.batch_size;
            let request = ClaimRequest {
                owner: self.owner.clone(),
                now,
                lease_until: now
                    + chrono::Duration::from_std(self.settings.lease).unwrap_or_default(),
                limit,
            };
            let claimed = match self.store.claim_deliveries(request).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::error!(error = ?anyhow::Error::from(error), "claiming deliveries failed");
                    Vec::new()
                }
            };
            let full_batch = claimed.len() as u32 == limit;
            let claimed_at = Instant::now();
            for delivery in claimed {
                // Blocks while every connection is busy: natural backpressure.
                if work_tx
                    .send(Claim {
                        delivery,
                        claimed_at,
                        takeovers,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if full_batch {
                continue;
            }
            tokio::select! {
                () = self.wake.rung() => {}
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    async fn send_loop(
        self: Arc<Self>,
        work_rx: Arc<Mutex<mpsc::Receiver<Claim>>>,
        record_tx: mpsc::Sender<Record>,
        limiter: Option<Arc<DefaultDirectRateLimiter>>,
        unrecorded: Arc<Semaphore>,
        shutdown: CancellationToken,
    ) {
        loop {
            let next = {
                let mut receiver = work_rx.lock().await;
                tokio::select! {
                    claim = receiver.recv() => claim,
                    // Stop waiting for new work; the claim loop closes the channel.
                    _ = shutdown.cancelled() => receiver.try_recv().ok(),
                }
            };
            let Some(claim) = next else { break };
            // Claims are handed back, without using an attempt, when they
            // waited out an outage (their subscriber's status may have
            // changed since), when the server is unreachable, when they
            // waited most of their lease or our heartbeat stopped long
            // enough (someone else may own them now), and at shutdown.
            let paused = self.breaker.wait(&shutdown).await;
            let permit = if paused || !self.liveness.wait_until_may_send(&shutdown).await {
                None
            } else {
                // Waits while the unrecorded window is full.
                tokio::select! {
                    permit = unrecorded.clone().acquire_owned() => {
                        Some(permit.expect("the semaphore is never closed"))
                    }
                    () = shutdown.cancelled() => None,
                }
            };
            if let (Some(_), Some(limiter)) = (&permit, &limiter) {
                limiter.until_ready().await;
            }
            let record = match permit {
                Some(permit) if self.still_ours(&claim, &shutdown) => {
                    match self.attempt(&claim.delivery).await {
                        Some(outcome) => Record::Outcome(outcome, permit),
                        None => Record::Release(claim.delivery.id),
                    }
                }
                _ => Record::Release(claim.delivery.id),
            };
            if record_tx.send(record).await.is_err() {
                break;
            }
        }
    }

    /// Whether a claim may be sent now: we are alive, nobody may have taken
    /// it over, no stop was asked for, and the breaker did not open while
    /// this sender waited its turn.
    fn still_ours(&self, claim: &Claim, shutdown: &CancellationToken) -> bool {
        let stale = claim.claimed_at.elapsed() > self.settings.lease.mul_f64(0.8);
        !stale
            && !shutdown.is_cancelled()
            && !self.breaker.is_open()
            && self.liveness.may_send()
            && self.liveness.takeovers() == claim.takeovers
    }

    /// The outcome of one attempt, or `None` when the server could not be
    /// reached at all: the breaker is tripped and nothing is recorded.
    async fn attempt(&self, delivery: &ClaimedDelivery) -> Option<DeliveryOutcome> {
        let composed = match self.composer.compose(delivery).await {
            Ok(composed) => composed,
            Err(error) => {
                tracing::error!(delivery = delivery.id, error = ?anyhow::Error::from(error), "cannot compose email");
                return Some(self.transient(delivery, "could not compose the email".into()));
            }
        };
        let (envelope, bytes) = match composed {
            Composed::Skip(reason) => {
                self.metrics
                    .skipped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Some(DeliveryOutcome::Skipped {
                    id: delivery.id,
                    reason,
                    at: self.clock.now(),
                });
            }
            Composed::Email { envelope, bytes } => (envelope, bytes),
        };
        self.metrics
            .send_attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = Instant::now();
        let result = self
            .mailer
            .send(&envelope, &bytes, &delivery.message_id)
            .await;
        if !matches!(result, SendResult::Unreachable(_)) {
            self.breaker.succeeded();
        }
        Some(match result {
            SendResult::Unreachable(error) => {
                self.metrics
                    .transient_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match self.breaker.failed(started) {
                    Some(pause) => {
                        tracing::warn!(%error, ?pause, "SMTP server unreachable; pausing all sends")
                    }
                    None => tracing::debug!(%error, "SMTP server unreachable"),
                }
                return None;
            }
            SendResult::Accepted { reply } => {
                self.metrics.record_sent();
                DeliveryOutcome::Sent {
                    id: delivery.id,
                    reply,
                    at: self.clock.now(),
                }
            }
            SendResult::Transient(error) => {
                self.metrics
                    .transient_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(delivery = delivery.id, attempt = delivery.attempts, %error, "temporary send failure");
                self.transient(delivery, error)
            }
            SendResult::Permanent(error) => {
                self.metrics
                    .permanent_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(delivery = delivery.id, %error, "permanent send failure");
                DeliveryOutcome::Failed {
                    id: delivery.id,
                    subscriber_id: delivery.subscriber_id,
                    error,
                    hard_bounce: true,
                    at: self.clock.now(),
                }
            }
        })
    }

    fn transient(&self, delivery: &ClaimedDelivery, error: String) -> DeliveryOutcome {
        if delivery.attempts >= self.settings.max_attempts {
            return DeliveryOutcome::Failed {
                id: delivery.id,
                subscriber_id: delivery.subscriber_id,
                error: format!("gave up after {} attempts: {error}", delivery.attempts),
                hard_bounce: false,
                at: self.clock.now(),
            };
        }
        let delay = retry_delay(self.settings.retry_base, delivery.attempts);
        DeliveryOutcome::Retry {
            id: delivery.id,
            error,
            next_attempt_at: self.clock.now()
                + chrono::Duration::from_std(delay).unwrap_or_default(),
        }
    }
}

/// A fresh lease owner name: host, process and a random suffix.
pub fn new_owner() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    format!(
        "{host}-{}-{}-{}",
        std::process::id(),
        Utc::now().timestamp(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_secs(60);
        for attempts in 1..=4u32 {
            let expected = 60.0 * f64::from(1 << (attempts - 1));
            let delay = retry_delay(base, attempts).as_secs_f64();
            assert!(
                delay >= expected * 0.8 && delay <= expected * 1.2,
                "{attempts}: {delay}"
            );
        }
        assert!(retry_delay(base, 30) <= MAX_RETRY_DELAY);
    }
}
