//! What the public pages tell a reader: errors beside their field, the
//! address to add to contacts, the address an unsubscribe removes, and a
//! way to unsubscribe when the emailed link is broken.

use std::time::Instant;

use serde_json::json;
use tidings::newsletter::SIGNUP_ANSWER_FLOOR;

use crate::helpers::{spawn_app, spawn_with, Backend, Options, TestApp};
use crate::on_both_backends;
use crate::pages::assert_page_headers;

on_both_backends!(
    a_signup_error_sits_beside_its_field_and_takes_the_focus,
    the_confirmed_page_shows_the_address_to_add_to_contacts,
    the_unsubscribe_page_names_the_address_partly_hidden,
    a_broken_unsubscribe_link_offers_unsubscribing_by_email,
    the_emailed_link_unsubscribes,
    every_address_gets_the_same_answer_and_only_readers_get_email,
    asking_by_email_is_limited_per_client_and_per_address,
    an_invalid_address_for_a_link_gets_422_beside_the_field,
);

const BY_EMAIL: &str = "/unsubscribe/by-email";

async fn ask_for_link(app: &TestApp, email: &str) -> reqwest::Response {
    app.client
        .post(app.url(BY_EMAIL))
        .form(&[("email", email)])
        .send()
        .await
        .unwrap()
}

/// The reader's own unsubscribe link, as an issue's footer carries it.
async fn unsubscribe_link_of(app: &TestApp, email: &str) -> String {
    let id = app.subscriber(email).await.unwrap()["id"].as_i64().unwrap();
    app.local(&app.state.newsletter.links().unsubscribe_url(id))
}

/// The field is marked invalid, described by the error, and focused.
fn assert_field_error(page: &str, field: &str, what: &str) {
    let error_id = format!("id=\"{field}-error\"");
    assert!(page.contains(&error_id), "{what}: the error has an id");
    let input = page
        .split("<input")
        .find(|input| input.contains(&format!("id=\"{field}\"")))
        .unwrap_or_else(|| panic!("{what}: no {field} field"));
    let input = &input[..input.find('>').unwrap()];
    assert!(input.contains("aria-invalid=\"true\""), "{what}: {input}");
    assert!(
        input.contains(&format!("aria-describedby=\"{field}-error\"")),
        "{what}: {input}"
    );
    assert!(input.contains("autofocus"), "{what}: {input}");
    assert_eq!(page.matches("autofocus").count(), 1, "{what}: one focus");
    // The error comes before the field, right under its label.
    assert!(page.find(&error_id).unwrap() < page.find(&format!("id=\"{field}\"")).unwrap());
}

async fn a_signup_error_sits_beside_its_field_and_takes_the_focus(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.subscribe_form(&[("email", "not-an-address")]).await;
    assert_eq!(response.status(), 422, "SPEC: 422 for an invalid address");
    let page = response.text().await.unwrap();
    assert_field_error(&page, "email", "invalid address");
    assert!(page.contains("value=\"not-an-address\""), "kept for fixing");
    assert!(
        !page.contains("class=\"alert\""),
        "no second, general error"
    );

    let long_name = "n".repeat(101);
    let response = app
        .subscribe_form(&[("email", "ok@example.com"), ("name", &long_name)])
        .await;
    assert_eq!(response.status(), 422);
    assert_field_error(&response.text().await.unwrap(), "name", "long name");

    // Programs still get the same JSON.
    let response = app.subscribe_json(json!({ "email": "nope" })).await;
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    assert!(body["error"].is_string());
}

async fn the_confirmed_page_shows_the_address_to_add_to_contacts(backend: Backend) {
    let app = spawn_app(backend).await;
    let confirmation = {
        let response = app
            .subscribe_json(json!({ "email": "ada@example.com" }))
            .await;
        assert_eq!(response.status(), 202);
        app.mail.wait_for("ada@example.com", 1).await.remove(0)
    };
    let link = app.local(&confirmation.link("http://"));
    let page = app.confirm(&link).await.text().await.unwrap();
    let from = app.settings.newsletter.from.email.to_string();
    assert!(page.contains("You're subscribed"), "{page}");
    assert!(page.contains(&format!(">{from}<")), "{from} in {page}");
    assert!(
        confirmation.header("From").unwrap().contains(&from),
        "the address shown is the one our emails come from"
    );
}

async fn the_unsubscribe_page_names_the_address_partly_hidden(backend: Backend) {
    let app = spawn_app(backend).await;
    app.subscribe_and_confirm("reader@example.com").await;
    let link = unsubscribe_link_of(&app, "reader@example.com").await;
    let response = app.client.get(&link).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("r•••r@example.com"), "{page}");
    assert!(!page.contains("reader@example.com"), "not in full");
}

async fn a_broken_unsubscribe_link_offers_unsubscribing_by_email(backend: Backend) {
    let app = spawn_app(backend).await;
    app.subscribe_and_confirm("reader@example.com").await;
    let link = unsubscribe_link_of(&app, "reader@example.com").await;
    let truncated = &link[..link.len() - 5];
    let unknown = app.local(&app.state.newsletter.links().unsubscribe_url(999_999));
    for url in [
        truncated.to_owned(),
        unknown,
        app.url("/unsubscribe?token=garbage"),
        app.url("/unsubscribe"),
    ] {
        for response in [
            app.client.get(&url).send().await.unwrap(),
            app.client.post(&url).send().await.unwrap(),
        ] {
            assert_eq!(
                response.status(),
                404,
                "SPEC: an unknown token gets 404: {url}"
            );
            assert_page_headers(response.headers(), &url, true);
            let page = response.text().await.unwrap();
            assert!(page.contains("action=\"/unsubscribe/by-email\""), "{url}");
            assert!(page.contains("name=\"email\""), "{url}");
            assert!(!page.contains("Subscribe again"), "{url}");
        }
    }
    assert_eq!(
        app.status_of("reader@example.com").await.as_deref(),
        Some("confirmed"),
        "a broken link changes nothing"
    );
    let form = app.client.get(app.url(BY_EMAIL)).send().await.unwrap();
    assert_eq!(form.status(), 200);
    assert_page_headers(form.headers(), "the form", false);
    assert!(form
        .text()
        .await
        .unwrap()
        .contains("action=\"/unsubscribe/by-email\""));
}

