//! Signups, many to a transaction (see `crate::signups`), in two round
//! trips to SQLite's thread: one statement list begins the transaction and
//! inserts the new addresses, the other records their consent, queues
//! their confirmations and emails, and commits. Through sqlx's
//! `Transaction` it took six, and each cost about 250 µs under load while
//! every other signup waited for the group to commit. An address already
//! on the list takes the one-at-a-time path in between, which decides
//! whether it gets another confirmation email.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::SqliteConnection;

use super::{millis, to_json, SqliteStore};
use crate::domain::signup::{first_of_each_new_address, SignupOutcome, SignupRequest};
use crate::domain::subscriber::SubscriberName;
use crate::store::rows::Millis;
use crate::store::sql::SubscriberWrites;
use crate::store::StoreResult;

#[derive(Serialize)]
struct NewSubscriber<'a> {
    email: &'a str,
    name: Option<&'a str>,
    at: Millis,
}

#[derive(Serialize)]
struct FirstConfirmation<'a> {
    subscriber_id: i64,
    email: &'a str,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    at: Millis,
    expires_at: Millis,
    message_id: String,
}

pub(super) async fn signup_group(
    store: &SqliteStore,
    requests: &[SignupRequest],
) -> StoreResult<Vec<SignupOutcome>> {
    let mut writer = store.lock().await;
    writer.begin_by_hand();
    let result = write_group(&mut writer, requests).await;
    writer.finish_by_hand(result).await
}

async fn write_group(
    writer: &mut SqliteConnection,
    requests: &[SignupRequest],
) -> StoreResult<Vec<SignupOutcome>> {
    let new_ids = begin_and_insert_new_subscribers(writer, requests).await?;
    let fresh = first_of_each_new_address(requests, new_ids);
    let mut outcomes = Vec::with_capacity(requests.len());
    for (request, fresh) in requests.iter().zip(&fresh) {
        outcomes.push(match fresh {
            Some(subscriber_id) => SignupOutcome::ConfirmationQueued {
                subscriber_id: *subscriber_id,
            },
            None => SubscriberWrites::<sqlx::Sqlite>::signup_existing(writer, request).await?,
        });
    }
    queue_first_confirmations_and_commit(writer, requests, &fresh).await?;
    Ok(outcomes)
}

/// Begins the transaction and inserts the addresses not on the list yet;
/// returns their ids by email.
async fn begin_and_insert_new_subscribers(
    writer: &mut SqliteConnection,
    requests: &[SignupRequest],
) -> StoreResult<HashMap<String, i64>> {
    let rows: Vec<NewSubscriber> = requests
        .iter()
        .map(|request| NewSubscriber {
            email: request.email.as_str(),
            name: request.name.as_ref().map(SubscriberName::as_str),
            at: millis(request.now),
        })
        .collect();
    // `WHERE true` tells SQLite's parser the ON CONFLICT is an upsert.
    let inserted: Vec<NewAddress> = sqlx::query_as(
        "BEGIN IMMEDIATE; \
         INSERT INTO subscribers (email, name, status, created_at, last_confirmation_sent_at) \
         SELECT value ->> 'email', value ->> 'name', 'pending', value ->> 'at', value ->> 'at' \
         FROM json_each(?1) WHERE true \
         ON CONFLICT (email) DO NOTHING RETURNING id, email",
    )
    .bind(to_json(&rows))
    .fetch_all(&mut *writer)
    .await?;
    Ok(inserted
        .into_iter()
        .map(|row| (row.email, row.id))
        .collect())
}

/// The signup consent event, the confirmation and its email for every new
/// subscriber in the group, then the commit. A new subscriber has exactly
/// one confirmation, the one made here, so its email finds it by subscriber.
async fn queue_first_confirmations_and_commit(
    writer: &mut SqliteConnection,
    requests: &[SignupRequest],
    fresh: &[Option<i64>],
) -> StoreResult<()> {
    let first: Vec<FirstConfirmation> = requests
        .iter()
        .zip(fresh)
        .filter_map(|(request, id)| {
            id.map(|subscriber_id| FirstConfirmation {
                subscriber_id,
                email: request.email.as_str(),
                ip: request.consent.ip.as_deref(),
                user_agent: request.consent.user_agent.as_deref(),
                at: millis(request.now),
                expires_at: millis(request.now + request.confirmation_ttl),
                message_id: uuid::Uuid::new_v4().to_string(),
            })
        })
        .collect();
    if first.is_empty() {
        sqlx::query("COMMIT").execute(&mut *writer).await?;
        return Ok(());
    }
    // CROSS JOIN keeps the group's rows as the outer loop, so each finds
    // its confirmation through the index.
    sqlx::query(
        "INSERT INTO consent_events (subscriber_id, email, kind, occurred_at, ip, user_agent) \
         SELECT value ->> 'subscriber_id', value ->> 'email', 'signup', value ->> 'at', \
             value ->> 'ip', value ->> 'user_agent' \
         FROM json_each(?1); \
         INSERT INTO confirmations (subscriber_id, created_at, expires_at) \
         SELECT value ->> 'subscriber_id', value ->> 'at', value ->> 'expires_at' FROM json_each(?1); \
         INSERT INTO deliveries (kind, priority, subscriber_id, confirmation_id, message_id, status, \
             next_attempt_at, created_at) \
         SELECT 'confirmation', 0, c.subscriber_id, c.id, row.value ->> 'message_id', 'pending', \
             row.value ->> 'at', row.value ->> 'at' \
         FROM json_each(?1) AS row CROSS JOIN confirmations AS c \
             ON c.subscriber_id = row.value ->> 'subscriber_id'; \
         COMMIT",
    )
    .bind(to_json(&first))
    .execute(&mut *writer)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct NewAddress {
    id: i64,
    email: String,
}
