//! Subscribers on SQLite: confirmation, unsubscribes, records the operator
//! adds, the list and the consent log. Signups are in `signup`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::{begin, count_by_status, millis, signup, SqliteStore};
use crate::domain::consent::{ConsentContext, ConsentEvent, ConsentKind};
use crate::domain::signup::{
    self as opt_in, ConfirmOutcome, ConfirmStep, PendingConfirmation, SignupOutcome, SignupRequest,
};
use crate::domain::subscriber::{
    self, AddOutcome, OperatorSubscriber, Subscriber, SubscriberCounts, SubscriberName,
    SubscriberQuery, UnsubscribeOutcome,
};
use crate::store::rows::{
    self, ConsentEventRow, Millis, SubscriberRow, CONSENT_EVENT_COLUMNS, SUBSCRIBER_COLUMNS,
};
use crate::store::{StoreResult, SubscriberStore};

pub(super) async fn record_consent(
    connection: &mut SqliteConnection,
    subscriber_id: i64,
    email: &str,
    kind: ConsentKind,
    consent: &ConsentContext,
    detail: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO consent_events (subscriber_id, email, kind, occurred_at, ip, user_agent, detail) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(subscriber_id)
    .bind(email)
    .bind(kind.as_str())
    .bind(millis(now))
    .bind(consent.ip.as_deref())
    .bind(consent.user_agent.as_deref())
    .bind(detail)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// A confirmation request and its email, in the caller's transaction.
pub(super) async fn queue_confirmation(
    connection: &mut SqliteConnection,
    subscriber_id: i64,
    now: DateTime<Utc>,
    ttl: chrono::Duration,
) -> StoreResult<i64> {
    let confirmation_id: i64 = sqlx::query_scalar(
        "INSERT INTO confirmations (subscriber_id, created_at, expires_at) VALUES (?, ?, ?) RETURNING id",
    )
    .bind(subscriber_id)
    .bind(millis(now))
    .bind(millis(now + ttl))
    .fetch_one(&mut *connection)
    .await?;
    sqlx::query(
        "INSERT INTO deliveries (kind, priority, subscriber_id, confirmation_id, message_id, status, \
         next_attempt_at, created_at) VALUES ('confirmation', 0, ?1, ?2, ?3, 'pending', ?4, ?4)",
    )
    .bind(subscriber_id)
    .bind(confirmation_id)
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(millis(now))
    .execute(&mut *connection)
    .await?;
    sqlx::query("UPDATE subscribers SET last_confirmation_sent_at = ? WHERE id = ?")
        .bind(millis(now))
        .bind(subscriber_id)
        .execute(&mut *connection)
        .await?;
    Ok(confirmation_id)
}

/// A confirmation with the subscriber it belongs to.
#[derive(sqlx::FromRow)]
struct ConfirmationRow {
    subscriber_id: i64,
    expires_at: Millis,
    used_at: Option<Millis>,
    email: String,
    status: String,
}

#[derive(sqlx::FromRow)]
struct EmailAndStatus {
    email: String,
    status: String,
}

#[async_trait]
impl SubscriberStore for SqliteStore {
    async fn signup_group(&self, requests: &[SignupRequest]) -> StoreResult<Vec<SignupOutcome>> {
        signup::signup_group(self, requests).await
    }

    async fn confirm(
        &self,
        confirmation_id: i64,
        consent: ConsentContext,
        now: DateTime<Utc>,
    ) -> StoreResult<ConfirmOutcome> {
        let mut writer = self.lock().await;
        let mut tx = begin(&mut writer).await?;
        let row: Option<ConfirmationRow> = sqlx::query_as(
            "SELECT c.subscriber_id, c.expires_at, c.used_at, s.email, s.status \
             FROM confirmations c JOIN subscribers s ON s.id = c.subscriber_id WHERE c.id = ?",
        )
        .bind(confirmation_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(ConfirmOutcome::Unknown);
        };
        let pending = PendingConfirmation {
            expires_at: row.expires_at.into(),
            used_at: row.used_at.map(Into::into),
        };
        let confirm_subscriber =
            match opt_in::confirm(&pending, rows::subscriber_status(&row.status)?, now) {
                ConfirmStep::Answer(outcome) => return Ok(outcome),
                ConfirmStep::Confirm { confirm_subscriber } => confirm_subscriber,
            };
        sqlx::query("UPDATE confirmations SET used_at = ? WHERE id = ?")
            .bind(millis(now))
            .bind(confirmation_id)
            .execute(&mut *tx)
            .await?;
        if confirm_subscriber {
            sqlx::query(
                "UPDATE subscribers SET status = 'confirmed', confirmed_at = ?, bounce_count = 0 \
                 WHERE id = ?",
            )
            .bind(millis(now))
            .bind(row.subscriber_id)
            .execute(&mut *tx)
            .await?;
            record_consent(
                &mut tx,
                row.subscriber_id,
                &row.email,
                ConsentKind::Confirm,
                &consent,
                None,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(ConfirmOutcome::Confirmed {
            subscriber_id: row.subscriber_id,
        })
    }

    async fn subscriber_exists(&self, subscriber_id: i64) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM subscribers WHERE id = ?")
            .bind(subscriber_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    async fn unsubscribe(
        &self,
        subscriber_id: i64,
        consent: ConsentContext,
        now: DateTime<Utc>,
    ) -> StoreResult<UnsubscribeOutcome> {
        let mut writer = self.lock().await;
        let mut tx = begin(&mut writer).await?;
        let row: Option<EmailAndStatus> =
            sqlx::query_as("SELECT email, status FROM subscribers WHERE id = ?")
                .bind(subscriber_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else {
            return Ok(UnsubscribeOutcome::Unknown);
        };
        let outcome = subscriber::unsubscribe(rows::subscriber_status(&row.status)?);
        if outcome != UnsubscribeOutcome::Unsubscribed {
            return Ok(outcome);
        }
        sqlx::query(
            "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = ? WHERE id = ?",
        )
        .bind(millis(now))
        .bind(subscriber_id)
        .execute(&mut *tx)
        .await?;
        // An older confirmation link must not undo this.
        sqlx::query(
            "UPDATE confirmations SET used_at = ? WHERE subscriber_id = ? AND used_at IS NULL",
        )
        .bind(millis(now))
        .bind(subscriber_id)
        .execute(&mut *tx)
        .await?;
        record_consent(
            &mut tx,
            subscriber_id,
            &row.email,
            ConsentKind::Unsubscribe,
            &consent,
            None,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn add_subscriber(&self, subscriber: OperatorSubscriber) -> StoreResult<AddOutcome> {
        let mut writer = self.lock().await;
        let mut tx = begin(&mut writer).await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM subscribers WHERE email = ?")
            .bind(subscriber.email.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Ok(AddOutcome::AlreadyExists);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO subscribers (email, name, status, created_at, confirmed_at, unsubscribed_at) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(subscriber.email.as_str())
        .bind(subscriber.name.as_ref().map(SubscriberName::as_str))
        .bind(subscriber.status.as_str())
        .bind(millis(subscriber.now))
        .bind(subscriber.confirmed_at().map(millis))
        .bind(subscriber.unsubscribed_at().map(millis))
        .fetch_one(&mut *tx)
        .await?;
        record_consent(
            &mut tx,
            id,
            subscriber.email.as_str(),
            ConsentKind::OperatorAdd,
            &ConsentContext::default(),
            Some(&subscriber.consent_detail()),
            subscriber.now,
        )
        .await?;
        let confirmation_queued = subscriber.needs_confirmation();
        if confirmation_queued {
            queue_confirmation(&mut tx, id, subscriber.now, subscriber.confirmation_ttl).await?;
        }
        tx.commit().await?;
        Ok(AddOutcome::Added {
            id,
            confirmation_queued,
        })
    }

    async fn list_subscribers(&self, query: SubscriberQuery) -> StoreResult<Vec<Subscriber>> {
        let rows: Vec<SubscriberRow<Millis>> = sqlx::query_as(&format!(
            "SELECT {SUBSCRIBER_COLUMNS} FROM subscribers \
             WHERE (?1 IS NULL OR status = ?1) AND id > ?2 ORDER BY id LIMIT ?3"
        ))
        .bind(query.status.map(|status| status.as_str()))
        .bind(query.after.unwrap_or(0))
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Subscriber::try_from).collect()
    }

    async fn subscriber_counts(&self) -> StoreResult<SubscriberCounts> {
        let sql = "SELECT status, COUNT(*) AS count FROM subscribers GROUP BY status";
        rows::subscriber_counts(count_by_status(&self.pool, sql, None).await?)
    }

    async fn consent_events(&self, subscriber_id: i64) -> StoreResult<Vec<ConsentEvent>> {
        let rows: Vec<ConsentEventRow<Millis>> = sqlx::query_as(&format!(
            "SELECT {CONSENT_EVENT_COLUMNS} FROM consent_events WHERE subscriber_id = ? ORDER BY id"
        ))
        .bind(subscriber_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(ConsentEvent::try_from).collect()
    }

    async fn bulk_insert_confirmed(
        &self,
        count: u64,
        prefix: &str,
        domain: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mut writer = self.lock().await;
        let mut tx = begin(&mut writer).await?;
        let result = sqlx::query(
            "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < ?1) \
             INSERT INTO subscribers (email, status, created_at, confirmed_at) \
             SELECT ?2 || n || '@' || ?3, 'confirmed', ?4, ?4 FROM seq WHERE true \
             ON CONFLICT DO NOTHING",
        )
        .bind(count as i64)
        .bind(prefix)
        .bind(domain)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(result.rows_affected())
    }
}
