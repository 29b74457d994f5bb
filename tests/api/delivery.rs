//! The weekly issue: who gets it, what it looks like, and what happens when
//! the SMTP server says no.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{
    free_port, spawn_app, spawn_with, Backend, Deliveries, MailServer, Options, Reply, TestApp,
};
use crate::on_both_backends;

on_both_backends!(
    an_issue_goes_to_every_confirmed_subscriber_and_nobody_else,
    issue_emails_carry_the_list_headers_and_footer,
    every_recipient_of_every_issue_gets_its_own_message_id,
    the_unsubscribe_link_in_an_issue_works,
    unsubscribing_before_the_send_gives_skipped,
    a_4xx_is_retried_and_then_delivered,
    a_dropped_connection_is_retried_with_the_same_message_id,
    a_5xx_fails_and_three_bounces_mark_the_subscriber,
    a_4xx_is_not_retried_forever,
    sequence_mode_starts_late_joiners_at_tip_one,
    sigterm_drains_the_sends_in_flight,
    an_unreachable_server_costs_no_delivery_an_attempt,
    subjects_and_names_stay_text_in_the_headers,
);

async fn status_of(app: &TestApp, email: &str) -> String {
    app.status_of(email)
        .await
        .unwrap_or_else(|| panic!("{email} is not listed"))
}

