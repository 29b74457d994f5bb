//! The part of the store written once for both backends. The SQL here
//! reads the same on SQLite and PostgreSQL (`$1` placeholders work on both),
//! generic over the database; where the dialects differ, [`Dialect`] says
//! how. A backend implements [`SqlBackend`] (its pool and its write
//! transactions) and the aggregate parts whose SQL differs
//! ([`SubscriberSql`], [`IssueSql`], [`DeliverySql`]); the blanket impls in
//! this folder make it a whole [`Store`](super::Store).
//!
//! Each blanket impl lists the sqlx bounds its queries need (an executor,
//! the types it binds and the rows it reads). Both databases meet them, so
//! they stop at the impl: callers see a plain `Store`.

use std::ops::DerefMut;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Database, Pool};

use super::message_ids::IssueMessageIds;
use super::rows::Millis;
use super::StoreResult;
use crate::config::Backend;
use crate::domain::delivery::{ClaimRequest, ClaimedDelivery, DeliveryOutcome, DeliveryStatus};
use crate::domain::signup::{SignupOutcome, SignupRequest};

mod admins;
mod deliveries;
mod growth;
mod instances;
mod issues;
mod posts;
mod store;
mod subscriber_admin;
mod subscribers;

pub(super) use subscribers::SubscriberWrites;

/// How a database differs where the shared SQL meets it.
pub(super) trait Dialect: Database {
    /// A time as the database stores it.
    type Time: From<DateTime<Utc>> + Into<DateTime<Utc>> + Copy + Send + Sync + Unpin + 'static;
    /// Ends a `SELECT` whose rows the transaction goes on to write.
    const FOR_UPDATE: &'static str;
    /// Run first by every edit of the post queue: it serialises them with
    /// each other and with issue creation.
    const LOCK_POST_QUEUE: Option<&'static str>;
    /// Run first by issue creation: one issue is made at a time, so numbers
    /// are gapless and a slot has one owner, and no post edit is in flight.
    const LOCKS_FOR_NEW_ISSUE: &'static [&'static str];
    /// Ends the query for the next post to broadcast.
    const SKIP_LOCKED: &'static str;
    /// Deliveries by status, as `status, count` rows, counted the way
    /// that is cheapest on this database.
    const COUNT_DELIVERIES: &'static str;
    /// The search keys of `domain::subscriber_search`, written as the
    /// indexes of migration 0005 hold them (a query must match the text).
    const SEARCH_EMAIL: &'static str;
    const SEARCH_DOMAIN: &'static str;
    const SEARCH_NAME: &'static str;
    /// `email` is one of the strings in the JSON array `$1`.
    const EMAIL_IN_JSON: &'static str;
    /// How many rows a statement changed (each driver has its own result).
    fn rows_affected(result: &Self::QueryResult) -> u64;
    /// Whole days from the time bound as `$1` to `column`'s time.
    fn days_since(column: &str) -> String;
}

impl Dialect for sqlx::Sqlite {
    /// Epoch milliseconds.
    type Time = Millis;
    /// SQLite has one writer at a time, and the store one writer connection:
    /// a write transaction already excludes every other.
    const FOR_UPDATE: &'static str = "";
    const LOCK_POST_QUEUE: Option<&'static str> = None;
    const LOCKS_FOR_NEW_ISSUE: &'static [&'static str] = &[];
    const SKIP_LOCKED: &'static str = "";
    /// Over the (issue_id, status) index, in its order: no sort of every
    /// row (a GROUP BY status held ~100 MB during a 1M send), and a tenth
    /// of the pages a scan of the table reads.
    const COUNT_DELIVERIES: &'static str = "SELECT status, SUM(n) AS count FROM \
         (SELECT status, COUNT(*) AS n FROM deliveries GROUP BY issue_id, status) \
         GROUP BY status";
    /// SQLite's lower() folds ASCII only; text compares bytewise.
    const SEARCH_EMAIL: &'static str = "lower(email)";
    const SEARCH_DOMAIN: &'static str = "substr(lower(email), instr(email, '@'))";
    const SEARCH_NAME: &'static str = "lower(name)";
    const EMAIL_IN_JSON: &'static str = "email IN (SELECT value FROM json_each($1))";

    fn rows_affected(result: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    fn days_since(column: &str) -> String {
        format!("(({column} - $1) / 86400000)")
    }
}

impl Dialect for sqlx::Postgres {
    type Time = DateTime<Utc>;
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    /// Without it a broadcast's `SKIP LOCKED` would pass over a post that
    /// is being edited.
    const LOCK_POST_QUEUE: Option<&'static str> =
        Some("LOCK TABLE posts IN SHARE ROW EXCLUSIVE MODE");
    /// Issue creation alone writes `issues`, and readers are not blocked.
    /// `ROW EXCLUSIVE` on posts waits for a queue edit in flight and keeps
    /// new ones out until the issue commits.
    const LOCKS_FOR_NEW_ISSUE: &'static [&'static str] = &[
        "LOCK TABLE issues IN SHARE ROW EXCLUSIVE MODE",
        "LOCK TABLE posts IN ROW EXCLUSIVE MODE",
    ];
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const COUNT_DELIVERIES: &'static str =
        "SELECT status, COUNT(*) AS count FROM deliveries GROUP BY status";
    /// In the "C" collation, as SQLite: lower() folds ASCII only, and
    /// text compares bytewise, so a prefix is one range.
    const SEARCH_EMAIL: &'static str = "lower(email COLLATE \"C\")";
    const SEARCH_DOMAIN: &'static str = "substr(lower(email COLLATE \"C\"), strpos(email, '@'))";
    const SEARCH_NAME: &'static str = "lower(name COLLATE \"C\")";
    const EMAIL_IN_JSON: &'static str =
        "email IN (SELECT json_array_elements_text(CAST($1 AS json)))";

    fn rows_affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
        result.rows_affected()
    }

    fn days_since(column: &str) -> String {
        format!("floor(extract(epoch FROM ({column} - $1)) / 86400)::bigint")
    }
}

