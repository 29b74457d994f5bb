//! Admin accounts and their sessions, on either backend. The tables are a
//! handful of rows: nothing here needs an index beyond the keys.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Type};

use super::{Dialect, SqlBackend};
use crate::domain::admin::{
    AdminAccount, AdminCredentials, AdminSession, NewAdmin, NewSession, SessionTokenHash,
    SetAdminOutcome,
};
use crate::store::rows::{AdminCredentialsRow, AdminRow, AdminSessionRow};
use crate::store::{AdminStore, StoreResult};

#[async_trait]
impl<B: SqlBackend> AdminStore for B
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> <B::Db as Dialect>::Time: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'r> i64: Decode<'r, B::Db>,
    for<'q> Vec<u8>: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
    for<'r> AdminRow<<B::Db as Dialect>::Time>: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> AdminSessionRow<<B::Db as Dialect>::Time>: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> AdminCredentialsRow: FromRow<'r, <B::Db as Database>::Row>,
{
    async fn set_admin(&self, admin: &NewAdmin) -> StoreResult<SetAdminOutcome> {
        let mut tx = self.write().await?;
        let created: Option<i64> = sqlx::query_scalar(
            "INSERT INTO admin_users (email, password_hash, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (email) DO NOTHING RETURNING id",
        )
        .bind(admin.email.as_str())
        .bind(admin.password_hash.as_str())
        .bind(<B::Db as Dialect>::Time::from(admin.now))
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match created {
            Some(id) => SetAdminOutcome::Created { id },
            None => {
                let id: i64 = sqlx::query_scalar(
                    "UPDATE admin_users SET password_hash = $2 WHERE email = $1 RETURNING id",
                )
                .bind(admin.email.as_str())
                .bind(admin.password_hash.as_str())
                .fetch_one(&mut *tx)
                .await?;
                // A reset is what an operator does when a password may
                // have leaked: whoever logged in with the old one is out.
                sqlx::query("DELETE FROM admin_sessions WHERE admin_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                SetAdminOutcome::PasswordReset { id }
            }
        };
        B::commit(tx).await?;
        Ok(outcome)
    }

    async fn list_admins(&self) -> StoreResult<Vec<AdminAccount>> {
        let rows: Vec<AdminRow<<B::Db as Dialect>::Time>> =
            sqlx::query_as("SELECT id, email, created_at FROM admin_users ORDER BY id")
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().map(AdminAccount::from).collect())
    }

    async fn remove_admin(&self, email: &str) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        // Their sessions go with them: ON DELETE CASCADE.
        let result = sqlx::query("DELETE FROM admin_users WHERE email = $1")
            .bind(email)
            .execute(&mut *tx)
            .await?;
        B::commit(tx).await?;
        Ok(<B::Db as Dialect>::rows_affected(&result) > 0)
    }

    async fn admin_credentials(&self, email: &str) -> StoreResult<Option<AdminCredentials>> {
        let row: Option<AdminCredentialsRow> =
            sqlx::query_as("SELECT id, password_hash FROM admin_users WHERE email = $1")
                .bind(email)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(AdminCredentials::from))
    }

    async fn insert_admin_session(
        &self,
        session: &NewSession,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreResult<()> {
        let now = <B::Db as Dialect>::Time::from(session.now);
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= $1 OR last_seen_at <= $2")
            .bind(now)
            .bind(<B::Db as Dialect>::Time::from(idle_cutoff))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO admin_sessions \
             (token_hash, admin_id, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $3, $4)",
        )
        .bind(session.token_hash.0.to_vec())
        .bind(session.admin_id)
        .bind(now)
        .bind(<B::Db as Dialect>::Time::from(session.expires_at))
        .execute(&mut *tx)
        .await?;
        B::commit(tx).await
    }

    async fn admin_session(&self, token: &SessionTokenHash) -> StoreResult<Option<AdminSession>> {
        let row: Option<AdminSessionRow<<B::Db as Dialect>::Time>> = sqlx::query_as(
            "SELECT s.admin_id, a.email, s.created_at, s.last_seen_at, s.expires_at \
             FROM admin_sessions s JOIN admin_users a ON a.id = s.admin_id \
             WHERE s.token_hash = $1",
        )
        .bind(token.0.to_vec())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(AdminSession::from))
    }

    async fn touch_admin_session(
        &self,
        token: &SessionTokenHash,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query("UPDATE admin_sessions SET last_seen_at = $2 WHERE token_hash = $1")
            .bind(token.0.to_vec())
            .bind(<B::Db as Dialect>::Time::from(now))
            .execute(&mut *tx)
            .await?;
        B::commit(tx).await
    }

    async fn delete_admin_session(&self, token: &SessionTokenHash) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let result = sqlx::query("DELETE FROM admin_sessions WHERE token_hash = $1")
            .bind(token.0.to_vec())
            .execute(&mut *tx)
            .await?;
        B::commit(tx).await?;
        Ok(<B::Db as Dialect>::rows_affected(&result) > 0)
    }
}
