//! Issues: one per slot, in broadcast or sequence mode, with every
//! recipient's delivery made when the issue is.

use std::collections::BTreeMap;

use chrono::Duration;
use tidings::domain::delivery::{DeliveryCounts, DeliveryPayload};
use tidings::domain::issue::{CreateIssueOutcome, ScheduleMode};
use tidings::domain::post::PostStatus;
use tidings::domain::subscriber::SubscriberStatus;

use crate::on_both_backends;
use crate::support::{
    add, broadcast, claim, enqueue, issue, minutes, store, t0, Backend, TestStore,
};

on_both_backends!(
    an_issue_goes_to_every_confirmed_subscriber_and_nobody_else,
    a_slot_makes_one_issue,
    two_instances_creating_the_same_slot_make_one_issue,
    nothing_to_send_leaves_no_trace,
    recipients_are_fixed_when_the_issue_is_created,
    sequence_mode_gives_each_subscriber_the_next_post_they_have_not_had,
);

async fn create(store: &TestStore, slot_key: &str, mode: ScheduleMode) -> CreateIssueOutcome {
    store
        .create_issue(issue(slot_key, mode, t0()))
        .await
        .unwrap()
}

async fn an_issue_goes_to_every_confirmed_subscriber_and_nobody_else(backend: Backend) {
    let store = store(backend).await;
    let mut readers = Vec::new();
    for n in 1..=3 {
        readers.push(
            add(
                &store,
                &format!("reader{n}@example.com"),
                SubscriberStatus::Confirmed,
            )
            .await,
        );
    }
    for status in [
        SubscriberStatus::Pending,
        SubscriberStatus::Unsubscribed,
        SubscriberStatus::Bounced,
    ] {
        add(&store, &format!("{status}@example.com"), status).await;
    }
    let first = enqueue(&store, "First").await;
    let second = enqueue(&store, "Second").await;
    let at = t0() + minutes(1);

    let created = broadcast(&store, "week-1", at).await;
    assert_eq!(created.post_id, Some(first), "the head of the queue");
    assert_eq!(created.number, 1);
    assert_eq!(created.recipients, 3);
    let meta = store.issue_meta(created.issue_id).await.unwrap().unwrap();
    assert_eq!((meta.number, meta.mode), (1, ScheduleMode::Broadcast));
    assert!(store
        .issue_meta(created.issue_id + 1)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store.issue_progress(created.issue_id).await.unwrap(),
        DeliveryCounts {
            pending: 3,
            ..Default::default()
        }
    );
    let post = store.get_post(first).await.unwrap().unwrap();
    assert_eq!(post.status, PostStatus::Sent);
    assert_eq!(post.sent_at, Some(at));

    // The pending one's confirmation comes first; then the issue.
    let claimed = claim(&store, "worker", at, 100).await;
    let mut recipients: Vec<i64> = claimed
        .iter()
        .filter(|delivery| {
            delivery.payload
                == DeliveryPayload::Issue {
                    issue_id: created.issue_id,
                    post_id: first,
                }
        })
        .map(|delivery| delivery.subscriber_id)
        .collect();
    recipients.sort();
    assert_eq!(recipients, readers);
    assert_eq!(claimed.len(), 4, "three issue emails, one confirmation");

    let next = broadcast(&store, "week-2", at).await;
    assert_eq!(next.post_id, Some(second));
    assert_eq!(next.number, 2);
}

