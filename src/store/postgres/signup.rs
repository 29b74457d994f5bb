//! Signups, many to a transaction (see `crate::signups`): new addresses
//! take four statements for the whole group, each over arrays. An address
//! already on the list takes the one-at-a-time path, which decides whether
//! it gets another confirmation email.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{lock_subscriber_by_email, queue_confirmation, record_consent, PostgresStore, Tx};
use crate::store::{
    first_of_each_new_address, SignupOutcome, SignupRequest, StoreError, StoreResult,
};
use crate::subscribers::SubscriberName;

pub(super) async fn signup_group(
    store: &PostgresStore,
    requests: &[SignupRequest],
) -> StoreResult<Vec<SignupOutcome>> {
    let mut tx = store.write().await?;
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
/// A concurrent signup for the same new address waits on the unique index
/// and then counts as existing.
async fn insert_new_subscribers(
    tx: &mut Tx,
    requests: &[SignupRequest],
) -> StoreResult<HashMap<String, i64>> {
    let emails: Vec<&str> = requests.iter().map(|r| r.email.as_str()).collect();
    let names: Vec<Option<&str>> = requests
        .iter()
        .map(|r| r.name.as_ref().map(SubscriberName::as_str))
        .collect();
    let times: Vec<DateTime<Utc>> = requests.iter().map(|r| r.now).collect();
    let inserted: Vec<(i64, String)> = sqlx::query_as(
        "INSERT INTO subscribers (email, name, status, created_at, last_confirmation_sent_at) \
         SELECT email, name, 'pending', at, at \
         FROM UNNEST($1::text[], $2::text[], $3::timestamptz[]) WITH ORDINALITY AS u(email, name, at, n) \
         ORDER BY n \
         ON CONFLICT (email) DO NOTHING RETURNING id, email",
    )
    .bind(&emails)
    .bind(&names)
    .bind(&times)
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
    let mut subscriber_ids = Vec::new();
    let mut emails = Vec::new();
    let mut ips = Vec::new();
    let mut user_agents = Vec::new();
    let mut times = Vec::new();
    let mut expiries = Vec::new();
    for (request, id) in requests.iter().zip(fresh) {
        let Some(id) = id else { continue };
        subscriber_ids.push(*id);
        emails.push(request.email.as_str());
        ips.push(request.consent.ip.as_deref());
        user_agents.push(request.consent.user_agent.as_deref());
        times.push(request.now);
        expiries.push(request.now + request.confirmation_ttl);
    }
    if subscriber_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO consent_events (subscriber_id, email, kind, occurred_at, ip, user_agent) \
         SELECT subscriber_id, email, 'signup', at, ip, user_agent \
         FROM UNNEST($1::bigint[], $2::text[], $3::timestamptz[], $4::text[], $5::text[]) \
             WITH ORDINALITY AS u(subscriber_id, email, at, ip, user_agent, n) \
         ORDER BY n",
    )
    .bind(&subscriber_ids)
    .bind(&emails)
    .bind(&times)
    .bind(&ips)
    .bind(&user_agents)
    .execute(&mut **tx)
    .await?;
    let confirmations: HashMap<i64, i64> = sqlx::query_as(
        "INSERT INTO confirmations (subscriber_id, created_at, expires_at) \
         SELECT subscriber_id, at, expires_at \
         FROM UNNEST($1::bigint[], $2::timestamptz[], $3::timestamptz[]) \
             WITH ORDINALITY AS u(subscriber_id, at, expires_at, n) \
         ORDER BY n \
         RETURNING subscriber_id, id",
    )
    .bind(&subscriber_ids)
    .bind(&times)
    .bind(&expiries)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();
    let confirmation_ids = subscriber_ids
        .iter()
        .map(|id| {
            confirmations
                .get(id)
                .copied()
                .ok_or_else(|| StoreError::Corrupt("a new confirmation has no id".into()))
        })
        .collect::<StoreResult<Vec<i64>>>()?;
    sqlx::query(
        "INSERT INTO deliveries (kind, priority, subscriber_id, confirmation_id, message_id, status, \
             next_attempt_at, created_at) \
         SELECT 'confirmation', 0, subscriber_id, confirmation_id, gen_random_uuid()::text, \
             'pending', at, at \
         FROM UNNEST($1::bigint[], $2::bigint[], $3::timestamptz[]) \
             WITH ORDINALITY AS u(subscriber_id, confirmation_id, at, n) \
         ORDER BY n",
    )
    .bind(&subscriber_ids)
    .bind(&confirmation_ids)
    .bind(&times)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A signup for an address already on the list, in the group's transaction.
async fn signup_existing(tx: &mut Tx, request: &SignupRequest) -> StoreResult<SignupOutcome> {
    let email = request.email.as_str();
    let existing = lock_subscriber_by_email(tx, email).await?;
    let subscriber_id = match existing {
        None => {
            return Err(StoreError::Corrupt(format!(
                "subscriber `{email}` conflicted on insert but cannot be read"
            )))
        }
        Some((_, status, _)) if status == "confirmed" => {
            return Ok(SignupOutcome::AlreadyConfirmed)
        }
        Some((_, _, Some(last_sent))) if last_sent > request.now - request.resend_window => {
            return Ok(SignupOutcome::RecentlySent)
        }
        Some((id, _, _)) => {
            // Status changes only on confirmation: a stranger must not be
            // able to undo an unsubscribe or a bounce by signing up.
            sqlx::query(
                "UPDATE subscribers SET name = COALESCE($1, name) \
                 WHERE id = $2 AND status = 'pending'",
            )
            .bind(request.name.as_ref().map(SubscriberName::as_str))
            .bind(id)
            .execute(&mut **tx)
            .await?;
            id
        }
    };
    record_consent(
        tx,
        subscriber_id,
        email,
        "signup",
        &request.consent,
        None,
        request.now,
    )
    .await?;
    queue_confirmation(tx, subscriber_id, request.now, request.confirmation_ttl).await?;
    Ok(SignupOutcome::ConfirmationQueued { subscriber_id })
}
