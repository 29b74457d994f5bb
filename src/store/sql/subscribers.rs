//! Subscribers, on either backend: confirmation, unsubscribes, records the
//! operator adds, the list and the consent log, each by the domain's rule.
//! Signups go through the backends (`SubscriberSql`), which share the
//! consent log, confirmation emails and the rule for an existing address
//! from here. Locks go subscriber first, then confirmation.

use std::marker::PhantomData;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Type};

use super::{BulkSubscribers, Dialect, SqlBackend, SubscriberSql};
use crate::domain::consent::{ConsentContext, ConsentEvent, ConsentKind};
use crate::domain::signup::{
    self as opt_in, ConfirmLink, ConfirmOutcome, ConfirmStep, ExistingSignup, PendingConfirmation,
    SignupOutcome, SignupRequest, SignupStep,
};
use crate::domain::subscriber::{
    self, AddOutcome, OperatorSubscriber, Subscriber, SubscriberCounts, SubscriberName,
    SubscriberQuery, UnsubscribeOutcome,
};
use crate::store::rows::{
    self, ConsentEventRow, StatusCount, SubscriberRow, CONSENT_EVENT_COLUMNS, SUBSCRIBER_COLUMNS,
};
use crate::store::{StoreError, StoreResult, SubscriberStore};

/// The subscriber writes both backends share, each inside the caller's
/// transaction: the backends' signup and outcome code call them too.
pub(in crate::store) struct SubscriberWrites<DB>(PhantomData<DB>);

#[derive(sqlx::FromRow)]
pub(in crate::store) struct ExistingRow<T> {
    id: i64,
    status: String,
    last_confirmation_sent_at: Option<T>,
}

