//! The consent log: every kind of event, oldest first, each with who,
//! when, from where and, where it has one, why.

use tidings::domain::consent::ConsentKind;
use tidings::domain::signup::SignupOutcome;
use tidings::domain::subscriber::SubscriberStatus;

use crate::on_both_backends;
use crate::support::{
    add, broadcast, claim, confirmations_for, consent, enqueue, events, hard_bounce, minutes,
    signup, store, t0, Backend, RESEND_WINDOW_MINUTES,
};

on_both_backends!(
    a_subscribers_log_keeps_each_step_in_order,
    bounces_are_logged_once_with_why
);

async fn a_subscribers_log_keeps_each_step_in_order(backend: Backend) {
    let store = store(backend).await;
    let mut request = signup("evidence@example.com", None, t0());
    request.consent = consent("192.0.2.10", "Signup/1.0");
    let SignupOutcome::ConfirmationQueued { subscriber_id: id } =
        store.signup(request).await.unwrap()
    else {
        panic!("a new address");
    };
    // Someone else's steps are never in this log.
    let neighbour = add(&store, "neighbour@example.com", SubscriberStatus::Confirmed).await;

    let link = confirmations_for(&store, id, t0()).await[0];
    store
        .confirm(
            link,
            consent("192.0.2.11", "Confirm/2.0"),
            t0() + minutes(1),
        )
        .await
        .unwrap();
    store
        .unsubscribe(
            id,
            consent("192.0.2.12", "Unsubscribe/3.0"),
            t0() + minutes(2),
        )
        .await
        .unwrap();
    let back = t0() + minutes(RESEND_WINDOW_MINUTES);
    let mut request = signup("evidence@example.com", None, back);
    request.consent = consent("192.0.2.13", "Signup/4.0");
    store.signup(request).await.unwrap();
    let links = confirmations_for(&store, id, back).await;
    store
        .confirm(
            links[1],
            consent("192.0.2.14", "Confirm/5.0"),
            back + minutes(1),
        )
        .await
        .unwrap();

    let log = events(&store, id).await;
    let rows: Vec<(ConsentKind, chrono::DateTime<chrono::Utc>, &str, &str)> = log
        .iter()
        .map(|event| {
            (
                event.kind,
                event.occurred_at,
                event.ip.as_deref().unwrap(),
                event.user_agent.as_deref().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (ConsentKind::Signup, t0(), "192.0.2.10", "Signup/1.0"),
            (
                ConsentKind::Confirm,
                t0() + minutes(1),
                "192.0.2.11",
                "Confirm/2.0"
            ),
            (
                ConsentKind::Unsubscribe,
                t0() + minutes(2),
                "192.0.2.12",
                "Unsubscribe/3.0"
            ),
            (ConsentKind::Signup, back, "192.0.2.13", "Signup/4.0"),
            (
                ConsentKind::Confirm,
                back + minutes(1),
                "192.0.2.14",
                "Confirm/5.0"
            ),
        ]
    );
    assert!(log.iter().all(|event| event.detail.is_none()), "{log:?}");
    let theirs = events(&store, neighbour).await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].kind, ConsentKind::OperatorAdd);
    assert_eq!(
        theirs[0].detail.as_deref(),
        Some("source=cli status=confirmed")
    );
    assert!(events(&store, 999_999).await.is_empty());
}

async fn bounces_are_logged_once_with_why(backend: Backend) {
    let store = store(backend).await;
    let id = add(&store, "gone@example.com", SubscriberStatus::Confirmed).await;
    for week in 1..=4 {
        enqueue(&store, &format!("Week {week}")).await;
    }
    // Three issues at once, and three hard bounces in one group.
    for week in 1..=3 {
        broadcast(&store, &format!("week-{week}"), t0()).await;
    }
    let claimed = claim(&store, "worker", t0(), 10).await;
    assert_eq!(claimed.len(), 3);
    let at = t0() + minutes(1);
    let outcomes: Vec<_> = claimed
        .iter()
        .map(|delivery| hard_bounce(delivery, at))
        .collect();
    assert_eq!(store.record_outcomes("worker", &outcomes).await.unwrap(), 3);

    let log = events(&store, id).await;
    let bounced: Vec<_> = log
        .iter()
        .filter(|event| event.kind == ConsentKind::Bounced)
        .collect();
    assert_eq!(bounced.len(), 1, "{log:?}");
    assert_eq!(bounced[0].occurred_at, at);
    assert_eq!(
        bounced[0].detail.as_deref(),
        Some("after 3 hard bounces; last: 550 5.1.1 No such user")
    );
    assert_eq!(bounced[0].ip, None);
    assert_eq!(log.last().unwrap().kind, ConsentKind::Bounced);
}
