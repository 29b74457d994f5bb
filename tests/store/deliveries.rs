//! The outbox: claims under a lease, what a worker reports back, and what
//! hard bounces do to a subscriber.

use std::collections::HashSet;

use chrono::Duration;
use tidings::domain::delivery::{DeliveryCounts, DeliveryOutcome, DeliveryPayload};
use tidings::domain::signup::{ConfirmOutcome, SignupOutcome};
use tidings::domain::subscriber::SubscriberStatus;

use crate::on_both_backends;
use crate::support::{
    add, broadcast, claim, confirmations_for, consent_kinds, enqueue, hard_bounce, minutes, sent,
    signup, status_of, store, t0, Backend, TestStore, LEASE_SECONDS, RESEND_WINDOW_MINUTES,
};

on_both_backends!(
    a_claim_carries_what_the_email_needs,
    confirmations_are_claimed_before_issues,
    only_due_deliveries_are_claimed_and_a_retry_keeps_its_message_id,
    a_live_lease_is_respected_and_an_expired_one_is_reclaimed_and_fenced,
    release_gives_claims_back_without_an_attempt,
    outcomes_written_together_each_count_once,
    each_outcome_leaves_its_status,
    three_hard_bounces_make_a_subscriber_bounced,
    only_hard_bounces_count_and_unsubscribed_stays_unsubscribed,
    a_bounced_subscriber_who_confirms_again_starts_with_no_bounces,
    every_issue_delivery_has_its_own_message_id,
    a_claimed_batch_comes_in_the_order_it_is_due,
);

/// `count` confirmed readers, a post, and its issue; returns the issue id.
async fn issue_to_readers(store: &TestStore, count: u64) -> i64 {
    store
        .bulk_insert_confirmed(count, "reader", "example.com", t0())
        .await
        .unwrap();
    enqueue(store, "Tip").await;
    broadcast(store, "week-1", t0()).await.issue_id
}

async fn a_claim_carries_what_the_email_needs(backend: Backend) {
    let store = store(backend).await;
    let reader = add(&store, "reader@example.com", SubscriberStatus::Confirmed).await;
    let post = enqueue(&store, "Tip").await;
    let issue = broadcast(&store, "week-1", t0()).await.issue_id;
    let SignupOutcome::ConfirmationQueued { subscriber_id: ada } = store
        .signup(signup("ada@example.com", Some("Ada"), t0()))
        .await
        .unwrap()
    else {
        panic!("a new address");
    };
    let confirmation = confirmations_for(&store, ada, t0()).await[0];

    let claimed = claim(&store, "worker", t0(), 10).await;
    assert_eq!(claimed.len(), 2);
    let to_ada = claimed.iter().find(|d| d.subscriber_id == ada).unwrap();
    assert_eq!(to_ada.email, "ada@example.com");
    assert_eq!(to_ada.name.as_deref(), Some("Ada"));
    assert_eq!(to_ada.subscriber_status, SubscriberStatus::Pending);
    assert_eq!(to_ada.attempts, 1, "this attempt included");
    assert_eq!(
        to_ada.payload,
        DeliveryPayload::Confirmation {
            confirmation_id: confirmation
        }
    );
    let to_reader = claimed.iter().find(|d| d.subscriber_id == reader).unwrap();
    assert_eq!(to_reader.email, "reader@example.com");
    assert_eq!(to_reader.name, None);
    assert_eq!(to_reader.subscriber_status, SubscriberStatus::Confirmed);
    assert_eq!(
        to_reader.payload,
        DeliveryPayload::Issue {
            issue_id: issue,
            post_id: post
        }
    );
    assert_ne!(to_ada.message_id, to_reader.message_id);
    assert_eq!(
        store.delivery_counts().await.unwrap(),
        DeliveryCounts {
            sending: 2,
            ..Default::default()
        }
    );
}

