//! Deliveries: one email to one person, and the states it moves through.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::subscriber::SubscriberStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Sending,
    Sent,
    Failed,
    Skipped,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 5] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Sending,
        DeliveryStatus::Sent,
        DeliveryStatus::Failed,
        DeliveryStatus::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryStatus::Sent | DeliveryStatus::Failed | DeliveryStatus::Skipped
        )
    }
}

/// Counts by delivery status; missing statuses are zero.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeliveryCounts {
    pub pending: i64,
    pub sending: i64,
    pub sent: i64,
    pub failed: i64,
    pub skipped: i64,
}

impl DeliveryCounts {
    pub fn add(&mut self, status: DeliveryStatus, count: i64) {
        match status {
            DeliveryStatus::Pending => self.pending += count,
            DeliveryStatus::Sending => self.sending += count,
            DeliveryStatus::Sent => self.sent += count,
            DeliveryStatus::Failed => self.failed += count,
            DeliveryStatus::Skipped => self.skipped += count,
        }
    }

    pub fn unfinished(&self) -> i64 {
        self.pending + self.sending
    }

    pub fn total(&self) -> i64 {
        self.pending + self.sending + self.sent + self.failed + self.skipped
    }
}

#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Unique per worker process; fences every later update.
    pub owner: String,
    pub now: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    pub limit: u32,
}

/// What a delivery carries: a confirmation request or an issue's post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryPayload {
    Confirmation { confirmation_id: i64 },
    Issue { issue_id: i64, post_id: i64 },
}

impl DeliveryPayload {
    /// From a delivery row's columns: an issue delivery names its issue and
    /// post, a confirmation email its confirmation. `None` for neither.
    pub fn from_columns(
        issue_id: Option<i64>,
        post_id: Option<i64>,
        confirmation_id: Option<i64>,
    ) -> Option<Self> {
        match (issue_id, post_id, confirmation_id) {
            (Some(issue_id), Some(post_id), _) => Some(Self::Issue { issue_id, post_id }),
            (_, _, Some(confirmation_id)) => Some(Self::Confirmation { confirmation_id }),
            _ => None,
        }
    }
}

/// A leased delivery with everything needed to build its email.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub subscriber_id: i64,
    pub email: String,
    pub name: Option<String>,
    pub subscriber_status: SubscriberStatus,
    pub message_id: String,
    /// Attempts so far, this one included. The store charges an attempt
    /// when it writes the outcome, so a claim handed back or taken back
    /// unsent costs none.
    pub attempts: u32,
    pub payload: DeliveryPayload,
}

#[derive(Debug, Clone)]
pub enum DeliveryOutcome {
    Sent {
        id: i64,
        reply: String,
        at: DateTime<Utc>,
    },
    Retry {
        id: i64,
        error: String,
        next_attempt_at: DateTime<Utc>,
    },
    Failed {
        id: i64,
        subscriber_id: i64,
        error: String,
        /// A 5xx: counts towards the subscriber becoming `bounced`.
        hard_bounce: bool,
        at: DateTime<Utc>,
    },
    Skipped {
        id: i64,
        reason: String,
        at: DateTime<Utc>,
    },
}

impl DeliveryOutcome {
    /// When the attempt ended: a send, a failure or a skip; a retry's
    /// attempt has none to record.
    pub fn ended_at(&self) -> Option<DateTime<Utc>> {
        match self {
            DeliveryOutcome::Sent { at, .. }
            | DeliveryOutcome::Failed { at, .. }
            | DeliveryOutcome::Skipped { at, .. } => Some(*at),
            DeliveryOutcome::Retry { .. } => None,
        }
    }
}

/// A delivery of an issue that ended unsent, as the issue's page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsentDelivery {
    pub id: i64,
    pub subscriber_id: i64,
    /// `None` once the subscriber is no longer on the list.
    pub email: Option<String>,
    pub status: DeliveryStatus,
    /// Attempts whose outcome was written.
    pub attempts: i64,
    /// The SMTP server's last reply, or why it was skipped.
    pub last_error: Option<String>,
    /// When it was failed or skipped; unknown for the oldest.
    pub closed_at: Option<DateTime<Utc>>,
}

/// One page of an issue's failed or skipped deliveries, in id order.
#[derive(Debug, Clone, Copy)]
pub struct UnsentQuery {
    pub issue_id: i64,
    /// `Failed` or `Skipped`.
    pub status: DeliveryStatus,
    /// Only ids above this one.
    pub after: Option<i64>,
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_know_when_they_are_final() {
        for status in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(DeliveryStatus::parse("lost"), None);
        assert!(!DeliveryStatus::Pending.is_final());
        assert!(!DeliveryStatus::Sending.is_final());
        assert!(DeliveryStatus::Skipped.is_final());
    }

    #[test]
    fn a_payload_is_an_issue_or_a_confirmation() {
        assert_eq!(
            DeliveryPayload::from_columns(Some(1), Some(2), None),
            Some(DeliveryPayload::Issue {
                issue_id: 1,
                post_id: 2
            })
        );
        assert_eq!(
            DeliveryPayload::from_columns(None, None, Some(3)),
            Some(DeliveryPayload::Confirmation { confirmation_id: 3 })
        );
        assert_eq!(DeliveryPayload::from_columns(Some(1), None, None), None);
        assert_eq!(DeliveryPayload::from_columns(None, None, None), None);
    }

    #[test]
    fn counts_add_up() {
        let mut counts = DeliveryCounts::default();
        counts.add(DeliveryStatus::Pending, 2);
        counts.add(DeliveryStatus::Sending, 1);
        counts.add(DeliveryStatus::Sent, 5);
        counts.add(DeliveryStatus::Sent, 1);
        assert_eq!(counts.unfinished(), 3);
        assert_eq!(counts.total(), 9);
    }
}
