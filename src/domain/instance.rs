//! Instances: each process that sends (a `serve`, or a `send-now` while it
//! waits) and its heartbeat. The claims of an instance that stopped beating
//! are taken back at once, without waiting for their lease to run out; the
//! rules for when an instance counts as dead, and when it must stop itself
//! because others may already count it so, live here.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How often an instance writes its heartbeat, and looks for the claims of
/// dead ones.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// An instance whose last heartbeat is older than this is dead to the
/// others: five missed beats, so a slow write or a short pause is no death.
pub const DEAD_AFTER: Duration = Duration::from_secs(10);

/// An instance that has not written a heartbeat for this long starts no
/// new send and claims nothing: well before the others may count it dead,
/// so that what it still sends is only what was already in flight.
pub const SILENT_AFTER: Duration = Duration::from_secs(6);

/// Instances with a heartbeat at or after this instant are alive at `now`.
pub fn alive_since(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::from_std(DEAD_AFTER).expect("a few seconds")
}

/// Whether an instance whose last heartbeat was written `since_last_beat`
/// ago may still claim and start sends.
pub fn may_send(since_last_beat: Duration) -> bool {
    since_last_beat < SILENT_AFTER
}

/// Whether a gap of `gap` between two heartbeats was long enough for
/// another instance to have taken this one's claims: then no claim taken
/// before the gap may be sent any more.
pub fn may_have_been_taken_over(gap: Duration) -> bool {
    gap >= DEAD_AFTER
}

/// What the periodic check asks: the claims of every instance but `me`
/// that has no heartbeat since `alive_since` go back to `pending`.
#[derive(Debug, Clone)]
pub struct Rescue {
    pub me: String,
    pub alive_since: DateTime<Utc>,
}

impl Rescue {
    pub fn at(me: &str, now: DateTime<Utc>) -> Self {
        Self {
            me: me.to_owned(),
            alive_since: alive_since(now),
        }
    }
}

/// Claims taken back from one dead instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RescuedClaims {
    pub owner: String,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_falls_silent_before_the_others_count_it_dead() {
        assert!(SILENT_AFTER + HEARTBEAT_EVERY < DEAD_AFTER);
        assert!(may_send(Duration::from_secs(5)));
        assert!(!may_send(SILENT_AFTER));
        assert!(!may_have_been_taken_over(Duration::from_secs(9)));
        assert!(may_have_been_taken_over(DEAD_AFTER));
    }

    #[test]
    fn alive_means_a_heartbeat_within_the_last_ten_seconds() {
        let now = DateTime::parse_from_rfc3339("2026-12-04T09:00:10Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            alive_since(now).to_rfc3339(),
            "2026-12-04T09:00:00+00:00",
            "a beat exactly ten seconds old still counts"
        );
        assert_eq!(Rescue::at("me", now).alive_since, alive_since(now));
    }
}
