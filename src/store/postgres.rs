//! The server backend. Behaviour matches the SQLite backend method by method;
//! only the way concurrency is handled differs, since several instances may
//! share one database and writers do not queue on a single file lock:
//!
//! * rows that are read and then written are locked with `FOR UPDATE`,
//!   always subscriber before confirmation, so the locks cannot deadlock;
//! * edits to the post queue take `SHARE ROW EXCLUSIVE` on `posts`, which
//!   serialises them with each other and with issue creation;
//! * issue creation takes `SHARE ROW EXCLUSIVE` on `issues`, so issue
//!   numbers stay gapless and a slot has exactly one owner;
//! * workers claim with `FOR UPDATE SKIP LOCKED` and every later update is
//!   fenced on the lease owner.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};

use super::message_ids::{self, IssueMessageIds};
use super::*;
use crate::posts::PostStatus;

mod signup;

pub struct PostgresStore {
    pool: PgPool,
}

type Tx = Transaction<'static, Postgres>;

const POST_COLUMNS: &str = "id, subject, body_markdown, position, status, created_at, sent_at";

type PostRow = (
    i64,
    String,
    String,
    i64,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

fn post_from_row(row: PostRow) -> StoreResult<Post> {
    let (id, subject, body_markdown, position, status, created_at, sent_at) = row;
    Ok(Post {
        id,
        subject,
        body_markdown,
        position,
        status: PostStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("post status `{status}`")))?,
        created_at,
        sent_at,
    })
}

/// Serialises edits of the post queue with each other and with issue
/// creation (which takes `ROW EXCLUSIVE`, a conflicting mode). Without it a
/// broadcast's `SKIP LOCKED` would pass over a post that is being edited.
const LOCK_POST_QUEUE: &str = "LOCK TABLE posts IN SHARE ROW EXCLUSIVE MODE";

