//! Issues on PostgreSQL: one per slot, cluster-wide, with every
//! recipient's delivery made in the same transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{count_by_status, PostgresStore};
use crate::domain::delivery::DeliveryCounts;
use crate::domain::issue::{CreateIssueOutcome, IssueCreated, IssueMeta, NewIssue, ScheduleMode};
use crate::store::message_ids::{self, IssueMessageIds};
use crate::store::rows::{self, IssueMetaRow, NewIssueRow};
use crate::store::{IssueStore, StoreResult};

#[async_trait]
impl IssueStore for PostgresStore {
    async fn create_issue(&self, issue: NewIssue) -> StoreResult<CreateIssueOutcome> {
        let mut tx = self.write().await?;
        // One issue is made at a time, cluster-wide: numbers are
        // COUNT(*) + 1 and must not repeat. Only issue creation writes
        // `issues`, and readers are not blocked.
        sqlx::query("LOCK TABLE issues IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let now = issue.now;
        let created: Option<NewIssueRow> = sqlx::query_as(
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
        let Some(NewIssueRow {
            id: issue_id,
            number,
        }) = created
        else {
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
        let row: Option<IssueMetaRow> =
            sqlx::query_as("SELECT number, mode FROM issues WHERE id = $1")
                .bind(issue_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(IssueMeta::try_from).transpose()
    }

    async fn issue_progress(&self, issue_id: i64) -> StoreResult<DeliveryCounts> {
        let sql =
            "SELECT status, COUNT(*) AS count FROM deliveries WHERE issue_id = $1 GROUP BY status";
        rows::delivery_counts(count_by_status(&self.pool, sql, Some(issue_id)).await?)
    }

    async fn latest_scheduled_slot(&self) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(
            sqlx::query_scalar("SELECT MAX(slot_at) FROM issues WHERE slot_at IS NOT NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
