//! The database's counts (subscribers and deliveries by status), shared by
//! `/metrics` and the admin pages. Counting a million subscribers takes a
//! tenth to a fifth of a second, so the counts are a snapshot: once it is
//! `SNAPSHOT_MAX_AGE` old, the next caller starts one refresh in the
//! background and is answered from the snapshot at once. Only the very
//! first caller waits for a count. A store that fails or hangs holds up one
//! refresh at a time, tried at most once per `SNAPSHOT_MAX_AGE`, never the
//! scrapes or pages that come meanwhile.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::delivery::DeliveryCounts;
use crate::domain::subscriber::SubscriberCounts;

/// How old the counts may be before a refresh begins.
pub const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(5);

/// The database's counts, as of `at` (when their read began).
#[derive(Debug, Clone)]
pub struct Counts {
    pub at: Instant,
    pub subscribers: SubscriberCounts,
    pub deliveries: DeliveryCounts,
}

#[derive(Default)]
pub struct CountsSnapshot {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    last: Mutex<Option<Arc<Counts>>>,
    refresh: Mutex<Refresh>,
    /// Held by the first read: with no counts yet there is nothing to
    /// serve, so the callers meanwhile wait for it and share its result.
    first: tokio::sync::Mutex<()>,
    /// Set while refreshes fail, so the failure is logged once.
    failing: AtomicBool,
}

#[derive(Default)]
struct Refresh {
    running: bool,
    began: Option<Instant>,
}

impl CountsSnapshot {
    /// The counts, read by `read` when there are none yet; otherwise the
    /// snapshot, with a refresh started in the background once it is stale.
    /// An error comes back only from a first read.
    pub async fn get<F, Fut, E>(&self, read: F) -> Result<Arc<Counts>, E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(SubscriberCounts, DeliveryCounts), E>> + Send + 'static,
        E: std::fmt::Debug + Send + 'static,
    {
        self.get_at(Instant::now(), read).await
    }

    /// `get` as of `now`, the moment of the call: the tests set it.
    async fn get_at<F, Fut, E>(&self, now: Instant, read: F) -> Result<Arc<Counts>, E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(SubscriberCounts, DeliveryCounts), E>> + Send + 'static,
        E: std::fmt::Debug + Send + 'static,
    {
        if let Some(counts) = self.inner.current() {
            if self.inner.begin_refresh(now, &counts) {
                let inner = self.inner.clone();
                tokio::spawn(async move { inner.refresh(now, read).await });
            }
            return Ok(counts);
        }
        let _first = self.inner.first.lock().await;
        if let Some(counts) = self.inner.current() {
            return Ok(counts);
        }
        let (subscribers, deliveries) = read().await?;
        Ok(self.inner.keep(now, subscribers, deliveries))
    }

    /// Waits until no refresh is running: the tests' way to see its result.
    #[cfg(test)]
    async fn settled(&self) {
        while self.inner.refresh.lock().expect("counts lock").running {
            tokio::task::yield_now().await;
        }
    }
}

impl Inner {
    fn current(&self) -> Option<Arc<Counts>> {
        self.last.lock().expect("counts lock").clone()
    }

    /// Whether a refresh should begin now; if so, it is marked as running.
    fn begin_refresh(&self, now: Instant, counts: &Counts) -> bool {
        let mut refresh = self.refresh.lock().expect("counts lock");
        let due = |since: Instant| now.saturating_duration_since(since) >= SNAPSHOT_MAX_AGE;
        if refresh.running || !due(counts.at) || refresh.began.is_some_and(|at| !due(at)) {
            return false;
        }
        *refresh = Refresh {
            running: true,
            began: Some(now),
        };
        true
    }