impl PostgresStore {
    pub async fn connect(settings: &DatabaseSettings) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&settings.url)
            .await?;
        Ok(Self { pool })
    }

    async fn write(&self) -> StoreResult<Tx> {
        Ok(self.pool.begin().await?)
    }

    /// For the data transfer between backends, which lives in this module.
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// What PostgreSQL's manual asks for after a bulk load: statistics for
    /// the planner, and hint bits and the visibility map set now, in one
    /// pass, rather than by the first big read (a fan-out), which would
    /// otherwise dirty and write out every page as it went. Autovacuum
    /// gets there too, but up to a minute later.
    pub(super) async fn vacuum_analyze(&self, table: &str) -> StoreResult<()> {
        sqlx::query(&format!("VACUUM (ANALYZE) {table}"))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

async fn record_consent(
    tx: &mut Tx,
    subscriber_id: i64,
    email: &str,
    kind: &str,
    consent: &ConsentContext,
    detail: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO consent_events (subscriber_id, email, kind, occurred_at, ip, user_agent, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(subscriber_id)
    .bind(email)
    .bind(kind)
    .bind(now)
    .bind(consent.ip.as_deref())
    .bind(consent.user_agent.as_deref())
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A confirmation request and its email, in the caller's transaction.
async fn queue_confirmation(
    tx: &mut Tx,
    subscriber_id: i64,
    now: DateTime<Utc>,
    ttl: chrono::Duration,
) -> StoreResult<i64> {
    let confirmation_id: i64 = sqlx::query_scalar(
        "INSERT INTO confirmations (subscriber_id, created_at, expires_at) VALUES ($1, $2, $3) \
         RETURNING id",
    )
    .bind(subscriber_id)
    .bind(now)
    .bind(now + ttl)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO deliveries (kind, priority, subscriber_id, confirmation_id, message_id, status, \
         next_attempt_at, created_at) VALUES ('confirmation', 0, $1, $2, $3, 'pending', $4, $4)",
    )
    .bind(subscriber_id)
    .bind(confirmation_id)
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE subscribers SET last_confirmation_sent_at = $1 WHERE id = $2")
        .bind(now)
        .bind(subscriber_id)
        .execute(&mut **tx)
        .await?;
    Ok(confirmation_id)
}

async fn count_by_status(
    pool: &PgPool,
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
/// (1-based among unsent posts), after every sent post. The caller holds
/// [`LOCK_POST_QUEUE`].
async fn reorder_queue(tx: &mut Tx, moved: i64, place: i64) -> StoreResult<()> {
    let after_sent: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM posts WHERE status = 'sent'")
            .fetch_one(&mut **tx)
            .await?;
    let mut queued: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM posts WHERE status = 'queued' AND id <> $1 ORDER BY position, id FOR UPDATE",
    )
    .bind(moved)
    .fetch_all(&mut **tx)
    .await?;
    let index = (place.max(1) as usize - 1).min(queued.len());
    queued.insert(index, moved);
    sqlx::query(
        "UPDATE posts p SET position = $2 + u.ordinal \
         FROM UNNEST($1::bigint[]) WITH ORDINALITY AS u(id, ordinal) WHERE p.id = u.id",
    )
    .bind(&queued)
    .bind(after_sent)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn fetch_post_for_update(tx: &mut Tx, post_id: i64) -> StoreResult<Option<Post>> {
    let row: Option<PostRow> = sqlx::query_as(&format!(
        "SELECT {POST_COLUMNS} FROM posts WHERE id = $1 FOR UPDATE"
    ))
    .bind(post_id)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(post_from_row).transpose()
}

type SignupRow = (i64, String, Option<DateTime<Utc>>);

async fn lock_subscriber_by_email(tx: &mut Tx, email: &str) -> StoreResult<Option<SignupRow>> {
    Ok(sqlx::query_as(
        "SELECT id, status, last_confirmation_sent_at FROM subscribers WHERE email = $1 FOR UPDATE",
    )
    .bind(email)
    .fetch_optional(&mut **tx)
    .await?)
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn token_key(&self) -> StoreResult<TokenKey> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ('token_key', $1) ON CONFLICT DO NOTHING",
        )
        .bind(TokenKey::generate().to_vec())
        .execute(&self.pool)
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
        let mut tx = self.write().await?;
        // A confirmation never changes subscriber, so this unlocked read is
        // safe; the locks below go subscriber first, as unsubscribe does.
        let owner: Option<i64> =
            sqlx::query_scalar("SELECT subscriber_id FROM confirmations WHERE id = $1")
                .bind(confirmation_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(subscriber_id) = owner else {
            return Ok(ConfirmOutcome::Unknown);
        };
        let subscriber: Option<(String, String)> =
            sqlx::query_as("SELECT email, status FROM subscribers WHERE id = $1 FOR UPDATE")
                .bind(subscriber_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((email, status)) = subscriber else {
            return Ok(ConfirmOutcome::Unknown);
        };
        let confirmation: Option<(DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT expires_at, used_at FROM confirmations WHERE id = $1 FOR UPDATE",
        )
        .bind(confirmation_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((expires_at, used_at)) = confirmation else {
            return Ok(ConfirmOutcome::Unknown);
        };
        if used_at.is_some() {
            return Ok(ConfirmOutcome::AlreadyUsed);
        }
        if expires_at <= now {
            return Ok(ConfirmOutcome::Expired);
        }
        sqlx::query("UPDATE confirmations SET used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(confirmation_id)
            .execute(&mut *tx)
            .await?;
        if status != "confirmed" {
            sqlx::query(
                "UPDATE subscribers SET status = 'confirmed', confirmed_at = $1, bounce_count = 0 \
                 WHERE id = $2",
            )
            .bind(now)
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
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM subscribers WHERE id = $1")
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
        let mut tx = self.write().await?;
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT email, status FROM subscribers WHERE id = $1 FOR UPDATE")
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
            "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = $1 WHERE id = $2",
        )
        .bind(now)
        .bind(subscriber_id)
        .execute(&mut *tx)
        .await?;
        // An older confirmation link must not undo this.
        sqlx::query(
            "UPDATE confirmations SET used_at = $1 WHERE subscriber_id = $2 AND used_at IS NULL",
        )
        .bind(now)
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
        let mut tx = self.write().await?;
        let now = subscriber.now;
        let confirmed = subscriber.status == SubscriberStatus::Confirmed;
        // The unique email decides, also against a concurrent insert.
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO subscribers (email, name, status, created_at, confirmed_at, unsubscribed_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (email) DO NOTHING RETURNING id",
        )
        .bind(subscriber.email.as_str())
        .bind(subscriber.name.as_ref().map(SubscriberName::as_str))
        .bind(subscriber.status.as_str())
        .bind(now)
        .bind(confirmed.then_some(now))
        .bind((subscriber.status == SubscriberStatus::Unsubscribed).then_some(now))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = inserted else {
            return Ok(AddOutcome::AlreadyExists);
        };
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
        type Row = (
            i64,
            String,
            Option<String>,
            String,
            DateTime<Utc>,
            Option<DateTime<Utc>>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, email, name, status, created_at, confirmed_at FROM subscribers \
             WHERE ($1::text IS NULL OR status = $1::text) AND id > $2 ORDER BY id LIMIT $3",
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
                    created_at,
                    confirmed_at,
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
        let result = sqlx::query(
            "INSERT INTO subscribers (email, status, created_at, confirmed_at) \
             SELECT $2::text || n || '@' || $3::text, 'confirmed', $4, $4 \
             FROM generate_series(1, $1::bigint) AS n ORDER BY n \
             ON CONFLICT DO NOTHING",
        )
        .bind(i64::try_from(count).unwrap_or(i64::MAX))
        .bind(prefix)
        .bind(domain)
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.vacuum_analyze("subscribers").await?;
        Ok(result.rows_affected())
    }

    async fn seed_posts_if_empty(
        &self,
        posts: &[NewPost],
        now: DateTime<Utc>,
    ) -> StoreResult<usize> {
        let mut tx = self.write().await?;
        sqlx::query(LOCK_POST_QUEUE).execute(&mut *tx).await?;
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM posts")
            .fetch_one(&mut *tx)
            .await?;
        if existing > 0 {
            return Ok(0);
        }
        let subjects: Vec<&str> = posts.iter().map(|post| post.subject.as_str()).collect();
        let bodies: Vec<&str> = posts
            .iter()
            .map(|post| post.body_markdown.as_str())
            .collect();
        sqlx::query(
            "INSERT INTO posts (subject, body_markdown, position, status, created_at) \
             SELECT u.subject, u.body, u.ordinal, 'queued', $3 \
             FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS u(subject, body, ordinal) \
             ORDER BY u.ordinal",
        )
        .bind(&subjects)
        .bind(&bodies)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(posts.len())
    }

    async fn insert_post(&self, post: &NewPost, now: DateTime<Utc>) -> StoreResult<Post> {
        let mut tx = self.write().await?;
        sqlx::query(LOCK_POST_QUEUE).execute(&mut *tx).await?;
        let row: PostRow = sqlx::query_as(&format!(
            "INSERT INTO posts (subject, body_markdown, position, status, created_at) \
             SELECT $1, $2, COALESCE(MAX(position), 0) + 1, 'queued', $3 FROM posts \
             RETURNING {POST_COLUMNS}"
        ))
        .bind(post.subject.as_str())
        .bind(&post.body_markdown)
        .bind(now)
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
            sqlx::query_as(&format!("SELECT {POST_COLUMNS} FROM posts WHERE id = $1"))
                .bind(post_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(post_from_row).transpose()
    }

    async fn post_for_render(&self, post_id: i64) -> StoreResult<Option<PostForRender>> {
        let Some(post) = self.get_post(post_id).await? else {
            return Ok(None);
        };
        let ordinal: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM posts WHERE position < $1 OR (position = $1 AND id <= $2)",
        )
        .bind(post.position)
        .bind(post.id)
        .fetch_one(&self.pool)
        .await?;
        Ok(Some(PostForRender { post, ordinal }))
    }

    async fn update_post(&self, post_id: i64, changes: PostChanges) -> StoreResult<PostEdit> {
        let mut tx = self.write().await?;
        sqlx::query(LOCK_POST_QUEUE).execute(&mut *tx).await?;
        let Some(post) = fetch_post_for_update(&mut tx, post_id).await? else {
            return Ok(PostEdit::NotFound);
        };
        if post.status == PostStatus::Sent {
            return Ok(PostEdit::AlreadySent);
        }
        sqlx::query(
            "UPDATE posts SET subject = COALESCE($1, subject), \
             body_markdown = COALESCE($2, body_markdown) WHERE id = $3",
        )
        .bind(changes.subject.as_ref().map(PostSubject::as_str))
        .bind(changes.body_markdown.as_deref())
        .bind(post_id)
        .execute(&mut *tx)
        .await?;
        if let Some(place) = changes.position {
            reorder_queue(&mut tx, post_id, place).await?;
        }
        let updated = fetch_post_for_update(&mut tx, post_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("post vanished during update".into()))?;
        tx.commit().await?;
        Ok(PostEdit::Updated(updated))
    }

    async fn delete_post(&self, post_id: i64) -> StoreResult<PostEdit> {
        let mut tx = self.write().await?;
        sqlx::query(LOCK_POST_QUEUE).execute(&mut *tx).await?;
        let Some(post) = fetch_post_for_update(&mut tx, post_id).await? else {
            return Ok(PostEdit::NotFound);
        };
        if post.status == PostStatus::Sent {
            return Ok(PostEdit::AlreadySent);
        }
        sqlx::query("DELETE FROM posts WHERE id = $1")
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
        let mut tx = self.write().await?;
        // One issue is made at a time, cluster-wide: numbers are
        // COUNT(*) + 1 and must not repeat. Only issue creation writes
        // `issues`, and readers are not blocked.
        sqlx::query("LOCK TABLE issues IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let now = issue.now;
        let created: Option<(i64, i64)> = sqlx::query_as(
            "INSERT INTO issues (slot_key, slot_at, mode, number, created_at) \
             VALUES ($1, $2, $3, (SELECT COUNT(*) + 1 FROM issues), $4) \
             ON CONFLICT (slot_key) DO NOTHING RETURNING id, number",
        )
        .bind(&issue.slot_key)
        .bind(issue.slot_at)
        .bind(issue.mode.as_str())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((issue_id, number)) = created else {
            return Ok(CreateIssueOutcome::SlotTaken);
        };
        // Waits for any post edit in flight (see LOCK_POST_QUEUE) and keeps
        // new ones out until this commits.
        sqlx::query("LOCK TABLE posts IN ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let message_ids = IssueMessageIds::random();
        let (post_id, recipients) = match issue.mode {
            ScheduleMode::Broadcast => {
                let next: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM posts WHERE status = 'queued' ORDER BY position, id LIMIT 1 \
                     FOR UPDATE SKIP LOCKED",
                )
                .fetch_optional(&mut *tx)
                .await?;
                let Some(post_id) = next else {
                    return Ok(CreateIssueOutcome::NothingToSend);
                };
                // No ON CONFLICT (it cost a fifth of a 1M fan-out): a queued
                // post has no deliveries, since the transaction that makes a
                // post's deliveries marks it sent. Should one exist anyway,
                // the unique index fails this issue rather than send twice.
                let message_id = message_ids::postgres_expression("id", "$4", "$5");
                let fan_out = sqlx::query(&format!(
                    "INSERT INTO deliveries (kind, priority, subscriber_id, issue_id, post_id, message_id, \
                     status, next_attempt_at, created_at) \
                     SELECT 'issue', 1, id, $1, $2, {message_id}, 'pending', $3, $3 \
                     FROM subscribers WHERE status = 'confirmed' ORDER BY id"
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
                let message_id = message_ids::postgres_expression("s.id", "$3", "$4");
                let fan_out = sqlx::query(&format!(
                    "INSERT INTO deliveries (kind, priority, subscriber_id, issue_id, post_id, message_id, \
                     status, next_attempt_at, created_at) \
                     SELECT 'issue', 1, s.id, $1, next.id, {message_id}, 'pending', $2, $2 \
                     FROM subscribers s \
                     CROSS JOIN LATERAL (SELECT p.id FROM posts p WHERE NOT EXISTS \
                         (SELECT 1 FROM deliveries d WHERE d.subscriber_id = s.id AND d.post_id = p.id) \
                         ORDER BY p.position, p.id LIMIT 1) AS next \
                     WHERE s.status = 'confirmed' ORDER BY s.id \
                     ON CONFLICT DO NOTHING"
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
        // Returning drops the transaction, which rolls the issue back.
        if recipients == 0 {
            return Ok(CreateIssueOutcome::NothingToSend);
        }
        // Broadcast names its one post; only sequence mode has to look
        // through the new rows to see which posts went out.
        let posts_sent = match post_id {
            Some(post_id) => sqlx::query(
                "UPDATE posts SET status = 'sent', sent_at = COALESCE(sent_at, $1) \
                 WHERE status = 'queued' AND id = $2",
            )
            .bind(now)
            .bind(post_id),
            None => sqlx::query(
                "UPDATE posts SET status = 'sent', sent_at = COALESCE(sent_at, $1) \
                 WHERE status = 'queued' AND id IN \
                 (SELECT DISTINCT post_id FROM deliveries WHERE issue_id = $2)",
            )
            .bind(now)
            .bind(issue_id),
        };
        posts_sent.execute(&mut *tx).await?;
        sqlx::query("UPDATE issues SET post_id = $1, recipients = $2 WHERE id = $3")
            .bind(post_id)
            .bind(i64::try_from(recipients).unwrap_or(i64::MAX))
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
            sqlx::query_as("SELECT number, mode FROM issues WHERE id = $1")
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
                "SELECT status, COUNT(*) FROM deliveries WHERE issue_id = $1 GROUP BY status",
                Some(issue_id),
            )
            .await?,
        )
    }

    async fn latest_scheduled_slot(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let latest: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT MAX(slot_at) FROM issues WHERE slot_at IS NOT NULL")
                .fetch_one(&self.pool)
                .await?;
        Ok(latest)
    }

    async fn reclaim_expired_leases(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let result = sqlx::query(
            "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_until = NULL \
             WHERE status = 'sending' AND lease_until < $1",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn claim_deliveries(&self, request: ClaimRequest) -> StoreResult<Vec<ClaimedDelivery>> {
        type ClaimRow = (
            i64,
            i64,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            String,
            i64,
            String,
            Option<String>,
            String,
        );
        let claimed: Vec<ClaimRow> = sqlx::query_as(
            "WITH due AS ( \
                 SELECT id FROM deliveries \
                 WHERE status = 'pending' AND next_attempt_at <= $3 \
                 ORDER BY priority, next_attempt_at, id LIMIT $4 \
                 FOR UPDATE SKIP LOCKED), \
             claimed AS ( \
                 UPDATE deliveries d SET status = 'sending', lease_owner = $1, lease_until = $2, \
                     attempts = d.attempts + 1 \
                 FROM due WHERE d.id = due.id \
                 RETURNING d.id, d.subscriber_id, d.issue_id, d.post_id, d.confirmation_id, \
                     d.message_id, d.attempts, d.priority, d.next_attempt_at) \
             SELECT c.id, c.subscriber_id, c.issue_id, c.post_id, c.confirmation_id, c.message_id, \
                 c.attempts, s.email, s.name, s.status \
             FROM claimed c JOIN subscribers s ON s.id = c.subscriber_id \
             ORDER BY c.priority, c.next_attempt_at, c.id",
        )
        .bind(&request.owner)
        .bind(request.lease_until)
        .bind(request.now)
        .bind(i64::from(request.limit))
        .fetch_all(&self.pool)
        .await?;
        claimed
            .into_iter()
            .map(
                |(
                    id,
                    subscriber_id,
                    issue_id,
                    post_id,
                    confirmation_id,
                    message_id,
                    attempts,
                    email,
                    name,
                    status,
                )| {
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
        let mut sent: (Vec<i64>, Vec<&str>, Vec<DateTime<Utc>>) = Default::default();
        let mut retry: (Vec<i64>, Vec<&str>, Vec<DateTime<Utc>>) = Default::default();
        let mut failed: (Vec<i64>, Vec<&str>) = Default::default();
        let mut skipped: (Vec<i64>, Vec<&str>) = Default::default();
        for outcome in outcomes {
            match outcome {
                DeliveryOutcome::Sent { id, reply, at } => {
                    sent.0.push(*id);
                    sent.1.push(reply);
                    sent.2.push(*at);
                }
                DeliveryOutcome::Retry {
                    id,
                    error,
                    next_attempt_at,
                } => {
                    retry.0.push(*id);
                    retry.1.push(error);
                    retry.2.push(*next_attempt_at);
                }
                DeliveryOutcome::Failed { id, error, .. } => {
                    failed.0.push(*id);
                    failed.1.push(error);
                }
                DeliveryOutcome::Skipped { id, reason } => {
                    skipped.0.push(*id);
                    skipped.1.push(reason);
                }
            }
        }

        let mark_sent = sqlx::query(
            "UPDATE deliveries d SET status = 'sent', smtp_reply = u.reply, sent_at = u.at, \
             last_error = NULL, lease_owner = NULL, lease_until = NULL \
             FROM UNNEST($1::bigint[], $2::text[], $3::timestamptz[]) AS u(id, reply, at) \
             WHERE d.id = u.id AND d.lease_owner = $4 AND d.status = 'sending'",
        )
        .bind(&sent.0)
        .bind(&sent.1)
        .bind(&sent.2)
        .bind(owner);
        // Nearly every group is sends alone: one statement, its own
        // transaction, without the round trips for BEGIN and COMMIT.
        if sent.0.len() == outcomes.len() {
            return Ok(mark_sent.execute(&self.pool).await?.rows_affected());
        }
        let mut tx = self.write().await?;
        let mut applied = 0;
        if !sent.0.is_empty() {
            applied += mark_sent.execute(&mut *tx).await?.rows_affected();
        }
        if !retry.0.is_empty() {
            applied += sqlx::query(
                "UPDATE deliveries d SET status = 'pending', last_error = u.error, \
                 next_attempt_at = u.next_attempt_at, lease_owner = NULL, lease_until = NULL \
                 FROM UNNEST($1::bigint[], $2::text[], $3::timestamptz[]) \
                     AS u(id, error, next_attempt_at) \
                 WHERE d.id = u.id AND d.lease_owner = $4 AND d.status = 'sending'",
            )
            .bind(&retry.0)
            .bind(&retry.1)
            .bind(&retry.2)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        if !skipped.0.is_empty() {
            applied += sqlx::query(
                "UPDATE deliveries d SET status = 'skipped', last_error = u.reason, \
                 lease_owner = NULL, lease_until = NULL \
                 FROM UNNEST($1::bigint[], $2::text[]) AS u(id, reason) \
                 WHERE d.id = u.id AND d.lease_owner = $3 AND d.status = 'sending'",
            )
            .bind(&skipped.0)
            .bind(&skipped.1)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        if !failed.0.is_empty() {
            let mut held: HashSet<i64> = sqlx::query_scalar(
                "UPDATE deliveries d SET status = 'failed', last_error = u.error, \
                 lease_owner = NULL, lease_until = NULL \
                 FROM UNNEST($1::bigint[], $2::text[]) AS u(id, error) \
                 WHERE d.id = u.id AND d.lease_owner = $3 AND d.status = 'sending' \
                 RETURNING d.id",
            )
            .bind(&failed.0)
            .bind(&failed.1)
            .bind(owner)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
            applied += held.len() as u64;
            // In outcome order, and once per delivery this owner still held,
            // as the one-row-at-a-time SQLite backend does.
            for outcome in outcomes {
                if let DeliveryOutcome::Failed {
                    id,
                    subscriber_id,
                    error,
                    hard_bounce,
                    at,
                } = outcome
                {
                    if held.remove(id) && *hard_bounce {
                        count_hard_bounce(&mut tx, *subscriber_id, error, *at).await?;
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(applied)
    }

    async fn release_claims(&self, owner: &str, delivery_ids: &[i64]) -> StoreResult<u64> {
        if delivery_ids.is_empty() {
            return Ok(0);
        }
        let result = sqlx::query(
            "UPDATE deliveries SET status = 'pending', attempts = attempts - 1, \
             lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = $1 AND status = 'sending' AND id = ANY($2::bigint[])",
        )
        .bind(owner)
        .bind(delivery_ids)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn consent_events(&self, subscriber_id: i64) -> StoreResult<Vec<ConsentEvent>> {
        let rows: Vec<(
            String,
            DateTime<Utc>,
            Option<String>,
            Option<String>,
            Option<String>,
        )> = sqlx::query_as(
            "SELECT kind, occurred_at, ip, user_agent, detail FROM consent_events \
                 WHERE subscriber_id = $1 ORDER BY id",
        )
        .bind(subscriber_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(kind, occurred_at, ip, user_agent, detail)| ConsentEvent {
                kind,
                occurred_at,
                ip,
                user_agent,
                detail,
            })
            .collect())
    }

    async fn delivery_counts(&self) -> StoreResult<DeliveryCounts> {
        DeliveryCounts::from_rows(
            count_by_status(
                &self.pool,
                "SELECT status, COUNT(*) FROM deliveries GROUP BY status",
                None,
            )
            .await?,
        )
    }
}

/// Counts a 5xx against the subscriber; the third one marks them bounced.
async fn count_hard_bounce(
    tx: &mut Tx,
    subscriber_id: i64,
    error: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let (email, bounces, status): (String, i64, String) = sqlx::query_as(
        "UPDATE subscribers SET bounce_count = bounce_count + 1, \
         status = CASE WHEN bounce_count + 1 >= $1 AND status IN ('confirmed', 'pending') THEN 'bounced' \
                  ELSE status END \
         WHERE id = $2 RETURNING email, bounce_count, status",
    )
    .bind(HARD_BOUNCE_LIMIT)
    .bind(subscriber_id)
    .fetch_one(&mut **tx)
    .await?;
    if let Some(detail) = bounce_detail(bounces, &status, error) {
        record_consent(
            tx,
            subscriber_id,
            &email,
            "bounced",
            &ConsentContext::default(),
            Some(&detail),
            now,
        )
        .await?;
    }
    Ok(())
}
