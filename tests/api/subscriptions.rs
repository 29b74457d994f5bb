use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{free_port, spawn_app, spawn_with, Backend, MailServer, Options};
use crate::on_both_backends;

on_both_backends!(
    signup_page_invites_people_to_subscribe,
    the_whole_journey_from_signup_to_one_click_unsubscribe,
    invalid_addresses_get_422_with_a_message,
    a_too_long_name_or_unreadable_body_gets_422,
    the_honeypot_accepts_and_stores_nothing,
    an_address_gets_one_confirmation_per_window,
    too_many_signups_from_one_ip_get_429,
    a_confirmed_address_gets_202_and_no_email,
    resubscribing_goes_through_double_opt_in_again,
    an_smtp_outage_delays_the_confirmation_but_never_loses_it,
    a_burst_of_signups_is_written_in_groups_with_one_email_per_address,
    a_stranger_cannot_rename_a_pending_subscriber,
    new_and_existing_addresses_get_identical_answers,
);

async fn signup_page_invites_people_to_subscribe(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(page.contains("action=\"/subscribe\""));
    assert!(page.contains("name=\"email\""));
    assert!(page.contains("name=\"name\""));
    assert!(page.contains("name=\"website\""), "honeypot");
    assert!(page.contains("10 partnership pitfalls"), "the pitch");
    assert!(page.contains(">Subscribe</button>"), "a short button label");
    assert!(page.contains("name=\"viewport\""), "readable on a phone");
}

async fn the_whole_journey_from_signup_to_one_click_unsubscribe(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .subscribe_form(&[
            ("email", "Ada@Example.com"),
            ("name", "Ada"),
            ("website", ""),
        ])
        .await;
    assert_eq!(response.status(), 202);
    assert!(response.text().await.unwrap().contains("inbox"));

    let confirmation = app.mail.wait_for("ada@example.com", 1).await.remove(0);
    assert_eq!(
        confirmation.subject(),
        "Please confirm your subscription to Partnership Pitfalls Weekly"
    );
    // No name a stranger could have typed, not even this one.
    assert!(confirmation.text().contains("Hi,"));
    assert!(!confirmation.text().contains("Ada") && !confirmation.html().contains("Ada"));
    assert!(confirmation.html().contains("<table"));
    assert!(confirmation
        .header("Content-Type")
        .unwrap()
        .contains("multipart/alternative"));
    assert_eq!(
        app.status_of("ada@example.com").await.as_deref(),
        Some("pending")
    );

    let link = confirmation.link("http://");
    assert!(link.starts_with(&app.settings.newsletter.base_url));
    // The configured base_url is for the public; ask this test server.
    let local = link.replace(&app.settings.newsletter.base_url, &app.address);
    // Opening the link shows a button; pressing it confirms.
    let response = app.client.get(&local).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("method=\"post\""));
    assert_eq!(
        app.status_of("ada@example.com").await.as_deref(),
        Some("pending")
    );
    let response = app.confirm(&local).await;
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("You're subscribed"));
    assert_eq!(
        app.status_of("ada@example.com").await.as_deref(),
        Some("confirmed")
    );

    app.enqueue("Welcome aboard", "First *real* issue.").await;
    assert_eq!(app.send_now().await.status(), 202);
    let issue = app.mail.wait_for("ada@example.com", 2).await.remove(1);
    assert_eq!(issue.subject(), "Welcome aboard");
    let unsubscribe = issue.header("List-Unsubscribe").unwrap();
    let unsubscribe = unsubscribe.trim_start_matches('<').trim_end_matches('>');
    let local = unsubscribe.replace(&app.settings.newsletter.base_url, &app.address);
    let response = app
        .client
        .post(&local)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        app.status_of("ada@example.com").await.as_deref(),
        Some("unsubscribed")
    );
}

