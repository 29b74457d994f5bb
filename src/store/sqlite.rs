//! The embedded backend. Write transactions start with `BEGIN IMMEDIATE`, so
//! two writers queue on the busy timeout instead of failing on a lock
//! upgrade. Times are stored as epoch milliseconds.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, SqlitePool, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use super::message_ids::{self, IssueMessageIds};
use super::*;
use crate::posts::PostStatus;

mod checkpoints;
mod outcomes;
mod signup;
#[cfg(test)]
mod tests;

pub struct SqliteStore {
    /// For reads, and for the data transfer between backends (`pool()`).
    pool: SqlitePool,
    /// One connection for every write, reached only through its lock.
    /// SQLite drops a connection's whole page cache when another connection
    /// has written since it last read; writes taking turns over the pool's
    /// connections re-read their pages from the OS on every transaction.
    /// And SQLite has one writer at a time: writers queue on this lock, in
    /// order, instead of in SQLite's busy handler, which sleeps in steps of
    /// up to 100 ms and gave signups a p99 of 600 ms under load. A bare
    /// connection, not a pool of one: a pool pings each connection given
    /// back to it, one more round trip to SQLite's thread that the next
    /// writer waited for.
    writer: Arc<Mutex<Writer>>,
    /// Copies the WAL into the database beside the writer (see
    /// `checkpoints`); stopped with the store.
    checkpointer: tokio::task::JoinHandle<()>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.checkpointer.abort();
    }
}

type Tx<'c> = Transaction<'c, Sqlite>;

pub(super) struct Writer {
    connection: SqliteConnection,
    /// A transaction was begun by hand, inside a statement list, and has not
    /// been committed or rolled back yet (see [`WriteLock::begin_by_hand`]).
    open_by_hand: bool,
}

/// The locked writer connection; it derefs to the connection.
pub(super) struct WriteLock<'a>(MutexGuard<'a, Writer>);

impl std::ops::Deref for WriteLock<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.0.connection
    }
}

impl std::ops::DerefMut for WriteLock<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.0.connection
    }
}

impl WriteLock<'_> {
    /// For a transaction whose `BEGIN IMMEDIATE` goes in one statement
    /// list with its first statements, and its `COMMIT` with its last:
    /// each statement list is one round trip to SQLite's thread, against
    /// one per statement through sqlx's `Transaction`. Call this before the
    /// first list, and [`Self::finish_by_hand`] with how it ended.
    pub(super) fn begin_by_hand(&mut self) {
        self.0.open_by_hand = true;
    }

    /// After the `COMMIT` went through, or with the error that stopped the
    /// transaction, which is then rolled back and returned.
    pub(super) async fn finish_by_hand<T>(&mut self, result: StoreResult<T>) -> StoreResult<T> {
        if result.is_err() {
            self.roll_back_by_hand().await;
        } else {
            self.0.open_by_hand = false;
        }
        result
    }

    async fn roll_back_by_hand(&mut self) {
        // Fails harmlessly when the error came before `BEGIN` took effect
        // or SQLite rolled back on its own.
        if let Err(error) = sqlx::query("ROLLBACK").execute(&mut **self).await {
            tracing::debug!(%error, "no transaction to roll back");
        }
        self.0.open_by_hand = false;
    }
}

fn millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

fn from_millis(value: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(value).unwrap_or_default()
}

const POST_COLUMNS: &str = "id, subject, body_markdown, position, status, created_at, sent_at";

type PostRow = (i64, String, String, i64, String, i64, Option<i64>);

fn post_from_row(row: PostRow) -> StoreResult<Post> {
    let (id, subject, body_markdown, position, status, created_at, sent_at) = row;
    Ok(Post {
        id,
        subject,
        body_markdown,
        position,
        status: PostStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("post status `{status}`")))?,
        created_at: from_millis(created_at),
        sent_at: sent_at.map(from_millis),
    })
}

/// A JSON array for `json_each(?)`: how one statement takes many rows.
fn to_json(rows: &impl serde::Serialize) -> String {
    serde_json::to_string(rows).expect("plain rows serialise")
}

