//! The unrecorded window, seen from outside: how many messages smtp-sink
//! received while the daemon could not write outcomes.
//!
//! A sender takes a permit of the window (`smtp.concurrency` ×
//! `UNRECORDED_PER_CONNECTION`, src/delivery/mod.rs) before it talks to the
//! server, and the recorder gives a group's permits back only once the
//! group is written (src/delivery/recorder.rs). From the log's first failed
//! write of a group until it is written, no permit comes back: the server
//! can take the sends in flight when the write failed (one per connection)
//! and those that start after, each on a permit still free. The bound is
//! the window plus those in flight. Strictly they hold permits of the
//! window already; the margin covers the coarse clock of file times.
//! Without the window, only the record channel (2 × `smtp.batch_size`) and
//! the heartbeat's 6 s would stop the senders: hundreds of messages.

use std::time::SystemTime;

use tidings::delivery::UNRECORDED_PER_CONNECTION;

use crate::harness::Dumped;

const FAILED: &str = "recording outcomes failed; retrying until it succeeds";
const WRITTEN: &str = "recording outcomes succeeded after failing";

/// From a failed write of outcomes to the write that succeeded.
struct Unwritable {
    from: SystemTime,
    to: SystemTime,
}

/// Every such stretch in the log; one that has not ended runs to now.
fn unwritable(log: &str) -> Vec<Unwritable> {
    let mut stretches = Vec::new();
    let mut from = None;
    for line in log.lines() {
        let Some((stamp, text)) = line.split_once(' ') else {
            continue;
        };
        let Ok(at) = chrono::DateTime::parse_from_rfc3339(stamp) else {
            continue;
        };
        let at = SystemTime::from(at);
        if text.contains(FAILED) && from.is_none() {
            from = Some(at);
        } else if text.contains(WRITTEN) {
            if let Some(from) = from.take() {
                stretches.push(Unwritable { from, to: at });
            }
        }
    }
    if let Some(from) = from {
        stretches.push(Unwritable {
            from,
            to: SystemTime::now(),
        });
    }
    stretches
}

/// Asserts that in each stretch of the log in which outcomes could not be
/// written, `messages` holds no more received than the window lets
/// through, and prints the figures. Returns how many stretches there were.
pub fn assert_window_held(what: &str, log: &str, messages: &[Dumped]) -> usize {
    // The tests keep the default number of connections.
    let connections = tidings::config::defaults().smtp.concurrency;
    let window = connections * UNRECORDED_PER_CONNECTION;
    let bound = window + connections;
    let stretches = unwritable(log);
    for stretch in &stretches {
        let received = messages
            .iter()
            .filter(|message| (stretch.from..=stretch.to).contains(&message.received))
            .count();
        let lasted = stretch.to.duration_since(stretch.from).unwrap_or_default();
        println!(
            "{what}: outcomes unwritable for {:.1} s, and {received} messages received \
             meanwhile (at most {bound}: a window of {window} and {connections} in flight)",
            lasted.as_secs_f64()
        );
        assert!(
            received <= bound,
            "{received} messages sent while outcomes could not be written; \
             the window allows {bound}"
        );
    }
    stretches.len()
}
