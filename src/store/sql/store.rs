//! The whole store, on either backend: what is not an aggregate's.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::{DeliverySql, IssueSql, SubscriberSql};
use crate::config::Backend;
use crate::links::TokenKey;
use crate::store::{
    AdminStore, DeliveryStore, GrowthStore, InstanceStore, IssueStore, PostStore, Store,
    StoreError, StoreResult, SubscriberAdminStore, SubscriberStore,
};

#[async_trait]
impl<B> Store for B
where
    B: SubscriberSql + IssueSql + DeliverySql,
    B: SubscriberStore + PostStore + IssueStore + DeliveryStore + InstanceStore + AdminStore,
    B: GrowthStore,
    B: SubscriberAdminStore,
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> Vec<u8>: Encode<'q, B::Db> + Type<B::Db>,
    for<'r> Vec<u8>: Decode<'r, B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    fn backend(&self) -> Backend {
        B::KIND
    }

    async fn migrate(&self) -> StoreResult<()> {
        B::apply_migrations(self).await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(self.pool()).await?;
        Ok(())
    }

    async fn probe_write(&self) -> StoreResult<()> {
        // Rewrites the same row each time: a page written and committed,
        // nothing that grows.
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ('write_probe', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(vec![1u8])
        .execute(&mut *tx)
        .await?;
        B::commit(tx).await
    }

    async fn token_key(&self) -> StoreResult<TokenKey> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ('token_key', $1) ON CONFLICT DO NOTHING",
        )
        .bind(TokenKey::generate().to_vec())
        .execute(&mut *tx)
        .await?;
        let bytes: Vec<u8> =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = 'token_key'")
                .fetch_one(&mut *tx)
                .await?;
        B::commit(tx).await?;
        TokenKey::from_bytes(&bytes).ok_or_else(|| StoreError::Corrupt("token key length".into()))
    }
}
