//! Signups, many to a transaction (see `crate::signups`): new addresses
//! take four statements for the whole group, each over a JSON array.
//! An address already on the list takes the one-at-a-time path, which
//! decides whether it gets another confirmation email.

use std::collections::HashMap;

use serde::Serialize;

use super::{millis, queue_confirmation, record_consent, to_json, SqliteStore, Tx};
use crate::store::{
    first_of_each_new_address, SignupOutcome, SignupRequest, StoreError, StoreResult,
};
use crate::subscribers::SubscriberName;

#[derive(Serialize)]
struct NewSubscriber<'a> {
    email: &'a str,
    name: Option<&'a str>,
    at: i64,
}

#[derive(Serialize)]
struct FirstConfirmation<'a> {
    subscriber_id: i64,
    email: &'a str,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    at: i64,
    expires_at: i64,
}

#[derive(Serialize)]
struct ConfirmationEmail {
    subscriber_id: i64,
    confirmation_id: i64,
    message_id: String,
    at: i64,
}

pub(super) async fn signup_group(
    store: &SqliteStore,
    requests: &[SignupRequest],
) -> StoreResult<Vec<SignupOutcome>> {
    let (_lock, mut tx) = store.write().await?;
    let new_ids = insert_new_subscribers(&mut tx, requests).await?;
    let fresh = first_of_each_new_address(requests, new_ids);
    queue_first_confirmations(&mut tx, requests, &fresh).await?;
    let mut outcomes = Vec::with_capacity(requests.len());
    for (request, fresh) in requests.iter().zip(fresh) {
        outcomes.push(match fresh {
            Some(subscriber_id) => SignupOutcome::ConfirmationQueued { subscriber_id },
            None => signup_existing(&mut tx, request).await?,
        });
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Inserts the addresses not on the list yet; returns their ids by email.
async fn insert_new_subscribers(
    tx: &mut Tx,
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
    let inserted: Vec<(i64, String)> = sqlx::query_as(
        "INSERT INTO subscribers (email, name, status, created_at, last_confirmation_sent_at) \
         SELECT value ->> 'email', value ->> 'name', 'pending', value ->> 'at', value ->> 'at' \
         FROM json_each(?) WHERE true \
         ON CONFLICT (email) DO NOTHING RETURNING id, email",
    )
    .bind(to_json(&rows))
    .fetch_all(&mut **tx)
    .await?;
    Ok(inserted
        .into_iter()
        .map(|(id, email)| (email, id))
        .collect())
}

/// The signup consent event, the confirmation and its email for every new
/// subscriber in the group.
async fn queue_first_confirmations(
    tx: &mut Tx,
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
            })
        })
        .collect();
    if first.is_empty() {
        return Ok(());
    }
    let rows = to_json(&first);
    sqlx::query(
        "INSERT INTO consent_events (subscriber_id, email, kind, occurred_at, ip, user_agent) \
         SELECT value ->> 'subscriber_id', value ->> 'email', 'signup', value ->> 'at', \
             value ->> 'ip', value ->> 'user_agent' \
         FROM json_each(?)",
    )
    .bind(&rows)
    .execute(&mut **tx)
    .await?;
    let confirmation_ids: HashMap<i64, i64> = sqlx::query_as(
        "INSERT INTO confirmations (subscriber_id, created_at, expires_at) \
         SELECT value ->> 'subscriber_id', value ->> 'at', value ->> 'expires_at' FROM json_each(?) \
         RETURNING subscriber_id, id",
    )
    .bind(&rows)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();
    let emails: Vec<ConfirmationEmail> = first
        .iter()
        .map(|row| {
            let confirmation_id = confirmation_ids.get(&row.subscriber_id).copied();
            confirmation_id
                .map(|confirmation_id| ConfirmationEmail {
                    subscriber_id: row.subscriber_id,
                    confirmation_id,
                    message_id: uuid::Uuid::new_v4().to_string(),
                    at: row.at,
                })
                .ok_or_else(|| StoreError::Corrupt("a new confirmation has no id".into()))
        })
        .collect::<StoreResult<_>>()?;
    sqlx::query(
        "INSERT INTO deliveries (kind, priority, subscriber_id, confirmation_id, message_id, status, \
             next_attempt_at, created_at) \
         SELECT 'confirmation', 0, value ->> 'subscriber_id', value ->> 'confirmation_id', \
             value ->> 'message_id', 'pending', value ->> 'at', value ->> 'at' \
         FROM json_each(?)",
    )
    .bind(to_json(&emails))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A signup for an address already on the list, in the group's transaction.
async fn signup_existing(tx: &mut Tx, request: &SignupRequest) -> StoreResult<SignupOutcome> {
    let existing: Option<(i64, String, Option<i64>)> = sqlx::query_as(
        "SELECT id, status, last_confirmation_sent_at FROM subscribers WHERE email = ?",
    )
    .bind(request.email.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    let name = request.name.as_ref().map(SubscriberName::as_str);
    let subscriber_id = match existing {
        None => {
            return Err(StoreError::Corrupt(format!(
                "subscriber `{}` conflicted on insert but cannot be read",
                request.email.as_str()
            )))
        }
        Some((_, status, _)) if status == "confirmed" => {
            return Ok(SignupOutcome::AlreadyConfirmed)
        }
        Some((_, _, Some(last_sent)))
            if last_sent > millis(request.now - request.resend_window) =>
        {
            return Ok(SignupOutcome::RecentlySent)
        }
        Some((id, _, _)) => {
            // Status changes only on confirmation: a stranger must not be
            // able to undo an unsubscribe or a bounce by signing up.
            sqlx::query(
                "UPDATE subscribers SET name = COALESCE(?, name) WHERE id = ? AND status = 'pending'",
            )
            .bind(name)
            .bind(id)
            .execute(&mut **tx)
            .await?;
            id
        }
    };
    record_consent(
        tx,
        subscriber_id,
        request.email.as_str(),
        "signup",
        &request.consent,
        None,
        request.now,
    )
    .await?;
    queue_confirmation(tx, subscriber_id, request.now, request.confirmation_ttl).await?;
    Ok(SignupOutcome::ConfirmationQueued { subscriber_id })
}
