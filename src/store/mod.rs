//! Storage. One trait, [`Store`], made of a part per aggregate
//! ([`SubscriberStore`], [`PostStore`], [`IssueStore`], [`DeliveryStore`],
//! [`InstanceStore`], [`AdminStore`], [`SubscriberAdminStore`]),
//! with a SQLite and a PostgreSQL implementation. Each backend is a folder
//! split the same way, so the same file can be read side by side in both.
//! All SQL lives there; the rules it carries out live in `crate::domain`.
//! Callers get plain domain values and never see which backend answers.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::{Backend, DatabaseSettings};
use crate::domain::admin::{
    AdminAccount, AdminCredentials, AdminSession, NewAdmin, NewSession, SessionTokenHash,
    SetAdminOutcome,
};
use crate::domain::consent::ConsentContext;
use crate::domain::consent::ConsentEvent;
use crate::domain::delivery::{
    ClaimRequest, ClaimedDelivery, DeliveryCounts, DeliveryOutcome, UnsentDelivery, UnsentQuery,
};
use crate::domain::erasure::EraseOutcome;
use crate::domain::growth::DailyChanges;
use crate::domain::instance::{Rescue, RescuedClaims};
use crate::domain::issue::{CreateIssueOutcome, IssueMeta, IssueSummary, NewIssue, NextSend};
use crate::domain::post::{
    NewPost, Post, PostChanges, PostCounts, PostEdit, PostForRender, PostListing,
};
use crate::domain::retry::RetryPlan;
use crate::domain::signup::{ConfirmLink, ConfirmOutcome, SignupOutcome, SignupRequest};
use crate::domain::subscriber::{
    AddOutcome, OperatorSubscriber, Subscriber, SubscriberCounts, SubscriberQuery,
    SubscriberStatus, UnsubscribeOutcome,
};
use crate::domain::subscriber_record::{SubscriberDelivery, SubscriberRecord};
use crate::domain::subscriber_search::{SearchHit, SubscriberSearch};
use crate::links::TokenKey;

mod message_ids;
mod outage;
mod postgres;
mod rows;
mod sql;
mod sqlite;
pub mod transfer;

pub use postgres::PostgresStore;
pub use sqlite::{DatabaseLock, LockError, SqliteStore};

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
    /// The database failed after part of the work had committed (on
    /// PostgreSQL a signup group is two transactions).
    #[error("the database failed after part of the work was written")]
    PartlyWritten(#[source] Box<StoreError>),
}

/// The whole store: the backend's own needs, and every aggregate's part.
#[async_trait]
pub trait Store:
    SubscriberStore
    + PostStore
    + IssueStore
    + DeliveryStore
    + InstanceStore
    + AdminStore
    + GrowthStore
    + SubscriberAdminStore
{
    fn backend(&self) -> Backend;
    async fn migrate(&self) -> StoreResult<()>;
    async fn ping(&self) -> StoreResult<()>;
    /// One small write, committed: whether the database takes writes
    /// (for `/healthz`, at most once a second).
    async fn probe_write(&self) -> StoreResult<()>;
    /// The key behind every emailed token, made on first use.
    async fn token_key(&self) -> StoreResult<TokenKey>;
}

#[async_trait]
pub trait SubscriberStore: Send + Sync + 'static {
    /// Signs up a group of requests together (a group commit, see
    /// `crate::signups`), each answered as if it were alone; the outcomes
    /// are in request order. SQLite writes the group in one transaction;
    /// PostgreSQL writes the new addresses in one statement and the ones
    /// already on the list in a transaction after it.
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
    /// What opening a confirmation link shows, by the same rule as
    /// `confirm`, without writing anything: mail scanners open links.
    async fn confirmation_link(
        &self,
        confirmation_id: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<ConfirmLink>;
    async fn subscriber_exists(&self, subscriber_id: i64) -> StoreResult<bool>;
    /// The address of a subscriber, whatever their status; `None` once erased.
    async fn subscriber_email(&self, subscriber_id: i64) -> StoreResult<Option<String>>;
    /// The id and status of whoever has this address, if anyone.
    async fn subscriber_by_email(
        &self,
        email: &str,
    ) -> StoreResult<Option<(i64, SubscriberStatus)>>;
    async fn unsubscribe(
        &self,
        subscriber_id: i64,
        consent: ConsentContext,
        now: DateTime<Utc>,
    ) -> StoreResult<UnsubscribeOutcome>;
    /// Adds records in one transaction, each as if alone; the outcomes are
    /// in order. An import calls it a bounded batch at a time.
    async fn add_subscribers(
        &self,
        subscribers: &[OperatorSubscriber],
    ) -> StoreResult<Vec<AddOutcome>>;
    async fn add_subscriber(&self, subscriber: OperatorSubscriber) -> StoreResult<AddOutcome> {
        let mut outcomes = self
            .add_subscribers(std::slice::from_ref(&subscriber))
            .await?;
        outcomes
            .pop()
            .ok_or_else(|| StoreError::Corrupt("an added subscriber without an outcome".into()))
    }
    /// One page in id order; erased records (`domain::erasure`) are left out.
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
}