/// A signup never waits behind a big send: confirmation emails are taken
/// first, even when the issue's rows are older.
async fn confirmations_are_claimed_before_issues(backend: Backend) {
    let store = store(backend).await;
    issue_to_readers(&store, 5).await;
    let SignupOutcome::ConfirmationQueued { subscriber_id: ada } = store
        .signup(signup("ada@example.com", None, t0() + minutes(1)))
        .await
        .unwrap()
    else {
        panic!("a new address");
    };
    let now = t0() + minutes(2);
    let first = claim(&store, "worker", now, 1).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].subscriber_id, ada);
    assert!(matches!(
        first[0].payload,
        DeliveryPayload::Confirmation { .. }
    ));
    let rest = claim(&store, "worker", now, 10).await;
    assert_eq!(rest.len(), 5);
    assert!(rest
        .iter()
        .all(|delivery| matches!(delivery.payload, DeliveryPayload::Issue { .. })));
}

/// The worker sends a batch in the order it was claimed, so a signup's
/// confirmation must also lead the batch it is claimed in, not follow the
/// 199 issue emails claimed with it.
async fn a_claimed_batch_comes_in_the_order_it_is_due(backend: Backend) {
    let store = store(backend).await;
    issue_to_readers(&store, 5).await;
    let retried = claim(&store, "worker", t0(), 1).await;
    store
        .record_outcomes(
            "worker",
            &[DeliveryOutcome::Retry {
                id: retried[0].id,
                error: "451 later".into(),
                next_attempt_at: t0() + minutes(1),
            }],
        )
        .await
        .unwrap();
    store
        .signup(signup("bo@example.com", None, t0() + minutes(2)))
        .await
        .unwrap();
    let batch = claim(&store, "worker", t0() + minutes(3), 10).await;
    let order: Vec<(bool, i64)> = batch
        .iter()
        .map(|delivery| {
            (
                matches!(delivery.payload, DeliveryPayload::Issue { .. }),
                delivery.id,
            )
        })
        .collect();
    assert_eq!(order.len(), 6);
    assert!(!order[0].0, "the confirmation first: {order:?}");
    assert_eq!(
        order.last().unwrap().1,
        retried[0].id,
        "the retry, due last, comes last: {order:?}"
    );
}

async fn only_due_deliveries_are_claimed_and_a_retry_keeps_its_message_id(backend: Backend) {
    let store = store(backend).await;
    issue_to_readers(&store, 1).await;
    assert!(
        claim(&store, "worker", t0() - Duration::seconds(1), 10)
            .await
            .is_empty(),
        "not due before the issue"
    );
    let first = claim(&store, "worker", t0(), 10).await;
    assert_eq!(first.len(), 1);
    let retry_at = t0() + Duration::hours(1);
    let retry = DeliveryOutcome::Retry {
        id: first[0].id,
        error: "451 4.3.0 Try again later".into(),
        next_attempt_at: retry_at,
    };
    assert_eq!(store.record_outcomes("worker", &[retry]).await.unwrap(), 1);
    assert_eq!(
        store.delivery_counts().await.unwrap(),
        DeliveryCounts {
            pending: 1,
            ..Default::default()
        }
    );
    assert!(claim(&store, "worker", retry_at - Duration::seconds(1), 10)
        .await
        .is_empty());
    let second = claim(&store, "other-worker", retry_at, 10).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, first[0].id);
    assert_eq!(second[0].attempts, 2);
    assert_eq!(
        second[0].message_id, first[0].message_id,
        "a resend is recognisably the same message"
    );
}

