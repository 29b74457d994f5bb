//! Signups: new addresses, groups, and addresses already on the list in
//! every status, with at most one confirmation email per window.

use tidings::domain::delivery::DeliveryPayload;
use tidings::domain::signup::SignupOutcome;
use tidings::domain::subscriber::SubscriberStatus;

use crate::on_both_backends;
use crate::support::{
    add, claim, confirmations_for, consent_kinds, events, minutes, signup, status_of, store,
    subscriber, subscribers, t0, Backend, TestStore, RESEND_WINDOW_MINUTES,
};

on_both_backends!(
    a_new_address_is_pending_with_one_confirmation_queued,
    a_group_answers_each_signup_as_if_it_were_alone,
    a_confirmed_address_gets_no_confirmation,
    one_confirmation_per_address_within_the_resend_window,
    a_signup_never_renames_a_pending_subscriber,
    a_signup_never_changes_an_unsubscribed_or_bounced_record,
);

async fn queued(store: &TestStore, request: tidings::domain::signup::SignupRequest) -> i64 {
    match store.signup(request).await.unwrap() {
        SignupOutcome::ConfirmationQueued { subscriber_id } => subscriber_id,
        other => panic!("expected a confirmation: {other:?}"),
    }
}

async fn a_new_address_is_pending_with_one_confirmation_queued(backend: Backend) {
    let store = store(backend).await;
    let id = queued(&store, signup("Ada@Example.com", Some("Ada"), t0())).await;

    let ada = subscriber(&store, id).await;
    assert_eq!(ada.email, "ada@example.com");
    assert_eq!(ada.name.as_deref(), Some("Ada"));
    assert_eq!(ada.status, SubscriberStatus::Pending);
    assert_eq!(ada.created_at, t0());
    assert_eq!(ada.confirmed_at, None);
    assert_eq!(store.subscriber_counts().await.unwrap().pending, 1);

    // The confirmation email is in the outbox, due at once.
    assert_eq!(store.delivery_counts().await.unwrap().pending, 1);
    assert!(
        claim(&store, "early", t0() - minutes(1), 10)
            .await
            .is_empty(),
        "not due before the signup"
    );
    let claimed = claim(&store, "worker", t0(), 10).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].subscriber_id, id);
    assert_eq!(claimed[0].email, "ada@example.com");
    assert_eq!(claimed[0].subscriber_status, SubscriberStatus::Pending);
    assert!(matches!(
        claimed[0].payload,
        DeliveryPayload::Confirmation { .. }
    ));

    let log = events(&store, id).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].kind.as_str(), "signup");
    assert_eq!(log[0].occurred_at, t0());
    assert_eq!(log[0].ip.as_deref(), Some("192.0.2.1"));
    assert_eq!(log[0].user_agent.as_deref(), Some("SignupTest/1.0"));
}

/// Signups that arrive together are written together (see
/// `tidings::signups`); each still gets the answer and the record it would
/// have had alone. Moved here from the HTTP suite.
async fn a_group_answers_each_signup_as_if_it_were_alone(backend: Backend) {
    let store = store(backend).await;
    let member = add(&store, "member@example.com", SubscriberStatus::Confirmed).await;
    let group = [
        signup("new@example.com", Some("First"), t0()),
        signup("member@example.com", None, t0()),
        signup("new@example.com", Some("Second"), t0()),
        signup("other@example.com", None, t0()),
    ];
    let outcomes = store.signup_group(&group).await.unwrap();
    assert_eq!(outcomes.len(), 4, "one outcome per request, in order");
    let SignupOutcome::ConfirmationQueued { subscriber_id: new } = outcomes[0] else {
        panic!("a new address gets a confirmation: {outcomes:?}");
    };
    assert_eq!(outcomes[1], SignupOutcome::AlreadyConfirmed);
    assert_eq!(
        outcomes[2],
        SignupOutcome::RecentlySent,
        "the same address twice in a group"
    );
    let SignupOutcome::ConfirmationQueued {
        subscriber_id: other,
    } = outcomes[3]
    else {
        panic!("another new address gets a confirmation: {outcomes:?}");
    };
    assert_ne!(new, other);
    assert_ne!(new, member);

    assert_eq!(
        subscriber(&store, new).await.name.as_deref(),
        Some("First"),
        "the record the first request made"
    );
    assert_eq!(subscribers(&store).await.len(), 3);
    assert_eq!(confirmations_for(&store, new, t0()).await.len(), 1);
    assert_eq!(confirmations_for(&store, other, t0()).await.len(), 1);
    assert_eq!(
        store.delivery_counts().await.unwrap().pending,
        2,
        "one email per new address, none for the member"
    );
    assert_eq!(consent_kinds(&store, new).await, ["signup"]);
    assert_eq!(consent_kinds(&store, member).await, ["operator_add"]);
}