async fn invalid_addresses_get_422_with_a_message(backend: Backend) {
    let app = spawn_app(backend).await;
    for email in [
        "",
        "not-an-email",
        "a@b",
        "ada@example.com\r\nBcc: x@example.com",
        "ada@@example.com",
    ] {
        let response = app.subscribe_json(json!({ "email": email })).await;
        assert_eq!(response.status(), 422, "{email:?}");
        let body: Value = response.json().await.unwrap();
        assert!(!body["error"].as_str().unwrap().is_empty(), "{email:?}");
    }
    let response = app.subscribe_json(json!({ "name": "No Email" })).await;
    assert_eq!(response.status(), 422);
    // A browser gets the form back with the message, not JSON.
    let response = app.subscribe_form(&[("email", "nope")]).await;
    assert_eq!(response.status(), 422);
    let page = response.text().await.unwrap();
    assert!(page.contains("role=\"alert\""));
    assert!(
        page.contains("value=\"nope\""),
        "the form keeps what was typed"
    );
    // Nothing was stored, so nothing is queued to be sent, ever.
    let stats = app.stats().await;
    assert_eq!(
        stats["subscribers"],
        json!({ "pending": 0, "confirmed": 0, "unsubscribed": 0, "bounced": 0 })
    );
    assert_eq!(app.deliveries().await.total(), 0, "{stats}");
    assert!(app.mail.received().is_empty());
}

async fn a_too_long_name_or_unreadable_body_gets_422(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .subscribe_json(json!({ "email": "long@example.com", "name": "n".repeat(101) }))
        .await;
    assert_eq!(response.status(), 422);
    let response = app
        .subscribe_json(json!({ "email": "crlf@example.com", "name": "Eve\r\nBcc: x@example.com" }))
        .await;
    assert_eq!(response.status(), 422);
    let response = app
        .client
        .post(app.url("/subscribe"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].is_string());
}

async fn the_honeypot_accepts_and_stores_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .subscribe_form(&[
            ("email", "bot@example.com"),
            ("website", "http://spam.example"),
        ])
        .await;
    assert_eq!(response.status(), 202);
    let response = app
        .subscribe_json(json!({ "email": "bot2@example.com", "website": "x" }))
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "status": "pending" })
    );
    assert_eq!(app.status_of("bot@example.com").await, None);
    assert_eq!(app.status_of("bot2@example.com").await, None);
    assert!(app.subscribers().await.is_empty());
    // Nothing is queued, so no email will ever go out for them.
    assert_eq!(app.deliveries().await.total(), 0);
    assert!(app.mail.received().is_empty());
}

async fn an_address_gets_one_confirmation_per_window(backend: Backend) {
    let app = spawn_app(backend).await;
    for _ in 0..3 {
        let response = app
            .subscribe_json(json!({ "email": "eager@example.com" }))
            .await;
        assert_eq!(response.status(), 202);
    }
    app.mail.wait_for("eager@example.com", 1).await;
    app.wait_until_idle().await;
    assert_eq!(app.mail.received_by("eager@example.com").len(), 1);
    // After the window, asking again sends a fresh link.
    app.clock.advance(chrono::Duration::minutes(11));
    let response = app
        .subscribe_json(json!({ "email": "eager@example.com" }))
        .await;
    assert_eq!(response.status(), 202);
    app.mail.wait_for("eager@example.com", 2).await;
}

async fn too_many_signups_from_one_ip_get_429(backend: Backend) {
    let app = spawn_with(Options::new(backend), |settings| {
        settings.http.subscribe_per_ip_per_hour = 3;
    })
    .await;
    for n in 0..3 {
        let response = app
            .subscribe_json(json!({ "email": format!("person{n}@example.com") }))
            .await;
        assert_eq!(response.status(), 202);
    }
    let response = app
        .subscribe_json(json!({ "email": "person4@example.com" }))
        .await;
    assert_eq!(response.status(), 429);
    // Three an hour: the next one is due in about twenty minutes.
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1100..=1200).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("Too many"));
    assert_eq!(app.status_of("person4@example.com").await, None);
}

async fn a_confirmed_address_gets_202_and_no_email(backend: Backend) {
    let app = spawn_app(backend).await;
    app.subscribe_and_confirm("known@example.com").await;
    app.clock.advance(chrono::Duration::hours(1));
    let response = app
        .subscribe_json(json!({ "email": "known@example.com" }))
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "status": "pending" })
    );
    // Every email the app will send has been answered: exactly the first
    // confirmation, and nothing queued for the second signup.
    app.wait_until_idle().await;
    let deliveries = app.deliveries().await;
    assert_eq!(
        (deliveries.sent, deliveries.total()),
        (1, 1),
        "{deliveries:?}"
    );
    assert_eq!(app.mail.received_by("known@example.com").len(), 1);
}

