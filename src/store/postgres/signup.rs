//! Signups, many to a statement (see `crate::signups`): new addresses take
//! one statement for the whole group, over arrays. An address already on
//! the list then takes the one-at-a-time path, in a transaction of its own,
//! which decides whether it gets another confirmation email.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::PostgresStore;
use crate::domain::signup::{first_of_each_new_address, SignupOutcome, SignupRequest};
use crate::domain::subscriber::SubscriberName;
use crate::store::sql::SqlBackend;
use crate::store::sql::SubscriberWrites;
use crate::store::{StoreError, StoreResult};

pub(super) async fn signup_group(
    store: &PostgresStore,
    requests: &[SignupRequest],
) -> StoreResult<Vec<SignupOutcome>> {
    let new_ids = sign_up_new_addresses(store, requests).await?;
    let wrote_some = !new_ids.is_empty();
    let fresh = first_of_each_new_address(requests, new_ids);
    if fresh.iter().all(Option::is_some) {
        return Ok(fresh
            .into_iter()
            .flatten()
            .map(|subscriber_id| SignupOutcome::ConfirmationQueued { subscriber_id })
            .collect());
    }
    // The new addresses are committed by now: a failure from here on must
    // not be read as "nothing was written".
    sign_up_existing_addresses(store, requests, fresh)
        .await
        .map_err(|error| match wrote_some {
            true => StoreError::PartlyWritten(Box::new(error)),
            false => error,
        })
}

async fn sign_up_existing_addresses(
    store: &PostgresStore,
    requests: &[SignupRequest],
    fresh: Vec<Option<i64>>,
) -> StoreResult<Vec<SignupOutcome>> {
    let mut tx = store.write().await?;
    let mut outcomes = Vec::with_capacity(requests.len());
    for (request, fresh) in requests.iter().zip(fresh) {
        outcomes.push(match fresh {
            Some(subscriber_id) => SignupOutcome::ConfirmationQueued { subscriber_id },
            None => SubscriberWrites::<sqlx::Postgres>::signup_existing(&mut tx, request).await?,
        });
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Inserts the addresses not on the list yet, each with its signup consent
/// event, its confirmation and the confirmation's email, in one statement
/// (its own transaction): one round trip to the server for the group,
/// where a transaction of four statements took six. Returns the new ids
/// by email. A concurrent signup for the same new address waits on the
/// unique index and then counts as existing.
async fn sign_up_new_addresses(
    store: &PostgresStore,
    requests: &[SignupRequest],
) -> StoreResult<HashMap<String, i64>> {
    let emails: Vec<&str> = requests.iter().map(|r| r.email.as_str()).collect();
    let names: Vec<Option<&str>> = requests
        .iter()
        .map(|r| r.name.as_ref().map(SubscriberName::as_str))
        .collect();
    let times: Vec<DateTime<Utc>> = requests.iter().map(|r| r.now).collect();
    let expiries: Vec<DateTime<Utc>> = requests
        .iter()
        .map(|r| r.now + r.confirmation_ttl)
        .collect();
    let ips: Vec<Option<&str>> = requests.iter().map(|r| r.consent.ip.as_deref()).collect();
    let user_agents: Vec<Option<&str>> = requests
        .iter()
        .map(|r| r.consent.user_agent.as_deref())
        .collect();
    // `first` is each address's first request in the group, the one whose
    // row the insert keeps; `ORDER BY n` gives ids in request order.
    let inserted: Vec<NewAddress> = sqlx::query_as(
        "WITH input AS ( \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], \
                 $4::timestamptz[], $5::text[], $6::text[]) \
                 WITH ORDINALITY AS u(email, name, at, expires_at, ip, user_agent, n) \
         ), first AS ( \
             SELECT DISTINCT ON (email) * FROM input ORDER BY email, n \
         ), new AS ( \
             INSERT INTO subscribers (email, name, status, created_at, last_confirmation_sent_at) \
             SELECT email, name, 'pending', at, at FROM input ORDER BY n \
             ON CONFLICT (email) DO NOTHING RETURNING id, email \
         ), new_first AS ( \
             SELECT new.id, first.* FROM new JOIN first USING (email) \
         ), consent AS ( \
             INSERT INTO consent_events (subscriber_id, email, kind, occurred_at, ip, user_agent) \
             SELECT id, email, 'signup', at, ip, user_agent FROM new_first ORDER BY n \
         ), confirmation AS ( \
             INSERT INTO confirmations (subscriber_id, created_at, expires_at) \
             SELECT id, at, expires_at FROM new_first ORDER BY n \
             RETURNING id, subscriber_id, created_at \
         ), email AS ( \
             INSERT INTO deliveries (kind, priority, subscriber_id, confirmation_id, message_id, \
                 status, next_attempt_at, created_at) \
             SELECT 'confirmation', 0, subscriber_id, id, gen_random_uuid()::text, 'pending', \
                 created_at, created_at \
             FROM confirmation ORDER BY id \
         ) \
         SELECT id, email FROM new",
    )
    .bind(&emails)
    .bind(&names)
    .bind(&times)
    .bind(&expiries)
    .bind(&ips)
    .bind(&user_agents)
    .fetch_all(store.pool())
    .await?;
    Ok(inserted
        .into_iter()
        .map(|row| (row.email, row.id))
        .collect())
}

#[derive(sqlx::FromRow)]
struct NewAddress {
    id: i64,
    email: String,
}
