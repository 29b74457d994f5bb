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

use super::sql::SqlBackend;
use super::StoreResult;
use crate::config::{Backend, DatabaseSettings};

mod deliveries;
mod issues;
mod outcomes;
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

#[async_trait]
impl SqlBackend for PostgresStore {
    const KIND: Backend = Backend::Postgres;
    type Db = Postgres;
    type Tx<'a> = Tx;

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn write(&self) -> StoreResult<Self::Tx<'_>> {
        Ok(self.pool.begin().await?)
    }

    async fn commit(tx: Self::Tx<'_>) -> StoreResult<()> {
        Ok(tx.commit().await?)
    }

    async fn roll_back(tx: Self::Tx<'_>) -> StoreResult<()> {
        Ok(tx.rollback().await?)
    }

    async fn apply_migrations(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }
}
