//! Subscribers on PostgreSQL: what differs from the shared SQL
//! (`store::sql`): signup groups (in `signup`) and the bulk load of test
//! subscribers.

use async_trait::async_trait;

use super::{signup, PostgresStore};
use crate::domain::signup::{SignupOutcome, SignupRequest};
use crate::store::sql::{BulkSubscribers, SubscriberSql};
use crate::store::StoreResult;

#[async_trait]
impl SubscriberSql for PostgresStore {
    async fn signup_group(&self, requests: &[SignupRequest]) -> StoreResult<Vec<SignupOutcome>> {
        signup::signup_group(self, requests).await
    }

    async fn bulk_insert_confirmed(&self, bulk: BulkSubscribers<'_>) -> StoreResult<u64> {
        let result = sqlx::query(
            "INSERT INTO subscribers (email, status, created_at, confirmed_at) \
             SELECT $2::text || n || '@' || $3::text, 'confirmed', $4, $4 \
             FROM generate_series(1, $1::bigint) AS n ORDER BY n \
             ON CONFLICT DO NOTHING",
        )
        .bind(i64::try_from(bulk.count).unwrap_or(i64::MAX))
        .bind(bulk.prefix)
        .bind(bulk.domain)
        .bind(bulk.now)
        .execute(&self.pool)
        .await?;
        self.vacuum_analyze("subscribers").await?;
        Ok(result.rows_affected())
    }
}
