//! Delivery outcomes on PostgreSQL, written in groups by the delivery
//! worker: one statement per kind of outcome, over arrays, each fenced on
//! the lease owner. A group of nothing but sends is that one statement.
//! Each outcome written charges its delivery one attempt, and each
//! statement that ends deliveries counts them in their issues' tallies in
//! a second part of the same statement (see [`with_tally`]).

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::PostgresStore;
use crate::domain::delivery::DeliveryOutcome;
use crate::store::sql::SqlBackend;
use crate::store::sql::{tally_set, SubscriberWrites};
use crate::store::StoreResult;

/// `update`, a data-modifying CTE named `ended` that returns the
/// `issue_id` of each delivery it ended, followed by the update of those
/// issues' tallies and `select` over `ended`: one statement, so one round
/// trip and atomic. `at` is the parameter for when the group ended.
fn with_tally(update: &str, column: &'static str, at: &str, select: &str) -> String {
    format!(
        "WITH ended AS ({update}), \
         tallied AS (UPDATE issue_tallies AS t SET {} \
             FROM (SELECT issue_id, COUNT(*) AS n FROM ended \
                   WHERE issue_id IS NOT NULL GROUP BY issue_id) AS done \
             WHERE t.issue_id = done.issue_id) \
         {select}",
        tally_set(column, "done.n", at)
    )
}

/// A `COUNT(*)`, which is never negative.
fn count(rows: i64) -> u64 {
    u64::try_from(rows).unwrap_or_default()
}

/// Applies `outcomes` to the deliveries `owner` still holds; returns how
/// many it held.
pub(super) async fn record(
    store: &PostgresStore,
    owner: &str,
    outcomes: &[DeliveryOutcome],
) -> StoreResult<u64> {
    if outcomes.is_empty() {
        return Ok(0);
    }
    let mut sent: (Vec<i64>, Vec<&str>, Vec<DateTime<Utc>>) = Default::default();
    let mut retry: (Vec<i64>, Vec<&str>, Vec<DateTime<Utc>>) = Default::default();
    let mut failed: (Vec<i64>, Vec<&str>, Vec<DateTime<Utc>>) = Default::default();
    let mut skipped: (Vec<i64>, Vec<&str>, Vec<DateTime<Utc>>) = Default::default();
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
            DeliveryOutcome::Failed { id, error, at, .. } => {
                failed.0.push(*id);
                failed.1.push(error);
                failed.2.push(*at);
            }
            DeliveryOutcome::Skipped { id, reason, at } => {
                skipped.0.push(*id);
                skipped.1.push(reason);
                skipped.2.push(*at);
            }
        }
    }
    let ended_at = outcomes.iter().filter_map(DeliveryOutcome::ended_at).max();

    let mark_sent_sql = with_tally(
        "UPDATE deliveries d SET status = 'sent', smtp_reply = u.reply, sent_at = u.at, \
         last_error = NULL, lease_owner = NULL, lease_until = NULL, attempts = d.attempts + 1 \
         FROM UNNEST($1::bigint[], $2::text[], $3::timestamptz[]) AS u(id, reply, at) \
         WHERE d.id = u.id AND d.lease_owner = $4 AND d.status = 'sending' \
         RETURNING d.issue_id",
        "sent",
        "$5",
        "SELECT COUNT(*) FROM ended",
    );
    let mark_sent = sqlx::query_scalar::<_, i64>(&mark_sent_sql)
        .bind(&sent.0)
        .bind(&sent.1)
        .bind(&sent.2)
        .bind(owner)
        .bind(ended_at);
    // Nearly every group is sends alone: one statement, its own
    // transaction, without the round trips for BEGIN and COMMIT.
    if sent.0.len() == outcomes.len() {
        return Ok(count(mark_sent.fetch_one(&store.pool).await?));
    }
    let mut tx = store.write().await?;
    let mut applied = 0;
    if !sent.0.is_empty() {
        applied += count(mark_sent.fetch_one(&mut *tx).await?);
    }
    if !retry.0.is_empty() {
        applied += sqlx::query(
            "UPDATE deliveries d SET status = 'pending', last_error = u.error, \
             next_attempt_at = u.next_attempt_at, lease_owner = NULL, lease_until = NULL, \
             attempts = d.attempts + 1 \
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
        let skip = with_tally(
            "UPDATE deliveries d SET status = 'skipped', last_error = u.reason, closed_at = u.at, \
             lease_owner = NULL, lease_until = NULL, attempts = d.attempts + 1 \
             FROM UNNEST($1::bigint[], $2::text[], $3::timestamptz[]) AS u(id, reason, at) \
             WHERE d.id = u.id AND d.lease_owner = $4 AND d.status = 'sending' \
             RETURNING d.issue_id",
            "skipped",
            "$5",
            "SELECT COUNT(*) FROM ended",
        );
        applied += count(
            sqlx::query_scalar::<_, i64>(&skip)
                .bind(&skipped.0)
                .bind(&skipped.1)
                .bind(&skipped.2)
                .bind(owner)
                .bind(ended_at)
                .fetch_one(&mut *tx)
                .await?,
        );
    }
    if !failed.0.is_empty() {
        let fail = with_tally(
            "UPDATE deliveries d SET status = 'failed', last_error = u.error, closed_at = u.at, \
             lease_owner = NULL, lease_until = NULL, attempts = d.attempts + 1 \
             FROM UNNEST($1::bigint[], $2::text[], $3::timestamptz[]) AS u(id, error, at) \
             WHERE d.id = u.id AND d.lease_owner = $4 AND d.status = 'sending' \
             RETURNING d.id, d.issue_id",
            "failed",
            "$5",
            "SELECT id FROM ended",
        );
        let mut held: HashSet<i64> = sqlx::query_scalar(&fail)
            .bind(&failed.0)
            .bind(&failed.1)
            .bind(&failed.2)
            .bind(owner)
            .bind(ended_at)
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
                    SubscriberWrites::<sqlx::Postgres>::count_hard_bounce(
                        &mut tx,
                        *subscriber_id,
                        error,
                        *at,
                    )
                    .await?;
                }
            }
        }
    }
    tx.commit().await?;
    Ok(applied)
}
