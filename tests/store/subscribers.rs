//! Confirmation, unsubscribes, records the operator adds, the list a page
//! at a time, and counts by status.

use chrono::Duration;
use tidings::domain::delivery::DeliveryPayload;
use tidings::domain::signup::{ConfirmLink, ConfirmOutcome, SignupOutcome};
use tidings::domain::subscriber::{
    AddOutcome, OperatorSource, SubscriberCounts, SubscriberQuery, SubscriberStatus,
    UnsubscribeOutcome,
};

use crate::on_both_backends;
use crate::support::{
    add, claim, confirmations_for, consent, consent_kinds, events, minutes, only_confirmation,
    operator, signup, status_of, store, subscriber, subscribers, t0, Backend, TestStore,
    CONFIRMATION_TTL_HOURS, RESEND_WINDOW_MINUTES,
};

on_both_backends!(
    following_a_link_confirms_once,
    looking_a_link_up_changes_nothing,
    an_unknown_confirmation_is_unknown,
    a_confirmation_link_expires_after_its_lifetime,
    a_second_link_for_a_confirmed_subscriber_changes_nothing,
    unsubscribing_twice_is_recorded_once,
    anyone_on_the_list_can_unsubscribe,
    an_older_confirmation_link_cannot_undo_an_unsubscribe,
    the_operator_adds_subscribers_in_any_status,
    an_address_already_on_the_list_is_not_added_again,
    a_batch_is_added_in_one_go_each_record_as_if_alone,
    subscribers_come_in_id_order_a_page_at_a_time,
    counts_cover_every_status,
);

/// Signs up `address` at `t0`; returns the subscriber and its link.
async fn pending(store: &TestStore, address: &str) -> (i64, i64) {
    let SignupOutcome::ConfirmationQueued { subscriber_id } =
        store.signup(signup(address, None, t0())).await.unwrap()
    else {
        panic!("{address} is new");
    };
    (subscriber_id, only_confirmation(store, subscriber_id).await)
}

async fn following_a_link_confirms_once(backend: Backend) {
    let store = store(backend).await;
    let (id, link) = pending(&store, "once@example.com").await;
    let at = t0() + minutes(5);
    let outcome = store
        .confirm(link, consent("198.51.100.7", "Browser/2.0"), at)
        .await
        .unwrap();
    assert_eq!(outcome, ConfirmOutcome::Confirmed { subscriber_id: id });
    let once = subscriber(&store, id).await;
    assert_eq!(once.status, SubscriberStatus::Confirmed);
    assert_eq!(once.confirmed_at, Some(at));

    // The same link again, a minute or a week later (past its expiry):
    // the same answer, and nothing more is recorded.
    for later in [minutes(6), Duration::days(7)] {
        let again = store
            .confirm(link, consent("203.0.113.9", "Scanner/1.0"), t0() + later)
            .await
            .unwrap();
        assert_eq!(
            again,
            ConfirmOutcome::AlreadyConfirmed { subscriber_id: id }
        );
    }
    let once = subscriber(&store, id).await;
    assert_eq!(once.status, SubscriberStatus::Confirmed);
    assert_eq!(once.confirmed_at, Some(at));
    assert_eq!(consent_kinds(&store, id).await, ["signup", "confirm"]);
}

