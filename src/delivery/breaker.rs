//! The circuit breaker: pauses every sender while the SMTP server cannot
//! be reached, so that an outage costs no delivery an attempt and the
//! server is not hammered from every connection at once.
//!
//! It opens after [`TRIP_AFTER`] failures in a row (no success between
//! them) within [`WINDOW`], counted across all senders. A failure of an
//! attempt that began before the last pause ended is not counted again:
//! eight senders failing together are one failure of the server, not
//! eight, so they cannot push the pause to its cap at once. After a pause
//! every sender may try again: the first success closes it, and a failure
//! opens it again for twice as long, up to [`MAX_PAUSE`]. A restart of the
//! server under a second so costs under two seconds of sending.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub const TRIP_AFTER: u32 = 3;
pub const WINDOW: Duration = Duration::from_secs(10);
pub const FIRST_PAUSE: Duration = Duration::from_millis(250);
pub const MAX_PAUSE: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Breaker {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Failures since the last success or opening, and when the first was.
    failures: u32,
    first_failure: Option<Instant>,
    /// The end of the last pause, kept after it passes until a success:
    /// attempts begun before it have been accounted for.
    open_until: Option<Instant>,
    /// Pauses since the last success: the next one is twice as long.
    pauses: u32,
}

impl Breaker {
    /// An attempt that began at `started` could not reach the server.
    /// Returns the pause this failure began, if it began one.
    pub fn failed(&self, started: Instant) -> Option<Duration> {
        self.failed_at(started, Instant::now())
    }

    fn failed_at(&self, started: Instant, now: Instant) -> Option<Duration> {
        let mut state = self.state.lock().expect("breaker lock");
        if state.open_until.is_some_and(|end| started < end) {
            return None;
        }
        if state
            .first_failure
            .is_none_or(|first| now.saturating_duration_since(first) > WINDOW)
        {
            state.failures = 0;
            state.first_failure = Some(now);
        }
        state.failures += 1;
        // Once it has opened, the server has shown it is down: one failure
        // after the pause is enough to open it again.
        let threshold = if state.pauses > 0 { 1 } else { TRIP_AFTER };
        if state.failures < threshold {
            return None;
        }
        let pause = FIRST_PAUSE
            .saturating_mul(1 << state.pauses.min(16))
            .min(MAX_PAUSE);
        state.pauses += 1;
        state.failures = 0;
        state.first_failure = None;
        state.open_until = Some(now + pause);
        Some(pause)
    }

    /// The server answered: whatever it said, it can be reached.
    pub fn succeeded(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        state.failures = 0;
        state.first_failure = None;
        state.open_until = None;
        state.pauses = 0;
    }

    /// Whether senders are paused now.
    pub fn is_open(&self) -> bool {
        self.open_until().is_some_and(|end| end > Instant::now())
    }

    fn open_until(&self) -> Option<Instant> {
        self.state.lock().expect("breaker lock").open_until
    }

    /// Waits out a pause; returns whether there was one.
    pub async fn wait(&self, shutdown: &CancellationToken) -> bool {
        let mut paused = false;
        loop {
            match self.open_until() {
                Some(end) if end > Instant::now() => {
                    paused = true;
                    tokio::select! {
                        _ = tokio::time::sleep_until(end.into()) => {}
                        _ = shutdown.cancelled() => return paused,
                    }
                }
                _ => return paused,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn opens_after_failures_in_a_row_and_not_before() {
        let breaker = Breaker::default();
        let t0 = Instant::now();
        assert_eq!(breaker.failed_at(t0, t0 + ms(1)), None);
        assert_eq!(breaker.failed_at(t0, t0 + ms(2)), None);
        assert_eq!(breaker.failed_at(t0, t0 + ms(3)), Some(FIRST_PAUSE));
        assert_eq!(breaker.open_until(), Some(t0 + ms(3) + FIRST_PAUSE));
    }

    #[test]
    fn a_success_between_failures_starts_the_count_again() {
        let breaker = Breaker::default();
        let t0 = Instant::now();
        breaker.failed_at(t0, t0);
        breaker.failed_at(t0, t0);
        breaker.succeeded();
        assert_eq!(breaker.failed_at(t0, t0 + ms(1)), None);
        assert_eq!(breaker.failed_at(t0, t0 + ms(2)), None);
        assert!(breaker.failed_at(t0, t0 + ms(3)).is_some());
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_add_up() {
        let breaker = Breaker::default();
        let t0 = Instant::now();
        breaker.failed_at(t0, t0);
        breaker.failed_at(t0, t0 + ms(1));
        let late = t0 + WINDOW + ms(2);
        assert_eq!(breaker.failed_at(late, late), None);
    }

    #[test]
    fn senders_failing_together_are_one_failure_of_the_server() {
        let breaker = Breaker::default();
        let t0 = Instant::now();
        let mut pauses = Vec::new();
        // Eight senders began together and fail within 4 ms.
        for n in 0..8 {
            pauses.extend(breaker.failed_at(t0, t0 + ms(n / 2)));
        }
        assert_eq!(pauses, [FIRST_PAUSE]);
    }

    #[test]
    fn attempts_that_slipped_in_during_a_pause_do_not_lengthen_it() {
        let breaker = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            breaker.failed_at(t0, t0);
        }
        // Senders that were waiting their turn at the rate limiter when it
        // opened, and fail one after another during the pause.
        for n in 1..8 {
            let now = t0 + ms(n);
            assert_eq!(breaker.failed_at(now, now + ms(1)), None);
        }
        assert_eq!(breaker.open_until(), Some(t0 + FIRST_PAUSE));
    }

    #[test]
    fn each_failed_round_after_a_pause_doubles_it_up_to_the_cap() {
        let breaker = Breaker::default();
        let mut now = Instant::now();
        for _ in 0..3 {
            breaker.failed_at(now, now);
        }
        let mut pauses = Vec::new();
        for _ in 0..10 {
            now = breaker.open_until().unwrap();
            // Every sender tries again after the pause and fails.
            for _ in 0..8 {
                pauses.extend(breaker.failed_at(now, now + ms(1)));
            }
        }
        assert_eq!(&pauses[..4], [ms(500), ms(1000), ms(2000), ms(4000)]);
        assert_eq!(pauses.len(), 10, "one pause per round: {pauses:?}");
        assert_eq!(*pauses.last().unwrap(), MAX_PAUSE);
        breaker.succeeded();
        assert_eq!(breaker.open_until(), None);
        let later = now + ms(100);
        assert_eq!(breaker.failed_at(later, later), None, "counting afresh");
    }

    #[test]
    fn a_restart_under_a_second_costs_under_two_seconds() {
        // The server is down from t0 to t0 + 990 ms; senders retry as soon
        // as each pause ends.
        let breaker = Breaker::default();
        let t0 = Instant::now();
        let back = t0 + ms(990);
        let mut now = t0;
        for _ in 0..3 {
            breaker.failed_at(now, now);
        }
        loop {
            now = breaker.open_until().unwrap_or(now);
            if now >= back {
                breaker.succeeded();
                break;
            }
            breaker.failed_at(now, now + ms(1));
        }
        assert!(now - t0 < Duration::from_secs(2), "{:?}", now - t0);
    }
}
