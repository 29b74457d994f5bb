//! The admin API: authentication, the post queue, send-now and stats.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_with, Backend, Options, ADMIN_TOKEN};
use crate::on_both_backends;

on_both_backends!(
    every_admin_route_needs_the_right_token,
    an_unset_token_disables_the_admin_api_with_503,
    posts_can_be_queued_listed_edited_reordered_and_deleted,
    bad_post_input_gets_422,
    control_characters_in_posts_get_422_naming_the_field,
    sent_posts_cannot_change,
    the_preview_is_the_email_a_subscriber_sees,
    send_now_with_an_empty_queue_is_409,
    subscribers_come_a_page_at_a_time,
    stats_count_everything_and_name_the_next_send,
);

const ROUTES: [(&str, &str); 9] = [
    ("POST", "/api/admin/posts"),
    ("GET", "/api/admin/posts"),
    ("GET", "/api/admin/posts/1"),
    ("PATCH", "/api/admin/posts/1"),
    ("DELETE", "/api/admin/posts/1"),
    ("GET", "/api/admin/posts/1/preview"),
    ("POST", "/api/admin/send-now"),
    ("GET", "/api/admin/subscribers"),
    ("GET", "/api/admin/stats"),
];

async fn every_admin_route_needs_the_right_token(backend: Backend) {
    // Failed tokens are throttled per client IP, so each route's tries come
    // from their own client, named by a trusted proxy (loopback).
    let app = spawn_with(Options::new(backend), |settings| {
        settings.http.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let wrong = format!("{ADMIN_TOKEN}x");
    for (index, (method, path)) in ROUTES.iter().enumerate() {
        let method: Method = method.parse().unwrap();
        let client = format!("198.51.100.{index}");
        let none = app
            .client
            .request(method.clone(), app.url(path))
            .header("x-forwarded-for", &client)
            .send()
            .await
            .unwrap();
        assert_eq!(none.status(), 401, "{method} {path} without a token");
        assert_eq!(none.headers()["www-authenticate"], "Bearer");
        let body: Value = none.json().await.unwrap();
        assert!(body["error"].is_string());
        for header in [
            format!("Bearer {wrong}"),
            ADMIN_TOKEN.to_owned(),
            "Basic abc".into(),
        ] {
            let response = app
                .client
                .request(method.clone(), app.url(path))
                .header("authorization", header.clone())
                .header("x-forwarded-for", &client)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 401, "{method} {path} with {header}");
        }
    }
    // Sending with a wrong token must not have done anything.
    assert!(list(&app).await.is_empty());
    let stats = app.stats().await;
    assert_eq!(stats["posts"], json!({ "queued": 0, "sent": 0 }));
}

async fn an_unset_token_disables_the_admin_api_with_503(backend: Backend) {
    let app = spawn_with(Options::new(backend), |settings| {
        settings.admin.token = None
    })
    .await;
    let response = app
        .client
        .get(app.url("/api/admin/stats"))
        .bearer_auth("anything-at-all-really")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("TIDINGS_ADMIN__TOKEN"));
}