/// What the page behind a link shows before its button is pressed: the
/// lookup answers as confirming would, and writes nothing.
async fn looking_a_link_up_changes_nothing(backend: Backend) {
    let store = store(backend).await;
    let ttl = Duration::hours(CONFIRMATION_TTL_HOURS);
    let (id, link) = pending(&store, "looked@example.com").await;
    for at in [t0(), t0() + minutes(1), t0() + ttl - Duration::seconds(1)] {
        assert_eq!(
            store.confirmation_link(link, at).await.unwrap(),
            ConfirmLink::Open
        );
    }
    assert_eq!(
        store.confirmation_link(link, t0() + ttl).await.unwrap(),
        ConfirmLink::Closed(ConfirmOutcome::Expired)
    );
    assert_eq!(
        store.confirmation_link(link + 1, t0()).await.unwrap(),
        ConfirmLink::Closed(ConfirmOutcome::Unknown)
    );
    assert_eq!(status_of(&store, id).await, SubscriberStatus::Pending);
    assert_eq!(consent_kinds(&store, id).await, ["signup"]);
    // Looked up many times, the link still works once pressed, and a used
    // link of a confirmed subscriber still opens the page.
    let at = t0() + minutes(2);
    assert_eq!(
        store.confirm(link, Default::default(), at).await.unwrap(),
        ConfirmOutcome::Confirmed { subscriber_id: id }
    );
    assert_eq!(
        store.confirmation_link(link, at + ttl).await.unwrap(),
        ConfirmLink::Open
    );
}

async fn an_unknown_confirmation_is_unknown(backend: Backend) {
    let store = store(backend).await;
    let (id, link) = pending(&store, "someone@example.com").await;
    for unknown in [link + 1, 999_999, 0, -1] {
        let outcome = store
            .confirm(unknown, Default::default(), t0())
            .await
            .unwrap();
        assert_eq!(outcome, ConfirmOutcome::Unknown, "confirmation {unknown}");
    }
    assert_eq!(status_of(&store, id).await, SubscriberStatus::Pending);
    assert!(store.subscriber_exists(id).await.unwrap());
    assert!(!store.subscriber_exists(id + 1).await.unwrap());
}

async fn a_confirmation_link_expires_after_its_lifetime(backend: Backend) {
    let store = store(backend).await;
    let ttl = Duration::hours(CONFIRMATION_TTL_HOURS);
    let (late, late_link) = pending(&store, "late@example.com").await;
    let (just, just_link) = pending(&store, "just@example.com").await;

    let outcome = store
        .confirm(late_link, Default::default(), t0() + ttl)
        .await
        .unwrap();
    assert_eq!(outcome, ConfirmOutcome::Expired, "at the end of its life");
    assert_eq!(status_of(&store, late).await, SubscriberStatus::Pending);
    assert_eq!(consent_kinds(&store, late).await, ["signup"]);
    // An expired link stays expired; it is not used up.
    let again = store
        .confirm(late_link, Default::default(), t0() + ttl + minutes(1))
        .await
        .unwrap();
    assert_eq!(again, ConfirmOutcome::Expired);

    let outcome = store
        .confirm(
            just_link,
            Default::default(),
            t0() + ttl - Duration::seconds(1),
        )
        .await
        .unwrap();
    assert_eq!(
        outcome,
        ConfirmOutcome::Confirmed {
            subscriber_id: just
        }
    );
}

/// Two links were sent (a second signup after the window); the person
/// follows both. The second confirms nothing new: the subscription, its
/// date and the consent log stay as the first made them.
async fn a_second_link_for_a_confirmed_subscriber_changes_nothing(backend: Backend) {
    let store = store(backend).await;
    let (id, first) = pending(&store, "twice@example.com").await;
    let later = t0() + minutes(RESEND_WINDOW_MINUTES);
    store
        .signup(signup("twice@example.com", None, later))
        .await
        .unwrap();
    let links = confirmations_for(&store, id, later).await;
    assert_eq!(links.len(), 2);
    assert_eq!(links[0], first);
    let second = links[1];

    let confirmed_at = later + minutes(1);
    assert_eq!(
        store
            .confirm(first, Default::default(), confirmed_at)
            .await
            .unwrap(),
        ConfirmOutcome::Confirmed { subscriber_id: id }
    );
    assert_eq!(
        store
            .confirm(second, Default::default(), later + minutes(2))
            .await
            .unwrap(),
        ConfirmOutcome::Confirmed { subscriber_id: id },
        "an unused link of a confirmed subscriber still says confirmed"
    );
    assert_eq!(
        store
            .confirm(second, Default::default(), later + minutes(3))
            .await
            .unwrap(),
        ConfirmOutcome::AlreadyConfirmed { subscriber_id: id }
    );
    let record = subscriber(&store, id).await;
    assert_eq!(record.status, SubscriberStatus::Confirmed);
    assert_eq!(record.confirmed_at, Some(confirmed_at));
    assert_eq!(
        consent_kinds(&store, id).await,
        ["signup", "signup", "confirm"]
    );
}

