//! Issues: one send of the newsletter, made for a schedule slot or by hand.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// What each tick sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleMode {
    /// The next queued post, to every confirmed subscriber.
    Broadcast,
    /// Each subscriber the next post they have not had yet.
    Sequence,
}

impl ScheduleMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleMode::Broadcast => "broadcast",
            ScheduleMode::Sequence => "sequence",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "broadcast" => Some(ScheduleMode::Broadcast),
            "sequence" => Some(ScheduleMode::Sequence),
            _ => None,
        }
    }
}

/// What a tick or a send-now asks for.
#[derive(Debug, Clone)]
pub struct NewIssue {
    /// Unique per slot; a manual send gets a fresh key.
    pub slot_key: String,
    pub slot_at: Option<DateTime<Utc>>,
    pub mode: ScheduleMode,
    pub now: DateTime<Utc>,
}

impl NewIssue {
    /// A send-now: no slot, so a key of its own that no tick can take.
    pub fn manual(mode: ScheduleMode, now: DateTime<Utc>) -> Self {
        Self {
            slot_key: format!("manual:{}", uuid::Uuid::new_v4()),
            slot_at: None,
            mode,
            now,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssueCreated {
    pub issue_id: i64,
    /// The post everyone gets; `None` in sequence mode.
    pub post_id: Option<i64>,
    pub number: i64,
    pub recipients: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateIssueOutcome {
    Created(IssueCreated),
    /// Another tick, restart or instance already made the issue for this slot.
    SlotTaken,
    /// No post to send (broadcast), or nobody is due one (sequence).
    NothingToSend,
}

#[derive(Debug, Clone, Copy)]
pub struct IssueMeta {
    pub number: i64,
    pub mode: ScheduleMode,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip() {
        for mode in [ScheduleMode::Broadcast, ScheduleMode::Sequence] {
            assert_eq!(ScheduleMode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(ScheduleMode::parse("weekly"), None);
    }

    #[test]
    fn manual_sends_never_share_a_slot() {
        let now = Utc::now();
        let first = NewIssue::manual(ScheduleMode::Broadcast, now);
        let second = NewIssue::manual(ScheduleMode::Broadcast, now);
        assert_ne!(first.slot_key, second.slot_key);
        assert!(first.slot_key.starts_with("manual:"));
        assert_eq!(first.slot_at, None);
    }
}
