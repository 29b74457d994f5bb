//! Issues on SQLite: one per slot, with every recipient's delivery made
//! in the same transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{begin, count_by_status, millis, SqliteStore};
use crate::domain::delivery::DeliveryCounts;
use crate::domain::issue::{CreateIssueOutcome, IssueCreated, IssueMeta, NewIssue, ScheduleMode};
use crate::store::message_ids::{self, IssueMessageIds};
use crate::store::rows::{self, IssueMetaRow, Millis, NewIssueRow};
use crate::store::{IssueStore, StoreResult};

#[async_trait]
impl IssueStore for SqliteStore {
    async fn create_issue(&self, issue: NewIssue) -> StoreResult<CreateIssueOutcome> {
        let mut writer = self.lock().await;
        let mut tx = begin(&mut writer).await?;
        let now = millis(issue.now);
        let created: Option<NewIssueRow> = sqlx::query_as(
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
        let Some(NewIssueRow {
            id: issue_id,
            number,
        }) = created
        else {
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
        let row: Option<IssueMetaRow> =
            sqlx::query_as("SELECT number, mode FROM issues WHERE id = ?")
                .bind(issue_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(IssueMeta::try_from).transpose()
    }

    async fn issue_progress(&self, issue_id: i64) -> StoreResult<DeliveryCounts> {
        let sql =
            "SELECT status, COUNT(*) AS count FROM deliveries WHERE issue_id = ? GROUP BY status";
        rows::delivery_counts(count_by_status(&self.pool, sql, Some(issue_id)).await?)
    }

    async fn latest_scheduled_slot(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let latest: Option<Millis> =
            sqlx::query_scalar("SELECT MAX(slot_at) FROM issues WHERE slot_at IS NOT NULL")
                .fetch_one(&self.pool)
                .await?;
        Ok(latest.map(Into::into))
    }
}
