//! Confirmation and unsubscribe links: what people and link scanners see.

use serde_json::json;

use crate::helpers::{spawn_app, Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    unknown_or_malformed_confirmation_tokens_get_a_friendly_404,
    an_expired_confirmation_link_gets_410,
    confirming_is_idempotent,
    a_mail_scanner_cannot_confirm,
    a_used_link_after_unsubscribing_does_not_say_subscribed,
    the_unsubscribe_page_changes_nothing_until_the_button,
    one_click_unsubscribe_is_idempotent_and_never_redirects,
    unknown_unsubscribe_tokens_get_404,
    the_consent_log_records_who_and_from_where,
);

fn local(app: &TestApp, link: &str) -> String {
    link.replace(&app.settings.newsletter.base_url, &app.address)
}

async fn confirmation_link(app: &TestApp, email: &str) -> String {
    let response = app.subscribe_json(json!({ "email": email })).await;
    assert_eq!(response.status(), 202);
    let mail = app.mail.wait_for(email, 1).await.remove(0);
    local(app, &mail.link("http://"))
}

async fn unknown_or_malformed_confirmation_tokens_get_a_friendly_404(backend: Backend) {
    let app = spawn_app(backend).await;
    for query in [
        "",
        "?token=",
        "?token=garbage",
        "?token=AAAAAAAAAAGkeypM9LgN6eWusFgsbmHW",
    ] {
        let url = app.url(&format!("/confirm{query}"));
        for response in [
            app.client.get(&url).send().await.unwrap(),
            app.client.post(&url).send().await.unwrap(),
        ] {
            assert_eq!(response.status(), 404, "{query}");
            let page = response.text().await.unwrap();
            assert!(page.contains("<html"), "a page, not a bare error");
            assert!(
                page.contains("href=\"http://127.0.0.1:8080/\""),
                "a way to subscribe again"
            );
        }
    }
    // A well-formed token for a confirmation that does not exist.
    let link = local(&app, &app.state.newsletter.links().confirm_url(999_999));
    assert_eq!(app.client.get(&link).send().await.unwrap().status(), 404);
    assert_eq!(app.confirm(&link).await.status(), 404);
}

async fn an_expired_confirmation_link_gets_410(backend: Backend) {
    let app = spawn_app(backend).await;
    let link = confirmation_link(&app, "late@example.com").await;
    app.clock
        .advance(chrono::Duration::hours(72) + chrono::Duration::minutes(1));
    for response in [
        app.client.get(&link).send().await.unwrap(),
        app.confirm(&link).await,
    ] {
        assert_eq!(response.status(), 410);
        let page = response.text().await.unwrap();
        assert!(page.contains("expired"));
        assert!(page.contains("href=\"http://127.0.0.1:8080/\""));
    }
    assert_eq!(
        app.status_of("late@example.com").await.as_deref(),
        Some("pending")
    );
}

/// Pressing the button twice (or opening the link again later) shows the
/// same "you're subscribed" page, and the consent is recorded once.
async fn confirming_is_idempotent(backend: Backend) {
    let app = spawn_app(backend).await;
    let link = confirmation_link(&app, "once@example.com").await;
    for _ in 0..2 {
        let response = app.confirm(&link).await;
        assert_eq!(response.status(), 200);
        assert!(response.text().await.unwrap().contains("You're subscribed"));
    }
    let page = app.client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200, "the page still opens");
    assert_eq!(
        app.status_of("once@example.com").await.as_deref(),
        Some("confirmed")
    );
    assert_eq!(
        consent_kinds(&app, "once@example.com").await,
        ["signup", "confirm"]
    );
}

/// Mail scanners open every link in an email, with GET and HEAD: neither
/// may give consent for the person. Only the button's POST does.
async fn a_mail_scanner_cannot_confirm(backend: Backend) {
    let app = spawn_app(backend).await;
    let link = confirmation_link(&app, "scanned@example.com").await;
    for _ in 0..2 {
        let response = app
            .client
            .get(&link)
            .header("user-agent", "Scanner/1.0")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let page = response.text().await.unwrap();
        assert!(page.contains("method=\"post\""), "{page}");
        let token = link.split_once("token=").unwrap().1;
        assert!(
            page.contains(&format!("action=\"/confirm?token={token}\"")),
            "the button posts to the same link: {page}"
        );
        let head = app.client.head(&link).send().await.unwrap();
        assert_eq!(head.status(), 200);
    }
    assert_eq!(
        app.status_of("scanned@example.com").await.as_deref(),
        Some("pending")
    );
    assert_eq!(consent_kinds(&app, "scanned@example.com").await, ["signup"]);

    let response = app
        .client
        .post(&link)
        .header("user-agent", "PersonsBrowser/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        app.status_of("scanned@example.com").await.as_deref(),
        Some("confirmed")
    );
    let events = app.consent_log("scanned@example.com").await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["kind"], "confirm");
    assert_eq!(events[1]["user_agent"], "PersonsBrowser/1.0");
}