/// Waits until the SMTP server has seen `count` attempts for `recipient`.
async fn wait_for_attempts(app: &TestApp, recipient: &str, count: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while app.mail.attempts_for(recipient) < count {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 20 s for {count} attempts to {recipient}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn an_issue_goes_to_every_confirmed_subscriber_and_nobody_else(backend: Backend) {
    let app = spawn_app(backend).await;
    app.subscribe_and_confirm("one@example.com").await;
    app.subscribe_and_confirm("two@example.com").await;
    app.subscribe_and_confirm("gone@example.com").await;
    // "gone" leaves through the link in last week's issue.
    let link = app.unsubscribe_link("gone@example.com").await;
    assert_eq!(app.client.post(link).send().await.unwrap().status(), 200);
    let response = app
        .subscribe_json(serde_json::json!({ "email": "waiting@example.com" }))
        .await;
    assert_eq!(response.status(), 202);
    app.wait_until_idle().await;
    let before = app.mail.received().len();

    app.enqueue("This week's tip", "Do the thing.").await;
    let response = app.send_now().await;
    assert_eq!(response.status(), 202);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["recipients"], 2);
    // Idle: every email the app will send has been answered, so what has
    // arrived is all that will.
    app.wait_until_idle().await;
    let issues: Vec<_> = app.mail.received()[before..].to_vec();
    let mut recipients: Vec<String> = issues.iter().map(|mail| mail.to[0].clone()).collect();
    recipients.sort();
    assert_eq!(recipients, ["one@example.com", "two@example.com"]);
    assert!(issues
        .iter()
        .all(|mail| mail.subject() == "This week's tip"));
}

async fn issue_emails_carry_the_list_headers_and_footer(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .subscribe_json(serde_json::json!({ "email": "reader@example.com", "name": "Rosa" }))
        .await;
    assert_eq!(response.status(), 202);
    let confirmation = app.mail.wait_for("reader@example.com", 1).await.remove(0);
    let link = confirmation
        .link("http://")
        .replace(&app.settings.newsletter.base_url, &app.address);
    assert_eq!(app.confirm(&link).await.status(), 200);
    app.enqueue(
        "Headers matter",
        "## A heading\n\n- one\n- two\n\nA [link](https://example.org).",
    )
    .await;
    app.send_now().await;
    let mail = app.mail.wait_for("reader@example.com", 2).await.remove(1);

    let message_id = mail.header("Message-ID").unwrap();
    let inner = message_id.trim_start_matches('<').trim_end_matches('>');
    let (uuid, domain) = inner.split_once('@').unwrap();
    assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{message_id}");
    assert_eq!(domain, "localhost", "the From address's domain");
    assert!(mail.header("Date").is_some());
    assert!(mail
        .header("List-Id")
        .unwrap()
        .contains("<partnership-pitfalls-weekly.localhost>"));
    let unsubscribe = mail.header("List-Unsubscribe").unwrap();
    assert!(
        unsubscribe.starts_with("<http://127.0.0.1:8080/unsubscribe?token="),
        "{unsubscribe}"
    );
    assert!(unsubscribe.ends_with('>'));
    assert_eq!(
        mail.header("List-Unsubscribe-Post").unwrap(),
        "List-Unsubscribe=One-Click"
    );
    assert!(mail
        .header("Content-Type")
        .unwrap()
        .contains("multipart/alternative"));

    let text = mail.text();
    assert!(text.contains("Hi Rosa,"));
    assert!(text.contains("Issue #1"));
    assert!(text.contains("A heading\n---------"), "{text}");
    assert!(text.contains("- one"));
    assert!(text.contains("link (https://example.org)"));
    assert!(text.contains("Unsubscribe: http://127.0.0.1:8080/unsubscribe?token="));
    assert!(text.contains("1 Test Street, Testville"));
    assert!(!text.contains("<p"), "the text part is not HTML");
    let html = mail.html();
    assert!(html.contains("<h2 style="));
    assert!(html.contains("Unsubscribe</a>"));
    assert!(html.contains("1 Test Street, Testville"));
}

/// Fan-out makes issue Message-IDs inside the database, from one random
/// UUID per issue; each must still be a UUID, and no two alike.
async fn every_recipient_of_every_issue_gets_its_own_message_id(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_confirmed(20).await;
    app.enqueue("First", "One.").await;
    app.enqueue("Second", "Two.").await;
    assert_eq!(app.send_now().await.status(), 202);
    app.mail.wait_for_total(20).await;
    assert_eq!(app.send_now().await.status(), 202);
    let mails = app.mail.wait_for_total(40).await;

    let mut seen = std::collections::HashSet::new();
    for mail in &mails {
        let message_id = mail.header("Message-ID").unwrap();
        let inner = message_id.trim_start_matches('<').trim_end_matches('>');
        let (uuid, domain) = inner.split_once('@').unwrap();
        assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{message_id}");
        assert_eq!(domain, "localhost");
        assert!(seen.insert(message_id.clone()), "{message_id} twice");
    }
    assert_eq!(seen.len(), 40);
}

async fn the_unsubscribe_link_in_an_issue_works(backend: Backend) {
    let app = spawn_app(backend).await;
    app.subscribe_and_confirm("clicker@example.com").await;
    app.enqueue("Tip", "Body").await;
    app.send_now().await;
    let mail = app.mail.wait_for("clicker@example.com", 2).await.remove(1);
    let visible = mail.link("http://127.0.0.1:8080/unsubscribe");
    let local = visible.replace(&app.settings.newsletter.base_url, &app.address);
    let page = app.client.get(&local).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(status_of(&app, "clicker@example.com").await, "confirmed");
    let done = app.client.post(&local).send().await.unwrap();
    assert_eq!(done.status(), 200);
    assert_eq!(status_of(&app, "clicker@example.com").await, "unsubscribed");
}

async fn unsubscribing_before_the_send_gives_skipped(backend: Backend) {
    // A retry waits an hour, so the issue exists and is waiting for it
    // when the reader leaves.
    let app = spawn_with(Options::new(backend), |settings| {
        settings.smtp.retry_base = Duration::from_secs(3600);
    })
    .await;
    app.add_confirmed(2).await;
    let link = app.unsubscribe_link("reader1@example.com").await;
    app.wait_until_idle().await;
    app.mail
        .fail_next("reader1@example.com", &[Reply::Temporary]);
    app.enqueue("Tip", "Body").await;
    assert_eq!(app.send_now().await.status(), 202);
    // reader1's first try got a 451 and is back in the outbox; reader2 has
    // the issue.
    wait_for_attempts(&app, "reader1@example.com", 2).await;
    app.mail.wait_for("reader2@example.com", 2).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let deliveries = app.deliveries().await;
        if deliveries.pending == 1 && deliveries.sending == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{deliveries:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.client.post(link).send().await.unwrap().status(), 200);

    app.clock.advance(chrono::Duration::hours(2));
    app.wait_until_idle().await;
    assert_eq!(
        app.deliveries().await,
        Deliveries {
            sent: 3,
            skipped: 1,
            ..Default::default()
        }
    );
    assert_eq!(
        app.mail.attempts_for("reader1@example.com"),
        2,
        "no third try"
    );
    assert_eq!(app.mail.received_by("reader1@example.com").len(), 1);
    assert_eq!(app.mail.received_by("reader2@example.com").len(), 2);
}

async fn a_4xx_is_retried_and_then_delivered(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_confirmed(1).await;
    app.mail
        .fail_next("reader1@example.com", &[Reply::Temporary, Reply::Temporary]);
    app.enqueue("Tip", "Body").await;
    app.send_now().await;
    // After each refusal, skip the backoff instead of sleeping through it.
    for attempts in 1..=2 {
        wait_for_attempts(&app, "reader1@example.com", attempts).await;
        app.clock.advance(chrono::Duration::minutes(10));
    }
    app.mail.wait_for("reader1@example.com", 1).await;
    app.wait_until_idle().await;
    assert_eq!(
        app.mail.received_by("reader1@example.com").len(),
        1,
        "delivered once"
    );
    assert_eq!(app.mail.attempts_for("reader1@example.com"), 3);
    assert_eq!(
        app.deliveries().await,
        Deliveries {
            sent: 1,
            ..Default::default()
        }
    );
}

async fn a_dropped_connection_is_retried_with_the_same_message_id(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_confirmed(1).await;
    app.mail.fail_next("reader1@example.com", &[Reply::HangUp]);
    app.enqueue("Tip", "Body").await;
    app.send_now().await;
    wait_for_attempts(&app, "reader1@example.com", 1).await;
    app.clock.advance(chrono::Duration::minutes(10));
    app.mail.wait_for("reader1@example.com", 1).await;
    app.wait_until_idle().await;
    assert_eq!(app.deliveries().await.sent, 1);
    let attempts = app.mail.attempted_by("reader1@example.com");
    assert_eq!(attempts.len(), 2);
    let first = attempts[0].header("Message-ID").unwrap();
    assert_eq!(first, attempts[1].header("Message-ID").unwrap());
}

async fn a_5xx_fails_and_three_bounces_mark_the_subscriber(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_confirmed(2).await;
    app.mail.fail_next(
        "reader1@example.com",
        &[Reply::Permanent, Reply::Permanent, Reply::Permanent],
    );
    for week in 1..=3 {
        app.enqueue(&format!("Week {week}"), "Body").await;
        assert_eq!(app.send_now().await.status(), 202);
        app.wait_until_idle().await;
        let expected = if week < 3 { "confirmed" } else { "bounced" };
        assert_eq!(
            status_of(&app, "reader1@example.com").await,
            expected,
            "week {week}"
        );
    }
    assert_eq!(
        app.mail.attempts_for("reader1@example.com"),
        3,
        "a 5xx is never retried"
    );
    let deliveries = app.deliveries().await;
    assert_eq!(
        (deliveries.failed, deliveries.sent),
        (3, 3),
        "{deliveries:?}"
    );
    // The consent log says once why they stopped getting email, with the
    // server's own words.
    let events = app.consent_log("reader1@example.com").await;
    let bounces: Vec<_> = events
        .iter()
        .filter(|event| event["kind"] == "bounced")
        .collect();
    assert_eq!(bounces.len(), 1, "{events:?}");
    let detail = bounces[0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("after 3 hard bounces; last: ") && detail.contains("550"),
        "{detail}"
    );
    // A bounced subscriber is not sent the next issue.
    app.enqueue("Week 4", "Body").await;
    let created: Value = app.send_now().await.json().await.unwrap();
    assert_eq!(created["recipients"], 1);
}

async fn a_4xx_is_not_retried_forever(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_confirmed(1).await;
    app.mail
        .fail_next("reader1@example.com", &[Reply::Temporary; 10]);
    app.enqueue("Tip", "Body").await;
    app.send_now().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let deliveries = app.deliveries().await;
        if deliveries.failed == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{deliveries:?}");
        app.clock.advance(chrono::Duration::hours(2));
        app.state.newsletter.wake_worker();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.mail.attempts_for("reader1@example.com"),
        4,
        "smtp.max_attempts"
    );
    assert_eq!(
        status_of(&app, "reader1@example.com").await,
        "confirmed",
        "a 4xx is no bounce"
    );
}