async fn a_slot_makes_one_issue(backend: Backend) {
    let store = store(backend).await;
    add(&store, "reader@example.com", SubscriberStatus::Confirmed).await;
    for n in 1..=3 {
        enqueue(&store, &format!("Post {n}")).await;
    }
    let monday = t0();
    let scheduled = |key: &str, at| tidings::domain::issue::NewIssue {
        slot_key: key.to_owned(),
        slot_at: Some(at),
        mode: ScheduleMode::Broadcast,
        now: at,
    };
    assert_eq!(store.latest_scheduled_slot().await.unwrap(), None);
    let created = store
        .create_issue(scheduled("2026-11-23T09:00 UTC", monday))
        .await
        .unwrap();
    assert!(
        matches!(created, CreateIssueOutcome::Created(_)),
        "{created:?}"
    );
    // Again, after a restart, an hour later, or in the other mode.
    for mode in [ScheduleMode::Broadcast, ScheduleMode::Sequence] {
        let mut again = scheduled("2026-11-23T09:00 UTC", monday + Duration::hours(1));
        again.mode = mode;
        assert_eq!(
            store.create_issue(again).await.unwrap(),
            CreateIssueOutcome::SlotTaken
        );
    }
    assert_eq!(store.post_counts().await.unwrap().sent, 1);
    assert_eq!(store.delivery_counts().await.unwrap().total(), 1);

    let next_monday = monday + Duration::days(7);
    store
        .create_issue(scheduled("2026-11-30T09:00 UTC", next_monday))
        .await
        .unwrap();
    // A send by hand has no slot of its own in the schedule.
    store
        .create_issue(tidings::domain::issue::NewIssue::manual(
            ScheduleMode::Broadcast,
            next_monday + Duration::days(1),
        ))
        .await
        .unwrap();
    assert_eq!(
        store.latest_scheduled_slot().await.unwrap(),
        Some(next_monday)
    );
    assert_eq!(store.post_counts().await.unwrap().sent, 3);
}

/// Two daemons sharing a database tick for the same slot at once.
async fn two_instances_creating_the_same_slot_make_one_issue(backend: Backend) {
    let store = store(backend).await;
    store
        .bulk_insert_confirmed(50, "reader", "example.com", t0())
        .await
        .unwrap();
    enqueue(&store, "Only once").await;
    enqueue(&store, "Not yet").await;
    let other = crate::support::connect(&store.url).await;
    let tick = || issue("2026-11-23T09:00 UTC", ScheduleMode::Broadcast, t0());
    let (mine, theirs) = tokio::join!(store.create_issue(tick()), other.create_issue(tick()));
    let outcomes = [mine.unwrap(), theirs.unwrap()];
    let created = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, CreateIssueOutcome::Created(_)))
        .count();
    assert_eq!(created, 1, "{outcomes:?}");
    assert!(
        outcomes.contains(&CreateIssueOutcome::SlotTaken),
        "{outcomes:?}"
    );
    assert_eq!(store.delivery_counts().await.unwrap().pending, 50);
    assert_eq!(store.post_counts().await.unwrap().sent, 1);
}

/// No post, or nobody to send it to: no issue, no number used, the slot
/// still free and the post still queued for when there is an audience.
async fn nothing_to_send_leaves_no_trace(backend: Backend) {
    let store = store(backend).await;
    for mode in [ScheduleMode::Broadcast, ScheduleMode::Sequence] {
        assert_eq!(
            create(&store, "slot", mode).await,
            CreateIssueOutcome::NothingToSend,
            "an empty queue in {mode:?}"
        );
    }
    let post = enqueue(&store, "Waiting for readers").await;
    add(&store, "pending@example.com", SubscriberStatus::Pending).await;
    for mode in [ScheduleMode::Broadcast, ScheduleMode::Sequence] {
        assert_eq!(
            create(&store, "slot", mode).await,
            CreateIssueOutcome::NothingToSend,
            "nobody confirmed, in {mode:?}"
        );
    }
    assert_eq!(
        store.get_post(post).await.unwrap().unwrap().status,
        PostStatus::Queued
    );
    assert_eq!(store.latest_scheduled_slot().await.unwrap(), None);

    add(&store, "reader@example.com", SubscriberStatus::Confirmed).await;
    let CreateIssueOutcome::Created(created) =
        create(&store, "slot", ScheduleMode::Broadcast).await
    else {
        panic!("the slot is still free");
    };
    assert_eq!(created.number, 1, "no number was used up");
    assert_eq!(created.post_id, Some(post));
    assert_eq!(created.recipients, 1);
}

