//! Subscribers on PostgreSQL: confirmation, unsubscribes, records the
//! operator adds, the list and the consent log. Signups are in `signup`.
//! Rows read and then written are locked, subscriber before confirmation.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{count_by_status, signup, PostgresStore, Tx};
use crate::domain::consent::{ConsentContext, ConsentEvent, ConsentKind};
use crate::domain::signup::{
    self as opt_in, ConfirmOutcome, ConfirmStep, PendingConfirmation, SignupOutcome, SignupRequest,
};
use crate::domain::subscriber::{
    self, AddOutcome, OperatorSubscriber, Subscriber, SubscriberCounts, SubscriberName,
    SubscriberQuery, UnsubscribeOutcome,
};
use crate::store::rows::{
    self, ConsentEventRow, SubscriberRow, CONSENT_EVENT_COLUMNS, SUBSCRIBER_COLUMNS,
};
use crate::store::{StoreResult, SubscriberStore};

type Time = DateTime<Utc>;

pub(super) async fn record_consent(
    tx: &mut Tx,
    subscriber_id: i64,
    email: &str,
    kind: ConsentKind,
    consent: &ConsentContext,
    detail: Option<&str>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO consent_events (subscriber_id, email, kind, occurred_at, ip, user_agent, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(subscriber_id)
    .bind(email)
    .bind(kind.as_str())
    .bind(now)
    .bind(consent.ip.as_deref())
    .bind(consent.user_agent.as_deref())
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A confirmation request and its email, in the caller's transaction.
pub(super) async fn queue_confirmation(
    tx: &mut Tx,
    subscriber_id: i64,
    now: DateTime<Utc>,
    ttl: chrono::Duration,
) -> StoreResult<i64> {
    let confirmation_id: i64 = sqlx::query_scalar(
        "INSERT INTO confirmations (subscriber_id, created_at, expires_at) VALUES ($1, $2, $3) \
         RETURNING id",
    )
    .bind(subscriber_id)
    .bind(now)
    .bind(now + ttl)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO deliveries (kind, priority, subscriber_id, confirmation_id, message_id, status, \
         next_attempt_at, created_at) VALUES ('confirmation', 0, $1, $2, $3, 'pending', $4, $4)",
    )
    .bind(subscriber_id)
    .bind(confirmation_id)
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE subscribers SET last_confirmation_sent_at = $1 WHERE id = $2")
        .bind(now)
        .bind(subscriber_id)
        .execute(&mut **tx)
        .await?;
    Ok(confirmation_id)
}

#[derive(sqlx::FromRow)]
struct ConfirmationRow {
    expires_at: Time,
    used_at: Option<Time>,
}

#[derive(sqlx::FromRow)]
struct EmailAndStatus {
    email: String,
    status: String,
}

async fn lock_subscriber(tx: &mut Tx, subscriber_id: i64) -> StoreResult<Option<EmailAndStatus>> {
    Ok(
        sqlx::query_as("SELECT email, status FROM subscribers WHERE id = $1 FOR UPDATE")
            .bind(subscriber_id)
            .fetch_optional(&mut **tx)
            .await?,
    )
}

#[async_trait]
impl SubscriberStore for PostgresStore {
    async fn signup_group(&self, requests: &[SignupRequest]) -> StoreResult<Vec<SignupOutcome>> {
        signup::signup_group(self, requests).await
    }

    async fn confirm(
        &self,
        confirmation_id: i64,
        consent: ConsentContext,
        now: DateTime<Utc>,
    ) -> StoreResult<ConfirmOutcome> {
        let mut tx = self.write().await?;
        // A confirmation never changes subscriber, so this unlocked read is
        // safe; the locks below go subscriber first, as unsubscribe does.
        let owner: Option<i64> =
            sqlx::query_scalar("SELECT subscriber_id FROM confirmations WHERE id = $1")
                .bind(confirmation_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(subscriber_id) = owner else {
            return Ok(ConfirmOutcome::Unknown);
        };
        let Some(subscriber) = lock_subscriber(&mut tx, subscriber_id).await? else {
            return Ok(ConfirmOutcome::Unknown);
        };
        let confirmation: Option<ConfirmationRow> = sqlx::query_as(
            "SELECT expires_at, used_at FROM confirmations WHERE id = $1 FOR UPDATE",
        )
        .bind(confirmation_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(confirmation) = confirmation else {
            return Ok(ConfirmOutcome::Unknown);
        };
        let pending = PendingConfirmation {
            expires_at: confirmation.expires_at,
            used_at: confirmation.used_at,
        };
        let status = rows::subscriber_status(&subscriber.status)?;
        let confirm_subscriber = match opt_in::confirm(&pending, status, now) {
            ConfirmStep::Answer(outcome) => return Ok(outcome),
            ConfirmStep::Confirm { confirm_subscriber } => confirm_subscriber,
        };
        sqlx::query("UPDATE confirmations SET used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(confirmation_id)
            .execute(&mut *tx)
            .await?;
        if confirm_subscriber {
            sqlx::query(
                "UPDATE subscribers SET status = 'confirmed', confirmed_at = $1, bounce_count = 0 \
                 WHERE id = $2",
            )
            .bind(now)
            .bind(subscriber_id)
            .execute(&mut *tx)
            .await?;
            record_consent(
                &mut tx,
                subscriber_id,
                &subscriber.email,
                ConsentKind::Confirm,
                &consent,
                None,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(ConfirmOutcome::Confirmed { subscriber_id })
    }

    async fn subscriber_exists(&self, subscriber_id: i64) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM subscribers WHERE id = $1")
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
        let mut tx = self.write().await?;
        let Some(row) = lock_subscriber(&mut tx, subscriber_id).await? else {
            return Ok(UnsubscribeOutcome::Unknown);
        };
        let outcome = subscriber::unsubscribe(rows::subscriber_status(&row.status)?);
        if outcome != UnsubscribeOutcome::Unsubscribed {
            return Ok(outcome);
        }
        sqlx::query(
            "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = $1 WHERE id = $2",
        )
        .bind(now)
        .bind(subscriber_id)
        .execute(&mut *tx)
        .await?;
        // An older confirmation link must not undo this.
        sqlx::query(
            "UPDATE confirmations SET used_at = $1 WHERE subscriber_id = $2 AND used_at IS NULL",
        )
        .bind(now)
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
        let mut tx = self.write().await?;
        // The unique email decides, also against a concurrent insert.
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO subscribers (email, name, status, created_at, confirmed_at, unsubscribed_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (email) DO NOTHING RETURNING id",
        )
        .bind(subscriber.email.as_str())
        .bind(subscriber.name.as_ref().map(SubscriberName::as_str))
        .bind(subscriber.status.as_str())
        .bind(subscriber.now)
        .bind(subscriber.confirmed_at())
        .bind(subscriber.unsubscribed_at())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = inserted else {
            return Ok(AddOutcome::AlreadyExists);
        };
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
        let rows: Vec<SubscriberRow<Time>> = sqlx::query_as(&format!(
            "SELECT {SUBSCRIBER_COLUMNS} FROM subscribers \
             WHERE ($1::text IS NULL OR status = $1::text) AND id > $2 ORDER BY id LIMIT $3"
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
        let rows: Vec<ConsentEventRow<Time>> = sqlx::query_as(&format!(
            "SELECT {CONSENT_EVENT_COLUMNS} FROM consent_events WHERE subscriber_id = $1 ORDER BY id"
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
        let result = sqlx::query(
            "INSERT INTO subscribers (email, status, created_at, confirmed_at) \
             SELECT $2::text || n || '@' || $3::text, 'confirmed', $4, $4 \
             FROM generate_series(1, $1::bigint) AS n ORDER BY n \
             ON CONFLICT DO NOTHING",
        )
        .bind(i64::try_from(count).unwrap_or(i64::MAX))
        .bind(prefix)
        .bind(domain)
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.vacuum_analyze("subscribers").await?;
        Ok(result.rows_affected())
    }
}
