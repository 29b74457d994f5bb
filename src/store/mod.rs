//! Storage. One trait, [`Store`], with a SQLite and a PostgreSQL
//! implementation; all SQL lives in those two files. Callers get plain
//! domain values and never see which backend answers.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Backend, DatabaseSettings, ScheduleMode};
use crate::posts::{NewPost, Post, PostSubject};
use crate::subscribers::{EmailAddress, Subscriber, SubscriberName, SubscriberStatus};
use crate::tokens::TokenKey;

mod message_ids;
mod postgres;
mod sqlite;
pub mod transfer;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database query failed")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unexpected value in the database: {0}")]
    Corrupt(String),
    /// A task that writes on behalf of callers has ended (at shutdown).
    #[error("{0} is not running")]
    NotRunning(&'static str),
}

/// Who gave consent, and from where: recorded with every consent event.
#[derive(Debug, Clone, Default)]
pub struct ConsentContext {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SignupRequest {
    pub email: EmailAddress,
    pub name: Option<SubscriberName>,
    pub consent: ConsentContext,
    pub now: DateTime<Utc>,
    /// How long the confirmation link stays valid.
    pub confirmation_ttl: chrono::Duration,
    /// At most one confirmation email per address within this window.
    pub resend_window: chrono::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignupOutcome {
    /// A confirmation email is in the outbox.
    ConfirmationQueued { subscriber_id: i64 },
    /// Already confirmed: nothing to send.
    AlreadyConfirmed,
    /// A confirmation went out within the window: not another one.
    RecentlySent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    Confirmed { subscriber_id: i64 },
    Unknown,
    Expired,
    AlreadyUsed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsubscribeOutcome {
    Unsubscribed,
    AlreadyUnsubscribed,
    Unknown,
}

/// A subscriber added by the operator (CLI add, CSV import).
#[derive(Debug, Clone)]
pub struct OperatorSubscriber {
    pub email: EmailAddress,
    pub name: Option<SubscriberName>,
    pub status: SubscriberStatus,
    /// Where the record came from, kept in the consent log (`cli`, `import`).
    pub source: String,
    pub now: DateTime<Utc>,
    pub confirmation_ttl: chrono::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddOutcome {
    Added { id: i64, confirmation_queued: bool },
    AlreadyExists,
}

#[derive(Debug, Clone, Default)]
pub struct SubscriberQuery {
    pub status: Option<SubscriberStatus>,
    /// Keyset cursor: only ids greater than this.
    pub after: Option<i64>,
    pub limit: u32,
}

#[derive(Debug, Clone, Default)]
pub struct PostChanges {
    pub subject: Option<PostSubject>,
    pub body_markdown: Option<String>,
    /// 1-based place in the queue of posts not yet sent.
    pub position: Option<i64>,
}

#[derive(Debug)]
pub enum PostEdit {
    Updated(Post),
    Deleted,
    NotFound,
    AlreadySent,
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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

    /// Sums `(status, count)` rows as the stores read them.
    pub(crate) fn from_rows(rows: Vec<(String, i64)>) -> StoreResult<Self> {
        let mut counts = Self::default();
        for (status, count) in rows {
            counts.add(parse_delivery_status(&status)?, count);
        }
        Ok(counts)
    }

    pub fn unfinished(&self) -> i64 {
        self.pending + self.sending
    }

    pub fn total(&self) -> i64 {
        self.pending + self.sending + self.sent + self.failed + self.skipped
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SubscriberCounts {
    pub pending: i64,
    pub confirmed: i64,
    pub unsubscribed: i64,
    pub bounced: i64,
}

impl SubscriberCounts {
    /// Sums `(status, count)` rows as the stores read them.
    pub(crate) fn from_rows(rows: Vec<(String, i64)>) -> StoreResult<Self> {
        let mut counts = Self::default();
        for (status, count) in rows {
            counts.add(parse_subscriber_status(&status)?, count);
        }
        Ok(counts)
    }

    pub fn add(&mut self, status: SubscriberStatus, count: i64) {
        match status {
            SubscriberStatus::Pending => self.pending += count,
            SubscriberStatus::Confirmed => self.confirmed += count,
            SubscriberStatus::Unsubscribed => self.unsubscribed += count,
            SubscriberStatus::Bounced => self.bounced += count,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PostCounts {
    pub queued: i64,
    pub sent: i64,
}

#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Unique per worker process; fences every later update.
    pub owner: String,
    pub now: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryPayload {
    Confirmation { confirmation_id: i64 },
    Issue { issue_id: i64, post_id: i64 },
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
    /// Attempts so far, this one included.
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
    },
}

/// A post with its place in the series, for rendering.
#[derive(Debug, Clone)]
pub struct PostForRender {
    pub post: Post,
    /// 1-based rank by queue position, used as the issue number in sequence mode.
    pub ordinal: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct IssueMeta {
    pub number: i64,
    pub mode: ScheduleMode,
}

/// One entry of the append-only consent log.
#[derive(Debug, Clone, Serialize)]
pub struct ConsentEvent {
    /// `signup`, `confirm`, `unsubscribe`, `operator_add` or `bounced`.
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Option<String>,
}

/// After this many hard bounces a subscriber is `bounced`.
pub const HARD_BOUNCE_LIMIT: i64 = 3;

/// The consent log's detail when a hard bounce has just made a subscriber
/// `bounced` (given their count and status after it), or `None` when this
/// bounce changed nothing worth logging. Both backends log by this rule.
pub(crate) fn bounce_detail(bounces: i64, status: &str, error: &str) -> Option<String> {
    (bounces == HARD_BOUNCE_LIMIT && status == "bounced")
        .then(|| format!("after {bounces} hard bounces; last: {error}"))
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    async fn migrate(&self) -> StoreResult<()>;
    async fn ping(&self) -> StoreResult<()>;
    /// The key behind every emailed token, made on first use.
    async fn token_key(&self) -> StoreResult<TokenKey>;

    // Subscribers.
    /// Signs up every request in one transaction (a group commit, see
    /// `crate::signups`); the outcomes are in request order.
    async fn signup_group(&self, requests: &[SignupRequest]) -> StoreResult<Vec<SignupOutcome>>;
    async fn signup(&self, request: SignupRequest) -> StoreResult<SignupOutcome> {
        let mut outcomes = self.signup_group(std::slice::from_ref(&request)).await?;
        outcomes
            .pop()
            .ok_or_else(|| StoreError::Corrupt("a signup without an outcome".into()))
    }
    async fn confirm(
        &self,
        confirmation_id: i64,
        consent: ConsentContext,
        now: DateTime<Utc>,
    ) -> StoreResult<ConfirmOutcome>;
    async fn subscriber_exists(&self, subscriber_id: i64) -> StoreResult<bool>;
    async fn unsubscribe(
        &self,
        subscriber_id: i64,
        consent: ConsentContext,
        now: DateTime<Utc>,
    ) -> StoreResult<UnsubscribeOutcome>;
    async fn add_subscriber(&self, subscriber: OperatorSubscriber) -> StoreResult<AddOutcome>;
    async fn list_subscribers(&self, query: SubscriberQuery) -> StoreResult<Vec<Subscriber>>;
    async fn subscriber_counts(&self) -> StoreResult<SubscriberCounts>;
    /// The consent log of one subscriber, oldest first.
    async fn consent_events(&self, subscriber_id: i64) -> StoreResult<Vec<ConsentEvent>>;
    /// Bulk-creates confirmed subscribers `{prefix}{n}@{domain}` for
    /// benchmarks and load tests, inside the database.
    async fn bulk_insert_confirmed(
        &self,
        count: u64,
        prefix: &str,
        domain: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;

    // Posts.
    async fn seed_posts_if_empty(
        &self,
        posts: &[NewPost],
        now: DateTime<Utc>,
    ) -> StoreResult<usize>;
    async fn insert_post(&self, post: &NewPost, now: DateTime<Utc>) -> StoreResult<Post>;
    async fn list_posts(&self) -> StoreResult<Vec<Post>>;
    async fn get_post(&self, post_id: i64) -> StoreResult<Option<Post>>;
    async fn post_for_render(&self, post_id: i64) -> StoreResult<Option<PostForRender>>;
    async fn update_post(&self, post_id: i64, changes: PostChanges) -> StoreResult<PostEdit>;
    async fn delete_post(&self, post_id: i64) -> StoreResult<PostEdit>;
    async fn post_counts(&self) -> StoreResult<PostCounts>;

    // Issues.
    /// Creates the issue and, in the same transaction, one delivery per
    /// recipient. Idempotent per `slot_key`.
    async fn create_issue(&self, issue: NewIssue) -> StoreResult<CreateIssueOutcome>;
    async fn issue_meta(&self, issue_id: i64) -> StoreResult<Option<IssueMeta>>;
    async fn issue_progress(&self, issue_id: i64) -> StoreResult<DeliveryCounts>;
    /// The most recent scheduled slot that has an issue.
    async fn latest_scheduled_slot(&self) -> StoreResult<Option<DateTime<Utc>>>;

    // Deliveries.
    /// Expired leases go back to `pending`; returns how many.
    async fn reclaim_expired_leases(&self, now: DateTime<Utc>) -> StoreResult<u64>;
    async fn claim_deliveries(&self, request: ClaimRequest) -> StoreResult<Vec<ClaimedDelivery>>;
    /// Applies outcomes in one transaction, fenced on the lease owner; returns
    /// how many rows this owner still held.
    async fn record_outcomes(&self, owner: &str, outcomes: &[DeliveryOutcome]) -> StoreResult<u64>;
    /// Gives unstarted claims back (on shutdown), without counting an attempt.
    async fn release_claims(&self, owner: &str, delivery_ids: &[i64]) -> StoreResult<u64>;
    async fn delivery_counts(&self) -> StoreResult<DeliveryCounts>;
}

pub type SharedStore = Arc<dyn Store>;

/// Opens the backend that the URL's scheme names.
pub async fn connect(settings: &DatabaseSettings) -> StoreResult<SharedStore> {
    Ok(match settings.backend {
        Backend::Sqlite => Arc::new(SqliteStore::connect(settings).await?),
        Backend::Postgres => Arc::new(PostgresStore::connect(settings).await?),
    })
}

/// For a signup group: the new subscriber's id for the first request for
/// each newly inserted address, `None` for the rest. A second request for
/// the same address in the group then finds the subscriber the first one
/// made, as it would have alone.
pub(crate) fn first_of_each_new_address(
    requests: &[SignupRequest],
    mut new_ids: std::collections::HashMap<String, i64>,
) -> Vec<Option<i64>> {
    requests
        .iter()
        .map(|request| new_ids.remove(request.email.as_str()))
        .collect()
}

pub(crate) fn parse_subscriber_status(text: &str) -> StoreResult<SubscriberStatus> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("subscriber status `{text}`")))
}

pub(crate) fn parse_delivery_status(text: &str) -> StoreResult<DeliveryStatus> {
    DeliveryStatus::parse(text)
        .ok_or_else(|| StoreError::Corrupt(format!("delivery status `{text}`")))
}

pub(crate) fn parse_mode(text: &str) -> StoreResult<ScheduleMode> {
    match text {
        "broadcast" => Ok(ScheduleMode::Broadcast),
        "sequence" => Ok(ScheduleMode::Sequence),
        other => Err(StoreError::Corrupt(format!("issue mode `{other}`"))),
    }
}
