//! The admin in a real browser (headless Chromium over WebDriver): the
//! flows a person goes through, each page checked by axe-core for WCAG 2.1
//! A/AA and for fitting a phone's width.

use fantoccini::Locator;

use super::{add_admin, ADMIN_EMAIL, ADMIN_PASSWORD};
use crate::browser::{Browser, Viewport};
use crate::helpers::{spawn_app, Backend, TestApp};

/// Logs in through the login page as a person would, and lands on the
/// dashboard.
pub async fn browser_log_in(browser: &Browser, app: &TestApp) {
    add_admin(app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    browser.open(&app.url("/admin"), Viewport::DESKTOP).await;
    // Without a session the dashboard sends us to the login page.
    browser
        .wait_for("location.pathname === '/admin/login'")
        .await;
    let client = browser.client();
    client
        .find(Locator::Css("#email"))
        .await
        .unwrap()
        .send_keys(ADMIN_EMAIL)
        .await
        .unwrap();
    client
        .find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(ADMIN_PASSWORD)
        .await
        .unwrap();
    client
        .find(Locator::Css("main form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for("location.pathname === '/admin'").await;
}

/// The page fits a 390 px phone without sideways scrolling, and axe-core
/// finds no WCAG 2.1 A/AA violation at either width.
pub async fn assert_usable(browser: &Browser, what: &str) {
    for viewport in [Viewport::PHONE, Viewport::DESKTOP] {
        browser.set_viewport(viewport).await;
        let [document, screen]: [u32; 2] = browser
            .eval("[document.documentElement.scrollWidth, window.innerWidth]")
            .await;
        assert!(
            document <= screen,
            "{what} at {viewport:?}: {document} px wide"
        );
        browser.assert_accessible().await;
    }
}

/// 1. Logs in; the login page and the dashboard pass the checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_logs_in_and_out() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await;
    browser
        .open(&app.url("/admin/login"), Viewport::PHONE)
        .await;
    assert_usable(&browser, "the login page").await;
    browser_log_in(&browser, &app).await;
    let heading: String = browser
        .eval("document.querySelector('h1').textContent")
        .await;
    assert_eq!(heading.trim(), "Dashboard");
    assert_usable(&browser, "the dashboard").await;
    browser
        .client()
        .goto(&app.url("/admin/settings"))
        .await
        .unwrap();
    assert_usable(&browser, "the settings page").await;
    browser.client().goto(&app.url("/admin")).await.unwrap();
    browser
        .client()
        .find(Locator::Css("form.logout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_for("location.pathname === '/admin/login'")
        .await;
    browser.client().goto(&app.url("/admin")).await.unwrap();
    browser
        .wait_for("location.pathname === '/admin/login'")
        .await;
    browser.close().await;
}

/// The pages no flow above passes through: a sent post (read only), the
/// delete question, the import form and an error page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_pages_pass_the_checks() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await;
    let sent = app.enqueue("A tip that went out", "Body").await;
    let queued = app.enqueue("A tip still queued", "Body").await;
    app.add_confirmed(1).await;
    assert_eq!(app.send_now().await.status(), 202);
    app.wait_until_idle().await;
    browser_log_in(&browser, &app).await;
    for (path, what, marker) in [
        (
            format!("/admin/posts/{sent}"),
            "a sent post",
            "A tip that went out",
        ),
        (
            format!("/admin/posts/{queued}/delete"),
            "the delete question",
            "A tip still queued",
        ),
        (
            "/admin/subscribers/import".to_owned(),
            "the import form",
            "CSV",
        ),
        (
            "/admin/posts/999999".to_owned(),
            "an error page",
            "Not found",
        ),
    ] {
        browser.client().goto(&app.url(&path)).await.unwrap();
        let text: String = browser.eval("document.body.innerText").await;
        assert!(text.contains(marker), "{what}: {text}");
        assert_usable(&browser, what).await;
    }
    browser.close().await;
}