/// Moved here from the HTTP suite, where it raced the app's own worker.
async fn a_live_lease_is_respected_and_an_expired_one_is_reclaimed_and_fenced(backend: Backend) {
    let store = store(backend).await;
    issue_to_readers(&store, 1).await;
    let crashed = claim(&store, "crashed-worker", t0(), 10).await;
    assert_eq!(crashed.len(), 1);
    let lease_end = t0() + Duration::seconds(LEASE_SECONDS);

    // While the lease lives, nobody else may take the row back or claim it.
    let during = lease_end - Duration::seconds(1);
    assert_eq!(store.reclaim_expired_leases(during).await.unwrap(), 0);
    assert!(claim(&store, "live-worker", during, 10).await.is_empty());
    assert_eq!(store.delivery_counts().await.unwrap().sending, 1);

    let after = lease_end + Duration::seconds(1);
    assert_eq!(store.reclaim_expired_leases(after).await.unwrap(), 1);
    assert_eq!(store.reclaim_expired_leases(after).await.unwrap(), 0);
    assert_eq!(store.delivery_counts().await.unwrap().pending, 1);
    let taken = claim(&store, "live-worker", after, 10).await;
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].id, crashed[0].id);
    assert_eq!(taken[0].message_id, crashed[0].message_id);

    // The crashed worker wakes up and reports: nothing it says counts now,
    // and it cannot hand the row back either.
    assert_eq!(
        store
            .record_outcomes("crashed-worker", &[sent(crashed[0].id, after)])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .release_claims("crashed-worker", &[crashed[0].id])
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.delivery_counts().await.unwrap().sending, 1);
    assert_eq!(
        store
            .record_outcomes("live-worker", &[sent(taken[0].id, after)])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.delivery_counts().await.unwrap(),
        DeliveryCounts {
            sent: 1,
            ..Default::default()
        }
    );
}

/// At shutdown a worker gives back what it claimed but never started.
async fn release_gives_claims_back_without_an_attempt(backend: Backend) {
    let store = store(backend).await;
    issue_to_readers(&store, 3).await;
    let claimed = claim(&store, "stopping", t0(), 10).await;
    let ids: Vec<i64> = claimed.iter().map(|delivery| delivery.id).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(store.release_claims("someone-else", &ids).await.unwrap(), 0);
    assert_eq!(store.release_claims("stopping", &[]).await.unwrap(), 0);
    assert_eq!(
        store
            .release_claims("stopping", &[ids[0], ids[1]])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store.delivery_counts().await.unwrap(),
        DeliveryCounts {
            pending: 2,
            sending: 1,
            ..Default::default()
        }
    );
    // Released rows are due at once, and this is still their first attempt.
    let again = claim(&store, "next", t0(), 10).await;
    assert_eq!(again.len(), 2);
    assert!(
        again.iter().all(|delivery| delivery.attempts == 1),
        "{again:?}"
    );
    // A row already reported is not given back.
    store
        .record_outcomes("stopping", &[sent(ids[2], t0())])
        .await
        .unwrap();
    assert_eq!(
        store.release_claims("stopping", &[ids[2]]).await.unwrap(),
        0
    );
    assert_eq!(store.delivery_counts().await.unwrap().sent, 1);
}

/// Moved here from the HTTP suite.
async fn outcomes_written_together_each_count_once(backend: Backend) {
    let store = store(backend).await;
    issue_to_readers(&store, 3).await;
    let now = t0();
    let claimed = claim(&store, "worker-a", now, 10).await;
    assert_eq!(claimed.len(), 3);
    let reply = |index: usize| DeliveryOutcome::Sent {
        id: claimed[index].id,
        reply: "250 2.0.0 Ok: \"queued\" as 7F3A, ünïcode".into(),
        at: now,
    };
    let outcomes = [
        reply(0),
        DeliveryOutcome::Retry {
            id: claimed[1].id,
            error: "451 try later".into(),
            next_attempt_at: now + Duration::hours(1),
        },
        reply(2),
    ];
    assert_eq!(
        store.record_outcomes("worker-a", &outcomes).await.unwrap(),
        3
    );
    let counts = store.delivery_counts().await.unwrap();
    assert_eq!((counts.sent, counts.pending, counts.sending), (2, 1, 0));
    // Told twice (a retried write), a send still counts once.
    assert_eq!(
        store
            .record_outcomes("worker-a", &outcomes[..1])
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.record_outcomes("worker-a", &[]).await.unwrap(), 0);
    assert_eq!(store.delivery_counts().await.unwrap().sent, 2);
}

