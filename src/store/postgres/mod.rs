//! The server backend. Behaviour matches the SQLite backend method by method;
//! only the way concurrency is handled differs, since several instances may
//! share one database and writers do not queue on a single file lock:
//!
//! * rows that are read and then written are locked with `FOR UPDATE`,
//!   always subscriber before confirmation, so the locks cannot deadlock;
//! * edits to the post queue take `SHARE ROW EXCLUSIVE` on `posts`, which
//!   serialises them with each other and with issue creation;
//! * issue creation takes `SHARE ROW EXCLUSIVE` on `issues`, so issue
//!   numbers stay gapless and a slot has exactly one owner;
//! * workers claim with `FOR UPDATE SKIP LOCKED` and every later update is
//!   fenced on the lease owner.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};

use super::rows::StatusCount;
use super::{Store, StoreError, StoreResult};
use crate::config::{Backend, DatabaseSettings};
use crate::tokens::TokenKey;

mod deliveries;
mod issues;
mod outcomes;
mod posts;
mod signup;
mod subscribers;

pub struct PostgresStore {
    pool: PgPool,
}

type Tx = Transaction<'static, Postgres>;

impl PostgresStore {
    pub async fn connect(settings: &DatabaseSettings) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&settings.url)
            .await?;
        Ok(Self { pool })
    }

    async fn write(&self) -> StoreResult<Tx> {
        Ok(self.pool.begin().await?)
    }

    /// For the data transfer between backends, which lives in this module.
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// What PostgreSQL's manual asks for after a bulk load: statistics for
    /// the planner, and hint bits and the visibility map set now, in one
    /// pass, rather than by the first big read (a fan-out), which would
    /// otherwise dirty and write out every page as it went. Autovacuum
    /// gets there too, but up to a minute later.
    pub(super) async fn vacuum_analyze(&self, table: &str) -> StoreResult<()> {
        sqlx::query(&format!("VACUUM (ANALYZE) {table}"))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Rows of `SELECT status, COUNT(*) AS count …`, with an optional id bound.
async fn count_by_status(
    pool: &PgPool,
    sql: &str,
    bind: Option<i64>,
) -> StoreResult<Vec<StatusCount>> {
    let mut query = sqlx::query_as::<_, StatusCount>(sql);
    if let Some(value) = bind {
        query = query.bind(value);
    }
    Ok(query.fetch_all(pool).await?)
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn token_key(&self) -> StoreResult<TokenKey> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ('token_key', $1) ON CONFLICT DO NOTHING",
        )
        .bind(TokenKey::generate().to_vec())
        .execute(&self.pool)
        .await?;
        let bytes: Vec<u8> =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = 'token_key'")
                .fetch_one(&self.pool)
                .await?;
        TokenKey::from_bytes(&bytes).ok_or_else(|| StoreError::Corrupt("token key length".into()))
    }
}