impl SqliteStore {
    pub async fn connect(settings: &DatabaseSettings) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(&settings.url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL survives a process crash; only an OS crash can
            // lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // Page caches are most of the daemon's memory in a large send, one
        // per connection. The writer's 4 MB holds the pages every write
        // touches (the due index, the newest rows); reads are point lookups
        // and counts that scan more than any cache holds, so 2 MB each.
        let reader_options = options.clone().pragma("cache_size", "-2000");
        // Checkpoints are the checkpointer's job (see `checkpoints`), not
        // the writer's. The writer restarts the WAL after them, cutting the
        // file back to 32 MB if a slow moment let it grow.
        let writer_options = options
            .clone()
            .pragma("cache_size", "-4000")
            .pragma("wal_autocheckpoint", "0")
            .pragma("journal_size_limit", "33554432");
        // A file has no far end to hang up; the default ping before every
        // acquire is one more round trip to SQLite's thread.
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(reader_options)
            .await?;
        let connection = SqliteConnection::connect_with(&writer_options).await?;
        let writer = Arc::new(Mutex::new(Writer {
            connection,
            open_by_hand: false,
        }));
        let checkpointer = checkpoints::start(&options, writer.clone()).await?;
        Ok(Self {
            pool,
            writer,
            checkpointer,
        })
    }

    /// The writer connection: for a single statement that writes, or for a
    /// write transaction through [`begin`].
    async fn lock(&self) -> WriteLock<'_> {
        let mut writer = WriteLock(self.writer.lock().await);
        if writer.0.open_by_hand {
            // Whoever began it was dropped halfway (a cancelled future).
            writer.roll_back_by_hand().await;
        }
        writer
    }

    /// For the data transfer between backends, which lives in this module.
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// A write transaction on the locked writer connection.
async fn begin(writer: &mut SqliteConnection) -> StoreResult<Tx<'_>> {
    Ok(writer.begin_with("BEGIN IMMEDIATE").await?)
}