async fn recipients_are_fixed_when_the_issue_is_created(backend: Backend) {
    let store = store(backend).await;
    let stays = add(&store, "stays@example.com", SubscriberStatus::Confirmed).await;
    let leaves = add(&store, "leaves@example.com", SubscriberStatus::Confirmed).await;
    enqueue(&store, "Tip").await;
    let created = broadcast(&store, "week-1", t0()).await;
    assert_eq!(created.recipients, 2);

    // After the issue is made: one leaves, one joins.
    store
        .unsubscribe(leaves, Default::default(), t0() + minutes(1))
        .await
        .unwrap();
    let joins = add(&store, "joins@example.com", SubscriberStatus::Confirmed).await;

    assert_eq!(
        store
            .issue_progress(created.issue_id)
            .await
            .unwrap()
            .total(),
        2
    );
    let claimed = claim(&store, "worker", t0() + minutes(2), 10).await;
    let by_subscriber: BTreeMap<i64, SubscriberStatus> = claimed
        .iter()
        .map(|delivery| (delivery.subscriber_id, delivery.subscriber_status))
        .collect();
    assert_eq!(
        by_subscriber,
        BTreeMap::from([
            (stays, SubscriberStatus::Confirmed),
            // The row stays, carrying the status the worker skips on.
            (leaves, SubscriberStatus::Unsubscribed),
        ])
    );
    assert!(!by_subscriber.contains_key(&joins));
}

async fn sequence_mode_gives_each_subscriber_the_next_post_they_have_not_had(backend: Backend) {
    let store = store(backend).await;
    let tips: Vec<i64> = [
        enqueue(&store, "Tip 1").await,
        enqueue(&store, "Tip 2").await,
        enqueue(&store, "Tip 3").await,
    ]
    .to_vec();
    let early = add(&store, "early@example.com", SubscriberStatus::Confirmed).await;

    // Each tick's issue, as (subscriber, post) pairs from its deliveries.
    let mut tick = 0;
    let mut next_issue = |expected: usize| {
        tick += 1;
        let key = format!("tick-{tick}");
        let store = &store;
        async move {
            let CreateIssueOutcome::Created(created) =
                create(store, &key, ScheduleMode::Sequence).await
            else {
                panic!("{key} has something to send");
            };
            assert_eq!(created.post_id, None, "no single post in sequence mode");
            assert_eq!(created.recipients, expected as u64, "{key}");
            let meta = store.issue_meta(created.issue_id).await.unwrap().unwrap();
            assert_eq!(meta.mode, ScheduleMode::Sequence);
            let mut pairs: Vec<(i64, i64)> = claim(store, &key, t0(), 100)
                .await
                .into_iter()
                .map(|delivery| match delivery.payload {
                    DeliveryPayload::Issue { issue_id, post_id } => {
                        assert_eq!(issue_id, created.issue_id);
                        (delivery.subscriber_id, post_id)
                    }
                    other => panic!("{other:?}"),
                })
                .collect();
            pairs.sort();
            pairs
        }
    };
    assert_eq!(next_issue(1).await, [(early, tips[0])]);
    assert_eq!(next_issue(1).await, [(early, tips[1])]);
    // A late joiner starts at tip 1, already sent to others.
    let late = add(&store, "late@example.com", SubscriberStatus::Confirmed).await;
    assert_eq!(next_issue(2).await, [(early, tips[2]), (late, tips[0])]);
    assert_eq!(next_issue(1).await, [(late, tips[1])], "early has had all");
    assert_eq!(next_issue(1).await, [(late, tips[2])]);
    assert_eq!(
        create(&store, "tick-6", ScheduleMode::Sequence).await,
        CreateIssueOutcome::NothingToSend,
        "everyone has had every tip"
    );
    let posts = store.list_posts().await.unwrap();
    assert!(posts.iter().all(|post| post.status == PostStatus::Sent));
    // A new tip goes to both.
    let tip4 = enqueue(&store, "Tip 4").await;
    assert_eq!(next_issue(2).await, [(early, tip4), (late, tip4)]);
}