async fn the_emailed_link_unsubscribes(backend: Backend) {
    let app = spawn_app(backend).await;
    app.subscribe_and_confirm("reader@example.com").await;
    let response = ask_for_link(&app, "Reader@Example.com").await;
    assert_eq!(response.status(), 202);
    assert_page_headers(response.headers(), "link asked for", false);
    assert!(response.text().await.unwrap().contains("Check your inbox"));
    let email = app.mail.wait_for("reader@example.com", 2).await.remove(1);
    assert_eq!(
        email.subject(),
        "Your link to unsubscribe from Partnership Pitfalls Weekly"
    );
    let link = email.link("http://");
    assert_eq!(
        link,
        unsubscribe_link_of(&app, "reader@example.com")
            .await
            .replace(&app.address, &app.settings.newsletter.base_url)
    );
    assert!(email.text().contains(&link), "the text part has the link");
    assert!(email.header("Message-ID").is_some());
    let page = app.client.get(app.local(&link)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("r•••r@example.com"));
    let done = app.client.post(app.local(&link)).send().await.unwrap();
    assert_eq!(done.status(), 200);
    assert_eq!(
        app.status_of("reader@example.com").await.as_deref(),
        Some("unsubscribed")
    );
}

async fn every_address_gets_the_same_answer_and_only_readers_get_email(backend: Backend) {
    let app = spawn_with(Options::new(backend), |settings| {
        settings.http.subscribe_per_ip_per_hour = 0;
    })
    .await;
    app.subscribe_and_confirm("confirmed@example.com").await;
    app.subscribe_and_confirm("gone@example.com").await;
    let gone = unsubscribe_link_of(&app, "gone@example.com").await;
    assert_eq!(app.client.post(&gone).send().await.unwrap().status(), 200);
    let pending = app
        .subscribe_json(json!({ "email": "pending@example.com" }))
        .await;
    assert_eq!(pending.status(), 202);
    app.mail.wait_for("pending@example.com", 1).await;

    let mut answers = Vec::new();
    for email in [
        "stranger@example.com",
        "gone@example.com",
        "confirmed@example.com",
        "pending@example.com",
    ] {
        let started = Instant::now();
        let response = ask_for_link(&app, email).await;
        let took = started.elapsed();
        assert!(took >= SIGNUP_ANSWER_FLOOR, "{email} answered in {took:?}");
        let status = response.status();
        answers.push((status, response.text().await.unwrap()));
    }
    assert_eq!(answers[0].0, 202);
    assert!(
        answers.iter().all(|answer| *answer == answers[0]),
        "one status and one page for every address"
    );
    // The readers' links come; they were asked for after the others.
    app.mail.wait_for("confirmed@example.com", 2).await;
    app.mail.wait_for("pending@example.com", 2).await;
    assert!(app.mail.received_by("stranger@example.com").is_empty());
    assert_eq!(
        app.mail.received_by("gone@example.com").len(),
        1,
        "only the confirmation: an unsubscribed reader gets nothing more"
    );
}

async fn asking_by_email_is_limited_per_client_and_per_address(backend: Backend) {
    let app = spawn_with(Options::new(backend), |settings| {
        settings.http.subscribe_per_ip_per_hour = 3;
    })
    .await;
    for email in ["one@example.com", "two@example.com"] {
        let response = app.subscribe_json(json!({ "email": email })).await;
        assert_eq!(response.status(), 202);
        app.mail.wait_for(email, 1).await;
    }
    // The same address twice within the window: one email, same answers.
    let first = ask_for_link(&app, "one@example.com").await;
    let second = ask_for_link(&app, "one@example.com").await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (202, 202)
    );
    assert_eq!(first.text().await.unwrap(), second.text().await.unwrap());
    // Asked for after both: once it is here, the first address's is too.
    assert_eq!(ask_for_link(&app, "two@example.com").await.status(), 202);
    app.mail.wait_for("two@example.com", 2).await;
    app.mail.wait_for("one@example.com", 2).await;
    assert_eq!(app.mail.received_by("one@example.com").len(), 2);

    // The client's fourth request within the hour.
    let limited = ask_for_link(&app, "three@example.com").await;
    assert_eq!(limited.status(), 429);
    assert_page_headers(limited.headers(), "429", false);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1200).contains(&retry_after), "{retry_after}");
    assert!(limited.text().await.unwrap().contains("Too many requests"));
}

async fn an_invalid_address_for_a_link_gets_422_beside_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    for email in ["", "not-an-address", "a@b@c"] {
        let response = ask_for_link(&app, email).await;
        assert_eq!(response.status(), 422, "{email:?}");
        assert_page_headers(response.headers(), "422", false);
        assert_field_error(&response.text().await.unwrap(), "email", email);
    }
}
