//! Subscribers on SQLite: what differs from the shared SQL (`store::sql`):
//! signup groups (in `signup`) and the bulk load of test subscribers.

use async_trait::async_trait;

use super::{begin, millis, signup, SqliteStore};
use crate::domain::signup::{SignupOutcome, SignupRequest};
use crate::store::sql::{BulkSubscribers, SubscriberSql};
use crate::store::StoreResult;

#[async_trait]
impl SubscriberSql for SqliteStore {
    async fn signup_group(&self, requests: &[SignupRequest]) -> StoreResult<Vec<SignupOutcome>> {
        signup::signup_group(self, requests).await
    }

    async fn bulk_insert_confirmed(&self, bulk: BulkSubscribers<'_>) -> StoreResult<u64> {
        let mut writer = self.lock().await;
        let mut tx = begin(&mut writer).await?;
        let result = sqlx::query(
            "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < ?1) \
             INSERT INTO subscribers (email, status, created_at, confirmed_at) \
             SELECT ?2 || n || '@' || ?3, 'confirmed', ?4, ?4 FROM seq WHERE true \
             ON CONFLICT DO NOTHING",
        )
        .bind(i64::try_from(bulk.count).unwrap_or(i64::MAX))
        .bind(bulk.prefix)
        .bind(bulk.domain)
        .bind(millis(bulk.now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(result.rows_affected())
    }
}