async fn unsubscribing_twice_is_recorded_once(backend: Backend) {
    let store = store(backend).await;
    let id = add(&store, "leaving@example.com", SubscriberStatus::Confirmed).await;
    let at = t0() + minutes(1);
    assert_eq!(
        store
            .unsubscribe(id, consent("192.0.2.44", "Mail/1.0"), at)
            .await
            .unwrap(),
        UnsubscribeOutcome::Unsubscribed
    );
    assert_eq!(
        store
            .unsubscribe(id, Default::default(), t0() + minutes(2))
            .await
            .unwrap(),
        UnsubscribeOutcome::AlreadyUnsubscribed
    );
    assert_eq!(status_of(&store, id).await, SubscriberStatus::Unsubscribed);
    let log = events(&store, id).await;
    let kinds: Vec<&str> = log.iter().map(|event| event.kind.as_str()).collect();
    assert_eq!(kinds, ["operator_add", "unsubscribe"]);
    assert_eq!(log[1].occurred_at, at);
    assert_eq!(log[1].ip.as_deref(), Some("192.0.2.44"));
    assert_eq!(log[1].user_agent.as_deref(), Some("Mail/1.0"));

    assert_eq!(
        store
            .unsubscribe(id + 1, Default::default(), at)
            .await
            .unwrap(),
        UnsubscribeOutcome::Unknown
    );
    assert_eq!(subscribers(&store).await.len(), 1, "nothing made for it");
}

async fn anyone_on_the_list_can_unsubscribe(backend: Backend) {
    let store = store(backend).await;
    for status in [
        SubscriberStatus::Pending,
        SubscriberStatus::Confirmed,
        SubscriberStatus::Bounced,
    ] {
        let id = add(&store, &format!("{status}@example.com"), status).await;
        assert_eq!(
            store
                .unsubscribe(id, Default::default(), t0())
                .await
                .unwrap(),
            UnsubscribeOutcome::Unsubscribed,
            "{status}"
        );
        assert_eq!(status_of(&store, id).await, SubscriberStatus::Unsubscribed);
    }
}

async fn an_older_confirmation_link_cannot_undo_an_unsubscribe(backend: Backend) {
    let store = store(backend).await;
    let (id, old_link) = pending(&store, "changed-mind@example.com").await;
    store
        .unsubscribe(id, Default::default(), t0() + minutes(1))
        .await
        .unwrap();
    let outcome = store
        .confirm(old_link, Default::default(), t0() + minutes(2))
        .await
        .unwrap();
    assert_eq!(outcome, ConfirmOutcome::NoLongerSubscribed);
    assert_eq!(status_of(&store, id).await, SubscriberStatus::Unsubscribed);
    assert_eq!(
        store
            .confirmation_link(old_link, t0() + minutes(2))
            .await
            .unwrap(),
        ConfirmLink::Closed(ConfirmOutcome::NoLongerSubscribed)
    );
    assert_eq!(consent_kinds(&store, id).await, ["signup", "unsubscribe"]);

    // A new signup sends a new link, and that one works.
    let later = t0() + minutes(RESEND_WINDOW_MINUTES);
    store
        .signup(signup("changed-mind@example.com", None, later))
        .await
        .unwrap();
    let links = confirmations_for(&store, id, later).await;
    assert_eq!(links.len(), 2, "{links:?}");
    assert_eq!(
        store
            .confirm(links[1], Default::default(), later + minutes(1))
            .await
            .unwrap(),
        ConfirmOutcome::Confirmed { subscriber_id: id }
    );
    assert_eq!(status_of(&store, id).await, SubscriberStatus::Confirmed);
}

