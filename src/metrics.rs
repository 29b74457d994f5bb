//! Counters for `/metrics`. Database-backed figures (subscribers and
//! deliveries by status) come from a snapshot at most `SNAPSHOT_MAX_AGE`
//! old, so a scrape costs the database nothing however often it comes:
//! counting a million subscribers took about 190 ms, and 32 scrapers
//! counting at once starved the health check. The rest are per process.

use std::fmt::Write;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::delivery::DeliveryCounts;
use crate::domain::subscriber::SubscriberCounts;

const RATE_WINDOW_SECONDS: usize = 60;

/// How stale the subscriber and delivery counts of a scrape may be.
pub const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(5);

/// At most one honeypot log line per this long; the rest are only counted.
const HONEYPOT_LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Metrics {
    pub send_attempts: AtomicU64,
    pub sent: AtomicU64,
    pub transient_failures: AtomicU64,
    pub permanent_failures: AtomicU64,
    pub skipped: AtomicU64,
    pub honeypot_hits: AtomicU64,
    pub busy_refusals: AtomicU64,
    recent: Mutex<RecentSends>,
    honeypot_logged: Mutex<Option<Instant>>,
    counts: StoreCounts,
}

/// The database's counts, as of `at`.
#[derive(Debug, Clone)]
pub struct Counts {
    pub at: Instant,
    pub subscribers: SubscriberCounts,
    pub deliveries: DeliveryCounts,
}

/// The last counts read, refreshed by one scrape at a time: others wait
/// for it and share its result.
#[derive(Default)]
struct StoreCounts {
    last: tokio::sync::Mutex<Option<Arc<Counts>>>,
    /// Set while refreshes fail, so the failure is logged once.
    failing: AtomicBool,
}

/// Sends per second over the last minute, in one-second buckets.
struct RecentSends {
    started: Instant,
    buckets: [(u64, u64); RATE_WINDOW_SECONDS],
}

impl Default for RecentSends {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            buckets: [(u64::MAX, 0); RATE_WINDOW_SECONDS],
        }
    }
}

impl RecentSends {
    fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    fn record(&mut self, count: u64) {
        let second = self.second();
        let bucket = &mut self.buckets[second as usize % RATE_WINDOW_SECONDS];
        if bucket.0 != second {
            *bucket = (second, 0);
        }
        bucket.1 += count;
    }

    fn per_second(&self) -> f64 {
        let now = self.second();
        let total: u64 = self
            .buckets
            .iter()
            .filter(|(second, _)| {
                *second != u64::MAX && now.saturating_sub(*second) < RATE_WINDOW_SECONDS as u64
            })
            .map(|(_, count)| count)
            .sum();
        let window = (now + 1).min(RATE_WINDOW_SECONDS as u64);
        total as f64 / window as f64
    }
}

