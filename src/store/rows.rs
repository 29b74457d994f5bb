//! Named rows as both backends read them, and how each becomes a domain
//! value. Time columns are `T`: epoch milliseconds on SQLite ([`Millis`]),
//! `TIMESTAMPTZ` on PostgreSQL (`DateTime<Utc>`).

use chrono::{DateTime, Utc};

use super::{StoreError, StoreResult};
use crate::domain::admin::{AdminAccount, AdminCredentials, AdminSession};
use crate::domain::consent::{ConsentEvent, ConsentKind};
use crate::domain::delivery::{
    ClaimedDelivery, DeliveryCounts, DeliveryPayload, DeliveryStatus, UnsentDelivery,
};
use crate::domain::issue::{IssueMeta, IssueProgress, IssueSummary, ScheduleMode};
use crate::domain::post::{Post, PostCounts, PostListing, PostStatus};
use crate::domain::subscriber::{Subscriber, SubscriberCounts, SubscriberStatus};
use crate::domain::subscriber_record::{SentEmail, SubscriberDelivery, SubscriberRecord};
use crate::domain::subscriber_search::SearchHit;

/// SQLite's time column: milliseconds since the epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, sqlx::Type, serde::Serialize)]
#[sqlx(transparent)]
#[serde(transparent)]
pub(super) struct Millis(pub i64);

impl From<Millis> for DateTime<Utc> {
    fn from(Millis(value): Millis) -> Self {
        DateTime::from_timestamp_millis(value).unwrap_or_default()
    }
}

impl From<DateTime<Utc>> for Millis {
    fn from(time: DateTime<Utc>) -> Self {
        Millis(time.timestamp_millis())
    }
}

fn corrupt(what: &str, text: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} `{text}`"))
}

pub(super) fn subscriber_status(text: &str) -> StoreResult<SubscriberStatus> {
    text.parse().map_err(|_| corrupt("subscriber status", text))
}

pub(super) fn delivery_status(text: &str) -> StoreResult<DeliveryStatus> {
    DeliveryStatus::parse(text).ok_or_else(|| corrupt("delivery status", text))
}

pub(super) const POST_COLUMNS: &str =
    "id, subject, body_markdown, position, status, created_at, sent_at";

#[derive(sqlx::FromRow)]
pub(super) struct PostRow<T> {
    id: i64,
    subject: String,
    body_markdown: String,
    position: i64,
    status: String,
    created_at: T,
    sent_at: Option<T>,
}

impl<T: Into<DateTime<Utc>>> TryFrom<PostRow<T>> for Post {
    type Error = StoreError;

