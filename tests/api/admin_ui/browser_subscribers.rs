//! The subscriber pages in a real browser: searching the list, checking an
//! import, and erasing someone, each page checked by axe-core and at a
//! phone's width.

use fantoccini::Locator;
use tidings::domain::subscriber::{
    AddOutcome, EmailAddress, OperatorSource, SubscriberName, SubscriberStatus,
};

use super::browser::{assert_usable, browser_log_in};
use crate::browser::{Browser, Viewport};
use crate::database::mentions;
use crate::helpers::{spawn_app, Backend, TestApp};

async fn add(app: &TestApp, email: &str, name: &str) -> i64 {
    let outcome = app
        .state
        .newsletter
        .add_subscriber(
            EmailAddress::parse(email).unwrap(),
            SubscriberName::parse_optional(Some(name)).unwrap(),
            SubscriberStatus::Confirmed,
            OperatorSource::Cli,
        )
        .await
        .unwrap();
    match outcome {
        AddOutcome::Added { id, .. } => id,
        AddOutcome::AlreadyExists => panic!("{email} is listed"),
    }
}

/// 7. Searches subscribers: types in the search box, submits, and sees
/// the match; the list and the import preview pass the checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_searches_subscribers() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await;
    app.add_confirmed(60).await;
    add(&app, "ada.lovelace@example.org", "Ada Lovelace").await;
    add(
        &app,
        "a.very.long.address.for.a.narrow.screen@subdomain.example.org",
        "Long",
    )
    .await;
    browser_log_in(&browser, &app).await;
    browser
        .open(&app.url("/admin/subscribers"), Viewport::DESKTOP)
        .await;
    assert_usable(&browser, "the subscriber list").await;
    let search = browser.client().find(Locator::Css("#q")).await.unwrap();
    search.send_keys("Ada L").await.unwrap();
    browser.click("form[role=search] button[type=submit]").await;
    browser
        .wait_for("location.search.includes('q=Ada+L')")
        .await;
    let rows: Vec<String> = browser
        .eval("[...document.querySelectorAll('main tbody tr')].map(row => row.textContent)")
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].contains("ada.lovelace@example.org") && rows[0].contains("Ada Lovelace"));
    let kept: String = browser.eval("document.querySelector('#q').value").await;
    assert_eq!(kept, "Ada L", "the box keeps what was typed");

    // Checking an import: choose a file, see what it would do.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("list.csv");
    std::fs::write(
        &file,
        "email,name\nnew@example.com,New Person\nada.lovelace@example.org\nbroken\n",
    )
    .unwrap();
    browser
        .open(&app.url("/admin/subscribers/import"), Viewport::DESKTOP)
        .await;
    let input = browser.client().find(Locator::Css("#file")).await.unwrap();
    input.send_keys(&file.display().to_string()).await.unwrap();
    browser.click("main form button[type=submit]").await;
    browser
        .wait_for("document.querySelector('h1').textContent === 'Check the import'")
        .await;
    let counts: Vec<String> = browser
        .eval("[...document.querySelectorAll('.stats .number')].map(n => n.textContent)")
        .await;
    assert_eq!(counts, ["1", "1", "1"]);
    assert_usable(&browser, "the import preview").await;
    let before = app
        .state
        .store()
        .existing_emails(&["new@example.com".into()])
        .await;
    assert!(before.unwrap().is_empty(), "the preview wrote nothing");
    browser.close().await;
}

/// 8. Erases one: opens a subscriber, erases, confirms, and sees the
/// result; the store keeps nothing of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_erases_a_subscriber() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await;
    let id = add(&app, "forget.me@example.com", "Forget Me").await;
    browser_log_in(&browser, &app).await;
    browser
        .open(&app.url("/admin/subscribers"), Viewport::DESKTOP)
        .await;
    browser
        .click(&format!("a[href='/admin/subscribers/{id}']"))
        .await;
    browser
        .wait_for(&format!("location.pathname === '/admin/subscribers/{id}'"))
        .await;
    assert_usable(&browser, "a subscriber's page").await;
    browser.click("a.danger").await;
    browser
        .wait_for(&format!(
            "location.pathname === '/admin/subscribers/{id}/erase'"
        ))
        .await;
    assert_usable(&browser, "the erase confirmation").await;
    browser.click("button.danger").await;
    browser
        .wait_for("location.search === '?notice=erased'")
        .await;
    let notice: String = browser
        .eval("document.querySelector('.notice').textContent")
        .await;
    assert!(notice.starts_with("Erased."), "{notice}");
    let heading: String = browser
        .eval("document.querySelector('h1').textContent")
        .await;
    assert_eq!(heading, format!("Erased subscriber {id}"));
    assert_usable(&browser, "an erased subscriber's page").await;

    let record = app
        .state
        .store()
        .subscriber_record(id)
        .await
        .unwrap()
        .unwrap();
    assert!(record.erased_at.is_some());
    assert_eq!(record.name, None);
    for trace in ["forget.me@example.com", "Forget Me"] {
        let found = mentions(&app.settings.database.url, trace).await;
        assert!(found.is_empty(), "{trace} in {found:?}");
    }
    let log = app.state.store().consent_events(id).await.unwrap();
    assert_eq!(log.last().unwrap().kind.as_str(), "erased");
    browser.close().await;
}