async fn resubscribing_goes_through_double_opt_in_again(backend: Backend) {
    let app = spawn_app(backend).await;
    app.subscribe_and_confirm("back@example.com").await;
    let unsubscribe = app.unsubscribe_link("back@example.com").await;
    assert_eq!(
        app.client.post(&unsubscribe).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        app.status_of("back@example.com").await.as_deref(),
        Some("unsubscribed")
    );

    // Past the one-confirmation-per-window limit of the first signup.
    app.clock.advance(chrono::Duration::minutes(11));
    let response = app
        .subscribe_json(json!({ "email": "back@example.com" }))
        .await;
    assert_eq!(response.status(), 202);
    // The first confirmation, the issue, and now a fresh link.
    let mails = app.mail.wait_for("back@example.com", 3).await;
    // Signing up alone changes nothing: only the confirmation does.
    assert_eq!(
        app.status_of("back@example.com").await.as_deref(),
        Some("unsubscribed")
    );
    let link = app.local(&mails[2].link("http://"));
    assert!(link.contains("/confirm?token="), "{link}");
    assert_eq!(app.confirm(&link).await.status(), 200);
    assert_eq!(
        app.status_of("back@example.com").await.as_deref(),
        Some("confirmed")
    );
}

async fn an_smtp_outage_delays_the_confirmation_but_never_loses_it(backend: Backend) {
    let port = free_port();
    let mut options = Options::new(backend);
    options.smtp_port = Some(port);
    let app = spawn_with(options, |_| {}).await;
    let started = std::time::Instant::now();
    let response = app
        .subscribe_json(json!({ "email": "patient@example.com" }))
        .await;
    assert_eq!(response.status(), 202);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the response never waits on SMTP"
    );

    // Two attempts fail against the closed port...
    app.wait_for_transient_failures(2).await;
    let deliveries = app.deliveries().await;
    assert_eq!(deliveries.sent, 0, "{deliveries:?}");
    assert_eq!(
        deliveries.failed, 0,
        "an outage costs no attempt: {deliveries:?}"
    );
    assert_eq!(
        deliveries.pending + deliveries.sending,
        1,
        "the email waits in the outbox"
    );

    let server = MailServer::start_on(port);
    // Skip over the backoff instead of sleeping through it.
    app.clock.advance(chrono::Duration::minutes(5));
    let mails = server.wait_for("patient@example.com", 1).await;
    assert!(mails[0].text().contains("/confirm?token="));
    app.wait_until_idle().await;
    assert_eq!(server.received_by("patient@example.com").len(), 1);
    assert_eq!(app.deliveries().await.sent, 1);
}