#[async_trait]
pub trait PostStore: Send + Sync + 'static {
    async fn seed_posts_if_empty(
        &self,
        posts: &[NewPost],
        now: DateTime<Utc>,
    ) -> StoreResult<usize>;
    async fn insert_post(&self, post: &NewPost, now: DateTime<Utc>) -> StoreResult<Post>;
    async fn list_posts(&self) -> StoreResult<Vec<Post>>;
    /// Every post without its body, in queue order, each sent one with
    /// the issue it first went out in: for the admin's queue page.
    async fn list_post_listings(&self) -> StoreResult<Vec<PostListing>>;
    async fn get_post(&self, post_id: i64) -> StoreResult<Option<Post>>;
    async fn post_for_render(&self, post_id: i64) -> StoreResult<Option<PostForRender>>;
    async fn update_post(&self, post_id: i64, changes: PostChanges) -> StoreResult<PostEdit>;
    async fn delete_post(&self, post_id: i64) -> StoreResult<PostEdit>;
    async fn post_counts(&self) -> StoreResult<PostCounts>;
}

#[async_trait]
pub trait IssueStore: Send + Sync + 'static {
    /// Creates the issue and, in the same transaction, one delivery per
    /// recipient. Idempotent per `slot_key`.
    async fn create_issue(&self, issue: NewIssue) -> StoreResult<CreateIssueOutcome>;
    async fn issue_meta(&self, issue_id: i64) -> StoreResult<Option<IssueMeta>>;
    async fn issue_progress(&self, issue_id: i64) -> StoreResult<DeliveryCounts>;
    /// The most recent scheduled slot that has an issue.
    async fn latest_scheduled_slot(&self) -> StoreResult<Option<DateTime<Utc>>>;
    /// Issues newest first, at most `limit`, with ids below `before`. Their
    /// progress comes from the tallies each outcome keeps: nothing counted.
    async fn list_issues(&self, before: Option<i64>, limit: u32) -> StoreResult<Vec<IssueSummary>>;
    async fn issue_summary(&self, issue_id: i64) -> StoreResult<Option<IssueSummary>>;
    /// One page of an issue's failed or skipped deliveries, with addresses.
    async fn unsent_deliveries(&self, query: UnsentQuery) -> StoreResult<Vec<UnsentDelivery>>;
    /// What [`IssueStore::retry_failures`] would do now, writing nothing.
    async fn retry_plan(&self, issue_id: i64) -> StoreResult<RetryPlan>;
    /// Puts the issue's failures that `domain::retry::retry_verdict` calls
    /// worth it back in the outbox, due at `now` with their attempts reset,
    /// and takes them off the issue's failed tally in the same transaction.
    /// A failure already put back is not failed any more, so a second call
    /// changes nothing. `retry` in the answer is how many went back.
    async fn retry_failures(&self, issue_id: i64, now: DateTime<Utc>) -> StoreResult<RetryPlan>;
    /// The post a send-now would broadcast, and how many are confirmed.
    async fn next_send(&self) -> StoreResult<NextSend>;
    /// The issue made for `slot_key`, if any.
    async fn issue_for_slot(&self, slot_key: &str) -> StoreResult<Option<i64>>;
}

#[async_trait]
pub trait DeliveryStore: Send + Sync + 'static {
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

