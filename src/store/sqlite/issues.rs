//! An issue's fan-out on SQLite: one `INSERT … SELECT` over the confirmed
//! subscribers, each row's Message-ID made in the statement.

use async_trait::async_trait;
use sqlx::SqliteConnection;

use super::{millis, SqliteStore};
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
}
