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
        Self::manual_once(mode, now, uuid::Uuid::new_v4())
    }

    /// A send-now under a key chosen beforehand (one per confirmation
    /// page): a second submission of the same confirmation is the same
    /// slot, so it finds the issue the first made instead of sending the
    /// next post as well.
    pub fn manual_once(mode: ScheduleMode, now: DateTime<Utc>, key: uuid::Uuid) -> Self {
        Self {
            slot_key: format!("manual:{key}"),
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

/// How far an issue got: its deliveries by outcome. What is neither sent,
/// failed nor skipped is still pending (queued, waiting to retry, or in
/// flight).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IssueProgress {
    pub recipients: i64,
    pub sent: i64,
    pub failed: i64,
    pub skipped: i64,
}

impl IssueProgress {
    pub fn pending(&self) -> i64 {
        (self.recipients - self.sent - self.failed - self.skipped).max(0)
    }

    /// Every recipient's delivery has ended, one way or another.
    pub fn is_done(&self) -> bool {
        self.pending() == 0
    }
}

/// An issue as the admin's pages show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueSummary {
    pub id: i64,
    pub number: i64,
    pub mode: ScheduleMode,
    /// The post everyone got; `None` in sequence mode.
    pub post_id: Option<i64>,
    pub subject: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When the last recipient's delivery ended; `None` while any is pending.
    pub finished_at: Option<DateTime<Utc>>,
    pub progress: IssueProgress,
}

/// What a send-now would send: the head of the queue, and whether anyone
/// is confirmed to get it. (How many are is a count of the whole list,
/// which the pages take from the counts snapshot.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextSend {
    pub post_id: Option<i64>,
    pub subject: Option<String>,
    pub anyone_confirmed: bool,
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
    fn pending_is_what_has_not_ended() {
        let progress = IssueProgress {
            recipients: 10,
            sent: 6,
            failed: 1,
            skipped: 1,
        };
        assert_eq!(progress.pending(), 2);
        assert!(!progress.is_done());
        let done = IssueProgress {
            sent: 8,
            ..progress
        };
        assert_eq!(done.pending(), 0);
        assert!(done.is_done());
    }

    #[test]
    fn manual_sends_never_share_a_slot() {
        let now = Utc::now();
        let first = NewIssue::manual(ScheduleMode::Broadcast, now);
        let second = NewIssue::manual(ScheduleMode::Broadcast, now);
        assert_ne!(first.slot_key, second.slot_key);
        assert!(first.slot_key.starts_with("manual:"));
        assert_eq!(first.slot_at, None);
        let key = uuid::Uuid::new_v4();
        let once = NewIssue::manual_once(ScheduleMode::Broadcast, now, key);
        let again = NewIssue::manual_once(ScheduleMode::Broadcast, now, key);
        assert_eq!(once.slot_key, again.slot_key, "one confirmation, one slot");
    }
}