/// The processes that claim deliveries, and their heartbeats (the rules are
/// in `crate::domain::instance`).
#[async_trait]
pub trait InstanceStore: Send + Sync + 'static {
    /// Registers `owner` at its first beat, and records each beat.
    async fn heartbeat(&self, owner: &str, now: DateTime<Utc>) -> StoreResult<()>;
    /// Forgets `owner` (a clean stop): any claim it still holds is then
    /// taken back by the next check of any other instance.
    async fn deregister(&self, owner: &str) -> StoreResult<()>;
    /// Puts the claims of every owner but `rescue.me` that has no heartbeat
    /// since `rescue.alive_since` (or no row at all) back to `pending`,
    /// without charging an attempt, and forgets those instances; returns
    /// how many claims came back from each owner.
    async fn rescue_claims(&self, rescue: &Rescue) -> StoreResult<Vec<RescuedClaims>>;
    /// Puts every claim of `owner`, known to be dead, back to `pending` and
    /// forgets it; returns how many. For a daemon that takes over the
    /// SQLite lock its predecessor held.
    async fn take_over(&self, owner: &str) -> StoreResult<u64>;
}

/// The accounts of the admin web UI and their sessions (the rules are in
/// `crate::domain::admin`).
#[async_trait]
pub trait AdminStore: Send + Sync + 'static {
    /// Creates the account, or replaces the password of the one with this
    /// address and ends its sessions.
    async fn set_admin(&self, admin: &NewAdmin) -> StoreResult<SetAdminOutcome>;
    /// Every account, oldest first.
    async fn list_admins(&self) -> StoreResult<Vec<AdminAccount>>;
    /// Removes the account and its sessions; false when there was none.
    async fn remove_admin(&self, email: &str) -> StoreResult<bool>;
    async fn admin_credentials(&self, email: &str) -> StoreResult<Option<AdminCredentials>>;
    /// Stores a session, and forgets every session that expired or went
    /// idle before `idle_cutoff`, so the table holds live ones only.
    async fn insert_admin_session(
        &self,
        session: &NewSession,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn admin_session(&self, token: &SessionTokenHash) -> StoreResult<Option<AdminSession>>;
    async fn touch_admin_session(
        &self,
        token: &SessionTokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// False when there was no such session.
    async fn delete_admin_session(&self, token: &SessionTokenHash) -> StoreResult<bool>;
}

/// What the dashboard's growth chart is drawn from.
#[async_trait]
pub trait GrowthStore: Send + Sync + 'static {
    /// Per day since `since`: who confirmed (bounced addresses aside) and
    /// who unsubscribed after confirming.
    async fn daily_changes(&self, since: DateTime<Utc>) -> StoreResult<DailyChanges>;
}

/// What the admin's subscriber pages read and do beyond the list (the
/// rules are in `crate::domain::subscriber_search` and
/// `crate::domain::erasure`).
#[async_trait]
pub trait SubscriberAdminStore: Send + Sync + 'static {
    /// One page of a search, in (key, id) order, each (field, status) read
    /// as a range of its index; erased records are left out.
    async fn search_subscribers(&self, search: &SubscriberSearch) -> StoreResult<Vec<SearchHit>>;
    async fn subscriber_record(&self, subscriber_id: i64) -> StoreResult<Option<SubscriberRecord>>;
    /// The emails sent to a subscriber, newest first, with ids below
    /// `before`.
    async fn subscriber_deliveries(
        &self,
        subscriber_id: i64,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<SubscriberDelivery>>;
    /// Which of `emails` are on the list (as stored: lowercased).
    async fn existing_emails(&self, emails: &[String]) -> StoreResult<HashSet<String>>;
    /// Unsubscribes as `unsubscribe` does, with the operator's `detail`
    /// in the consent log instead of a reader's IP and user agent.
    async fn unsubscribe_by_operator(
        &self,
        subscriber_id: i64,
        detail: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<UnsubscribeOutcome>;
    /// Removes the subscriber's personal data from every table, in one
    /// transaction, and logs an `erased` event with `detail` and nothing
    /// personal (see `domain::erasure`). Their pending emails are skipped.
    async fn erase_subscriber(
        &self,
        subscriber_id: i64,
        detail: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<EraseOutcome>;
}

pub type SharedStore = Arc<dyn Store>;

/// Opens the backend that the URL's scheme names.
pub async fn connect(settings: &DatabaseSettings) -> StoreResult<SharedStore> {
    Ok(match settings.backend {
        Backend::Sqlite => Arc::new(SqliteStore::connect(settings).await?),
        Backend::Postgres => Arc::new(PostgresStore::connect(settings).await?),
    })
}
