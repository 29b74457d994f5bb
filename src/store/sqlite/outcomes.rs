//! Delivery outcomes, written in groups by the delivery worker. Every
//! statement is a round trip to SQLite's thread made while holding the
//! write lock, and signups wait for that lock: sends, nearly every
//! outcome, go in one statement, and a group of nothing but sends is that
//! statement alone, its own transaction, without `BEGIN` and `COMMIT`.
//! Each outcome written charges its delivery one attempt.

use serde::Serialize;
use sqlx::SqliteConnection;

use super::{begin, millis, to_json};
use crate::domain::delivery::{DeliveryOutcome, DeliveryStatus};
use crate::store::rows::Millis;
use crate::store::sql::SubscriberWrites;
use crate::store::StoreResult;

#[derive(Serialize)]
struct SentRow<'a> {
    id: i64,
    reply: &'a str,
    at: Millis,
}

/// Applies `outcomes` to the deliveries `owner` still holds; returns how
/// many it held.
pub(super) async fn record(
    writer: &mut SqliteConnection,
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
    if sent.len() == outcomes.len() {
        return mark_sent(writer, owner, &sent).await;
    }
    let mut tx = begin(writer).await?;
    let mut applied = mark_sent(&mut tx, owner, &sent).await?;
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
) -> StoreResult<u64> {
    if sent.is_empty() {
        return Ok(0);
    }
    Ok(sqlx::query(
        "UPDATE deliveries SET status = 'sent', smtp_reply = sent.value ->> 'reply', \
         sent_at = sent.value ->> 'at', last_error = NULL, lease_owner = NULL, \
         lease_until = NULL, attempts = attempts + 1 \
         FROM json_each(?1) AS sent \
         WHERE deliveries.id = sent.value ->> 'id' AND deliveries.lease_owner = ?2 \
             AND deliveries.status = 'sending'",
    )
    .bind(to_json(&sent))
    .bind(owner)
    .execute(&mut *connection)
    .await?
    .rows_affected())
}

/// Any outcome but a send (those went in [`mark_sent`]), in the caller's
/// transaction.
async fn record_one(
    connection: &mut SqliteConnection,
    owner: &str,
    outcome: &DeliveryOutcome,
) -> StoreResult<u64> {
    let held = match outcome {
        DeliveryOutcome::Sent { .. } => return Ok(0),
        DeliveryOutcome::Retry {
            id,
            error,
            next_attempt_at,
        } => sqlx::query(
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
        .rows_affected(),
        DeliveryOutcome::Failed { id, error, .. } => {
            close(connection, owner, *id, DeliveryStatus::Failed, error).await?
        }
        DeliveryOutcome::Skipped { id, reason } => {
            close(connection, owner, *id, DeliveryStatus::Skipped, reason).await?
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

/// A delivery that ends without being sent: `failed` or `skipped`, and why.
async fn close(
    connection: &mut SqliteConnection,
    owner: &str,
    id: i64,
    status: DeliveryStatus,
    why: &str,
) -> StoreResult<u64> {
    Ok(sqlx::query(
        "UPDATE deliveries SET status = ?, last_error = ?, lease_owner = NULL, lease_until = NULL, \
         attempts = attempts + 1 \
         WHERE id = ? AND lease_owner = ? AND status = 'sending'",
    )
    .bind(status.as_str())
    .bind(why)
    .bind(id)
    .bind(owner)
    .execute(&mut *connection)
    .await?
    .rows_affected())
}
