//! Instances and their heartbeats: the claims of an instance that stopped
//! beating come back at once, with no attempt charged; a live instance
//! keeps its claims; the lease stays the last resort.

use chrono::{DateTime, Duration, Utc};
use tidings::domain::delivery::{DeliveryCounts, DeliveryOutcome};
use tidings::domain::instance::{Rescue, RescuedClaims};

use crate::on_both_backends;
use crate::support::{
    broadcast, claim, connect, enqueue, sent, store, t0, Backend, TestStore, LEASE_SECONDS,
};

on_both_backends!(
    a_dead_instance_s_claims_come_back_at_once_without_an_attempt,
    a_live_instance_keeps_its_claims_until_its_heartbeat_is_ten_seconds_old,
    claims_of_an_owner_without_a_row_come_back_at_once,
    an_instance_never_takes_back_its_own_claims,
    an_expired_lease_is_still_taken_back_from_a_live_instance,
    taking_over_from_a_known_dead_owner_needs_no_wait,
    two_checks_at_once_take_each_claim_back_once,
    each_written_outcome_and_nothing_else_charges_an_attempt,
);

fn seconds(n: i64) -> Duration {
    Duration::seconds(n)
}

/// `count` confirmed readers and an issue to them.
async fn issue_to_readers(store: &TestStore, count: u64) {
    store
        .bulk_insert_confirmed(count, "reader", "example.com", t0())
        .await
        .unwrap();
    enqueue(store, "Tip").await;
    broadcast(store, "week-1", t0()).await;
}

async fn rescue(store: &TestStore, me: &str, now: DateTime<Utc>) -> Vec<RescuedClaims> {
    store.rescue_claims(&Rescue::at(me, now)).await.unwrap()
}

fn rescued(owner: &str, count: u64) -> Vec<RescuedClaims> {
    vec![RescuedClaims {
        owner: owner.to_owned(),
        count,
    }]
}

async fn a_dead_instance_s_claims_come_back_at_once_without_an_attempt(backend: Backend) {
    let store = store(backend).await;
    issue_to_readers(&store, 3).await;
    store.heartbeat("killed", t0()).await.unwrap();
    let lost = claim(&store, "killed", t0(), 10).await;
    assert_eq!(lost.len(), 3);

    // Eleven seconds without a beat, long before the 30 s lease is out.
    let now = t0() + seconds(11);
    store.heartbeat("survivor", now).await.unwrap();
    assert_eq!(rescue(&store, "survivor", now).await, rescued("killed", 3));
    assert_eq!(
        store.delivery_counts().await.unwrap(),
        DeliveryCounts {
            pending: 3,
            ..Default::default()
        }
    );
    assert!(rescue(&store, "survivor", now).await.is_empty());
    let again = claim(&store, "survivor", now, 10).await;
    assert_eq!(again.len(), 3);
    assert!(
        again.iter().all(|delivery| delivery.attempts == 1),
        "still the first attempt: {again:?}"
    );
    // The dead instance's late word counts for nothing.
    assert_eq!(
        store
            .record_outcomes("killed", &[sent(lost[0].id, now)])
            .await
            .unwrap(),
        0
    );
}

async fn a_live_instance_keeps_its_claims_until_its_heartbeat_is_ten_seconds_old(backend: Backend) {
    let store = store(backend).await;
    issue_to_readers(&store, 2).await;
    claim(&store, "busy", t0(), 10).await;
    store.heartbeat("busy", t0() + seconds(5)).await.unwrap();

    for now in [t0() + seconds(5), t0() + seconds(15)] {
        assert!(rescue(&store, "other", now).await.is_empty(), "at {now}");
        assert_eq!(store.delivery_counts().await.unwrap().sending, 2);
    }
    assert_eq!(
        rescue(&store, "other", t0() + seconds(16)).await,
        rescued("busy", 2)
    );
}

/// Rows leased before the upgrade, or by an instance that stopped cleanly
/// and removed its row while it still held some.
async fn claims_of_an_owner_without_a_row_come_back_at_once(backend: Backend) {
    let store = store(backend).await;
    issue_to_readers(&store, 3).await;
    claim(&store, "older-version", t0(), 1).await;
    store.heartbeat("stopped", t0()).await.unwrap();
    claim(&store, "stopped", t0(), 2).await;
    store.deregister("stopped").await.unwrap();

    let mut back = rescue(&store, "me", t0()).await;
    back.sort_by(|a, b| a.owner.cmp(&b.owner));
    assert_eq!(
        back,
        [
            RescuedClaims {
                owner: "older-version".into(),
                count: 1
            },
            RescuedClaims {
                owner: "stopped".into(),
                count: 2
            }
        ]
    );
    assert_eq!(store.delivery_counts().await.unwrap().pending, 3);
}

