//! An issue's fan-out on SQLite: one `INSERT … SELECT` over the confirmed
//! subscribers, each row's Message-ID made in the statement. And putting
//! an issue's failures back in the outbox.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::{millis, to_json, SqliteStore};
use crate::store::message_ids;
use crate::store::sql::{FanOut, IssueSql};
use crate::store::StoreResult;

#[async_trait]
impl IssueSql for SqliteStore {
    async fn fan_out_broadcast(
        connection: &mut SqliteConnection,
        fan_out: FanOut<'_>,
        post_id: i64,
    ) -> StoreResult<u64> {
        let message_id = message_ids::sqlite_expression("id", "?4", "?5");
        let written = sqlx::query(&format!(
            "INSERT INTO deliveries (kind, priority, subscriber_id, issue_id, post_id, message_id, \
             status, next_attempt_at, created_at) \
             SELECT 'issue', 1, id, ?1, ?2, {message_id}, 'pending', ?3, ?3 \
             FROM subscribers WHERE status = 'confirmed' ON CONFLICT DO NOTHING"
        ))
        .bind(fan_out.issue_id)
        .bind(post_id)
        .bind(millis(fan_out.now))
        .bind(&fan_out.message_ids.prefix)
        .bind(fan_out.message_ids.mask)
        .execute(&mut *connection)
        .await?;
        Ok(written.rows_affected())
    }

    async fn fan_out_sequence(
        connection: &mut SqliteConnection,
        fan_out: FanOut<'_>,
    ) -> StoreResult<u64> {
        let message_id = message_ids::sqlite_expression("due.subscriber_id", "?3", "?4");
        let written = sqlx::query(&format!(
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
        .bind(fan_out.issue_id)
        .bind(millis(fan_out.now))
        .bind(&fan_out.message_ids.prefix)
        .bind(fan_out.message_ids.mask)
        .execute(&mut *connection)
        .await?;
        Ok(written.rows_affected())
    }

    async fn requeue_failures(
        connection: &mut SqliteConnection,
        issue_id: i64,
        delivery_ids: &[i64],
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        // `status = 'failed'` makes a second retry of the same failures
        // change nothing; the subscriber is checked again in the statement
        // that writes.
        Ok(sqlx::query(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?1, \
             closed_at = NULL, lease_owner = NULL, lease_until = NULL \
             WHERE id IN (SELECT value FROM json_each(?2)) AND issue_id = ?3 \
                 AND status = 'failed' \
                 AND EXISTS (SELECT 1 FROM subscribers s \
                             WHERE s.id = deliveries.subscriber_id AND s.status = 'confirmed')",
        )
        .bind(millis(now))
        .bind(to_json(&delivery_ids))
        .bind(issue_id)
        .execute(&mut *connection)
        .await?
        .rows_affected())
    }
}
