//! Instances and their heartbeats, on either backend, and the claims of
//! dead instances taken back. The deliveries a check looks at are the
//! `sending` ones, a few hundred per instance, found through the partial
//! index `deliveries_leased`: the check costs the same for a list of ten
//! and of a million.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::{Dialect, SqlBackend};
use crate::domain::instance::{Rescue, RescuedClaims};
use crate::store::{InstanceStore, StoreResult};

/// Sets every claim of an owner (`$1`) back to `pending`. The attempt is
/// charged when an outcome is written, so there is none to undo.
const RELEASE_ALL: &str =
    "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_until = NULL \
     WHERE status = 'sending' AND lease_owner = $1";

#[async_trait]
impl<B: SqlBackend> InstanceStore for B
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> <B::Db as Dialect>::Time: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'r> String: Decode<'r, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    async fn heartbeat(&self, owner: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO instances (owner, started_at, heartbeat_at) VALUES ($1, $2, $2) \
             ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(owner)
        .bind(<B::Db as Dialect>::Time::from(now))
        .execute(&mut *tx)
        .await?;
        B::commit(tx).await
    }

    async fn deregister(&self, owner: &str) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM instances WHERE owner = $1")
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        B::commit(tx).await
    }

    async fn rescue_claims(&self, rescue: &Rescue) -> StoreResult<Vec<RescuedClaims>> {
        let alive_since = <B::Db as Dialect>::Time::from(rescue.alive_since);
        let mut tx = self.write().await?;
        let dead: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT lease_owner FROM deliveries d \
             WHERE status = 'sending' AND lease_owner <> $1 \
                 AND NOT EXISTS (SELECT 1 FROM instances i \
                                 WHERE i.owner = d.lease_owner AND i.heartbeat_at >= $2)",
        )
        .bind(rescue.me.as_str())
        .bind(alive_since)
        .fetch_all(&mut *tx)
        .await?;
        let mut rescued = Vec::new();
        for owner in dead {
            // The heartbeat is read again: on PostgreSQL an owner that beat
            // since the query above keeps its claims.
            let result = sqlx::query(&format!(
                "{RELEASE_ALL} AND NOT EXISTS \
                 (SELECT 1 FROM instances WHERE owner = $1 AND heartbeat_at >= $2)"
            ))
            .bind(owner.as_str())
            .bind(alive_since)
            .execute(&mut *tx)
            .await?;
            let count = <B::Db as Dialect>::rows_affected(&result);
            // Another instance's check may have been first.
            if count > 0 {
                rescued.push(RescuedClaims { owner, count });
            }
        }
        sqlx::query("DELETE FROM instances WHERE heartbeat_at < $1 AND owner <> $2")
            .bind(alive_since)
            .bind(rescue.me.as_str())
            .execute(&mut *tx)
            .await?;
        B::commit(tx).await?;
        Ok(rescued)
    }

    async fn take_over(&self, owner: &str) -> StoreResult<u64> {
        let mut tx = self.write().await?;
        let result = sqlx::query(RELEASE_ALL)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        let count = <B::Db as Dialect>::rows_affected(&result);
        sqlx::query("DELETE FROM instances WHERE owner = $1")
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        B::commit(tx).await?;
        Ok(count)
    }
}
