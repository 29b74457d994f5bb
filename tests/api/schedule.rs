//! The scheduler, driven by hand with chosen instants: no test sleeps a week.

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tidings::schedule::{Scheduler, TickOutcome};

use crate::helpers::{spawn_with, Backend, Options, TestApp};
use crate::on_both_backends;

on_both_backends!(
    a_dst_fall_back_slot_that_fires_twice_is_one_issue,
    a_missed_slot_is_caught_up_once_not_in_a_burst,
    slots_older_than_the_catch_up_window_are_skipped,
    an_empty_queue_at_a_tick_sends_nothing,
    a_tick_sends_the_next_post_to_confirmed_subscribers,
);

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

async fn app_with_schedule(backend: Backend, cron: &str, timezone: &str) -> TestApp {
    let (cron, timezone) = (cron.to_owned(), timezone.to_owned());
    spawn_with(Options::new(backend), move |settings| {
        settings.schedule.cron = cron::Schedule::from_str(&cron).unwrap();
        settings.schedule.timezone = timezone.parse().unwrap();
    })
    .await
}

/// A second scheduler over the same database, as after a restart or on
/// another instance.
fn another_scheduler(app: &TestApp) -> Arc<Scheduler> {
    Arc::new(Scheduler::new(
        app.state.newsletter.clone(),
        app.settings.schedule.clone(),
    ))
}

/// Issues sent so far: in broadcast mode, the posts `/api/admin/stats`
/// counts as sent.
async fn issue_count(app: &TestApp) -> i64 {
    app.stats().await["posts"]["sent"].as_i64().unwrap()
}

async fn a_dst_fall_back_slot_that_fires_twice_is_one_issue(backend: Backend) {
    let app = app_with_schedule(backend, "0 30 1 * * Sun", "America/New_York").await;
    app.add_confirmed(1).await;
    app.enqueue("One", "Body").await;
    app.enqueue("Two", "Body").await;
    // 2037-11-01 01:30 happens at 05:30 UTC (EDT) and again at 06:30 UTC (EST).
    let first = app
        .state
        .scheduler
        .tick(at("2037-11-01T05:30:05Z"))
        .await
        .unwrap();
    assert!(matches!(first, TickOutcome::Created { .. }), "{first:?}");
    let second = app
        .state
        .scheduler
        .tick(at("2037-11-01T06:30:05Z"))
        .await
        .unwrap();
    assert!(
        matches!(second, TickOutcome::AlreadyDone { .. } | TickOutcome::Idle),
        "{second:?}"
    );
    let restarted = another_scheduler(&app);
    let third = restarted.tick(at("2037-11-01T06:30:05Z")).await.unwrap();
    assert!(
        matches!(third, TickOutcome::AlreadyDone { .. }),
        "{third:?}"
    );
    assert_eq!(
        issue_count(&app).await,
        1,
        "one issue for the repeated hour"
    );
}

async fn a_missed_slot_is_caught_up_once_not_in_a_burst(backend: Backend) {
    // Hourly slots; the daemon was down from 06:10 to 09:20 (slots 07, 08, 09).
    let app = app_with_schedule(backend, "0 0 * * * *", "UTC").await;
    app.add_confirmed(2).await;
    for n in 1..=5 {
        app.enqueue(&format!("Post {n}"), "Body").await;
    }
    // Deliveries are due at the tick's time, so the app lives then too.
    app.travel_to(at("2037-11-23T09:20:00Z"));
    let scheduler = another_scheduler(&app);
    let outcome = scheduler.tick(at("2037-11-23T09:20:00Z")).await.unwrap();
    match outcome {
        TickOutcome::Created {
            slot_key,
            recipients,
            ..
        } => {
            assert_eq!(slot_key, "2037-11-23T09:00:00 UTC");
            assert_eq!(recipients, 2);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        scheduler.tick(at("2037-11-23T09:20:01Z")).await.unwrap(),
        TickOutcome::Idle
    );
    let again = another_scheduler(&app)
        .tick(at("2037-11-23T09:21:00Z"))
        .await
        .unwrap();
    assert!(
        matches!(again, TickOutcome::AlreadyDone { .. }),
        "{again:?}"
    );
    assert_eq!(issue_count(&app).await, 1, "one catch-up send, not three");
    app.wait_until_idle().await;
    assert_eq!(app.deliveries().await.sent, 2);
    assert_eq!(app.mail.received().len(), 2);
}

async fn slots_older_than_the_catch_up_window_are_skipped(backend: Backend) {
    let app = app_with_schedule(backend, "0 0 9 * * Mon", "UTC").await;
    app.add_confirmed(1).await;
    app.enqueue("Post", "Body").await;
    let outcome = another_scheduler(&app)
        .tick(at("2037-11-23T15:00:01Z"))
        .await
        .unwrap();
    assert!(
        matches!(outcome, TickOutcome::TooLate { .. }),
        "{outcome:?}"
    );
    assert_eq!(issue_count(&app).await, 0);
    let in_window = another_scheduler(&app)
        .tick(at("2037-11-23T14:59:59Z"))
        .await
        .unwrap();
    assert!(
        matches!(in_window, TickOutcome::Created { .. }),
        "{in_window:?}"
    );
}

async fn an_empty_queue_at_a_tick_sends_nothing(backend: Backend) {
    let app = app_with_schedule(backend, "0 0 9 * * Mon", "UTC").await;
    app.add_confirmed(3).await;
    let outcome = app
        .state
        .scheduler
        .tick(at("2037-11-23T09:00:00Z"))
        .await
        .unwrap();
    assert!(
        matches!(outcome, TickOutcome::NothingToSend { .. }),
        "{outcome:?}"
    );
    assert_eq!(app.deliveries().await.total(), 0);
    assert_eq!(issue_count(&app).await, 0);
}

async fn a_tick_sends_the_next_post_to_confirmed_subscribers(backend: Backend) {
    let app = app_with_schedule(backend, "0 0 9 * * Mon", "Europe/Berlin").await;
    app.add_confirmed(3).await;
    app.enqueue("First in line", "Body").await;
    app.enqueue("Second in line", "Body").await;
    // 09:00 in Berlin on 23 November is 08:00 UTC.
    let early = app
        .state
        .scheduler
        .tick(at("2037-11-23T07:59:59Z"))
        .await
        .unwrap();
    assert!(
        matches!(early, TickOutcome::TooLate { .. }),
        "last Monday's slot is outside the window: {early:?}"
    );
    app.travel_to(at("2037-11-23T08:00:00Z"));
    let outcome = app
        .state
        .scheduler
        .tick(at("2037-11-23T08:00:00Z"))
        .await
        .unwrap();
    assert!(
        matches!(outcome, TickOutcome::Created { recipients: 3, .. }),
        "{outcome:?}"
    );
    app.mail.wait_for_total(3).await;
    app.wait_until_idle().await;
    assert!(app
        .mail
        .received()
        .iter()
        .all(|mail| mail.subject() == "First in line"));
    let posts: Vec<serde_json::Value> = app
        .admin(reqwest::Method::GET, "/api/admin/posts")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(posts[0]["status"], "sent");
    assert_eq!(posts[1]["status"], "queued");
}
