//! `/healthz` and the free-space guard, through the configured threshold:
//! a minimum above any real free space stands in for a full disk here (the
//! end-to-end suite fills a real one, `tests/e2e/outages.rs`).

use reqwest::header::RETRY_AFTER;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_with, Backend, Options};
use crate::on_both_backends;

on_both_backends!(
    healthz_is_ok_while_the_database_takes_writes,
    below_the_free_space_minimum_signups_wait_and_healthz_says_why,
);

async fn healthz_is_ok_while_the_database_takes_writes(backend: Backend) {
    let app = spawn_app(backend).await;
    // Many probes in a row: the first may write its own row, the rest
    // read what it found.
    for _ in 0..20 {
        let health = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        assert_eq!(
            health.json::<Value>().await.unwrap(),
            json!({ "status": "ok" })
        );
    }
}

async fn below_the_free_space_minimum_signups_wait_and_healthz_says_why(backend: Backend) {
    let app = spawn_with(Options::new(backend), |settings| {
        settings.database.min_free_space = u64::MAX;
    })
    .await;
    let json = app
        .subscribe_json(json!({ "email": "full@example.com" }))
        .await;
    let form = app.subscribe_form(&[("email", "form@example.com")]).await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    if backend == Backend::Postgres {
        // The server's disk is the server's to watch: no guard here.
        assert_eq!(json.status(), 202);
        assert_eq!(form.status(), 202);
        assert_eq!(health.status(), 200);
        return;
    }
    assert_eq!(json.status(), 503);
    assert_eq!(json.headers()[RETRY_AFTER], "60");
    let body: Value = json.json().await.unwrap();
    assert_eq!(body["may_still_arrive"], false, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("nothing was stored"),
        "{body}"
    );

    assert_eq!(form.status(), 503);
    assert_eq!(form.headers()[RETRY_AFTER], "60");
    let page = form.text().await.unwrap();
    assert!(page.contains("not taking signups"), "{page}");
    assert!(
        page.contains("name=\"email\""),
        "the form comes back: {page}"
    );

    assert_eq!(health.status(), 503);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["reason"], "disk_nearly_full");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("database.min_free_space"),
        "{body}"
    );
    assert_eq!(app.status_of("full@example.com").await, None, "not stored");
    assert_eq!(app.status_of("form@example.com").await, None, "not stored");
}