/// A backend's connections, and what it alone knows: its schema.
#[async_trait]
pub(super) trait SqlBackend: Send + Sync + 'static {
    const KIND: Backend;
    type Db: Dialect;
    /// A write transaction; it derefs to the connection it runs on. Dropped
    /// without [`SqlBackend::commit`], it is rolled back.
    type Tx<'a>: DerefMut<Target = <Self::Db as Database>::Connection> + Send + 'a
    where
        Self: 'a;

    /// For reads.
    fn pool(&self) -> &Pool<Self::Db>;
    async fn write(&self) -> StoreResult<Self::Tx<'_>>;
    async fn commit(tx: Self::Tx<'_>) -> StoreResult<()>;
    /// Undoes the transaction now, rather than when the connection is next
    /// used.
    async fn roll_back(tx: Self::Tx<'_>) -> StoreResult<()>;
    /// Applies the backend's migrations.
    async fn apply_migrations(&self) -> StoreResult<()>;
}

/// The subscriber operations whose SQL differs between the backends.
#[async_trait]
pub(super) trait SubscriberSql: SqlBackend {
    /// See [`SubscriberStore::signup_group`](super::SubscriberStore::signup_group).
    async fn signup_group(&self, requests: &[SignupRequest]) -> StoreResult<Vec<SignupOutcome>>;
    /// See [`SubscriberStore::bulk_insert_confirmed`](super::SubscriberStore::bulk_insert_confirmed).
    async fn bulk_insert_confirmed(&self, bulk: BulkSubscribers<'_>) -> StoreResult<u64>;
}

/// What [`SubscriberSql::bulk_insert_confirmed`] makes.
pub(super) struct BulkSubscribers<'a> {
    pub count: u64,
    pub prefix: &'a str,
    pub domain: &'a str,
    pub now: DateTime<Utc>,
}

/// The connection a backend's write transaction runs on.
pub(super) type Connection<B> = <<B as SqlBackend>::Db as Database>::Connection;

/// What an issue's fan-out writes: one delivery per recipient, each with
/// a Message-ID made in the database.
pub(super) struct FanOut<'a> {
    pub issue_id: i64,
    pub now: DateTime<Utc>,
    pub message_ids: &'a IssueMessageIds,
}

/// An issue's fan-out, the one statement that writes a row per recipient:
/// each backend's is tuned for it.
#[async_trait]
pub(super) trait IssueSql: SqlBackend {
    /// A delivery of `post_id` to every confirmed subscriber; how many.
    async fn fan_out_broadcast(
        connection: &mut Connection<Self>,
        fan_out: FanOut<'_>,
        post_id: i64,
    ) -> StoreResult<u64>;
    /// A delivery to every confirmed subscriber of the first post, in queue
    /// order, that they have not had; how many.
    async fn fan_out_sequence(
        connection: &mut Connection<Self>,
        fan_out: FanOut<'_>,
    ) -> StoreResult<u64>;
    /// Puts these failed deliveries of `issue_id` back in the outbox, due
    /// at `now` with their attempts reset, unless they are no longer
    /// failed or their subscriber is no longer confirmed; how many.
    async fn requeue_failures(
        connection: &mut Connection<Self>,
        issue_id: i64,
        delivery_ids: &[i64],
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;
}

/// The column of `issue_tallies` that counts deliveries ended `status`;
/// `None` for a status that is no end (pending, sending).
pub(super) fn tally_column(status: DeliveryStatus) -> Option<&'static str> {
    match status {
        DeliveryStatus::Sent => Some("sent"),
        DeliveryStatus::Failed => Some("failed"),
        DeliveryStatus::Skipped => Some("skipped"),
        DeliveryStatus::Pending | DeliveryStatus::Sending => None,
    }
}

/// The `SET` list of an `UPDATE issue_tallies AS t` that adds `delta` (an
/// SQL expression) to `column`, and marks the issue finished at `at` once
/// that ends every recipient's delivery (unmarked otherwise). Every write
/// of an outcome runs one in its transaction, so the tallies are always
/// what a count of the deliveries would say.
pub(super) fn tally_set(column: &'static str, delta: &str, at: &str) -> String {
    format!(
        "{column} = t.{column} + {delta}, \
         finished_at = CASE WHEN t.sent + t.failed + t.skipped + {delta} >= \
             (SELECT recipients FROM issues WHERE issues.id = t.issue_id) \
             THEN COALESCE(t.finished_at, {at}) END"
    )
}

/// The delivery worker's claims and outcomes, tuned for each backend.
#[async_trait]
pub(super) trait DeliverySql: SqlBackend {
    async fn claim_deliveries(&self, request: ClaimRequest) -> StoreResult<Vec<ClaimedDelivery>>;
    async fn record_outcomes(&self, owner: &str, outcomes: &[DeliveryOutcome]) -> StoreResult<u64>;
    async fn release_claims(&self, owner: &str, delivery_ids: &[i64]) -> StoreResult<u64>;
}
