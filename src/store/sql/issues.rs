//! Issues, on either backend: one per slot, with every recipient's
//! delivery and the issue's tally made in the same transaction; what the
//! admin's issue pages read; and retrying an issue's failures. Only the
//! fan-out and the requeue statements are the backend's own (`IssueSql`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Type};

use super::{Dialect, FanOut, IssueSql};
use crate::domain::delivery::{DeliveryCounts, UnsentDelivery, UnsentQuery};
use crate::domain::issue::{
    CreateIssueOutcome, IssueCreated, IssueMeta, IssueSummary, NewIssue, NextSend, ScheduleMode,
};
use crate::domain::retry::{retry_verdict, RetryPlan, RetryVerdict};
use crate::store::message_ids::IssueMessageIds;
use crate::store::rows::{
    self, FailureGroupRow, FailureRow, IssueMetaRow, IssueSummaryRow, NewIssueRow, QueueHeadRow,
    StatusCount, UnsentDeliveryRow, ISSUE_SUMMARY_COLUMNS, ISSUE_SUMMARY_FROM,
};
use crate::store::{IssueStore, StoreResult};

/// Failures read and written per transaction by a retry: a retry of a
/// huge failed send holds the write lock in short turns, not for the
/// whole of it, and one that is stopped halfway is finished by the next.
const RETRY_BATCH: i64 = 1000;

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
    for<'r> IssueSummaryRow<<B::Db as Dialect>::Time>: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> UnsentDeliveryRow<<B::Db as Dialect>::Time>: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> FailureRow: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> FailureGroupRow: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> QueueHeadRow: FromRow<'r, <B::Db as Database>::Row>,
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
        sqlx::query("INSERT INTO issue_tallies (issue_id) VALUES ($1)")
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

    async fn list_issues(&self, before: Option<i64>, limit: u32) -> StoreResult<Vec<IssueSummary>> {
        let rows: Vec<IssueSummaryRow<<B::Db as Dialect>::Time>> = sqlx::query_as(&format!(
            "SELECT {ISSUE_SUMMARY_COLUMNS} FROM {ISSUE_SUMMARY_FROM} \
             WHERE i.id < $1 ORDER BY i.id DESC LIMIT $2"
        ))
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(IssueSummary::try_from).collect()
    }

    async fn issue_summary(&self, issue_id: i64) -> StoreResult<Option<IssueSummary>> {
        let row: Option<IssueSummaryRow<<B::Db as Dialect>::Time>> = sqlx::query_as(&format!(
            "SELECT {ISSUE_SUMMARY_COLUMNS} FROM {ISSUE_SUMMARY_FROM} WHERE i.id = $1"
        ))
        .bind(issue_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(IssueSummary::try_from).transpose()
    }

    async fn unsent_deliveries(&self, query: UnsentQuery) -> StoreResult<Vec<UnsentDelivery>> {
        // The literal IN list lets PostgreSQL use its partial index
        // (deliveries_unsent_by_issue) in a generic plan too.
        let rows: Vec<UnsentDeliveryRow<<B::Db as Dialect>::Time>> = sqlx::query_as(
            "SELECT d.id, d.subscriber_id, s.email, d.status, d.attempts, d.last_error, \
                 d.closed_at \
             FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id \
             WHERE d.issue_id = $1 AND d.status = $2 AND d.status IN ('failed', 'skipped') \
                 AND d.id > $3 \
             ORDER BY d.id LIMIT $4",
        )
        .bind(query.issue_id)
        .bind(query.status.as_str())
        .bind(query.after.unwrap_or(0))
        .bind(i64::from(query.limit))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(UnsentDelivery::try_from).collect()
    }

    async fn retry_plan(&self, issue_id: i64) -> StoreResult<RetryPlan> {
        // Grouped in the database: servers word their refusals a few ways,
        // so the rule judges a few groups, not every failure.
        let groups: Vec<FailureGroupRow> = sqlx::query_as(
            "SELECT d.last_error, s.status AS subscriber_status, COUNT(*) AS count \
             FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id \
             WHERE d.issue_id = $1 AND d.status = 'failed' \
             GROUP BY d.last_error, s.status",
        )
        .bind(issue_id)
        .fetch_all(self.pool())
        .await?;
        let mut plan = RetryPlan::default();
        for group in groups {
            let verdict = verdict(
                group.last_error.as_deref(),
                group.subscriber_status.as_deref(),
            )?;
            plan.count(verdict, u64::try_from(group.count).unwrap_or_default());
        }
        Ok(plan)
    }

    async fn retry_failures(&self, issue_id: i64, now: DateTime<Utc>) -> StoreResult<RetryPlan> {
        let mut plan = RetryPlan::default();
        let mut after = 0;
        loop {
            let mut tx = self.write().await?;
            let failures = failures_after::<B>(&mut *tx, issue_id, after).await?;
            let mut batch = RetryPlan::default();
            let mut chosen = Vec::new();
            for failure in &failures {
                let verdict = verdict(
                    failure.last_error.as_deref(),
                    failure.subscriber_status.as_deref(),
                )?;
                if verdict == RetryVerdict::Retry {
                    chosen.push(failure.id);
                } else {
                    batch.count(verdict, 1);
                }
            }
            let requeued = if chosen.is_empty() {
                0
            } else {
                B::requeue_failures(&mut tx, issue_id, &chosen, now).await?
            };
            if requeued > 0 {
                sqlx::query(
                    "UPDATE issue_tallies SET failed = failed - $1, finished_at = NULL \
                     WHERE issue_id = $2",
                )
                .bind(i64::try_from(requeued).unwrap_or(i64::MAX))
                .bind(issue_id)
                .execute(&mut *tx)
                .await?;
            }
            B::commit(tx).await?;
            batch.retry = requeued;
            plan.add(batch);
            match failures.last() {
                Some(last) if failures.len() as i64 == RETRY_BATCH => after = last.id,
                _ => return Ok(plan),
            }
        }
    }

    async fn next_send(&self) -> StoreResult<NextSend> {
        let head: Option<QueueHeadRow> = sqlx::query_as(
            "SELECT id, subject FROM posts WHERE status = 'queued' ORDER BY position, id LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await?;
        // One row of the (status, id) index, not a count of the list.
        let confirmed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM subscribers WHERE status = 'confirmed' LIMIT 1) \
             AS anyone",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(NextSend {
            post_id: head.as_ref().map(|head| head.id),
            subject: head.map(|head| head.subject),
            anyone_confirmed: confirmed > 0,
        })
    }

    async fn issue_for_slot(&self, slot_key: &str) -> StoreResult<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM issues WHERE slot_key = $1")
                .bind(slot_key)
                .fetch_optional(self.pool())
                .await?,
        )
    }
}

/// The next batch of an issue's failures after the id `after`, with their
/// subscribers' status now, in id order.
async fn failures_after<'e, B>(
    executor: impl Executor<'e, Database = B::Db>,
    issue_id: i64,
    after: i64,
) -> StoreResult<Vec<FailureRow>>
where
    B: IssueSql,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'r> FailureRow: FromRow<'r, <B::Db as Database>::Row>,
{
    Ok(sqlx::query_as(
        "SELECT d.id, d.last_error, s.status AS subscriber_status \
         FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id \
         WHERE d.issue_id = $1 AND d.status = 'failed' AND d.id > $2 \
         ORDER BY d.id LIMIT $3",
    )
    .bind(issue_id)
    .bind(after)
    .bind(RETRY_BATCH)
    .fetch_all(executor)
    .await?)
}

/// The retry rule on a failure's stored reply and its subscriber's status
/// (`None`: no longer on the list).
fn verdict(last_error: Option<&str>, subscriber_status: Option<&str>) -> StoreResult<RetryVerdict> {
    let subscriber = subscriber_status.map(rows::subscriber_status).transpose()?;
    Ok(retry_verdict(last_error.unwrap_or_default(), subscriber))
}