async fn each_outcome_leaves_its_status(backend: Backend) {
    let store = store(backend).await;
    let issue = issue_to_readers(&store, 5).await;
    let claimed = claim(&store, "worker", t0(), 10).await;
    let at = t0() + minutes(1);
    let outcomes = [
        sent(claimed[0].id, at),
        DeliveryOutcome::Retry {
            id: claimed[1].id,
            error: "451 later".into(),
            next_attempt_at: at + minutes(5),
        },
        DeliveryOutcome::Failed {
            id: claimed[2].id,
            subscriber_id: claimed[2].subscriber_id,
            error: "gave up after 8 attempts".into(),
            hard_bounce: false,
            at,
        },
        DeliveryOutcome::Skipped {
            id: claimed[3].id,
            reason: "subscriber is unsubscribed".into(),
            at,
        },
    ];
    assert_eq!(store.record_outcomes("worker", &outcomes).await.unwrap(), 4);
    let expected = DeliveryCounts {
        pending: 1,
        sending: 1,
        sent: 1,
        failed: 1,
        skipped: 1,
    };
    assert_eq!(store.issue_progress(issue).await.unwrap(), expected);
    assert_eq!(store.delivery_counts().await.unwrap(), expected);
    // Final rows are never claimed again; the retry is, when due.
    let later = claim(&store, "worker", at + Duration::days(1), 10).await;
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].id, claimed[1].id);
    assert_eq!(
        store.issue_progress(issue + 1).await.unwrap(),
        DeliveryCounts::default()
    );
}

/// One issue a week to a reader whose mailbox is gone, and one to a
/// reader whose mailbox works.
async fn three_hard_bounces_make_a_subscriber_bounced(backend: Backend) {
    let store = store(backend).await;
    let gone = add(&store, "gone@example.com", SubscriberStatus::Confirmed).await;
    let fine = add(&store, "fine@example.com", SubscriberStatus::Confirmed).await;
    for week in 1..=4 {
        enqueue(&store, &format!("Week {week}")).await;
    }
    for week in 1..=3 {
        let at = t0() + Duration::days(7 * week);
        let created = broadcast(&store, &format!("week-{week}"), at).await;
        assert_eq!(created.recipients, 2, "week {week}");
        let claimed = claim(&store, "worker", at, 10).await;
        let outcomes: Vec<_> = claimed
            .iter()
            .map(|delivery| {
                if delivery.subscriber_id == gone {
                    hard_bounce(delivery, at)
                } else {
                    sent(delivery.id, at)
                }
            })
            .collect();
        assert_eq!(store.record_outcomes("worker", &outcomes).await.unwrap(), 2);
        let expected = if week < 3 {
            SubscriberStatus::Confirmed
        } else {
            SubscriberStatus::Bounced
        };
        assert_eq!(status_of(&store, gone).await, expected, "week {week}");
    }
    assert_eq!(status_of(&store, fine).await, SubscriberStatus::Confirmed);
    assert_eq!(
        consent_kinds(&store, gone).await,
        ["operator_add", "bounced"]
    );
    let counts = store.delivery_counts().await.unwrap();
    assert_eq!((counts.sent, counts.failed), (3, 3));
    // A bounced subscriber is not sent the next issue.
    let week4 = broadcast(&store, "week-4", t0() + Duration::days(28)).await;
    assert_eq!(week4.recipients, 1);
    let claimed = claim(&store, "worker", t0() + Duration::days(28), 10).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].subscriber_id, fine);
}