/// An instance whose heartbeat lapsed (the database was away) finds its
/// own claims as it left them: the outcomes it holds can still be written.
async fn an_instance_never_takes_back_its_own_claims(backend: Backend) {
    let store = store(backend).await;
    issue_to_readers(&store, 1).await;
    store.heartbeat("me", t0()).await.unwrap();
    let mine = claim(&store, "me", t0(), 10).await;
    let later = t0() + seconds(25);
    assert!(rescue(&store, "me", later).await.is_empty());
    assert_eq!(
        store
            .record_outcomes("me", &[sent(mine[0].id, later)])
            .await
            .unwrap(),
        1
    );
}

/// A live instance that has stalled keeps beating; its lease is the last
/// resort.
async fn an_expired_lease_is_still_taken_back_from_a_live_instance(backend: Backend) {
    let store = store(backend).await;
    issue_to_readers(&store, 2).await;
    claim(&store, "stalled", t0(), 10).await;
    let after = t0() + seconds(LEASE_SECONDS + 1);
    store.heartbeat("stalled", after).await.unwrap();
    assert!(rescue(&store, "other", after).await.is_empty());
    assert_eq!(store.reclaim_expired_leases(after).await.unwrap(), 2);
    let again = claim(&store, "other", after, 10).await;
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|delivery| delivery.attempts == 1));
}

/// A daemon that holds the SQLite lock knows the one before it is dead,
/// however fresh its last heartbeat.
async fn taking_over_from_a_known_dead_owner_needs_no_wait(backend: Backend) {
    let store = store(backend).await;
    issue_to_readers(&store, 3).await;
    store.heartbeat("previous", t0()).await.unwrap();
    store.heartbeat("send-now", t0()).await.unwrap();
    claim(&store, "previous", t0(), 2).await;
    claim(&store, "send-now", t0(), 1).await;

    assert_eq!(store.take_over("previous").await.unwrap(), 2);
    assert_eq!(store.take_over("previous").await.unwrap(), 0);
    assert_eq!(
        store.delivery_counts().await.unwrap(),
        DeliveryCounts {
            pending: 2,
            sending: 1,
            ..Default::default()
        },
        "a live send-now keeps its claim"
    );
    // Its row is gone too: anything it held later comes back at once.
    claim(&store, "previous", t0(), 1).await;
    assert_eq!(rescue(&store, "me", t0()).await, rescued("previous", 1));
}

async fn two_checks_at_once_take_each_claim_back_once(backend: Backend) {
    let store = store(backend).await;
    issue_to_readers(&store, 50).await;
    claim(&store, "killed", t0(), 100).await;
    let other = connect(&store.url).await;
    let now = t0() + seconds(11);
    let (a, b) = (Rescue::at("a", now), Rescue::at("b", now));
    let (first, second) = tokio::join!(store.rescue_claims(&a), other.rescue_claims(&b));
    let total: u64 = first
        .unwrap()
        .iter()
        .chain(second.unwrap().iter())
        .map(|claims| claims.count)
        .sum();
    assert_eq!(total, 50);
    assert_eq!(store.delivery_counts().await.unwrap().pending, 50);
}

/// `smtp.max_attempts` counts what reached the server: one attempt per
/// outcome written, none for a claim handed back or taken back.
async fn each_written_outcome_and_nothing_else_charges_an_attempt(backend: Backend) {
    let store = store(backend).await;
    issue_to_readers(&store, 1).await;
    let retry = |id, at| DeliveryOutcome::Retry {
        id,
        error: "451 later".into(),
        next_attempt_at: at,
    };
    let mut now = t0();
    for expected in 1..=3 {
        let claimed = claim(&store, "worker", now, 1).await;
        assert_eq!(claimed[0].attempts, expected);
        store
            .record_outcomes("worker", &[retry(claimed[0].id, now)])
            .await
            .unwrap();
        // Handed back, taken back from a dead owner, expired: all free.
        let id = claim(&store, "worker", now, 1).await[0].id;
        store.release_claims("worker", &[id]).await.unwrap();
        claim(&store, "killed", now, 1).await;
        store.take_over("killed").await.unwrap();
        claim(&store, "stalled", now, 1).await;
        now += seconds(LEASE_SECONDS + 1);
        store.reclaim_expired_leases(now).await.unwrap();
    }
    assert_eq!(claim(&store, "worker", now, 1).await[0].attempts, 4);
}