impl Metrics {
    pub fn record_sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.recent.lock().expect("metrics lock").record(1);
    }

    /// Counts a filled-in honeypot; logs one line now and then, not one per
    /// bot.
    pub fn record_honeypot_hit(&self) {
        let total = self.honeypot_hits.fetch_add(1, Ordering::Relaxed) + 1;
        let mut logged = self.honeypot_logged.lock().expect("metrics lock");
        if !logged.is_some_and(|at| at.elapsed() < HONEYPOT_LOG_EVERY) {
            *logged = Some(Instant::now());
            tracing::info!(
                total,
                "honeypot field filled in; signups ignored (counted in tidings_honeypot_hits_total)"
            );
        }
    }

    pub fn record_busy_refusal(&self) {
        self.busy_refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// The store's counts, at most `SNAPSHOT_MAX_AGE` old. When a refresh
    /// fails, the last counts are served (and the failure logged once);
    /// with none yet, the error is returned. A failed refresh leaves the
    /// snapshot's age as it was, so the next call tries the store again.
    pub async fn store_counts<F, Fut, E>(&self, read: F) -> Result<Arc<Counts>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(SubscriberCounts, DeliveryCounts), E>>,
        E: std::fmt::Debug,
    {
        self.store_counts_at(Instant::now(), read).await
    }

    /// `store_counts` as of `now`, the moment of the call: the tests set it.
    async fn store_counts_at<F, Fut, E>(&self, now: Instant, read: F) -> Result<Arc<Counts>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(SubscriberCounts, DeliveryCounts), E>>,
        E: std::fmt::Debug,
    {
        let mut last = self.counts.last.lock().await;
        if let Some(counts) = last.as_ref() {
            if now.saturating_duration_since(counts.at) < SNAPSHOT_MAX_AGE {
                return Ok(counts.clone());
            }
        }
        match read().await {
            Ok((subscribers, deliveries)) => {
                self.counts.failing.store(false, Ordering::Relaxed);
                let counts = Arc::new(Counts {
                    at: now,
                    subscribers,
                    deliveries,
                });
                *last = Some(counts.clone());
                Ok(counts)
            }
            Err(error) => match last.as_ref() {
                Some(counts) => {
                    if !self.counts.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            error = ?error,
                            "cannot refresh the counts for /metrics; serving the last ones"
                        );
                    }
                    Ok(counts.clone())
                }
                None => Err(error),
            },
        }
    }

    pub fn send_rate(&self) -> f64 {
        self.recent.lock().expect("metrics lock").per_second()
    }

    pub fn render(
        &self,
        subscribers: &SubscriberCounts,
        deliveries: &DeliveryCounts,
        next_send_unix: Option<i64>,
    ) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "tidings_subscribers",
            "gauge",
            "Subscribers by status.",
        );
        for (status, count) in [
            ("pending", subscribers.pending),
            ("confirmed", subscribers.confirmed),
            ("unsubscribed", subscribers.unsubscribed),
            ("bounced", subscribers.bounced),
        ] {
            let _ = writeln!(out, "tidings_subscribers{{status=\"{status}\"}} {count}");
        }
        header(
            &mut out,
            "tidings_deliveries",
            "gauge",
            "Deliveries (emails) by status.",
        );
        for (status, count) in [
            ("pending", deliveries.pending),
            ("sending", deliveries.sending),
            ("sent", deliveries.sent),
            ("failed", deliveries.failed),
            ("skipped", deliveries.skipped),
        ] {
            let _ = writeln!(out, "tidings_deliveries{{status=\"{status}\"}} {count}");
        }
        let counters = [
            (
                "tidings_send_attempts_total",
                "SMTP sends attempted by this process.",
                &self.send_attempts,
            ),
            (
                "tidings_sent_total",
                "Emails accepted by the server, by this process.",
                &self.sent,
            ),
            (
                "tidings_skipped_total",
                "Deliveries skipped (subscriber left), by this process.",
                &self.skipped,
            ),
            (
                "tidings_honeypot_hits_total",
                "Signups with the honeypot field filled in, ignored.",
                &self.honeypot_hits,
            ),
            (
                "tidings_busy_refusals_total",
                "Requests refused with 503 because the request-body budget was spent.",
                &self.busy_refusals,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tidings_send_failures_total Failed send attempts by this process.\n\
             # TYPE tidings_send_failures_total counter\n\
             tidings_send_failures_total{{kind=\"transient\"}} {}\n\
             tidings_send_failures_total{{kind=\"permanent\"}} {}",
            self.transient_failures.load(Ordering::Relaxed),
            self.permanent_failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tidings_send_rate_per_second Emails sent per second over the last minute.\n\
             # TYPE tidings_send_rate_per_second gauge\ntidings_send_rate_per_second {:.3}",
            self.send_rate()
        );
        let _ = writeln!(
            out,
            "# HELP tidings_scheduler_next_run_timestamp_seconds When the next issue is due (Unix time).\n\
             # TYPE tidings_scheduler_next_run_timestamp_seconds gauge\n\
             tidings_scheduler_next_run_timestamp_seconds {}",
            next_send_unix.unwrap_or(0)
        );
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A store read that counts its calls and answers `pending` subscribers,
    /// or fails when `pending` is `None`.
    async fn read(
        metrics: &Metrics,
        reads: &AtomicUsize,
        now: Instant,
        pending: Option<i64>,
    ) -> Result<Arc<Counts>, &'static str> {
        metrics
            .store_counts_at(now, || async {
                reads.fetch_add(1, Ordering::SeqCst);
                let pending = pending.ok_or("database down")?;
                let subscribers = SubscriberCounts {
                    pending,
                    ..SubscriberCounts::default()
                };
                Ok((subscribers, DeliveryCounts::default()))
            })
            .await
    }

    const MILLISECOND: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn a_call_within_the_max_age_does_not_read_the_store() {
        let (metrics, reads, start) = (Metrics::default(), AtomicUsize::new(0), Instant::now());
        let first = read(&metrics, &reads, start, Some(1)).await.unwrap();
        assert_eq!(
            (reads.load(Ordering::SeqCst), first.subscribers.pending),
            (1, 1)
        );
        let later = start + SNAPSHOT_MAX_AGE - MILLISECOND;
        let second = read(&metrics, &reads, later, Some(2)).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 1, "the store was read again");
        assert_eq!(second.subscribers.pending, 1);
        assert_eq!(second.at, start);
    }

    #[tokio::test]
    async fn a_call_at_the_max_age_reads_the_store_again() {
        let (metrics, reads, start) = (Metrics::default(), AtomicUsize::new(0), Instant::now());
        read(&metrics, &reads, start, Some(1)).await.unwrap();
        let later = start + SNAPSHOT_MAX_AGE;
        let fresh = read(&metrics, &reads, later, Some(2)).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        assert_eq!((fresh.subscribers.pending, fresh.at), (2, later));
        // The new snapshot is the one now shared.
        let shared = read(&metrics, &reads, later + MILLISECOND, Some(3)).await;
        assert_eq!(shared.unwrap().subscribers.pending, 2);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_read_serves_the_last_counts_and_the_next_call_tries_again() {
        let (metrics, reads, start) = (Metrics::default(), AtomicUsize::new(0), Instant::now());
        read(&metrics, &reads, start, Some(1)).await.unwrap();
        let stale = start + SNAPSHOT_MAX_AGE;
        let served = read(&metrics, &reads, stale, None).await.unwrap();
        assert_eq!((served.subscribers.pending, served.at), (1, start));
        // No back-off: the failure did not renew the snapshot, so the very
        // next call reads the store again.
        let retried = read(&metrics, &reads, stale + MILLISECOND, None).await;
        assert_eq!(retried.unwrap().subscribers.pending, 1);
        assert_eq!(reads.load(Ordering::SeqCst), 3);
        let recovered = read(&metrics, &reads, stale + 2 * MILLISECOND, Some(5)).await;
        assert_eq!(recovered.unwrap().subscribers.pending, 5);
    }

    #[tokio::test]
    async fn calls_during_a_refresh_wait_for_it_and_share_its_counts() {
        let (metrics, reads, start) = (Metrics::default(), AtomicUsize::new(0), Instant::now());
        let slow = metrics.store_counts_at(start, || async {
            reads.fetch_add(1, Ordering::SeqCst);
            // Lets the other call run while this read holds the snapshot.
            tokio::task::yield_now().await;
            Ok::<_, &str>((SubscriberCounts::default(), DeliveryCounts::default()))
        });
        let (first, second) = tokio::join!(slow, read(&metrics, &reads, start, Some(9)));
        assert_eq!(reads.load(Ordering::SeqCst), 1, "both read the store");
        assert!(Arc::ptr_eq(&first.unwrap(), &second.unwrap()));
    }

    #[tokio::test]
    async fn a_failed_first_read_is_an_error() {
        let (metrics, reads, start) = (Metrics::default(), AtomicUsize::new(0), Instant::now());
        assert_eq!(
            read(&metrics, &reads, start, None).await.unwrap_err(),
            "database down"
        );
        // Nothing was kept: the next call reads, however soon.
        let next = read(&metrics, &reads, start, Some(4)).await.unwrap();
        assert_eq!(
            (next.subscribers.pending, reads.load(Ordering::SeqCst)),
            (4, 2)
        );
    }
}
