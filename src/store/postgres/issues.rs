//! An issue's fan-out on PostgreSQL: one `INSERT … SELECT` over the
//! confirmed subscribers in id order, each row's Message-ID made in the
//! statement. And putting an issue's failures back in the outbox.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::PostgresStore;
use crate::store::message_ids;
use crate::store::sql::{FanOut, IssueSql};
use crate::store::StoreResult;

#[async_trait]
impl IssueSql for PostgresStore {
    async fn fan_out_broadcast(
        connection: &mut PgConnection,
        fan_out: FanOut<'_>,
        post_id: i64,
    ) -> StoreResult<u64> {
        // No ON CONFLICT (it cost a fifth of a 1M fan-out): a queued post
        // has no deliveries, since the transaction that makes a post's
        // deliveries marks it sent. Should one exist anyway, the unique
        // index fails this issue rather than send twice.
        let message_id = message_ids::postgres_expression("id", "$4", "$5");
        let written = sqlx::query(&format!(
            "INSERT INTO deliveries (kind, priority, subscriber_id, issue_id, post_id, message_id, \
             status, next_attempt_at, created_at) \
             SELECT 'issue', 1, id, $1, $2, {message_id}, 'pending', $3, $3 \
             FROM subscribers WHERE status = 'confirmed' ORDER BY id"
        ))
        .bind(fan_out.issue_id)
        .bind(post_id)
        .bind(fan_out.now)
        .bind(&fan_out.message_ids.prefix)
        .bind(fan_out.message_ids.mask)
        .execute(&mut *connection)
        .await?;
        Ok(written.rows_affected())
    }

    async fn fan_out_sequence(
        connection: &mut PgConnection,
        fan_out: FanOut<'_>,
    ) -> StoreResult<u64> {
        let message_id = message_ids::postgres_expression("s.id", "$3", "$4");
        let written = sqlx::query(&format!(
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
        .bind(fan_out.issue_id)
        .bind(fan_out.now)
        .bind(&fan_out.message_ids.prefix)
        .bind(fan_out.message_ids.mask)
        .execute(&mut *connection)
        .await?;
        Ok(written.rows_affected())
    }

    async fn requeue_failures(
        connection: &mut PgConnection,
        issue_id: i64,
        delivery_ids: &[i64],
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        Ok(sqlx::query(REQUEUE)
            .bind(now)
            .bind(delivery_ids)
            .bind(issue_id)
            .execute(&mut *connection)
            .await?
            .rows_affected())
    }
}

/// `status = 'failed'` makes a second retry of the same failures change
/// nothing, and the subscriber is checked again here, in the statement
/// that writes, whatever the plan read before.
const REQUEUE: &str = "UPDATE deliveries d SET status = 'pending', attempts = 0, \
     next_attempt_at = $1, closed_at = NULL, lease_owner = NULL, lease_until = NULL \
     WHERE d.id = ANY($2::bigint[]) AND d.issue_id = $3 AND d.status = 'failed' \
         AND EXISTS (SELECT 1 FROM subscribers s \
                     WHERE s.id = d.subscriber_id AND s.status = 'confirmed')";