    fn try_from(row: PostRow<T>) -> StoreResult<Self> {
        Ok(Post {
            id: row.id,
            subject: row.subject,
            body_markdown: row.body_markdown,
            position: row.position,
            status: PostStatus::parse(&row.status)
                .ok_or_else(|| corrupt("post status", &row.status))?,
            created_at: row.created_at.into(),
            sent_at: row.sent_at.map(Into::into),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct PostListingRow<T> {
    id: i64,
    subject: String,
    position: i64,
    status: String,
    sent_at: Option<T>,
    issue_id: Option<i64>,
}

impl<T: Into<DateTime<Utc>>> TryFrom<PostListingRow<T>> for PostListing {
    type Error = StoreError;

    fn try_from(row: PostListingRow<T>) -> StoreResult<Self> {
        Ok(PostListing {
            id: row.id,
            subject: row.subject,
            position: row.position,
            status: PostStatus::parse(&row.status)
                .ok_or_else(|| corrupt("post status", &row.status))?,
            sent_at: row.sent_at.map(Into::into),
            issue_id: row.issue_id,
        })
    }
}

pub(super) const SUBSCRIBER_COLUMNS: &str = "id, email, name, status, created_at, confirmed_at";

#[derive(sqlx::FromRow)]
pub(super) struct SubscriberRow<T> {
    id: i64,
    email: String,
    name: Option<String>,
    status: String,
    created_at: T,
    confirmed_at: Option<T>,
}

impl<T: Into<DateTime<Utc>>> TryFrom<SubscriberRow<T>> for Subscriber {
    type Error = StoreError;

    fn try_from(row: SubscriberRow<T>) -> StoreResult<Self> {
        Ok(Subscriber {
            id: row.id,
            email: row.email,
            name: row.name,
            status: subscriber_status(&row.status)?,
            created_at: row.created_at.into(),
            confirmed_at: row.confirmed_at.map(Into::into),
        })
    }
}

pub(super) const CONSENT_EVENT_COLUMNS: &str = "kind, occurred_at, ip, user_agent, detail";

#[derive(sqlx::FromRow)]
pub(super) struct ConsentEventRow<T> {
    kind: String,
    occurred_at: T,
    ip: Option<String>,
    user_agent: Option<String>,
    detail: Option<String>,
}

impl<T: Into<DateTime<Utc>>> TryFrom<ConsentEventRow<T>> for ConsentEvent {
    type Error = StoreError;

    fn try_from(row: ConsentEventRow<T>) -> StoreResult<Self> {
        Ok(ConsentEvent {
            kind: ConsentKind::parse(&row.kind)
                .ok_or_else(|| corrupt("consent kind", &row.kind))?,
            occurred_at: row.occurred_at.into(),
            ip: row.ip,
            user_agent: row.user_agent,
            detail: row.detail,
        })
    }
}

/// A `SELECT status, COUNT(*) AS count … GROUP BY status` row.
#[derive(sqlx::FromRow)]
pub(super) struct StatusCount {
    status: String,
    count: i64,
}

pub(super) fn delivery_counts(rows: Vec<StatusCount>) -> StoreResult<DeliveryCounts> {
    let mut counts = DeliveryCounts::default();
    for row in rows {
        counts.add(delivery_status(&row.status)?, row.count);
    }
    Ok(counts)
}

pub(super) fn subscriber_counts(rows: Vec<StatusCount>) -> StoreResult<SubscriberCounts> {
    let mut counts = SubscriberCounts::default();
    for row in rows {
        counts.add(subscriber_status(&row.status)?, row.count);
    }
    Ok(counts)
}

pub(super) fn post_counts(rows: Vec<StatusCount>) -> StoreResult<PostCounts> {
    let mut counts = PostCounts::default();
    for row in rows {
        let status =
            PostStatus::parse(&row.status).ok_or_else(|| corrupt("post status", &row.status))?;
        counts.add(status, row.count);
    }
    Ok(counts)
}

/// An issue just made for its slot.
#[derive(sqlx::FromRow)]
pub(super) struct NewIssueRow {
    pub id: i64,
    pub number: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct IssueMetaRow {
    number: i64,
    mode: String,
}

impl TryFrom<IssueMetaRow> for IssueMeta {
    type Error = StoreError;

    fn try_from(row: IssueMetaRow) -> StoreResult<Self> {
        Ok(IssueMeta {
            number: row.number,
            mode: ScheduleMode::parse(&row.mode).ok_or_else(|| corrupt("issue mode", &row.mode))?,
        })
    }
}

pub(super) const ISSUE_SUMMARY_COLUMNS: &str = "i.id, i.number, i.mode, i.post_id, p.subject, \
     i.recipients, t.sent, t.failed, t.skipped, i.created_at, t.finished_at";

/// An issue joined with its tally (`t`) and its post (`p`).
pub(super) const ISSUE_SUMMARY_FROM: &str = "issues i JOIN issue_tallies t ON t.issue_id = i.id \
     LEFT JOIN posts p ON p.id = i.post_id";

#[derive(sqlx::FromRow)]
pub(super) struct IssueSummaryRow<T> {
    id: i64,
    number: i64,
    mode: String,
    post_id: Option<i64>,
    subject: Option<String>,
    recipients: i64,
    sent: i64,
    failed: i64,
    skipped: i64,
    created_at: T,
    finished_at: Option<T>,
}

impl<T: Into<DateTime<Utc>>> TryFrom<IssueSummaryRow<T>> for IssueSummary {
    type Error = StoreError;

    fn try_from(row: IssueSummaryRow<T>) -> StoreResult<Self> {
        Ok(IssueSummary {
            id: row.id,
            number: row.number,
            mode: ScheduleMode::parse(&row.mode).ok_or_else(|| corrupt("issue mode", &row.mode))?,
            post_id: row.post_id,
            subject: row.subject,
            created_at: row.created_at.into(),
            finished_at: row.finished_at.map(Into::into),
            progress: IssueProgress {
                recipients: row.recipients,
                sent: row.sent,
                failed: row.failed,
                skipped: row.skipped,
            },
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct UnsentDeliveryRow<T> {
    id: i64,
    subscriber_id: i64,
    email: Option<String>,
    status: String,
    attempts: i64,
    last_error: Option<String>,
    closed_at: Option<T>,
}

impl<T: Into<DateTime<Utc>>> TryFrom<UnsentDeliveryRow<T>> for UnsentDelivery {
    type Error = StoreError;

    fn try_from(row: UnsentDeliveryRow<T>) -> StoreResult<Self> {
        Ok(UnsentDelivery {
            id: row.id,
            subscriber_id: row.subscriber_id,
            email: row.email,
            status: delivery_status(&row.status)?,
            attempts: row.attempts,
            last_error: row.last_error,
            closed_at: row.closed_at.map(Into::into),
        })
    }
}

/// A failed delivery, and its subscriber's status now (`None`: no longer
/// on the list), for the retry rule.
#[derive(sqlx::FromRow)]
pub(super) struct FailureRow {
    pub id: i64,
    pub last_error: Option<String>,
    pub subscriber_status: Option<String>,
}

/// How many of an issue's failures share a reply and a subscriber status.
#[derive(sqlx::FromRow)]
pub(super) struct FailureGroupRow {
    pub last_error: Option<String>,
    pub subscriber_status: Option<String>,
    pub count: i64,
}

/// The head of the post queue.
#[derive(sqlx::FromRow)]
pub(super) struct QueueHeadRow {
    pub id: i64,
    pub subject: String,
}

/// A delivery as a claim returns it.
#[derive(sqlx::FromRow)]
pub(super) struct ClaimRow {
    pub id: i64,
    pub subscriber_id: i64,
    issue_id: Option<i64>,
    post_id: Option<i64>,
    confirmation_id: Option<i64>,
    message_id: String,
    /// Attempts whose outcome was written: one is charged with each.
    attempts: i64,
}

/// The subscriber a claimed delivery goes to.
#[derive(sqlx::FromRow, Clone)]
pub(super) struct RecipientRow {
    pub subscriber_id: i64,
    email: String,
    name: Option<String>,
    status: String,
}

/// Both, as one joined row.
#[derive(sqlx::FromRow)]
pub(super) struct ClaimWithRecipient {
    #[sqlx(flatten)]
    pub claim: ClaimRow,
    #[sqlx(flatten)]
    pub recipient: RecipientRow,
}

pub(super) fn claimed_delivery(
    claim: ClaimRow,
    recipient: RecipientRow,
) -> StoreResult<ClaimedDelivery> {
    let payload =
        DeliveryPayload::from_columns(claim.issue_id, claim.post_id, claim.confirmation_id)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery {} has no payload", claim.id)))?;
    Ok(ClaimedDelivery {
        id: claim.id,
        subscriber_id: recipient.subscriber_id,
        email: recipient.email,
        name: recipient.name,
        subscriber_status: subscriber_status(&recipient.status)?,
        message_id: claim.message_id,
        attempts: u32::try_from(claim.attempts)
            .unwrap_or(u32::MAX)
            .saturating_add(1),
        payload,
    })
}

#[derive(sqlx::FromRow)]
pub(super) struct AdminRow<T> {
    id: i64,
    email: String,
    created_at: T,
}

impl<T: Into<DateTime<Utc>>> From<AdminRow<T>> for AdminAccount {
    fn from(row: AdminRow<T>) -> Self {
        AdminAccount {
            id: row.id,
            email: row.email,
            created_at: row.created_at.into(),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AdminCredentialsRow {
    id: i64,
    password_hash: String,
}

impl From<AdminCredentialsRow> for AdminCredentials {
    fn from(row: AdminCredentialsRow) -> Self {
        AdminCredentials {
            id: row.id,
            password_hash: row.password_hash,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AdminSessionRow<T> {
    admin_id: i64,
    email: String,
    created_at: T,
    last_seen_at: T,
    expires_at: T,
}

impl<T: Into<DateTime<Utc>>> From<AdminSessionRow<T>> for AdminSession {
    fn from(row: AdminSessionRow<T>) -> Self {
        AdminSession {
            admin_id: row.admin_id,
            email: row.email,
            created_at: row.created_at.into(),
            last_seen_at: row.last_seen_at.into(),
            expires_at: row.expires_at.into(),
        }
    }
}

/// A count for one day of a window.
#[derive(sqlx::FromRow)]
pub struct DayCountRow {
    pub day: i64,
    pub count: i64,
}

// ---- The admin's subscriber pages (search, a subscriber, erasure).

/// A search hit: the key that matched, then the subscriber.
#[derive(sqlx::FromRow)]
pub(super) struct SearchHitRow<T> {
    search_key: String,
    #[sqlx(flatten)]
    subscriber: SubscriberRow<T>,
}

impl<T: Into<DateTime<Utc>>> TryFrom<SearchHitRow<T>> for SearchHit {
    type Error = StoreError;

    fn try_from(row: SearchHitRow<T>) -> StoreResult<Self> {
        Ok(SearchHit {
            key: row.search_key,
            subscriber: row.subscriber.try_into()?,
        })
    }
}

pub(super) const SUBSCRIBER_RECORD_COLUMNS: &str = "id, email, name, status, bounce_count, \
     created_at, confirmed_at, unsubscribed_at, erased_at";

#[derive(sqlx::FromRow)]
pub(super) struct SubscriberRecordRow<T> {
    id: i64,
    email: String,
    name: Option<String>,
    status: String,
    bounce_count: i64,
    created_at: T,
    confirmed_at: Option<T>,
    unsubscribed_at: Option<T>,
    erased_at: Option<T>,
}

impl<T: Into<DateTime<Utc>>> TryFrom<SubscriberRecordRow<T>> for SubscriberRecord {
    type Error = StoreError;

    fn try_from(row: SubscriberRecordRow<T>) -> StoreResult<Self> {
        Ok(SubscriberRecord {
            id: row.id,
            email: row.email,
            name: row.name,
            status: subscriber_status(&row.status)?,
            bounce_count: row.bounce_count,
            created_at: row.created_at.into(),
            confirmed_at: row.confirmed_at.map(Into::into),
            unsubscribed_at: row.unsubscribed_at.map(Into::into),
            erased_at: row.erased_at.map(Into::into),
        })
    }
}

/// One email to a subscriber, with its post's subject when it was an issue.
#[derive(sqlx::FromRow)]
pub(super) struct SubscriberDeliveryRow<T> {
    id: i64,
    kind: String,
    issue_id: Option<i64>,
    subject: Option<String>,
    status: String,
    attempts: i64,
    created_at: T,
    sent_at: Option<T>,
}

impl<T: Into<DateTime<Utc>>> TryFrom<SubscriberDeliveryRow<T>> for SubscriberDelivery {
    type Error = StoreError;

    fn try_from(row: SubscriberDeliveryRow<T>) -> StoreResult<Self> {
        let email = match (row.kind.as_str(), row.issue_id) {
            ("confirmation", _) => SentEmail::Confirmation,
            ("issue", Some(issue_id)) => SentEmail::Issue {
                issue_id,
                subject: row.subject.unwrap_or_default(),
            },
            _ => return Err(corrupt("delivery kind", &row.kind)),
        };
        Ok(SubscriberDelivery {
            id: row.id,
            email,
            status: delivery_status(&row.status)?,
            attempts: row.attempts,
            created_at: row.created_at.into(),
            sent_at: row.sent_at.map(Into::into),
        })
    }
}

/// A consent event as an erasure rewrites it.
#[derive(sqlx::FromRow)]
pub(super) struct ConsentDetailRow {
    pub id: i64,
    pub kind: String,
    pub detail: Option<String>,
}

impl ConsentDetailRow {
    pub fn kind(&self) -> StoreResult<ConsentKind> {
        ConsentKind::parse(&self.kind).ok_or_else(|| corrupt("consent kind", &self.kind))
    }
}

/// Whether a subscriber is there to erase.
#[derive(sqlx::FromRow)]
pub(super) struct ErasureStateRow<T> {
    pub erased_at: Option<T>,
}