    async fn refresh<Fut, E>(&self, began: Instant, read: impl FnOnce() -> Fut)
    where
        Fut: Future<Output = Result<(SubscriberCounts, DeliveryCounts), E>>,
        E: std::fmt::Debug,
    {
        match read().await {
            Ok((subscribers, deliveries)) => {
                self.keep(began, subscribers, deliveries);
            }
            Err(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = ?error,
                        "cannot refresh the subscriber and delivery counts; serving the last ones"
                    );
                }
            }
        }
        self.refresh.lock().expect("counts lock").running = false;
    }

    fn keep(
        &self,
        at: Instant,
        subscribers: SubscriberCounts,
        deliveries: DeliveryCounts,
    ) -> Arc<Counts> {
        self.failing.store(false, Ordering::Relaxed);
        let counts = Arc::new(Counts {
            at,
            subscribers,
            deliveries,
        });
        *self.last.lock().expect("counts lock") = Some(counts.clone());
        counts
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    const MILLISECOND: Duration = Duration::from_millis(1);

    /// A snapshot whose reads count themselves in `reads`.
    #[derive(Default)]
    struct Probe {
        snapshot: CountsSnapshot,
        reads: Arc<AtomicUsize>,
    }

    impl Probe {
        /// A call at `now` whose read answers `pending` subscribers, or
        /// fails when `pending` is `None`.
        async fn get(&self, now: Instant, pending: Option<i64>) -> Result<i64, &'static str> {
            let reads = self.reads.clone();
            let counts = self
                .snapshot
                .get_at(now, move || async move {
                    reads.fetch_add(1, Ordering::SeqCst);
                    let pending = pending.ok_or("database down")?;
                    let subscribers = SubscriberCounts {
                        pending,
                        ..SubscriberCounts::default()
                    };
                    Ok::<_, &str>((subscribers, DeliveryCounts::default()))
                })
                .await?;
            Ok(counts.subscribers.pending)
        }

        fn reads(&self) -> usize {
            self.reads.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn the_first_call_reads_and_later_ones_within_the_max_age_do_not() {
        let (probe, start) = (Probe::default(), Instant::now());
        assert_eq!(probe.get(start, Some(1)).await, Ok(1));
        let later = start + SNAPSHOT_MAX_AGE - MILLISECOND;
        assert_eq!(probe.get(later, Some(2)).await, Ok(1));
        probe.snapshot.settled().await;
        assert_eq!(probe.reads(), 1, "the store was read again");
    }

    #[tokio::test]
    async fn a_stale_snapshot_is_served_at_once_while_one_refresh_runs() {
        let (probe, start) = (Probe::default(), Instant::now());
        probe.get(start, Some(1)).await.unwrap();
        let stale = start + SNAPSHOT_MAX_AGE;
        // Three callers at once: each gets the old counts without waiting,
        // and only one refresh reads the store.
        let (a, b, c) = tokio::join!(
            probe.get(stale, Some(2)),
            probe.get(stale, Some(3)),
            probe.get(stale, Some(4))
        );
        assert_eq!((a, b, c), (Ok(1), Ok(1), Ok(1)));
        probe.snapshot.settled().await;
        assert_eq!(probe.reads(), 2);
        assert_eq!(probe.get(stale + MILLISECOND, Some(5)).await, Ok(2));
        assert_eq!(probe.reads(), 2);
    }

    #[tokio::test]
    async fn a_failing_store_keeps_the_last_counts_and_is_asked_once_per_max_age() {
        let (probe, start) = (Probe::default(), Instant::now());
        probe.get(start, Some(1)).await.unwrap();
        let stale = start + SNAPSHOT_MAX_AGE;
        assert_eq!(probe.get(stale, None).await, Ok(1));
        probe.snapshot.settled().await;
        assert_eq!(probe.reads(), 2);
        // Right after a failed refresh the store is left alone...
        assert_eq!(probe.get(stale + MILLISECOND, Some(7)).await, Ok(1));
        probe.snapshot.settled().await;
        assert_eq!(probe.reads(), 2);
        // ...until the max age has passed since that refresh began.
        let retry = stale + SNAPSHOT_MAX_AGE;
        assert_eq!(probe.get(retry, Some(7)).await, Ok(1));
        probe.snapshot.settled().await;
        assert_eq!(probe.reads(), 3);
        assert_eq!(probe.get(retry + MILLISECOND, None).await, Ok(7));
    }

    #[tokio::test]
    async fn callers_during_the_first_read_wait_for_it_and_share_it() {
        let (probe, start) = (Probe::default(), Instant::now());
        let (a, b) = tokio::join!(probe.get(start, Some(9)), probe.get(start, Some(8)));
        assert_eq!(probe.reads(), 1, "both read the store");
        assert_eq!((a, b), (Ok(9), Ok(9)));
    }

    #[tokio::test]
    async fn a_failed_first_read_is_an_error_and_keeps_nothing() {
        let (probe, start) = (Probe::default(), Instant::now());
        assert_eq!(probe.get(start, None).await, Err("database down"));
        assert_eq!(probe.get(start, Some(4)).await, Ok(4));
        assert_eq!(probe.reads(), 2);
    }
}