async fn record_consent(
    connection: &mut SqliteConnection,
    subscriber_id: i64,
    email: &str,
    kind: &str,
    consent: &ConsentContext,
    detail: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO consent_events (subscriber_id, email, kind, occurred_at, ip, user_agent, detail) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(subscriber_id)
    .bind(email)
    .bind(kind)
    .bind(millis(now))
    .bind(consent.ip.as_deref())
    .bind(consent.user_agent.as_deref())
    .bind(detail)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// A confirmation request and its email, in the caller's transaction.
async fn queue_confirmation(
    connection: &mut SqliteConnection,
    subscriber_id: i64,
    now: DateTime<Utc>,
    ttl: chrono::Duration,
) -> StoreResult<i64> {
    let (confirmation_id,): (i64,) = sqlx::query_as(
        "INSERT INTO confirmations (subscriber_id, created_at, expires_at) VALUES (?, ?, ?) RETURNING id",
    )
    .bind(subscriber_id)
    .bind(millis(now))
    .bind(millis(now + ttl))
    .fetch_one(&mut *connection)
    .await?;
    sqlx::query(
        "INSERT INTO deliveries (kind, priority, subscriber_id, confirmation_id, message_id, status, \
         next_attempt_at, created_at) VALUES ('confirmation', 0, ?, ?, ?, 'pending', ?, ?)",
    )
    .bind(subscriber_id)
    .bind(confirmation_id)
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(millis(now))
    .bind(millis(now))
    .execute(&mut *connection)
    .await?;
    sqlx::query("UPDATE subscribers SET last_confirmation_sent_at = ? WHERE id = ?")
        .bind(millis(now))
        .bind(subscriber_id)
        .execute(&mut *connection)
        .await?;
    Ok(confirmation_id)
}

async fn count_by_status(
    pool: &SqlitePool,
    sql: &str,
    bind: Option<i64>,
) -> StoreResult<Vec<(String, i64)>> {
    let mut query = sqlx::query_as::<_, (String, i64)>(sql);
    if let Some(value) = bind {
        query = query.bind(value);
    }
    Ok(query.fetch_all(pool).await?)
}

/// Rewrites the positions of unsent posts so `moved` sits at `place`
/// (1-based among unsent posts), after every sent post.
async fn reorder_queue(tx: &mut Tx<'_>, moved: i64, place: i64) -> StoreResult<()> {
    let (after_sent,): (i64,) =
        sqlx::query_as("SELECT COALESCE(MAX(position), 0) FROM posts WHERE status = 'sent'")
            .fetch_one(&mut **tx)
            .await?;
    let mut queued: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM posts WHERE status = 'queued' AND id != ? ORDER BY position, id",
    )
    .bind(moved)
    .fetch_all(&mut **tx)
    .await?;
    let index = (place.max(1) as usize - 1).min(queued.len());
    queued.insert(index, moved);
    for (offset, id) in queued.iter().enumerate() {
        sqlx::query("UPDATE posts SET position = ? WHERE id = ?")
            .bind(after_sent + offset as i64 + 1)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn fetch_post(tx: &mut Tx<'_>, post_id: i64) -> StoreResult<Option<Post>> {
    let row: Option<PostRow> =
        sqlx::query_as(&format!("SELECT {POST_COLUMNS} FROM posts WHERE id = ?"))
            .bind(post_id)
            .fetch_optional(&mut **tx)
            .await?;
    row.map(post_from_row).transpose()
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> StoreResult<()> {
        // Through the pool, with the lock held so that nothing else writes:
        // the migrator takes an `Acquire`, which a borrowed connection in
        // this async trait cannot give.
        let _writer = self.lock().await;
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn token_key(&self) -> StoreResult<TokenKey> {
        let mut writer = self.lock().await;
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ('token_key', ?) ON CONFLICT DO NOTHING",
        )
        .bind(TokenKey::generate().to_vec())
        .execute(&mut *writer)
        .await?;
        let bytes: Vec<u8> =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = 'token_key'")
                .fetch_one(&self.pool)
                .await?;
        TokenKey::from_bytes(&bytes).ok_or_else(|| StoreError::Corrupt("token key length".into()))
    }

    async fn signup_group(&self, requests: &[SignupRequest]) -> StoreResult<Vec<SignupOutcome>> {
        signup::signup_group(self, requests).await
    }

    async fn confirm(
        &self,
        confirmation_id: i64,
        consent: ConsentContext,
        now: DateTime<Utc>,
    ) -> StoreResult<ConfirmOutcome> {
        let mut writer = self.lock().await;
        let mut tx = begin(&mut writer).await?;
        let row: Option<(i64, i64, Option<i64>, String, String)> = sqlx::query_as(
            "SELECT c.subscriber_id, c.expires_at, c.used_at, s.email, s.status \
             FROM confirmations c JOIN subscribers s ON s.id = c.subscriber_id WHERE c.id = ?",
        )
        .bind(confirmation_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((subscriber_id, expires_at, used_at, email, status)) = row else {
            return Ok(ConfirmOutcome::Unknown);
        };
        if used_at.is_some() {
            return Ok(ConfirmOutcome::AlreadyUsed);
        }
        if expires_at <= millis(now) {
            return Ok(ConfirmOutcome::Expired);
        }
        sqlx::query("UPDATE confirmations SET used_at = ? WHERE id = ?")
            .bind(millis(now))
            .bind(confirmation_id)
            .execute(&mut *tx)
            .await?;
        if status != "confirmed" {
            sqlx::query(
                "UPDATE subscribers SET status = 'confirmed', confirmed_at = ?, bounce_count = 0 \
                 WHERE id = ?",
            )
            .bind(millis(now))
            .bind(subscriber_id)
            .execute(&mut *tx)
            .await?;
            record_consent(
                &mut tx,
                subscriber_id,
                &email,
                "confirm",
                &consent,
                None,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(ConfirmOutcome::Confirmed { subscriber_id })
    }

    async fn subscriber_exists(&self, subscriber_id: i64) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM subscribers WHERE id = ?")
            .bind(subscriber_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    async fn unsubscribe(
        &self,
        subscriber_id: i64,
        consent: ConsentContext,
        now: DateTime<Utc>,
    ) -> StoreResult<UnsubscribeOutcome> {
        let mut writer = self.lock().await;
        let mut tx = begin(&mut writer).await?;
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT email, status FROM subscribers WHERE id = ?")
                .bind(subscriber_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((email, status)) = row else {
            return Ok(UnsubscribeOutcome::Unknown);
        };
        if status == "unsubscribed" {
            return Ok(UnsubscribeOutcome::AlreadyUnsubscribed);
        }
        sqlx::query(
            "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = ? WHERE id = ?",
        )
        .bind(millis(now))
        .bind(subscriber_id)
        .execute(&mut *tx)
        .await?;
        // An older confirmation link must not undo this.
        sqlx::query(
            "UPDATE confirmations SET used_at = ? WHERE subscriber_id = ? AND used_at IS NULL",
        )
        .bind(millis(now))
        .bind(subscriber_id)
        .execute(&mut *tx)
        .await?;
        record_consent(
            &mut tx,
            subscriber_id,
            &email,
            "unsubscribe",
            &consent,
            None,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(UnsubscribeOutcome::Unsubscribed)
    }

    async fn add_subscriber(&self, subscriber: OperatorSubscriber) -> StoreResult<AddOutcome> {
        let mut writer = self.lock().await;
        let mut tx = begin(&mut writer).await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM subscribers WHERE email = ?")
            .bind(subscriber.email.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Ok(AddOutcome::AlreadyExists);
        }
        let now = subscriber.now;
        let confirmed = subscriber.status == SubscriberStatus::Confirmed;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO subscribers (email, name, status, created_at, confirmed_at, unsubscribed_at) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(subscriber.email.as_str())
        .bind(subscriber.name.as_ref().map(SubscriberName::as_str))
        .bind(subscriber.status.as_str())
        .bind(millis(now))
        .bind(confirmed.then(|| millis(now)))
        .bind((subscriber.status == SubscriberStatus::Unsubscribed).then(|| millis(now)))
        .fetch_one(&mut *tx)
        .await?;
        let detail = format!("source={} status={}", subscriber.source, subscriber.status);
        record_consent(
            &mut tx,
            id,
            subscriber.email.as_str(),
            "operator_add",
            &ConsentContext::default(),
            Some(&detail),
            now,
        )
        .await?;
        let confirmation_queued = subscriber.status == SubscriberStatus::Pending;
        if confirmation_queued {
            queue_confirmation(&mut tx, id, now, subscriber.confirmation_ttl).await?;
        }
        tx.commit().await?;
        Ok(AddOutcome::Added {
            id,
            confirmation_queued,
        })
    }

    async fn list_subscribers(&self, query: SubscriberQuery) -> StoreResult<Vec<Subscriber>> {
        let rows: Vec<(i64, String, Option<String>, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT id, email, name, status, created_at, confirmed_at FROM subscribers \
             WHERE (?1 IS NULL OR status = ?1) AND id > ?2 ORDER BY id LIMIT ?3",
        )
        .bind(query.status.map(SubscriberStatus::as_str))
        .bind(query.after.unwrap_or(0))
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, email, name, status, created_at, confirmed_at)| {
                Ok(Subscriber {
                    id,
                    email,
                    name,
                    status: parse_subscriber_status(&status)?,
                    created_at: from_millis(created_at),
                    confirmed_at: confirmed_at.map(from_millis),
                })
            })
            .collect()
    }

    async fn subscriber_counts(&self) -> StoreResult<SubscriberCounts> {
        SubscriberCounts::from_rows(
            count_by_status(
                &self.pool,
                "SELECT status, COUNT(*) FROM subscribers GROUP BY status",
                None,
            )
            .await?,
        )
    }

    async fn bulk_insert_confirmed(
        &self,
        count: u64,
        prefix: &str,
        domain: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mut writer = self.lock().await;
        let mut tx = begin(&mut writer).await?;
        let result = sqlx::query(
            "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < ?1) \
             INSERT INTO subscribers (email, status, created_at, confirmed_at) \
             SELECT ?2 || n || '@' || ?3, 'confirmed', ?4, ?4 FROM seq WHERE true \
             ON CONFLICT DO NOTHING",
        )
        .bind(count as i64)
        .bind(prefix)
        .bind(domain)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(result.rows_affected())
    }

    async fn seed_posts_if_empty(
        &self,
        posts: &[NewPost],
        now: DateTime<Utc>,
    ) -> StoreResult<usize> {
        let mut writer = self.lock().await;
        let mut tx = begin(&mut writer).await?;
        let (existing,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM posts")
            .fetch_one(&mut *tx)
            .await?;
        if existing > 0 {
            return Ok(0);
        }
        for (index, post) in posts.iter().enumerate() {
            sqlx::query(
                "INSERT INTO posts (subject, body_markdown, position, status, created_at) \
                 VALUES (?, ?, ?, 'queued', ?)",
            )
            .bind(post.subject.as_str())
            .bind(&post.body_markdown)
            .bind(index as i64 + 1)
            .bind(millis(now))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(posts.len())
    }

    async fn insert_post(&self, post: &NewPost, now: DateTime<Utc>) -> StoreResult<Post> {
        let mut writer = self.lock().await;
        let mut tx = begin(&mut writer).await?;
        let row: PostRow = sqlx::query_as(&format!(
            "INSERT INTO posts (subject, body_markdown, position, status, created_at) \
             SELECT ?, ?, COALESCE(MAX(position), 0) + 1, 'queued', ? FROM posts \
             RETURNING {POST_COLUMNS}"
        ))
        .bind(post.subject.as_str())
        .bind(&post.body_markdown)
        .bind(millis(now))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        post_from_row(row)
    }

    async fn list_posts(&self) -> StoreResult<Vec<Post>> {
        let rows: Vec<PostRow> = sqlx::query_as(&format!(
            "SELECT {POST_COLUMNS} FROM posts ORDER BY position, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(post_from_row).collect()
    }

    async fn get_post(&self, post_id: i64) -> StoreResult<Option<Post>> {
        let row: Option<PostRow> =
            sqlx::query_as(&format!("SELECT {POST_COLUMNS} FROM posts WHERE id = ?"))
                .bind(post_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(post_from_row).transpose()
    }

    async fn post_for_render(&self, post_id: i64) -> StoreResult<Option<PostForRender>> {
        let Some(post) = self.get_post(post_id).await? else {
            return Ok(None);
        };
        let (ordinal,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM posts WHERE position < ?1 OR (position = ?1 AND id <= ?2)",
        )
        .bind(post.position)
        .bind(post.id)
        .fetch_one(&self.pool)
        .await?;
        Ok(Some(PostForRender { post, ordinal }))
    }

    async fn update_post(&self, post_id: i64, changes: PostChanges) -> StoreResult<PostEdit> {
        let mut writer = self.lock().await;
        let mut tx = begin(&mut writer).await?;
        let Some(post) = fetch_post(&mut tx, post_id).await? else {
            return Ok(PostEdit::NotFound);
        };
        if post.status == PostStatus::Sent {
            return Ok(PostEdit::AlreadySent);
        }
        sqlx::query(
            "UPDATE posts SET subject = COALESCE(?, subject), body_markdown = COALESCE(?, body_markdown) \
             WHERE id = ?",
        )
        .bind(changes.subject.as_ref().map(PostSubject::as_str))
        .bind(changes.body_markdown.as_deref())
        .bind(post_id)
        .execute(&mut *tx)
        .await?;
        if let Some(place) = changes.position {
            reorder_queue(&mut tx, post_id, place).await?;
        }
        let updated = fetch_post(&mut tx, post_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("post vanished during update".into()))?;
        tx.commit().await?;
        Ok(PostEdit::Updated(updated))
    }

    async fn delete_post(&self, post_id: i64) -> StoreResult<PostEdit> {
        let mut writer = self.lock().await;
        let mut tx = begin(&mut writer).await?;
        let Some(post) = fetch_post(&mut tx, post_id).await? else {
            return Ok(PostEdit::NotFound);
        };
        if post.status == PostStatus::Sent {
            return Ok(PostEdit::AlreadySent);
        }
        sqlx::query("DELETE FROM posts WHERE id = ?")
            .bind(post_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(PostEdit::Deleted)
    }

    async fn post_counts(&self) -> StoreResult<PostCounts> {
        let mut counts = PostCounts::default();
        for (status, count) in count_by_status(
            &self.pool,
            "SELECT status, COUNT(*) FROM posts GROUP BY status",
            None,
        )
        .await?
        {
            match status.as_str() {
                "queued" => counts.queued = count,
                "sent" => counts.sent = count,
                other => return Err(StoreError::Corrupt(format!("post status `{other}`"))),
            }
        }
        Ok(counts)
    }

    async fn create_issue(&self, issue: NewIssue) -> StoreResult<CreateIssueOutcome> {
        let mut writer = self.lock().await;
        let mut tx = begin(&mut writer).await?;
        let now = millis(issue.now);
        let created: Option<(i64, i64)> = sqlx::query_as(
            "INSERT INTO issues (slot_key, slot_at, mode, number, created_at) \
             VALUES (?, ?, ?, (SELECT COUNT(*) + 1 FROM issues), ?) \
             ON CONFLICT (slot_key) DO NOTHING RETURNING id, number",
        )
        .bind(&issue.slot_key)
        .bind(issue.slot_at.map(millis))
        .bind(issue.mode.as_str())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((issue_id, number)) = created else {
            return Ok(CreateIssueOutcome::SlotTaken);
        };
        let message_ids = IssueMessageIds::random();
        let (post_id, recipients) = match issue.mode {
            ScheduleMode::Broadcast => {
                let next: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM posts WHERE status = 'queued' ORDER BY position, id LIMIT 1",
                )
                .fetch_optional(&mut *tx)
                .await?;
                let Some(post_id) = next else {
                    return Ok(CreateIssueOutcome::NothingToSend);
                };
                let message_id = message_ids::sqlite_expression("id", "?4", "?5");
                let fan_out = sqlx::query(&format!(
                    "INSERT INTO deliveries (kind, priority, subscriber_id, issue_id, post_id, message_id, \
                     status, next_attempt_at, created_at) \
                     SELECT 'issue', 1, id, ?1, ?2, {message_id}, 'pending', ?3, ?3 \
                     FROM subscribers WHERE status = 'confirmed' ON CONFLICT DO NOTHING"
                ))
                .bind(issue_id)
                .bind(post_id)
                .bind(now)
                .bind(&message_ids.prefix)
                .bind(message_ids.mask)
                .execute(&mut *tx)
                .await?;
                (Some(post_id), fan_out.rows_affected())
            }
            ScheduleMode::Sequence => {
                let message_id = message_ids::sqlite_expression("due.subscriber_id", "?3", "?4");
                let fan_out = sqlx::query(&format!(
                    "INSERT INTO deliveries (kind, priority, subscriber_id, issue_id, post_id, message_id, \
                     status, next_attempt_at, created_at) \
                     SELECT 'issue', 1, due.subscriber_id, ?1, due.post_id, {message_id}, 'pending', ?2, ?2 \
                     FROM (SELECT s.id AS subscriber_id, \
                             (SELECT p.id FROM posts p WHERE NOT EXISTS \
                                 (SELECT 1 FROM deliveries d WHERE d.subscriber_id = s.id AND d.post_id = p.id) \
                              ORDER BY p.position, p.id LIMIT 1) AS post_id \
                           FROM subscribers s WHERE s.status = 'confirmed') AS due \
                     WHERE due.post_id IS NOT NULL ON CONFLICT DO NOTHING"
                ))
                .bind(issue_id)
                .bind(now)
                .bind(&message_ids.prefix)
                .bind(message_ids.mask)
                .execute(&mut *tx)
                .await?;
                (None, fan_out.rows_affected())
            }
        };
        // Nobody to send to: keep the post for when there is an audience.
        if recipients == 0 {
            return Ok(CreateIssueOutcome::NothingToSend);
        }
        sqlx::query(
            "UPDATE posts SET status = 'sent', sent_at = COALESCE(sent_at, ?1) \
             WHERE status = 'queued' AND id IN (SELECT DISTINCT post_id FROM deliveries WHERE issue_id = ?2)",
        )
        .bind(now)
        .bind(issue_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE issues SET post_id = ?, recipients = ? WHERE id = ?")
            .bind(post_id)
            .bind(recipients as i64)
            .bind(issue_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(CreateIssueOutcome::Created(IssueCreated {
            issue_id,
            post_id,
            number,
            recipients,
        }))
    }

    async fn issue_meta(&self, issue_id: i64) -> StoreResult<Option<IssueMeta>> {
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT number, mode FROM issues WHERE id = ?")
                .bind(issue_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(number, mode)| {
            Ok(IssueMeta {
                number,
                mode: parse_mode(&mode)?,
            })
        })
        .transpose()
    }

    async fn issue_progress(&self, issue_id: i64) -> StoreResult<DeliveryCounts> {
        DeliveryCounts::from_rows(
            count_by_status(
                &self.pool,
                "SELECT status, COUNT(*) FROM deliveries WHERE issue_id = ? GROUP BY status",
                Some(issue_id),
            )
            .await?,
        )
    }

    async fn latest_scheduled_slot(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(slot_at) FROM issues WHERE slot_at IS NOT NULL")
                .fetch_one(&self.pool)
                .await?;
        Ok(latest.map(from_millis))
    }

    async fn reclaim_expired_leases(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let mut writer = self.lock().await;
        let result = sqlx::query(
            "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_until = NULL \
             WHERE status = 'sending' AND lease_until < ?",
        )
        .bind(millis(now))
        .execute(&mut *writer)
        .await?;
        Ok(result.rows_affected())
    }

    async fn claim_deliveries(&self, request: ClaimRequest) -> StoreResult<Vec<ClaimedDelivery>> {
        type ClaimRow = (i64, i64, Option<i64>, Option<i64>, Option<i64>, String, i64);
        let mut writer = self.lock().await;
        let claimed: Vec<ClaimRow> = sqlx::query_as(
            "UPDATE deliveries SET status = 'sending', lease_owner = ?1, lease_until = ?2, \
             attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?3 \
                          ORDER BY priority, next_attempt_at, id LIMIT ?4) \
             RETURNING id, subscriber_id, issue_id, post_id, confirmation_id, message_id, attempts",
        )
        .bind(&request.owner)
        .bind(millis(request.lease_until))
        .bind(millis(request.now))
        .bind(i64::from(request.limit))
        .fetch_all(&mut *writer)
        .await?;
        drop(writer);
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let subscriber_ids: Vec<i64> = claimed.iter().map(|row| row.1).collect();
        let subscribers: HashMap<i64, (String, Option<String>, String)> = sqlx::query_as(
            "SELECT id, email, name, status FROM subscribers \
             WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(to_json(&subscriber_ids))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(
            |(id, email, name, status): (i64, String, Option<String>, String)| {
                (id, (email, name, status))
            },
        )
        .collect();
        claimed
            .into_iter()
            .map(
                |(id, subscriber_id, issue_id, post_id, confirmation_id, message_id, attempts)| {
                    let (email, name, status) =
                        subscribers.get(&subscriber_id).cloned().ok_or_else(|| {
                            StoreError::Corrupt(format!("delivery {id} has no subscriber"))
                        })?;
                    let payload = match (issue_id, post_id, confirmation_id) {
                        (Some(issue_id), Some(post_id), _) => {
                            DeliveryPayload::Issue { issue_id, post_id }
                        }
                        (_, _, Some(confirmation_id)) => {
                            DeliveryPayload::Confirmation { confirmation_id }
                        }
                        _ => {
                            return Err(StoreError::Corrupt(format!(
                                "delivery {id} has no payload"
                            )))
                        }
                    };
                    Ok(ClaimedDelivery {
                        id,
                        subscriber_id,
                        email,
                        name,
                        subscriber_status: parse_subscriber_status(&status)?,
                        message_id,
                        attempts: attempts as u32,
                        payload,
                    })
                },
            )
            .collect()
    }

    async fn record_outcomes(&self, owner: &str, outcomes: &[DeliveryOutcome]) -> StoreResult<u64> {
        if outcomes.is_empty() {
            return Ok(0);
        }
        let mut writer = self.lock().await;
        outcomes::record(&mut writer, owner, outcomes).await
    }

    async fn release_claims(&self, owner: &str, delivery_ids: &[i64]) -> StoreResult<u64> {
        if delivery_ids.is_empty() {
            return Ok(0);
        }
        let mut writer = self.lock().await;
        let result = sqlx::query(
            "UPDATE deliveries SET status = 'pending', attempts = attempts - 1, \
             lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = ? AND status = 'sending' AND id IN (SELECT value FROM json_each(?))",
        )
        .bind(owner)
        .bind(to_json(&delivery_ids))
        .execute(&mut *writer)
        .await?;
        Ok(result.rows_affected())
    }

    async fn consent_events(&self, subscriber_id: i64) -> StoreResult<Vec<ConsentEvent>> {
        let rows: Vec<(String, i64, Option<String>, Option<String>, Option<String>)> =
            sqlx::query_as(
                "SELECT kind, occurred_at, ip, user_agent, detail FROM consent_events \
             WHERE subscriber_id = ? ORDER BY id",
            )
            .bind(subscriber_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(kind, occurred_at, ip, user_agent, detail)| ConsentEvent {
                kind,
                occurred_at: from_millis(occurred_at),
                ip,
                user_agent,
                detail,
            })
            .collect())
    }

    async fn delivery_counts(&self) -> StoreResult<DeliveryCounts> {
        // Counted over the (issue_id, status) index, in its order: no sort
        // of every row (a GROUP BY status held ~100 MB during a 1M send),
        // and a tenth of the pages a scan of the table reads.
        DeliveryCounts::from_rows(
            count_by_status(
                &self.pool,
                "SELECT status, SUM(n) FROM \
                 (SELECT status, COUNT(*) AS n FROM deliveries GROUP BY issue_id, status) \
                 GROUP BY status",
                None,
            )
            .await?,
        )
    }
}