async fn the_operator_adds_subscribers_in_any_status(backend: Backend) {
    let store = store(backend).await;
    let mut added = Vec::new();
    for status in SubscriberStatus::ALL {
        let mut record = operator(
            &format!("{status}@example.com"),
            Some("Named"),
            status,
            t0(),
        );
        record.source = OperatorSource::Import;
        let AddOutcome::Added {
            id,
            confirmation_queued,
        } = store.add_subscriber(record).await.unwrap()
        else {
            panic!("{status} is new");
        };
        assert_eq!(
            confirmation_queued,
            status == SubscriberStatus::Pending,
            "{status}: only a pending record is asked to confirm"
        );
        added.push((status, id));
    }
    for (status, id) in &added {
        let record = subscriber(&store, *id).await;
        assert_eq!(record.status, *status);
        assert_eq!(record.name.as_deref(), Some("Named"));
        assert_eq!(record.created_at, t0());
        let expected = (*status == SubscriberStatus::Confirmed).then_some(t0());
        assert_eq!(record.confirmed_at, expected, "{status}");
        let log = events(&store, *id).await;
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(log[0].kind.as_str(), "operator_add");
        assert_eq!(log[0].occurred_at, t0());
        assert_eq!(
            log[0].detail.as_deref(),
            Some(format!("source=import status={status}").as_str())
        );
        assert_eq!(log[0].ip, None);
    }
    // One confirmation email, for the pending record.
    let claimed = claim(&store, "worker", t0(), 10).await;
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(claimed[0].subscriber_id, added[0].1);
    assert!(matches!(
        claimed[0].payload,
        DeliveryPayload::Confirmation { .. }
    ));
}

async fn an_address_already_on_the_list_is_not_added_again(backend: Backend) {
    let store = store(backend).await;
    let SignupOutcome::ConfirmationQueued { subscriber_id } = store
        .signup(signup("first@example.com", Some("First"), t0()))
        .await
        .unwrap()
    else {
        panic!("a new address");
    };
    for status in SubscriberStatus::ALL {
        let outcome = store
            .add_subscriber(operator(
                "FIRST@example.com",
                Some("Other"),
                status,
                t0() + minutes(1),
            ))
            .await
            .unwrap();
        assert_eq!(outcome, AddOutcome::AlreadyExists, "{status}");
    }
    let record = subscriber(&store, subscriber_id).await;
    assert_eq!(record.status, SubscriberStatus::Pending);
    assert_eq!(record.name.as_deref(), Some("First"));
    assert_eq!(consent_kinds(&store, subscriber_id).await, ["signup"]);
    assert_eq!(subscribers(&store).await.len(), 1);
    assert_eq!(store.delivery_counts().await.unwrap().pending, 1);
}

async fn a_batch_is_added_in_one_go_each_record_as_if_alone(backend: Backend) {
    let store = store(backend).await;
    let signed_up = add(&store, "listed@example.com", SubscriberStatus::Confirmed).await;
    let mut batch = vec![
        operator(
            "new@example.com",
            Some("New"),
            SubscriberStatus::Pending,
            t0(),
        ),
        operator("done@example.com", None, SubscriberStatus::Confirmed, t0()),
        // Twice in one file: the second finds the first, as it would alone.
        operator("NEW@example.com", None, SubscriberStatus::Confirmed, t0()),
        operator("listed@example.com", None, SubscriberStatus::Pending, t0()),
    ];
    for record in &mut batch {
        record.source = OperatorSource::Import;
    }
    let outcomes = store.add_subscribers(&batch).await.unwrap();
    assert!(
        matches!(
            outcomes[..],
            [
                AddOutcome::Added {
                    confirmation_queued: true,
                    ..
                },
                AddOutcome::Added {
                    confirmation_queued: false,
                    ..
                },
                AddOutcome::AlreadyExists,
                AddOutcome::AlreadyExists,
            ]
        ),
        "{outcomes:?}"
    );
    assert_eq!(
        status_of(&store, signed_up).await,
        SubscriberStatus::Confirmed
    );
    // The same batch again (an import run twice) adds and sends nothing.
    let again = store.add_subscribers(&batch).await.unwrap();
    assert!(
        again
            .iter()
            .all(|outcome| *outcome == AddOutcome::AlreadyExists),
        "{again:?}"
    );
    assert_eq!(subscribers(&store).await.len(), 3);
    assert_eq!(
        store.delivery_counts().await.unwrap().pending,
        1,
        "one email"
    );
    assert!(store.add_subscribers(&[]).await.unwrap().is_empty());
}