/// Signups that arrive together are written in one transaction (see
/// `tidings::signups`); each must still get the answer and the record it
/// would have had alone, with one confirmation per address per window.
async fn a_burst_of_signups_is_written_in_groups_with_one_email_per_address(backend: Backend) {
    // All from one IP: the per-IP limit is not what this test is about.
    let app = spawn_with(Options::new(backend), |settings| {
        settings.http.subscribe_per_ip_per_hour = 0;
    })
    .await;
    app.subscribe_and_confirm("member@example.com").await;
    // 60 new addresses, each sent three times at once, and the member.
    let mut requests = Vec::new();
    for n in 0..180 {
        let email = format!("burst{}@example.com", n % 60);
        requests.push(app.subscribe_json(json!({ "email": email, "name": format!("Reader {n}") })));
    }
    requests.push(app.subscribe_json(json!({ "email": "member@example.com" })));
    for response in futures::future::join_all(requests).await {
        assert_eq!(response.status(), 202);
    }
    app.mail.wait_for_total(61).await;
    app.wait_until_idle().await;
    for n in 0..60 {
        let email = format!("burst{n}@example.com");
        let received = app.mail.received_by(&email);
        assert_eq!(
            received.len(),
            1,
            "{email} got {} confirmations",
            received.len()
        );
        assert!(
            !received[0].text().contains("Reader"),
            "{email}: a confirmation carries no name"
        );
        assert_eq!(app.status_of(&email).await.as_deref(), Some("pending"));
        // The link in the email confirms this address, and only it.
        let response = app.confirm(&app.local(&received[0].link("http://"))).await;
        assert_eq!(response.status(), 200);
        assert_eq!(app.status_of(&email).await.as_deref(), Some("confirmed"));
    }
    assert_eq!(
        app.mail.received_by("member@example.com").len(),
        1,
        "no new link for a member"
    );
    assert_eq!(app.subscribers().await.len(), 61);
    for n in 0..60 {
        let email = format!("burst{n}@example.com");
        let events = app.consent_log(&email).await;
        let kinds: Vec<&str> = events
            .iter()
            .map(|event| event["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            ["signup", "confirm"],
            "{email}: one signup event per address within the window"
        );
        assert!(
            events.iter().all(|event| event["ip"] == "127.0.0.1"),
            "consent keeps the IP: {events:?}"
        );
    }
}

/// The name from the first signup stands: a stranger who signs the same
/// address up again with another name changes nothing, and the person's
/// own link then confirms the record as they made it.
async fn a_stranger_cannot_rename_a_pending_subscriber(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .subscribe_json(json!({ "email": "ada@example.com", "name": "Ada" }))
        .await;
    assert_eq!(response.status(), 202);
    let first = app.mail.wait_for("ada@example.com", 1).await.remove(0);
    // Within the resend window, and after it (when a fresh link goes out).
    for (minutes, name) in [(1, "WIN $1000 NOW"), (11, "Mallory")] {
        app.clock.advance(chrono::Duration::minutes(minutes));
        let response = app
            .subscribe_json(json!({ "email": "ada@example.com", "name": name }))
            .await;
        assert_eq!(response.status(), 202);
        assert_eq!(
            app.subscriber("ada@example.com").await.unwrap()["name"],
            "Ada"
        );
    }
    let mails = app.mail.wait_for("ada@example.com", 2).await;
    // The person follows the newest link: their record is still theirs.
    assert_eq!(
        app.confirm(&app.local(&mails[1].link("http://")))
            .await
            .status(),
        200
    );
    let record = app.subscriber("ada@example.com").await.unwrap();
    assert_eq!(record["status"], "confirmed");
    assert_eq!(record["name"], "Ada");
    // The first link still answers as a used-up link of a subscriber.
    assert_eq!(
        app.confirm(&app.local(&first.link("http://")))
            .await
            .status(),
        200
    );
}

/// Status, headers but `Date`, and body of a signup answer.
async fn answer(response: reqwest::Response) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let status = response.status().as_u16();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

/// Nobody can tell from the answer whether an address is on the list:
/// new, confirmed, pending within the resend window and unsubscribed
/// addresses get byte-identical answers, for scripts and for browsers.
async fn new_and_existing_addresses_get_identical_answers(backend: Backend) {
    let app = spawn_with(Options::new(backend), |settings| {
        settings.http.subscribe_per_ip_per_hour = 0;
    })
    .await;
    app.subscribe_and_confirm("member@example.com").await;
    app.subscribe_and_confirm("gone@example.com").await;
    let unsubscribe = app.unsubscribe_link("gone@example.com").await;
    assert_eq!(
        app.client.post(&unsubscribe).send().await.unwrap().status(),
        200
    );
    app.clock.advance(chrono::Duration::minutes(11));
    let response = app
        .subscribe_json(json!({ "email": "waiting@example.com" }))
        .await;
    assert_eq!(response.status(), 202);
    let existing = [
        "member@example.com",
        "gone@example.com",
        "waiting@example.com",
    ];
    for (n, email) in existing.into_iter().enumerate() {
        let fresh = format!("fresh{n}@example.com");
        let new = answer(
            app.subscribe_json(json!({ "email": fresh, "name": "A" }))
                .await,
        )
        .await;
        let known = answer(
            app.subscribe_json(json!({ "email": email, "name": "A" }))
                .await,
        )
        .await;
        assert_eq!(new.0, 202);
        assert_eq!(known, new, "JSON, {email}");
        let fresh = format!("form{n}@example.com");
        let new = answer(
            app.subscribe_form(&[("email", &fresh), ("name", "A")])
                .await,
        )
        .await;
        let known = answer(app.subscribe_form(&[("email", email), ("name", "A")]).await).await;
        assert_eq!(new.0, 202);
        assert_eq!(known, new, "form, {email}");
    }
}