/// Unsubscribing retires every confirmation link. Pressing an old one
/// afterwards must not claim the reader is subscribed, nor subscribe them.
async fn a_used_link_after_unsubscribing_does_not_say_subscribed(backend: Backend) {
    let app = spawn_app(backend).await;
    let mail = app.subscribe_and_confirm("left@example.com").await;
    let link = local(&app, &mail.link("http://"));
    let unsubscribe = app.unsubscribe_link("left@example.com").await;
    assert_eq!(
        app.client.post(&unsubscribe).send().await.unwrap().status(),
        200
    );
    for response in [
        app.client.get(&link).send().await.unwrap(),
        app.confirm(&link).await,
    ] {
        assert_eq!(response.status(), 410);
        let page = response.text().await.unwrap();
        assert!(!page.contains("You're subscribed"), "{page}");
        assert!(page.contains("href=\"http://127.0.0.1:8080/\""));
    }
    assert_eq!(
        app.status_of("left@example.com").await.as_deref(),
        Some("unsubscribed")
    );
}

async fn the_unsubscribe_page_changes_nothing_until_the_button(backend: Backend) {
    let app = spawn_app(backend).await;
    app.subscribe_and_confirm("scanned@example.com").await;
    let link = app.unsubscribe_link("scanned@example.com").await;
    for _ in 0..3 {
        let response = app.client.get(&link).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let page = response.text().await.unwrap();
        assert!(page.contains("method=\"post\""));
        assert!(page.contains("/unsubscribe?token="));
    }
    assert_eq!(
        app.status_of("scanned@example.com").await.as_deref(),
        Some("confirmed")
    );
    let kinds = consent_kinds(&app, "scanned@example.com").await;
    assert_eq!(kinds, ["signup", "confirm"], "no unsubscribe recorded");
}

async fn consent_kinds(app: &TestApp, email: &str) -> Vec<String> {
    app.consent_log(email)
        .await
        .iter()
        .map(|event| event["kind"].as_str().unwrap().to_owned())
        .collect()
}

async fn one_click_unsubscribe_is_idempotent_and_never_redirects(backend: Backend) {
    let app = spawn_app(backend).await;
    app.subscribe_and_confirm("leaving@example.com").await;
    let link = app.unsubscribe_link("leaving@example.com").await;
    // RFC 8058 clients post multipart or urlencoded, with no cookies or auth.
    let form = reqwest::multipart::Form::new().text("List-Unsubscribe", "One-Click");
    let response = app.client.post(&link).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 200);
    for _ in 0..2 {
        let response = app
            .client
            .post(&link)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "idempotent, and no redirect");
    }
    assert_eq!(
        app.status_of("leaving@example.com").await.as_deref(),
        Some("unsubscribed")
    );
    assert_eq!(
        consent_kinds(&app, "leaving@example.com").await,
        ["signup", "confirm", "unsubscribe"],
        "three requests, one unsubscribe"
    );
}

async fn unknown_unsubscribe_tokens_get_404(backend: Backend) {
    let app = spawn_app(backend).await;
    for token in ["", "nonsense", "AAAAAAAAAAGkeypM9LgN6eWusFgsbmHW"] {
        let url = app.url(&format!("/unsubscribe?token={token}"));
        assert_eq!(app.client.get(&url).send().await.unwrap().status(), 404);
        assert_eq!(app.client.post(&url).send().await.unwrap().status(), 404);
    }
    // A well-formed token for a subscriber who does not exist. No email
    // carries one (subscribers are never deleted), so this is the one link
    // minted from the app's key rather than taken from a message.
    let link = local(&app, &app.state.newsletter.links().unsubscribe_url(999_999));
    assert_eq!(app.client.post(&link).send().await.unwrap().status(), 404);
}

async fn the_consent_log_records_who_and_from_where(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .client
        .post(app.url("/subscribe"))
        .header("user-agent", "ConsentTest/1.0")
        .json(&json!({ "email": "evidence@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let mail = app.mail.wait_for("evidence@example.com", 1).await.remove(0);
    let confirm = local(&app, &mail.link("http://"));
    let confirmed = app
        .client
        .post(&confirm)
        .header("user-agent", "ConfirmBrowser/2.0")
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 200);
    let link = app.unsubscribe_link("evidence@example.com").await;
    let response = app
        .client
        .post(&link)
        .header("user-agent", "MailClient/3.0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let events = app.consent_log("evidence@example.com").await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| event["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["signup", "confirm", "unsubscribe"]);
    assert!(
        events.iter().all(|event| event["ip"] == "127.0.0.1"),
        "{events:?}"
    );
    assert_eq!(events[0]["user_agent"], "ConsentTest/1.0");
    assert_eq!(events[1]["user_agent"], "ConfirmBrowser/2.0");
    assert_eq!(events[2]["user_agent"], "MailClient/3.0");
    let times: Vec<chrono::DateTime<chrono::Utc>> = events
        .iter()
        .map(|event| serde_json::from_value(event["occurred_at"].clone()).unwrap())
        .collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");
}