impl<DB: Dialect> SubscriberWrites<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> DB::Time: Encode<'q, DB> + Type<DB>,
    for<'q> Option<DB::Time>: Encode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> ExistingRow<DB::Time>: FromRow<'r, DB::Row>,
    for<'r> BounceRow: FromRow<'r, DB::Row>,
    for<'r> EmailAndStatus: FromRow<'r, DB::Row>,
{
    /// One record the operator adds, inside the caller's transaction.
    pub async fn add(
        connection: &mut DB::Connection,
        subscriber: &OperatorSubscriber,
    ) -> StoreResult<AddOutcome> {
        // The unique email decides, also against a concurrent insert.
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO subscribers (email, name, status, created_at, confirmed_at, unsubscribed_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (email) DO NOTHING RETURNING id",
        )
        .bind(subscriber.email.as_str())
        .bind(subscriber.name.as_ref().map(SubscriberName::as_str))
        .bind(subscriber.status.as_str())
        .bind(DB::Time::from(subscriber.now))
        .bind(subscriber.confirmed_at().map(DB::Time::from))
        .bind(subscriber.unsubscribed_at().map(DB::Time::from))
        .fetch_optional(&mut *connection)
        .await?;
        let Some(id) = inserted else {
            return Ok(AddOutcome::AlreadyExists);
        };
        Self::record_consent(
            connection,
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
            let ttl = subscriber.confirmation_ttl;
            Self::queue_confirmation(connection, id, subscriber.now, ttl).await?;
        }
        Ok(AddOutcome::Added {
            id,
            confirmation_queued,
        })
    }

    /// A subscriber about to be written, locked where the dialect locks
    /// rows: confirm and unsubscribe both start here.
    pub async fn lock_subscriber(
        connection: &mut DB::Connection,
        subscriber_id: i64,
    ) -> StoreResult<Option<EmailAndStatus>> {
        Ok(sqlx::query_as(&format!(
            "SELECT email, status FROM subscribers WHERE id = $1{}",
            DB::FOR_UPDATE
        ))
        .bind(subscriber_id)
        .fetch_optional(&mut *connection)
        .await?)
    }

    /// Uses up every confirmation link the subscriber has not used, so none
    /// can bring the record back.
    pub async fn void_confirmations(
        connection: &mut DB::Connection,
        subscriber_id: i64,
        at: DB::Time,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE confirmations SET used_at = $1 WHERE subscriber_id = $2 AND used_at IS NULL",
        )
        .bind(at)
        .bind(subscriber_id)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }

    /// Unsubscribes by the domain's rule, in the caller's transaction, with
    /// `detail` in the consent log; writes nothing unless the outcome is
    /// `Unsubscribed`.
    pub async fn unsubscribe(
        connection: &mut DB::Connection,
        subscriber_id: i64,
        consent: &ConsentContext,
        detail: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<UnsubscribeOutcome> {
        let Some(row) = Self::lock_subscriber(connection, subscriber_id).await? else {
            return Ok(UnsubscribeOutcome::Unknown);
        };
        let outcome = subscriber::unsubscribe(rows::subscriber_status(&row.status)?);
        if outcome != UnsubscribeOutcome::Unsubscribed {
            return Ok(outcome);
        }
        let now_stored = DB::Time::from(now);
        sqlx::query(
            "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = $1 WHERE id = $2",
        )
        .bind(now_stored)
        .bind(subscriber_id)
        .execute(&mut *connection)
        .await?;
        // An older confirmation link must not undo this.
        Self::void_confirmations(connection, subscriber_id, now_stored).await?;
        let (email, kind) = (row.email.as_str(), ConsentKind::Unsubscribe);
        Self::record_consent(connection, subscriber_id, email, kind, consent, detail, now).await?;
        Ok(outcome)
    }

    /// One entry of the consent log, in the caller's transaction.
    pub async fn record_consent(
        connection: &mut DB::Connection,
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
        .bind(DB::Time::from(now))
        .bind(consent.ip.as_deref())
        .bind(consent.user_agent.as_deref())
        .bind(detail)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }

    /// A confirmation request and its email, in the caller's transaction.
    pub async fn queue_confirmation(
        connection: &mut DB::Connection,
        subscriber_id: i64,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> StoreResult<i64> {
        let confirmation_id: i64 = sqlx::query_scalar(
            "INSERT INTO confirmations (subscriber_id, created_at, expires_at) VALUES ($1, $2, $3) \
             RETURNING id",
        )
        .bind(subscriber_id)
        .bind(DB::Time::from(now))
        .bind(DB::Time::from(now + ttl))
        .fetch_one(&mut *connection)
        .await?;
        sqlx::query(
            "INSERT INTO deliveries (kind, priority, subscriber_id, confirmation_id, message_id, \
             status, next_attempt_at, created_at) \
             VALUES ('confirmation', 0, $1, $2, $3, 'pending', $4, $4)",
        )
        .bind(subscriber_id)
        .bind(confirmation_id)
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(DB::Time::from(now))
        .execute(&mut *connection)
        .await?;
        sqlx::query("UPDATE subscribers SET last_confirmation_sent_at = $1 WHERE id = $2")
            .bind(DB::Time::from(now))
            .bind(subscriber_id)
            .execute(&mut *connection)
            .await?;
        Ok(confirmation_id)
    }

    /// A signup for an address already on the list, in the caller's
    /// transaction, by the domain's rule for it.
    pub async fn signup_existing(
        connection: &mut DB::Connection,
        request: &SignupRequest,
    ) -> StoreResult<SignupOutcome> {
        let email = request.email.as_str();
        let row: Option<ExistingRow<DB::Time>> = sqlx::query_as(&format!(
            "SELECT id, status, last_confirmation_sent_at FROM subscribers WHERE email = $1{}",
            DB::FOR_UPDATE
        ))
        .bind(email)
        .fetch_optional(&mut *connection)
        .await?;
        let row = row.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "subscriber `{email}` conflicted on insert but cannot be read"
            ))
        })?;
        let existing = ExistingSignup {
            id: row.id,
            status: rows::subscriber_status(&row.status)?,
            last_confirmation_sent_at: row.last_confirmation_sent_at.map(Into::into),
        };
        match opt_in::signup_existing(&existing, request) {
            SignupStep::Answer(outcome) => return Ok(outcome),
            SignupStep::SendConfirmation => {}
        }
        let (id, now) = (existing.id, request.now);
        let consent = &request.consent;
        Self::record_consent(
            connection,
            id,
            email,
            ConsentKind::Signup,
            consent,
            None,
            now,
        )
        .await?;
        Self::queue_confirmation(connection, id, now, request.confirmation_ttl).await?;
        Ok(SignupOutcome::ConfirmationQueued { subscriber_id: id })
    }

    /// Counts a 5xx against the subscriber, by the domain's bounce rule.
    pub async fn count_hard_bounce(
        connection: &mut DB::Connection,
        subscriber_id: i64,
        error: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let row: BounceRow = sqlx::query_as(&format!(
            "SELECT email, status, bounce_count FROM subscribers WHERE id = $1{}",
            DB::FOR_UPDATE
        ))
        .bind(subscriber_id)
        .fetch_one(&mut *connection)
        .await?;
        let status = rows::subscriber_status(&row.status)?;
        let after = subscriber::after_hard_bounce(status, row.bounce_count, error);
        sqlx::query("UPDATE subscribers SET bounce_count = $1, status = $2 WHERE id = $3")
            .bind(after.bounce_count)
            .bind(after.status.as_str())
            .bind(subscriber_id)
            .execute(&mut *connection)
            .await?;
        if let Some(detail) = after.consent_detail {
            let kind = ConsentKind::Bounced;
            let nobody = ConsentContext::default();
            Self::record_consent(
                connection,
                subscriber_id,
                &row.email,
                kind,
                &nobody,
                Some(&detail),
                now,
            )
            .await?;
        }
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
pub(in crate::store) struct BounceRow {
    email: String,
    status: String,
    bounce_count: i64,
}

#[derive(sqlx::FromRow)]
pub(in crate::store) struct EmailAndStatus {
    email: String,
    status: String,
}

#[derive(sqlx::FromRow)]
pub(in crate::store) struct ConfirmationRow<T> {
    expires_at: T,
    used_at: Option<T>,
}

/// A confirmation and the status of its subscriber, read together.
#[derive(sqlx::FromRow)]
pub(in crate::store) struct ConfirmationLinkRow<T> {
    subscriber_id: i64,
    expires_at: T,
    used_at: Option<T>,
    status: String,
}

#[async_trait]
impl<B: SubscriberSql> SubscriberStore for B
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'r> i64: Decode<'r, B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<&'q str>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> <B::Db as Dialect>::Time: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<<B::Db as Dialect>::Time>: Encode<'q, B::Db> + Type<B::Db>,
    usize: sqlx::ColumnIndex<<B::Db as Database>::Row>,
    for<'r> EmailAndStatus: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> StatusCount: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> ConfirmationRow<<B::Db as Dialect>::Time>: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> ConfirmationLinkRow<<B::Db as Dialect>::Time>: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> SubscriberRow<<B::Db as Dialect>::Time>: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> ConsentEventRow<<B::Db as Dialect>::Time>: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> ExistingRow<<B::Db as Dialect>::Time>: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> BounceRow: FromRow<'r, <B::Db as Database>::Row>,
{
    async fn signup_group(&self, requests: &[SignupRequest]) -> StoreResult<Vec<SignupOutcome>> {
        SubscriberSql::signup_group(self, requests).await
    }

    async fn confirm(
        &self,
        confirmation_id: i64,
        consent: ConsentContext,
        now: DateTime<Utc>,
    ) -> StoreResult<ConfirmOutcome> {
        type Time<B> = <<B as SqlBackend>::Db as Dialect>::Time;
        let for_update = <B::Db as Dialect>::FOR_UPDATE;
        let mut tx = self.write().await?;
        // A confirmation never changes subscriber, so this unlocked read is
        // safe; the locks below go subscriber first, as unsubscribe does.
        let owner: Option<i64> =
            sqlx::query_scalar("SELECT subscriber_id FROM confirmations WHERE id = $1")
                .bind(confirmation_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(subscriber_id) = owner else {
            B::roll_back(tx).await?;
            return Ok(ConfirmOutcome::Unknown);
        };
        let subscriber = SubscriberWrites::<B::Db>::lock_subscriber(&mut tx, subscriber_id).await?;
        let confirmation: Option<ConfirmationRow<Time<B>>> = sqlx::query_as(&format!(
            "SELECT expires_at, used_at FROM confirmations WHERE id = $1{for_update}"
        ))
        .bind(confirmation_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (Some(subscriber), Some(confirmation)) = (subscriber, confirmation) else {
            B::roll_back(tx).await?;
            return Ok(ConfirmOutcome::Unknown);
        };
        let pending = PendingConfirmation {
            subscriber_id,
            expires_at: confirmation.expires_at.into(),
            used_at: confirmation.used_at.map(Into::into),
        };
        let status = rows::subscriber_status(&subscriber.status)?;
        let confirm_subscriber = match opt_in::confirm(&pending, status, now) {
            ConfirmStep::Answer(outcome) => {
                B::roll_back(tx).await?;
                return Ok(outcome);
            }
            ConfirmStep::Confirm { confirm_subscriber } => confirm_subscriber,
        };
        sqlx::query("UPDATE confirmations SET used_at = $1 WHERE id = $2")
            .bind(Time::<B>::from(now))
            .bind(confirmation_id)
            .execute(&mut *tx)
            .await?;
        if confirm_subscriber {
            sqlx::query(
                "UPDATE subscribers SET status = 'confirmed', confirmed_at = $1, bounce_count = 0 \
                 WHERE id = $2",
            )
            .bind(Time::<B>::from(now))
            .bind(subscriber_id)
            .execute(&mut *tx)
            .await?;
            let (email, kind) = (subscriber.email.as_str(), ConsentKind::Confirm);
            SubscriberWrites::<B::Db>::record_consent(
                &mut tx,
                subscriber_id,
                email,
                kind,
                &consent,
                None,
                now,
            )
            .await?;
        }
        B::commit(tx).await?;
        Ok(ConfirmOutcome::Confirmed { subscriber_id })
    }

    async fn confirmation_link(
        &self,
        confirmation_id: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<ConfirmLink> {
        let row: Option<ConfirmationLinkRow<<B::Db as Dialect>::Time>> = sqlx::query_as(
            "SELECT c.subscriber_id, c.expires_at, c.used_at, s.status \
             FROM confirmations AS c JOIN subscribers AS s ON s.id = c.subscriber_id \
             WHERE c.id = $1",
        )
        .bind(confirmation_id)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(ConfirmLink::Closed(ConfirmOutcome::Unknown));
        };
        let confirmation = PendingConfirmation {
            subscriber_id: row.subscriber_id,
            expires_at: row.expires_at.into(),
            used_at: row.used_at.map(Into::into),
        };
        let status = rows::subscriber_status(&row.status)?;
        Ok(opt_in::open_link(&confirmation, status, now))
    }

    async fn subscriber_exists(&self, subscriber_id: i64) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM subscribers WHERE id = $1")
            .bind(subscriber_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(found.is_some())
    }

    async fn subscriber_email(&self, subscriber_id: i64) -> StoreResult<Option<String>> {
        let row: Option<EmailAndStatus> = sqlx::query_as(
            "SELECT email, status FROM subscribers WHERE id = $1 AND erased_at IS NULL",
        )
        .bind(subscriber_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|row| row.email))
    }

    async fn subscriber_by_email(
        &self,
        email: &str,
    ) -> StoreResult<Option<(i64, subscriber::SubscriberStatus)>> {
        let row: Option<ExistingRow<<B::Db as Dialect>::Time>> = sqlx::query_as(
            "SELECT id, status, last_confirmation_sent_at FROM subscribers WHERE email = $1",
        )
        .bind(email)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| Ok((row.id, rows::subscriber_status(&row.status)?)))
            .transpose()
    }

    async fn unsubscribe(
        &self,
        subscriber_id: i64,
        consent: ConsentContext,
        now: DateTime<Utc>,
    ) -> StoreResult<UnsubscribeOutcome> {
        let mut tx = self.write().await?;
        let outcome =
            SubscriberWrites::<B::Db>::unsubscribe(&mut tx, subscriber_id, &consent, None, now)
                .await?;
        if outcome == UnsubscribeOutcome::Unsubscribed {
            B::commit(tx).await?;
        } else {
            B::roll_back(tx).await?;
        }
        Ok(outcome)
    }

    async fn add_subscribers(
        &self,
        subscribers: &[OperatorSubscriber],
    ) -> StoreResult<Vec<AddOutcome>> {
        let mut tx = self.write().await?;
        let mut outcomes = Vec::with_capacity(subscribers.len());
        for subscriber in subscribers {
            outcomes.push(SubscriberWrites::<B::Db>::add(&mut tx, subscriber).await?);
        }
        B::commit(tx).await?;
        Ok(outcomes)
    }

    async fn list_subscribers(&self, query: SubscriberQuery) -> StoreResult<Vec<Subscriber>> {
        // Two statements, so each has its index: (status, id) for one
        // status, the primary key for all. Erased records are no one's.
        let by_status = format!(
            "SELECT {SUBSCRIBER_COLUMNS} FROM subscribers \
             WHERE status = $1 AND id > $2 AND erased_at IS NULL ORDER BY id LIMIT $3"
        );
        let everyone = format!(
            "SELECT {SUBSCRIBER_COLUMNS} FROM subscribers \
             WHERE id > $1 AND erased_at IS NULL ORDER BY id LIMIT $2"
        );
        let after = query.after.unwrap_or(0);
        let limit = i64::from(query.limit);
        let rows: Vec<SubscriberRow<<B::Db as Dialect>::Time>> = match query.status {
            Some(status) => {
                sqlx::query_as(&by_status)
                    .bind(status.as_str())
                    .bind(after)
                    .bind(limit)
                    .fetch_all(self.pool())
                    .await?
            }
            None => {
                sqlx::query_as(&everyone)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(self.pool())
                    .await?
            }
        };
        rows.into_iter().map(Subscriber::try_from).collect()
    }

    async fn subscriber_counts(&self) -> StoreResult<SubscriberCounts> {
        let counts: Vec<StatusCount> =
            sqlx::query_as("SELECT status, COUNT(*) AS count FROM subscribers GROUP BY status")
                .fetch_all(self.pool())
                .await?;
        rows::subscriber_counts(counts)
    }

    async fn consent_events(&self, subscriber_id: i64) -> StoreResult<Vec<ConsentEvent>> {
        let rows: Vec<ConsentEventRow<<B::Db as Dialect>::Time>> = sqlx::query_as(&format!(
            "SELECT {CONSENT_EVENT_COLUMNS} FROM consent_events WHERE subscriber_id = $1 ORDER BY id"
        ))
        .bind(subscriber_id)
        .fetch_all(self.pool())
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
        let bulk = BulkSubscribers {
            count,
            prefix,
            domain,
            now,
        };
        SubscriberSql::bulk_insert_confirmed(self, bulk).await
    }
}