async fn subscribers_come_in_id_order_a_page_at_a_time(backend: Backend) {
    let store = store(backend).await;
    assert_eq!(
        store
            .bulk_insert_confirmed(25, "reader", "example.com", t0())
            .await
            .unwrap(),
        25
    );
    for n in 0..3 {
        store
            .signup(signup(&format!("pending{n}@example.com"), None, t0()))
            .await
            .unwrap();
    }
    // Already there: a second bulk insert adds only the new addresses.
    assert_eq!(
        store
            .bulk_insert_confirmed(27, "reader", "example.com", t0())
            .await
            .unwrap(),
        2
    );

    let page = |status, after, limit| SubscriberQuery {
        status,
        after,
        limit,
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let got = store
            .list_subscribers(page(Some(SubscriberStatus::Confirmed), after, 10))
            .await
            .unwrap();
        assert!(got.len() <= 10);
        assert!(got
            .iter()
            .all(|subscriber| subscriber.status == SubscriberStatus::Confirmed));
        let Some(last) = got.last() else { break };
        after = Some(last.id);
        seen.extend(got.iter().map(|subscriber| subscriber.id));
    }
    assert_eq!(seen.len(), 27);
    assert!(
        seen.windows(2).all(|pair| pair[0] < pair[1]),
        "ascending ids, none twice: {seen:?}"
    );
    let everyone = store
        .list_subscribers(page(None, None, 1000))
        .await
        .unwrap();
    assert_eq!(everyone.len(), 30);
    let emails: Vec<&str> = everyone.iter().map(|s| s.email.as_str()).collect();
    assert!(emails.contains(&"reader1@example.com"));
    assert!(emails.contains(&"reader27@example.com"));
    let pending = store
        .list_subscribers(page(Some(SubscriberStatus::Pending), None, 2))
        .await
        .unwrap();
    assert_eq!(pending.len(), 2, "the limit holds");
    let rest = store
        .list_subscribers(page(
            Some(SubscriberStatus::Pending),
            Some(pending[1].id),
            2,
        ))
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].email, "pending2@example.com");
    assert!(store
        .list_subscribers(page(Some(SubscriberStatus::Bounced), None, 10))
        .await
        .unwrap()
        .is_empty());
    let last = everyone.last().unwrap().id;
    assert!(store
        .list_subscribers(page(None, Some(last), 10))
        .await
        .unwrap()
        .is_empty());
}

async fn counts_cover_every_status(backend: Backend) {
    let store = store(backend).await;
    assert_eq!(
        store.subscriber_counts().await.unwrap(),
        SubscriberCounts::default(),
        "an empty list counts zeros"
    );
    for (n, status) in SubscriberStatus::ALL.into_iter().enumerate() {
        for k in 0..=n {
            add(&store, &format!("{status}{k}@example.com"), status).await;
        }
    }
    assert_eq!(
        store.subscriber_counts().await.unwrap(),
        SubscriberCounts {
            pending: 1,
            confirmed: 2,
            unsubscribed: 3,
            bounced: 4,
        }
    );
}