async fn sequence_mode_starts_late_joiners_at_tip_one(backend: Backend) {
    let mut options = Options::new(backend);
    options.seed = true;
    let app = spawn_with(options, |settings| {
        settings.schedule.mode = tidings::config::ScheduleMode::Sequence;
    })
    .await;
    app.subscribe_and_confirm("early@example.com").await;
    for _ in 0..2 {
        assert_eq!(app.send_now().await.status(), 202);
        app.wait_until_idle().await;
    }
    app.subscribe_and_confirm("late@example.com").await;
    assert_eq!(app.send_now().await.status(), 202);
    app.wait_until_idle().await;

    let tips = |email: &str| -> Vec<String> {
        app.mail
            .received_by(email)
            .iter()
            .skip(1) // the confirmation
            .map(|mail| mail.subject())
            .collect()
    };
    let early = tips("early@example.com");
    assert_eq!(early.len(), 3);
    assert!(early[0].starts_with("Pitfall 1 of 10"));
    assert!(early[1].starts_with("Pitfall 2 of 10"));
    assert!(early[2].starts_with("Pitfall 3 of 10"));
    let late = tips("late@example.com");
    assert_eq!(late.len(), 1);
    assert!(late[0].starts_with("Pitfall 1 of 10"), "{late:?}");
    let late_mail = &app.mail.received_by("late@example.com")[1];
    assert!(late_mail.text().contains("Issue #1"));
}

