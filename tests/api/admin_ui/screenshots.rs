//! Pictures of every admin page at phone and desktop widths, for docs/
//! and the README: `scripts/screenshots` runs this (it is ignored
//! otherwise), on a newsletter with some history.

use crate::browser::{Browser, Viewport};
use crate::helpers::{spawn_with, Backend, Options, TestApp};

use super::browser::browser_log_in;

/// A newsletter a few weeks in: the first series queued, some readers.
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
    for reader in [
        "ada@example.org",
        "grace.hopper@example.com",
        "alan@example.net",
        "katherine@example.org",
    ] {
        app.subscribe_and_confirm(reader).await;
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
    for (path, name) in [("/admin", "dashboard"), ("/admin/settings", "settings")] {
        picture(&browser, &app, path, name).await;
    }
    browser.close().await;
}
