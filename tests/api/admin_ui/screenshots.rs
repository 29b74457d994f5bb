//! Pictures of every admin page at phone and desktop widths, for docs/
//! and the README: `scripts/screenshots` runs this (it is ignored
//! otherwise), on a newsletter a few weeks in.

use chrono::{Duration, Utc};

use crate::browser::{Browser, Viewport};
use crate::helpers::{spawn_with, Backend, Options, Reply, TestApp};

use super::browser::browser_log_in;

/// The first series queued, readers who joined over the last weeks, three
/// issues sent (one address refused by its server) and a fourth queued.
async fn newsletter_with_history() -> TestApp {
    let app = spawn_with(
        Options {
            seed: true,
            ..Options::new(Backend::Sqlite)
        },
        |settings| {
            settings.newsletter.name = "Partnership Pitfalls Weekly".into();
        },
    )
    .await;
    let store = app.state.store();
    let today = Utc::now();
    for days_ago in (1..=80).rev() {
        // A slow start, then a steadier stream after a talk in week six.
        let joined = if days_ago > 45 {
            days_ago % 3
        } else {
            4 + days_ago % 5
        };
        store
            .bulk_insert_confirmed(
                joined as u64,
                &format!("reader{days_ago}-"),
                "example.org",
                today - Duration::days(days_ago),
            )
            .await
            .unwrap();
    }
    for reader in ["ada@example.org", "grace.hopper@example.com"] {
        app.subscribe_and_confirm(reader).await;
    }
    app.subscribe_json(serde_json::json!({ "email": "alan@example.net", "name": "Alan" }))
        .await;
    app.mail
        .fail_next("grace.hopper@example.com", &[Reply::Permanent]);
    for _ in 0..3 {
        assert_eq!(app.send_now().await.status(), 202);
        app.wait_until_idle().await;
    }
    app
}

async fn picture(browser: &Browser, app: &TestApp, path: &str, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    browser.client().goto(&app.url(path)).await.unwrap();
    for viewport in [Viewport::PHONE, Viewport::DESKTOP] {
        browser.set_viewport(viewport).await;
        let png = browser.screenshot().await;
        std::fs::write(dir.join(format!("admin-{name}-{}.png", viewport.name)), png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/screenshots/: run by scripts/screenshots"]
async fn screenshots_of_every_admin_page() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = newsletter_with_history().await;
    picture(&browser, &app, "/admin/login", "login").await;
    browser_log_in(&browser, &app).await;
    let grace = app.subscriber_id("grace.hopper@example.com").await;
    let posts = app.state.store().list_posts().await.unwrap();
    let queued = posts.iter().find(|post| post.sent_at.is_none()).unwrap();
    for (path, name) in [
        ("/admin".to_owned(), "dashboard"),
        ("/admin/posts".to_owned(), "posts"),
        (format!("/admin/posts/{}", queued.id), "editor"),
        ("/admin/issues".to_owned(), "issues"),
        ("/admin/issues/1".to_owned(), "issue"),
        ("/admin/issues/1/retry".to_owned(), "retry"),
        ("/admin/issues/send-now".to_owned(), "send-now"),
        ("/admin/subscribers".to_owned(), "subscribers"),
        (format!("/admin/subscribers/{grace}"), "subscriber"),
        ("/admin/subscribers/import".to_owned(), "import"),
        ("/admin/settings".to_owned(), "settings"),
    ] {
        picture(&browser, &app, &path, name).await;
    }
    browser.close().await;
}