async fn list(app: &crate::helpers::TestApp) -> Vec<Value> {
    app.admin(Method::GET, "/api/admin/posts")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn posts_can_be_queued_listed_edited_reordered_and_deleted(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .admin(Method::POST, "/api/admin/posts")
        .json(&json!({ "subject": "First", "body_markdown": "One" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["status"], "queued");
    assert_eq!(created["position"], 1);
    let first = created["id"].as_i64().unwrap();
    let second = app.enqueue("Second", "Two").await;
    let third = app.enqueue("Third", "Three").await;

    let subjects = |posts: &[Value]| -> Vec<String> {
        posts
            .iter()
            .map(|post| post["subject"].as_str().unwrap().to_owned())
            .collect()
    };
    let posts = list(&app).await;
    assert_eq!(subjects(&posts), ["First", "Second", "Third"]);
    for key in ["id", "subject", "position", "status", "sent_at"] {
        assert!(posts[0].get(key).is_some(), "{key}");
    }

    let response = app
        .admin(Method::PATCH, &format!("/api/admin/posts/{third}"))
        .json(&json!({ "position": 1, "subject": "Third, now first" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        subjects(&list(&app).await),
        ["Third, now first", "First", "Second"]
    );

    let response = app
        .admin(Method::GET, &format!("/api/admin/posts/{second}"))
        .send()
        .await
        .unwrap();
    let post: Value = response.json().await.unwrap();
    assert_eq!(post["body_markdown"], "Two");

    let response = app
        .admin(Method::DELETE, &format!("/api/admin/posts/{first}"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(subjects(&list(&app).await), ["Third, now first", "Second"]);
    let response = app
        .admin(Method::GET, &format!("/api/admin/posts/{first}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

async fn bad_post_input_gets_422(backend: Backend) {
    let app = spawn_app(backend).await;
    for body in [
        json!({ "subject": "", "body_markdown": "x" }),
        json!({ "subject": "   ", "body_markdown": "x" }),
        json!({ "subject": "Line\nbreak", "body_markdown": "x" }),
        json!({ "subject": "Bell\u{7}", "body_markdown": "x" }),
        json!({ "subject": "No body", "body_markdown": "" }),
        json!({ "subject": "Missing body" }),
    ] {
        let response = app
            .admin(Method::POST, "/api/admin/posts")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].is_string(), "{body}");
    }
    assert!(list(&app).await.is_empty());
}

/// A NUL gave 500 on PostgreSQL and was stored on SQLite; every control
/// character but a body's line breaks and tabs is now a 422, on both.
async fn control_characters_in_posts_get_422_naming_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        (
            json!({ "subject": "NUL\u{0}here", "body_markdown": "x" }),
            "subject",
        ),
        (
            json!({ "subject": "Escape\u{1b}[31m", "body_markdown": "x" }),
            "subject",
        ),
        (
            json!({ "subject": "Delete\u{7f}", "body_markdown": "x" }),
            "subject",
        ),
        (
            json!({ "subject": "Fine", "body_markdown": "NUL \u{0} in the body" }),
            "body_markdown",
        ),
        (
            json!({ "subject": "Fine", "body_markdown": "Bell \u{7}" }),
            "body_markdown",
        ),
        (
            json!({ "subject": "Fine", "body_markdown": "C1 \u{85} next line" }),
            "body_markdown",
        ),
    ];
    for (body, field) in &cases {
        let response = app
            .admin(Method::POST, "/api/admin/posts")
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{body}");
        let error: Value = response.json().await.unwrap();
        let message = error["error"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
        assert!(message.contains("control character"), "{body}: {message}");
    }
    assert!(list(&app).await.is_empty(), "nothing was stored");

    // Line breaks and tabs are what a body is made of.
    let id = app
        .enqueue("Kept", "Line one\r\nLine two\n\n\tindented code\n")
        .await;
    for (body, field) in cases {
        let mut patch = body.clone();
        patch.as_object_mut().unwrap().retain(|key, _| key == field);
        let response = app
            .admin(Method::PATCH, &format!("/api/admin/posts/{id}"))
            .json(&patch)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "PATCH {patch}");
    }
    let post: Value = app
        .admin(Method::GET, &format!("/api/admin/posts/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(post["subject"], "Kept");
    assert_eq!(
        post["body_markdown"],
        "Line one\r\nLine two\n\n\tindented code\n"
    );
}

async fn sent_posts_cannot_change(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_confirmed(1).await;
    let id = app.enqueue("Going out", "Body").await;
    assert_eq!(app.send_now().await.status(), 202);
    let patch = app
        .admin(Method::PATCH, &format!("/api/admin/posts/{id}"))
        .json(&json!({ "subject": "Too late" }))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 409);
    let delete = app
        .admin(Method::DELETE, &format!("/api/admin/posts/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 409);
    let posts = list(&app).await;
    assert_eq!(posts[0]["status"], "sent");
    assert!(posts[0]["sent_at"].is_string());
}

async fn the_preview_is_the_email_a_subscriber_sees(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = app.enqueue("Preview me", "Some **bold** advice.").await;
    let response = app
        .admin(Method::GET, &format!("/api/admin/posts/{id}/preview"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = response.text().await.unwrap();
    assert!(html.contains("Preview me"));
    // Bold, with the inline style every email element carries.
    assert!(
        html.contains(r#"<strong style="font-weight:bold;">bold</strong>"#),
        "{html}"
    );
    assert!(html.contains("Unsubscribe"));
    assert!(html.contains("1 Test Street, Testville"));
    let missing = app
        .admin(Method::GET, "/api/admin/posts/424242/preview")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

async fn send_now_with_an_empty_queue_is_409(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_confirmed(2).await;
    let response = app.send_now().await;
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].is_string());
}

async fn subscribers_come_a_page_at_a_time(backend: Backend) {
    let app = spawn_app(backend).await;
    app.add_confirmed(25).await;
    let mut seen = Vec::new();
    let mut after: Option<i64> = None;
    loop {
        let path = match after {
            Some(after) => {
                format!("/api/admin/subscribers?limit=10&after={after}&status=confirmed")
            }
            None => "/api/admin/subscribers?limit=10&status=confirmed".into(),
        };
        let page: Value = app
            .admin(Method::GET, &path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let subscribers = page["subscribers"].as_array().unwrap();
        assert!(subscribers.len() <= 10);
        seen.extend(
            subscribers
                .iter()
                .map(|s| s["email"].as_str().unwrap().to_owned()),
        );
        match page["next_after"].as_i64() {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 25, "no subscriber twice across pages");
    let pending: Value = app
        .admin(Method::GET, "/api/admin/subscribers?status=pending")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(pending["subscribers"].as_array().unwrap().is_empty());
    let bad = app
        .admin(Method::GET, "/api/admin/subscribers?status=sleeping")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
}

async fn stats_count_everything_and_name_the_next_send(backend: Backend) {
    let mut options = Options::new(backend);
    options.seed = true;
    let app = spawn_with(options, |_| {}).await;
    app.add_confirmed(3).await;
    let stats: Value = app
        .admin(Method::GET, "/api/admin/stats")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["subscribers"]["confirmed"], 3);
    assert_eq!(stats["subscribers"]["pending"], 0);
    assert_eq!(stats["posts"]["queued"], 10, "the first series is seeded");
    assert_eq!(stats["posts"]["sent"], 0);
    assert_eq!(stats["deliveries"]["sent"], 0);
    let next: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(stats["next_send_at"].clone()).unwrap();
    assert!(next > chrono::Utc::now());
    assert!(next < chrono::Utc::now() + chrono::Duration::days(8));

    let metrics = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("tidings_subscribers{status=\"confirmed\"} 3"));
    assert!(metrics.contains("tidings_scheduler_next_run_timestamp_seconds"));
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({ "status": "ok" })
    );
}
