//! Deliveries, on either backend. Claims and outcomes are tuned for each
//! backend (see their `deliveries` and `outcomes`); taking back expired
//! leases is the same everywhere.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use super::{DeliverySql, Dialect};
use crate::domain::delivery::{ClaimRequest, ClaimedDelivery, DeliveryCounts, DeliveryOutcome};
use crate::store::rows::{self, StatusCount};
use crate::store::{DeliveryStore, StoreResult};

#[async_trait]
impl<B: DeliverySql> DeliveryStore for B
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> <B::Db as Dialect>::Time: Encode<'q, B::Db> + Type<B::Db>,
    for<'r> StatusCount: FromRow<'r, <B::Db as Database>::Row>,
{
    async fn reclaim_expired_leases(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.write().await?;
        let result = sqlx::query(
            "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_until = NULL \
             WHERE status = 'sending' AND lease_until < $1",
        )
        .bind(<B::Db as Dialect>::Time::from(now))
        .execute(&mut *tx)
        .await?;
        B::commit(tx).await?;
        Ok(<B::Db as Dialect>::rows_affected(&result))
    }

    async fn claim_deliveries(&self, request: ClaimRequest) -> StoreResult<Vec<ClaimedDelivery>> {
        DeliverySql::claim_deliveries(self, request).await
    }

    async fn record_outcomes(&self, owner: &str, outcomes: &[DeliveryOutcome]) -> StoreResult<u64> {
        DeliverySql::record_outcomes(self, owner, outcomes).await
    }

    async fn release_claims(&self, owner: &str, delivery_ids: &[i64]) -> StoreResult<u64> {
        DeliverySql::release_claims(self, owner, delivery_ids).await
    }

    async fn delivery_counts(&self) -> StoreResult<DeliveryCounts> {
        let counts: Vec<StatusCount> = sqlx::query_as(<B::Db as Dialect>::COUNT_DELIVERIES)
            .fetch_all(self.pool())
            .await?;
        rows::delivery_counts(counts)
    }
}
