//! `/healthz` and the free-space guard, through the configured threshold:
//! a minimum above any real free space stands in for a full disk here (the
//! end-to-end suite fills a real one, `tests/e2e/outages.rs`); and a
//! background task that dies.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::RETRY_AFTER;
use serde_json::{json, Value};
use tidings::app::{AppOptions, Application};
use tidings::clock::Clock;
use tidings::http::server::{serve, ServerLimits};
use tokio_util::sync::CancellationToken;

use crate::database::TestDatabase;
use crate::helpers::{spawn_app, spawn_with, test_settings, Backend, MailServer, Options};
use crate::on_both_backends;

on_both_backends!(
    healthz_is_ok_while_the_database_takes_writes,
    below_the_free_space_minimum_signups_wait_and_healthz_says_why,
    a_dead_delivery_worker_stops_the_daemon_and_healthz_names_it,
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

/// Real time until told to break; then every reading panics, as a bug in
/// whatever reads it would. The delivery worker reads it each time it
/// looks for work; `/healthz` never does.
#[derive(Default)]
struct BreakableClock(AtomicBool);

impl Clock for BreakableClock {
    fn now(&self) -> DateTime<Utc> {
        assert!(!self.0.load(Ordering::SeqCst), "the clock broke");
        Utc::now()
    }
}

async fn healthz(client: &reqwest::Client, address: SocketAddr) -> reqwest::Result<(u16, Value)> {
    let response = client
        .get(format!("http://{address}/healthz"))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

/// The supervisor marks the health check before the daemon stops, but the
/// daemon then stops listening at once: a probe that lands in between is
/// luck. So every probe made while it dies must be a 200 or a 503 naming
/// the dead task, the daemon must exit with the task's name, and the state
/// it leaves, served again by the daemon's own accept loop, must answer
/// 503 `task_stopped`.
async fn a_dead_delivery_worker_stops_the_daemon_and_healthz_names_it(backend: Backend) {
    let (_database, url) = TestDatabase::create(backend).await;
    let mail = MailServer::start();
    let settings = test_settings(&url, &format!("smtp://127.0.0.1:{}", mail.port));
    let clock = Arc::new(BreakableClock::default());
    let options = AppOptions {
        clock: clock.clone(),
        run_scheduler: false,
        seed_first_series: false,
    };
    let app = Application::build(settings, options).await.unwrap();
    let (address, state) = (app.local_addr(), app.state());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run(shutdown.clone()));
    let client = reqwest::Client::new();
    assert_eq!(healthz(&client, address).await.unwrap().0, 200);

    clock.0.store(true, Ordering::SeqCst);
    let mut answers = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(answer) = healthz(&client, address).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still answering: {answer:?}"
        );
        answers.push(answer);
    }
    let error = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the daemon stops by itself")
        .unwrap()
        .expect_err("a dead worker is an error");
    assert_eq!(
        format!("{error:#}"),
        "the delivery worker panicked: the clock broke"
    );
    assert!(!shutdown.is_cancelled(), "nobody asked it to stop");
    let stopped = json!({
        "status": "unavailable",
        "reason": "task_stopped",
        "error": "the delivery worker has stopped; the daemon is stopping",
    });
    for (status, body) in &answers {
        match status {
            200 => assert_eq!(body, &json!({ "status": "ok" })),
            _ => assert_eq!((*status, body), (503, &stopped)),
        }
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let again = listener.local_addr().unwrap();
    let limits = ServerLimits {
        max_connections: 4,
        header_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
    };
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        tidings::http::router(state),
        limits,
        stop.clone(),
    ));
    assert_eq!(healthz(&client, again).await.unwrap(), (503, stopped));
    stop.cancel();
    server.await.unwrap().unwrap();
    let late = answers.iter().filter(|(status, _)| *status == 503).count();
    println!(
        "{} probes while the worker died, {late} of them 503 task_stopped before the daemon stopped",
        answers.len()
    );
}
