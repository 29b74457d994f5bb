//! Issues, on either backend: one per slot, with every recipient's
//! delivery made in the same transaction. Only the fan-out statement is
//! the backend's own (`IssueSql`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Type};

use super::{Dialect, FanOut, IssueSql};
use crate::domain::delivery::DeliveryCounts;
use crate::domain::issue::{CreateIssueOutcome, IssueCreated, IssueMeta, NewIssue, ScheduleMode};
use crate::store::message_ids::IssueMessageIds;
use crate::store::rows::{self, IssueMetaRow, NewIssueRow, StatusCount};
use crate::store::{IssueStore, StoreResult};

#[async_trait]
impl<B: IssueSql> IssueStore for B
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'r> i64: Decode<'r, B::Db>,
    for<'q> Option<i64>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> <B::Db as Dialect>::Time: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<<B::Db as Dialect>::Time>: Encode<'q, B::Db> + Type<B::Db>,
    for<'r> Option<<B::Db as Dialect>::Time>: Decode<'r, B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
    for<'r> NewIssueRow: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> IssueMetaRow: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> StatusCount: FromRow<'r, <B::Db as Database>::Row>,
{
    async fn create_issue(&self, issue: NewIssue) -> StoreResult<CreateIssueOutcome> {
        type Time<B> = <<B as super::SqlBackend>::Db as Dialect>::Time;
        let mut tx = self.write().await?;
        for lock in <B::Db as Dialect>::LOCKS_FOR_NEW_ISSUE {
            sqlx::query(lock).execute(&mut *tx).await?;
        }
        let now = Time::<B>::from(issue.now);
        // Numbers are COUNT(*) + 1: gapless, as issues are made one at a time.
        let created: Option<NewIssueRow> = sqlx::query_as(
            "INSERT INTO issues (slot_key, slot_at, mode, number, created_at) \
             VALUES ($1, $2, $3, (SELECT COUNT(*) + 1 FROM issues), $4) \
             ON CONFLICT (slot_key) DO NOTHING RETURNING id, number",
        )
        .bind(issue.slot_key.as_str())
        .bind(issue.slot_at.map(Time::<B>::from))
        .bind(issue.mode.as_str())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(NewIssueRow { id, number }) = created else {
            B::commit(tx).await?;
            return Ok(CreateIssueOutcome::SlotTaken);
        };
        let message_ids = IssueMessageIds::random();
        let fan_out = FanOut {
            issue_id: id,
            now: issue.now,
            message_ids: &message_ids,
        };
        let (post_id, recipients) = match issue.mode {
            ScheduleMode::Broadcast => {
                let next: Option<i64> = sqlx::query_scalar(&format!(
                    "SELECT id FROM posts WHERE status = 'queued' ORDER BY position, id LIMIT 1{}",
                    <B::Db as Dialect>::SKIP_LOCKED
                ))
                .fetch_optional(&mut *tx)
                .await?;
                let Some(post_id) = next else {
                    B::roll_back(tx).await?;
                    return Ok(CreateIssueOutcome::NothingToSend);
                };
                (
                    Some(post_id),
                    B::fan_out_broadcast(&mut tx, fan_out, post_id).await?,
                )
            }
            ScheduleMode::Sequence => (None, B::fan_out_sequence(&mut tx, fan_out).await?),
        };
        // Nobody to send to: keep the post for when there is an audience.
        if recipients == 0 {
            B::roll_back(tx).await?;
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
            .bind(id),
        };
        posts_sent.execute(&mut *tx).await?;
        sqlx::query("UPDATE issues SET post_id = $1, recipients = $2 WHERE id = $3")
            .bind(post_id)
            .bind(i64::try_from(recipients).unwrap_or(i64::MAX))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        B::commit(tx).await?;
        Ok(CreateIssueOutcome::Created(IssueCreated {
            issue_id: id,
            post_id,
            number,
            recipients,
        }))
    }

    async fn issue_meta(&self, issue_id: i64) -> StoreResult<Option<IssueMeta>> {
        let row: Option<IssueMetaRow> =
            sqlx::query_as("SELECT number, mode FROM issues WHERE id = $1")
                .bind(issue_id)
                .fetch_optional(self.pool())
                .await?;
        row.map(IssueMeta::try_from).transpose()
    }

    async fn issue_progress(&self, issue_id: i64) -> StoreResult<DeliveryCounts> {
        let counts: Vec<StatusCount> = sqlx::query_as(
            "SELECT status, COUNT(*) AS count FROM deliveries WHERE issue_id = $1 GROUP BY status",
        )
        .bind(issue_id)
        .fetch_all(self.pool())
        .await?;
        rows::delivery_counts(counts)
    }

    async fn latest_scheduled_slot(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let latest: Option<<B::Db as Dialect>::Time> =
            sqlx::query_scalar("SELECT MAX(slot_at) FROM issues WHERE slot_at IS NOT NULL")
                .fetch_one(self.pool())
                .await?;
        Ok(latest.map(Into::into))
    }
}
