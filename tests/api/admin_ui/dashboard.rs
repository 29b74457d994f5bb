//! The dashboard and the settings page.

use std::str::FromStr;
use std::time::Duration;

use super::{assert_csrf_protected, log_in};
use crate::helpers::{spawn_with, Backend, Options};
use crate::on_both_backends;

on_both_backends!(
    the_dashboard_names_the_next_send_the_list_and_its_growth,
    the_settings_page_shows_the_config_without_its_secrets,
    the_dashboard_shows_the_latest_issues_with_their_counts,
);

async fn the_dashboard_shows_the_latest_issues_with_their_counts(backend: Backend) {
    let app = spawn_with(Options::new(backend), |_| {}).await;
    let admin = log_in(&app).await;
    assert!(admin
        .page("/admin")
        .await
        .contains("Nothing has been sent yet"));
    app.add_confirmed(2).await;
    app.enqueue("Agree on the exit", "Body").await;
    assert_eq!(app.send_now().await.status(), 202);
    app.wait_until_idle().await;
    let html = admin.page("/admin").await;
    assert!(html.contains("Agree on the exit</a>"), "{html}");
    assert!(
        html.contains("2 sent · 0 failed · 0 pending · 0 skipped, of 2"),
        "{html}"
    );
}

async fn the_dashboard_names_the_next_send_the_list_and_its_growth(backend: Backend) {
    let app = spawn_with(Options::new(backend), |settings| {
        // Mondays at 09:00 in Berlin.
        settings.schedule.cron = cron::Schedule::from_str("0 0 9 * * Mon").unwrap();
        settings.schedule.timezone = "Europe/Berlin".parse().unwrap();
    })
    .await;
    // Thursday 1 January 2037, 11:59 in Berlin: the next send is in 3 days,
    // 21 hours and a minute (less the seconds the test takes).
    app.travel_to("2037-01-01T10:59:00Z".parse().unwrap());
    app.enqueue("First tip: agree on the exit", "Body one")
        .await;
    app.enqueue("Second tip", "Body two").await;
    for reader in ["ada@example.org", "grace@example.org", "alan@example.org"] {
        app.subscribe_and_confirm(reader).await;
    }
    app.subscribe_json(serde_json::json!({ "email": "later@example.org" }))
        .await;
    let admin = log_in(&app).await;
    let html = admin.page("/admin").await;
    assert!(html.contains("Monday 5 January 2037, 09:00 CET"), "{html}");
    assert!(html.contains("in 3 days, 21 hours"), "{html}");
    assert!(html.contains("First tip: agree on the exit"), "{html}");
    assert!(
        html.contains("<span class=\"number\">3</span> confirmed"),
        "{html}"
    );
    assert!(
        html.contains("<span class=\"number\">1</span> pending"),
        "{html}"
    );
    // All three confirmed today: the line ends 3 higher than it began.
    assert!(
        html.contains("<strong>+3</strong> confirmed subscribers: 3 joined, 0 left"),
        "{html}"
    );
    assert!(html.contains("<svg class=\"chart\""), "{html}");
    assert!(html.contains("0 on 4 October, 3 today"), "{html}");
}

async fn the_settings_page_shows_the_config_without_its_secrets(backend: Backend) {
    let outbox = tempfile::tempdir().unwrap();
    let outbox_dir = outbox.path().to_owned();
    let app = spawn_with(Options::new(backend), move |settings| {
        settings.smtp.url = None;
        settings.smtp.outbox_dir = outbox_dir;
        settings.metrics.token = Some("metrics-secret-never-shown".into());
    })
    .await;
    let admin = log_in(&app).await;
    let html = admin.page("/admin/settings").await;
    assert!(
        !html.contains(crate::helpers::ADMIN_TOKEN),
        "the admin token"
    );
    assert!(!html.contains("metrics-secret-never-shown"));
    assert!(html.contains("set (hidden)"));
    assert!(
        html.contains("<code>postal_address</code></th><td>1 Test Street, Testville</td>"),
        "{html}"
    );
    assert!(html.contains("not set: emails go to the outbox"));
    // The page started `tidings check`; its report names the missing SMTP
    // server, on the settings page and as a warning on the dashboard.
    let report = app
        .state
        .admin_ui
        .checks
        .settled(Duration::from_secs(60))
        .await
        .expect("the check finishes");
    assert!(report
        .problems()
        .any(|finding| finding.text.contains("no SMTP server")));
    let html = admin.page("/admin/settings").await;
    assert!(
        html.contains("no SMTP server is configured (smtp.url)"),
        "{html}"
    );
    let dashboard = admin.page("/admin").await;
    assert!(
        dashboard.contains("Needs your attention:</strong>"),
        "{dashboard}"
    );
    assert!(
        dashboard.contains("no SMTP server is configured"),
        "{dashboard}"
    );
    // Checking again is an action like any other.
    assert_csrf_protected(&admin, "/admin/settings/check", &[]).await;
    let response = admin.post_form("/admin/settings/check", &[]).await;
    assert_eq!(response.status(), 303);
}