async fn sigterm_drains_the_sends_in_flight(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_confirmed(40).await;
    app.enqueue("Tip", "Body").await;
    app.send_now().await;
    app.mail.wait_for_total(1).await;
    let store = app.state.store().clone();
    let mail = app.mail.clone();
    let _database = app.stop().await;
    // Whatever the server accepted is recorded as sent; nothing is left leased.
    let counts = store.delivery_counts().await.unwrap();
    assert_eq!(counts.sending, 0, "{counts:?}");
    assert_eq!(counts.sent as usize, mail.received().len(), "{counts:?}");
}

async fn an_unreachable_server_costs_no_delivery_an_attempt(backend: Backend) {
    let port = free_port();
    let mut options = Options::new(backend);
    options.smtp_port = Some(port);
    let app = spawn_with(options, |settings| settings.smtp.max_attempts = 2).await;
    app.add_confirmed(5).await;
    app.enqueue("Tip", "Body").await;
    assert_eq!(app.send_now().await.status(), 202);
    // Several connection failures in a row: with only two attempts each,
    // every delivery would have failed if the outage counted against them.
    app.wait_for_transient_failures(4).await;
    let deliveries = app.deliveries().await;
    assert_eq!(deliveries.failed, 0, "{deliveries:?}");

    let server = MailServer::start_on(port);
    server.wait_for_total(5).await;
    app.wait_until_idle().await;
    assert_eq!(
        app.deliveries().await,
        Deliveries {
            sent: 5,
            ..Default::default()
        }
    );
    assert_eq!(server.received().len(), 5);
}

/// A subject holding a literal encoded-word arrives as that text, with no
/// header smuggled in; a name that cannot be a display name is left out of
/// `To`, and one that needs quoting is quoted.
async fn subjects_and_names_stay_text_in_the_headers(backend: Backend) {
    use tidings::domain::subscriber::{
        EmailAddress, OperatorSource, SubscriberName, SubscriberStatus,
    };
    let app = spawn_app(backend).await;
    for (email, name) in [
        ("dot@example.com", "."),
        ("quoted@example.com", "J. \"Jo\" Smith, Esq."),
        ("plain@example.com", "Ana"),
        ("accent@example.com", "Zoë"),
    ] {
        app.state
            .newsletter
            .add_subscriber(
                EmailAddress::parse(email).unwrap(),
                SubscriberName::parse_optional(Some(name)).unwrap(),
                SubscriberStatus::Confirmed,
                OperatorSource::Cli,
            )
            .await
            .unwrap();
    }
    let subject = "=?utf-8?q?=0D=0ABcc:evil@example.com?=";
    app.enqueue(subject, "Body.").await;
    assert_eq!(app.send_now().await.status(), 202);
    let mails = app.mail.wait_for_total(4).await;
    assert!(mails
        .iter()
        .all(|mail| !mail.to.iter().any(|to| to.contains("evil"))));
    for (email, display) in [
        ("dot@example.com", None),
        ("quoted@example.com", Some("J. \"Jo\" Smith, Esq.")),
        ("plain@example.com", Some("Ana")),
        ("accent@example.com", Some("Zoë")),
    ] {
        let mail = &app.mail.received_by(email)[0];
        assert_eq!(mail.subject(), subject, "the subject is text");
        let raw = String::from_utf8_lossy(&mail.data).to_string();
        let head = raw.split("\r\n\r\n").next().unwrap();
        assert!(!head.to_ascii_lowercase().contains("\r\nbcc:"), "{head}");
        assert!(mail.parsed().bcc().is_none(), "{head}");
        assert!(
            head.contains("Subject: =?utf-8?q?"),
            "a subject that looks like an encoded-word goes out encoded: {head}"
        );
        let parsed = mail.parsed();
        let to = parsed.to().unwrap().first().unwrap();
        assert_eq!(to.address.as_deref(), Some(email));
        assert_eq!(to.name.as_deref(), display, "{head}");
        let raw_to = mail.header("To").unwrap();
        match email {
            "dot@example.com" => assert_eq!(raw_to, "dot@example.com"),
            "quoted@example.com" => {
                assert_eq!(raw_to, "\"J. \\\"Jo\\\" Smith, Esq.\" <quoted@example.com>")
            }
            "plain@example.com" => assert_eq!(raw_to, "Ana <plain@example.com>"),
            _ => assert_eq!(raw_to, "=?utf-8?q?Zo=C3=AB?= <accent@example.com>"),
        }
    }
}