async fn a_confirmed_address_gets_no_confirmation(backend: Backend) {
    let store = store(backend).await;
    let id = add(&store, "known@example.com", SubscriberStatus::Confirmed).await;
    for later in [0, 60, 60 * 24 * 30] {
        let outcome = store
            .signup(signup(
                "known@example.com",
                Some("Someone Else"),
                t0() + minutes(later),
            ))
            .await
            .unwrap();
        assert_eq!(outcome, SignupOutcome::AlreadyConfirmed);
    }
    let known = subscriber(&store, id).await;
    assert_eq!(known.status, SubscriberStatus::Confirmed);
    assert_eq!(known.name, None, "a signup never renames a member");
    assert_eq!(store.delivery_counts().await.unwrap().total(), 0);
    assert_eq!(consent_kinds(&store, id).await, ["operator_add"]);
}

async fn one_confirmation_per_address_within_the_resend_window(backend: Backend) {
    let store = store(backend).await;
    let id = queued(&store, signup("eager@example.com", None, t0())).await;
    let window = minutes(RESEND_WINDOW_MINUTES);
    let just_inside = t0() + window - chrono::Duration::seconds(1);
    for at in [t0(), t0() + minutes(1), just_inside] {
        let outcome = store
            .signup(signup("eager@example.com", None, at))
            .await
            .unwrap();
        assert_eq!(outcome, SignupOutcome::RecentlySent, "at {at}");
    }
    assert_eq!(store.delivery_counts().await.unwrap().pending, 1);
    assert_eq!(consent_kinds(&store, id).await, ["signup"]);

    // The window counts from the last email sent, not from the first.
    let after = t0() + window;
    assert_eq!(
        queued(&store, signup("eager@example.com", None, after)).await,
        id
    );
    let outcome = store
        .signup(signup("eager@example.com", None, after + minutes(5)))
        .await
        .unwrap();
    assert_eq!(outcome, SignupOutcome::RecentlySent);
    assert_eq!(
        confirmations_for(&store, id, after).await.len(),
        2,
        "a fresh link after the window"
    );
    assert_eq!(consent_kinds(&store, id).await, ["signup", "signup"]);
    assert_eq!(status_of(&store, id).await, SubscriberStatus::Pending);
}

/// The name from the first signup stands: a later signup, with another
/// name or none, inside the window or after it, never changes the record.
async fn a_signup_never_renames_a_pending_subscriber(backend: Backend) {
    let store = store(backend).await;
    let id = queued(&store, signup("ada@example.com", Some("Ada"), t0())).await;
    let later = t0() + minutes(RESEND_WINDOW_MINUTES);
    // After the window a fresh link goes out, but the name stays.
    queued(&store, signup("ada@example.com", Some("Mallory"), later)).await;
    let latest = later + minutes(RESEND_WINDOW_MINUTES);
    queued(&store, signup("ada@example.com", None, latest)).await;
    let outcome = store
        .signup(signup("ada@example.com", Some("Eve"), latest))
        .await
        .unwrap();
    assert_eq!(outcome, SignupOutcome::RecentlySent);
    let record = subscriber(&store, id).await;
    assert_eq!(record.name.as_deref(), Some("Ada"));
    assert_eq!(record.created_at, t0());
    assert_eq!(record.status, SubscriberStatus::Pending);
    // The person's own link confirms the record as they made it.
    let links = confirmations_for(&store, id, latest).await;
    assert_eq!(links.len(), 3);
    let at = latest + minutes(1);
    store
        .confirm(links[2], Default::default(), at)
        .await
        .unwrap();
    let record = subscriber(&store, id).await;
    assert_eq!(record.status, SubscriberStatus::Confirmed);
    assert_eq!(record.name.as_deref(), Some("Ada"));
}

/// Only the person, through their own link, can change their record: a
/// stranger who signs up a former subscriber's address changes nothing.
async fn a_signup_never_changes_an_unsubscribed_or_bounced_record(backend: Backend) {
    let store = store(backend).await;
    for status in [SubscriberStatus::Unsubscribed, SubscriberStatus::Bounced] {
        let address = format!("{status}@example.com");
        let id = match store
            .add_subscriber(crate::support::operator(
                &address,
                Some("Original"),
                status,
                t0(),
            ))
            .await
            .unwrap()
        {
            tidings::domain::subscriber::AddOutcome::Added {
                id,
                confirmation_queued,
            } => {
                assert!(!confirmation_queued);
                id
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            queued(&store, signup(&address, Some("Stranger"), t0())).await,
            id
        );
        let record = subscriber(&store, id).await;
        assert_eq!(
            record.status, status,
            "unchanged until the link is followed"
        );
        assert_eq!(record.name.as_deref(), Some("Original"));
        assert_eq!(consent_kinds(&store, id).await, ["operator_add", "signup"]);
        // One email per window for them too.
        let outcome = store
            .signup(signup(&address, None, t0() + minutes(1)))
            .await
            .unwrap();
        assert_eq!(outcome, SignupOutcome::RecentlySent);

        // Following the emailed link is what brings them back.
        let confirmations = confirmations_for(&store, id, t0()).await;
        assert_eq!(confirmations.len(), 1, "{status}");
        let outcome = store
            .confirm(confirmations[0], Default::default(), t0() + minutes(2))
            .await
            .unwrap();
        assert_eq!(
            outcome,
            tidings::domain::signup::ConfirmOutcome::Confirmed { subscriber_id: id }
        );
        assert_eq!(status_of(&store, id).await, SubscriberStatus::Confirmed);
    }
}