async fn only_hard_bounces_count_and_unsubscribed_stays_unsubscribed(backend: Backend) {
    let store = store(backend).await;
    let soft = add(&store, "soft@example.com", SubscriberStatus::Confirmed).await;
    let left = add(&store, "left@example.com", SubscriberStatus::Confirmed).await;
    for week in 1..=4 {
        enqueue(&store, &format!("Week {week}")).await;
        broadcast(&store, &format!("week-{week}"), t0()).await;
    }
    // `left` unsubscribes after the issues were made; their rows remain.
    store
        .unsubscribe(left, Default::default(), t0())
        .await
        .unwrap();
    let claimed = claim(&store, "worker", t0(), 100).await;
    assert_eq!(claimed.len(), 8);
    let outcomes: Vec<_> = claimed
        .iter()
        .map(|delivery| {
            if delivery.subscriber_id == soft {
                DeliveryOutcome::Failed {
                    id: delivery.id,
                    subscriber_id: soft,
                    error: "gave up after 8 attempts: 451 later".into(),
                    hard_bounce: false,
                    at: t0(),
                }
            } else {
                hard_bounce(delivery, t0())
            }
        })
        .collect();
    assert_eq!(store.record_outcomes("worker", &outcomes).await.unwrap(), 8);
    assert_eq!(status_of(&store, soft).await, SubscriberStatus::Confirmed);
    assert_eq!(consent_kinds(&store, soft).await, ["operator_add"]);
    assert_eq!(
        status_of(&store, left).await,
        SubscriberStatus::Unsubscribed
    );
    assert_eq!(
        consent_kinds(&store, left).await,
        ["operator_add", "unsubscribe"]
    );
    assert_eq!(store.delivery_counts().await.unwrap().failed, 8);
}

async fn a_bounced_subscriber_who_confirms_again_starts_with_no_bounces(backend: Backend) {
    let store = store(backend).await;
    let id = add(&store, "back@example.com", SubscriberStatus::Confirmed).await;
    for week in 1..=6 {
        enqueue(&store, &format!("Week {week}")).await;
    }
    let bounce_issues = |weeks: std::ops::RangeInclusive<i64>| {
        let store = &store;
        async move {
            for week in weeks {
                let at = t0() + Duration::days(week);
                broadcast(store, &format!("week-{week}"), at).await;
                let claimed = claim(store, "worker", at, 10).await;
                assert_eq!(claimed.len(), 1, "week {week}");
                store
                    .record_outcomes("worker", &[hard_bounce(&claimed[0], at)])
                    .await
                    .unwrap();
            }
        }
    };
    bounce_issues(1..=3).await;
    assert_eq!(status_of(&store, id).await, SubscriberStatus::Bounced);

    // They fix their mailbox, sign up again and follow the link.
    let back = t0() + Duration::days(4);
    let outcome = store
        .signup(signup("back@example.com", None, back))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        SignupOutcome::ConfirmationQueued { subscriber_id: id }
    );
    let link = confirmations_for(&store, id, back).await[0];
    assert_eq!(
        store
            .confirm(
                link,
                Default::default(),
                back + minutes(RESEND_WINDOW_MINUTES)
            )
            .await
            .unwrap(),
        ConfirmOutcome::Confirmed { subscriber_id: id }
    );
    let confirmation_email = claim(&store, "worker", back, 10).await;
    assert_eq!(confirmation_email.len(), 1);
    store
        .record_outcomes("worker", &[sent(confirmation_email[0].id, back)])
        .await
        .unwrap();
    // Old bounces are forgotten: two new ones are not three.
    bounce_issues(5..=6).await;
    assert_eq!(status_of(&store, id).await, SubscriberStatus::Confirmed);
    assert_eq!(
        consent_kinds(&store, id).await,
        ["operator_add", "bounced", "signup", "confirm"]
    );
}

async fn every_issue_delivery_has_its_own_message_id(backend: Backend) {
    let store = store(backend).await;
    issue_to_readers(&store, 20).await;
    enqueue(&store, "Second").await;
    broadcast(&store, "week-2", t0()).await;
    let claimed = claim(&store, "worker", t0(), 100).await;
    assert_eq!(claimed.len(), 40);
    let mut seen = HashSet::new();
    for delivery in &claimed {
        assert!(
            uuid::Uuid::parse_str(&delivery.message_id).is_ok(),
            "{}",
            delivery.message_id
        );
        assert!(
            seen.insert(delivery.message_id.clone()),
            "twice: {delivery:?}"
        );
    }
}
