//! One subscriber as the admin shows them: the record with every date, and
//! the emails they were sent.

use chrono::{DateTime, Utc};

use super::delivery::DeliveryStatus;
use super::subscriber::SubscriberStatus;

/// Deliveries per page of a subscriber's page.
pub const DELIVERIES_PER_PAGE: u32 = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberRecord {
    pub id: i64,
    /// For an erased record, `erasure::placeholder`: show `erased_at` instead.
    pub email: String,
    pub name: Option<String>,
    pub status: SubscriberStatus,
    pub bounce_count: i64,
    pub created_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub unsubscribed_at: Option<DateTime<Utc>>,
    pub erased_at: Option<DateTime<Utc>>,
}

/// What an email to a subscriber was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SentEmail {
    /// An issue, with its post's subject.
    Issue {
        issue_id: i64,
        subject: String,
    },
    Confirmation,
}

/// One email to a subscriber, as their page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberDelivery {
    pub id: i64,
    pub email: SentEmail,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}
