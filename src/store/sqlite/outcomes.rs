//! Delivery outcomes, written in groups by the delivery worker. Every
//! statement is a round trip to SQLite's thread made while holding the
//! write lock, and signups wait for that lock: sends, nearly every
//! outcome, go in one statement, and a group of nothing but sends is one
//! statement list (begin, count the sends in their issues' tallies, mark
//! them, commit), one round trip. Each outcome written charges its
//! delivery one attempt, and counts in its issue's tally in the same
//! transaction.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::SqliteConnection;

use super::{begin, millis, to_json, WriteLock};
use crate::domain::delivery::{DeliveryOutcome, DeliveryStatus};
use crate::store::rows::Millis;
use crate::store::sql::{tally_column, tally_set, SubscriberWrites};
use crate::store::StoreResult;

#[derive(Serialize)]
struct SentRow<'a> {
    id: i64,
    reply: &'a str,
    at: Millis,
}

/// Counts the sends of `?1` (rows of [`SentRow`]) that `?2` still holds in
/// their issues' tallies; `?3` is when the group ended. Run before
/// [`MARK_SENT`], in its transaction, so it sees the same rows.
static TALLY_SENDS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE issue_tallies AS t SET {} \
         FROM (SELECT d.issue_id, COUNT(*) AS n \
               FROM json_each(?1) AS sent JOIN deliveries AS d ON d.id = sent.value ->> 'id' \
               WHERE d.lease_owner = ?2 AND d.status = 'sending' AND d.issue_id IS NOT NULL \
               GROUP BY d.issue_id) AS done \
         WHERE t.issue_id = done.issue_id",
        tally_set("sent", "done.n", "?3")
    )
});

/// Marks the sends of `?1` that `?2` still holds; returns a row for each.
const MARK_SENT: &str =
    "UPDATE deliveries SET status = 'sent', smtp_reply = sent.value ->> 'reply', \
     sent_at = sent.value ->> 'at', last_error = NULL, lease_owner = NULL, \
     lease_until = NULL, attempts = attempts + 1 \
     FROM json_each(?1) AS sent \
     WHERE deliveries.id = sent.value ->> 'id' AND deliveries.lease_owner = ?2 \
         AND deliveries.status = 'sending' \
     RETURNING deliveries.id";

/// Applies `outcomes` to the deliveries `owner` still holds; returns how
/// many it held.
pub(super) async fn record(
    writer: &mut WriteLock<'_>,
    owner: &str,
    outcomes: &[DeliveryOutcome],
) -> StoreResult<u64> {
    let sent: Vec<SentRow> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            DeliveryOutcome::Sent { id, reply, at } => Some(SentRow {
                id: *id,
                reply,
                at: millis(*at),
            }),
            _ => None,
        })
        .collect();
    let ended_at = outcomes
        .iter()
        .filter_map(DeliveryOutcome::ended_at)
        .max()
        .map(millis);
    if sent.len() == outcomes.len() {
        writer.begin_by_hand();
        let marked = sqlx::query(&format!(
            "BEGIN IMMEDIATE; {}; {MARK_SENT}; COMMIT",
            *TALLY_SENDS
        ))
        .bind(to_json(&sent))
        .bind(owner)
        .bind(ended_at)
        .fetch_all(&mut **writer)
        .await
        .map(|rows| rows.len() as u64)
        .map_err(Into::into);
        return writer.finish_by_hand(marked).await;
    }
    let mut tx = begin(writer).await?;
    let mut applied = mark_sent(&mut tx, owner, &sent, ended_at).await?;
    for outcome in outcomes {
        applied += record_one(&mut tx, owner, outcome).await?;
    }
    tx.commit().await?;
    Ok(applied)
}

async fn mark_sent(
    connection: &mut SqliteConnection,
    owner: &str,
    sent: &[SentRow<'_>],
    ended_at: Option<Millis>,
) -> StoreResult<u64> {
    if sent.is_empty() {
        return Ok(0);
    }
    let sent = to_json(&sent);
    sqlx::query(&TALLY_SENDS)
        .bind(&sent)
        .bind(owner)
        .bind(ended_at)
        .execute(&mut *connection)
        .await?;
    Ok(sqlx::query(MARK_SENT)
        .bind(&sent)
        .bind(owner)
        .fetch_all(&mut *connection)
        .await?
        .len() as u64)
}

/// Any outcome but a send (those went in [`mark_sent`]), in the caller's
/// transaction.
async fn record_one(
    connection: &mut SqliteConnection,
    owner: &str,
    outcome: &DeliveryOutcome,
) -> StoreResult<u64> {
    let held =
        match outcome {
            DeliveryOutcome::Sent { .. } => return Ok(0),
            DeliveryOutcome::Retry {
                id,
                error,
                next_attempt_at,
            } => return Ok(sqlx::query(
                "UPDATE deliveries SET status = 'pending', last_error = ?, next_attempt_at = ?, \
                 lease_owner = NULL, lease_until = NULL, attempts = attempts + 1 \
                 WHERE id = ? AND lease_owner = ? AND status = 'sending'",
            )
            .bind(error)
            .bind(millis(*next_attempt_at))
            .bind(id)
            .bind(owner)
            .execute(&mut *connection)
            .await?
            .rows_affected()),
            DeliveryOutcome::Failed { id, error, at, .. } => {
                close(connection, owner, *id, DeliveryStatus::Failed, error, *at).await?
            }
            DeliveryOutcome::Skipped { id, reason, at } => {
                close(connection, owner, *id, DeliveryStatus::Skipped, reason, *at).await?
            }
        };
    if let DeliveryOutcome::Failed {
        subscriber_id,
        hard_bounce: true,
        at,
        error,
        ..
    } = outcome
    {
        if held == 1 {
            SubscriberWrites::<sqlx::Sqlite>::count_hard_bounce(
                connection,
                *subscriber_id,
                error,
                *at,
            )
            .await?;
        }
    }
    Ok(held)
}

/// A delivery that ends without being sent: `failed` or `skipped`, why and
/// when, counted in its issue's tally. How many `owner` held (0 or 1).
async fn close(
    connection: &mut SqliteConnection,
    owner: &str,
    id: i64,
    status: DeliveryStatus,
    why: &str,
    at: DateTime<Utc>,
) -> StoreResult<u64> {
    let closed: Option<Option<i64>> = sqlx::query_scalar(
        "UPDATE deliveries SET status = ?, last_error = ?, closed_at = ?, lease_owner = NULL, \
         lease_until = NULL, attempts = attempts + 1 \
         WHERE id = ? AND lease_owner = ? AND status = 'sending' \
         RETURNING issue_id",
    )
    .bind(status.as_str())
    .bind(why)
    .bind(millis(at))
    .bind(id)
    .bind(owner)
    .fetch_optional(&mut *connection)
    .await?;
    let Some(issue_id) = closed else {
        return Ok(0);
    };
    if let (Some(issue_id), Some(column)) = (issue_id, tally_column(status)) {
        sqlx::query(&format!(
            "UPDATE issue_tallies AS t SET {} WHERE t.issue_id = ?2",
            tally_set(column, "1", "?1")
        ))
        .bind(millis(at))
        .bind(issue_id)
        .execute(&mut *connection)
        .await?;
    }
    Ok(1)
}
