//! The issues pages in a real browser: sending an issue and watching it go
//! out, and retrying a failure, as a person would.

use std::time::{Duration, Instant};

use super::browser::{assert_usable, browser_log_in};
use crate::browser::Browser;
use crate::helpers::{spawn_with, Backend, Options, Reply, TestApp};

/// Waits up to `seconds` until a JavaScript expression is true (sending at
/// a capped rate takes longer than `Browser::wait_for` waits).
async fn wait_long(browser: &Browser, condition: &str, seconds: u64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !browser.eval::<bool>(condition).await {
        assert!(
            Instant::now() < deadline,
            "waited {seconds} s for {condition}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count(browser: &Browser, part: &str) -> String {
    browser
        .eval(&format!(
            "document.querySelector('[data-count=\"{part}\"]').textContent"
        ))
        .await
}

const ON_AN_ISSUE_PAGE: &str = "/^\\/admin\\/issues\\/\\d+$/.test(location.pathname)";
const DONE: &str = "document.querySelector('[data-status]').textContent.startsWith('Done')";

async fn issue_id(browser: &Browser) -> i64 {
    let path: String = browser.eval("location.pathname").await;
    path.rsplit('/').next().unwrap().parse().unwrap()
}

async fn progress(app: &TestApp, issue: i64) -> (i64, i64, i64) {
    let progress = app
        .state
        .store()
        .issue_summary(issue)
        .await
        .unwrap()
        .unwrap()
        .progress;
    (progress.sent, progress.failed, progress.pending())
}

/// 5. Sends an issue and sees its report: from the list to the send-now
/// confirmation, then the issue's page, whose progress counts up to done
/// without a reload and then lists the failure with the server's reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_an_issue_and_sees_its_report() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    // Two emails a second: the send lasts long enough to be watched.
    let app = spawn_with(Options::new(Backend::Sqlite), |settings| {
        settings.smtp.rate_per_second = 2;
    })
    .await;
    app.add_confirmed(12).await;
    app.mail
        .fail_next("reader1@example.com", &[Reply::Permanent]);
    app.enqueue("Pick partners who can say no", "Body").await;
    browser_log_in(&browser, &app).await;

    browser
        .client()
        .goto(&app.url("/admin/issues"))
        .await
        .unwrap();
    assert_usable(&browser, "the list of issues, empty").await;
    browser.click("a[href='/admin/issues/send-now']").await;
    browser
        .wait_for("location.pathname === '/admin/issues/send-now'")
        .await;
    let offer: String = browser
        .eval("document.querySelector('main').innerText")
        .await;
    assert!(
        offer.contains("Pick partners who can say no") && offer.contains("all 12 confirmed"),
        "{offer}"
    );
    assert_usable(&browser, "the send-now confirmation").await;
    browser.click("main form button[type=submit]").await;
    browser.wait_for(ON_AN_ISSUE_PAGE).await;
    let issue = issue_id(&browser).await;
    // Marks this page: a reload would lose the mark.
    browser.eval::<bool>("(window.notReloaded = true)").await;
    let live: String = browser
        .eval("document.getElementById('issue-progress').dataset.live")
        .await;
    assert_eq!(live, "true", "still sending when the page opened");

    wait_long(&browser, DONE, 30).await;
    assert!(browser.eval::<bool>("window.notReloaded === true").await);
    assert_eq!(count(&browser, "sent").await, "11");
    assert_eq!(count(&browser, "failed").await, "1");
    assert_eq!(count(&browser, "pending").await, "0");
    // The list of failures comes in once sending is done.
    wait_long(
        &browser,
        "document.getElementById('issue-unsent').innerText.includes('reader1@example.com')",
        10,
    )
    .await;
    let failures: String = browser
        .eval("document.getElementById('issue-unsent').innerText")
        .await;
    assert!(
        failures.contains("550 5.1.1") && failures.contains("No such user"),
        "{failures}"
    );
    assert!(browser.eval::<bool>("window.notReloaded === true").await);
    assert_eq!(progress(&app, issue).await, (11, 1, 0));
    assert_usable(&browser, "an issue's page").await;
    browser.close().await;
}

/// 6. Retries a failure: a policy refusal, then the server takes it; the
/// person retries from the issue's page and sees it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_a_failure() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_with(Options::new(Backend::Sqlite), |_| {}).await;
    app.add_confirmed(3).await;
    app.mail.fail_next("reader2@example.com", &[Reply::Policy]);
    app.enqueue("Shared goals, separate budgets", "Body").await;
    assert_eq!(app.send_now().await.status(), 202);
    app.wait_until_idle().await;
    browser_log_in(&browser, &app).await;

    browser
        .client()
        .goto(&app.url("/admin/issues"))
        .await
        .unwrap();
    assert_usable(&browser, "the list of issues").await;
    browser.click("main table a[href^='/admin/issues/']").await;
    browser.wait_for(ON_AN_ISSUE_PAGE).await;
    let issue = issue_id(&browser).await;
    assert_eq!(progress(&app, issue).await, (2, 1, 0));
    let report: String = browser
        .eval("document.querySelector('main').innerText")
        .await;
    assert!(report.contains("554 5.7.1"), "{report}");

    browser.click("a[href$='/retry']").await;
    browser
        .wait_for(&format!(
            "location.pathname === '/admin/issues/{issue}/retry'"
        ))
        .await;
    let offer: String = browser
        .eval("document.querySelector('main').innerText")
        .await;
    assert!(offer.contains("1 delivery will be sent again"), "{offer}");
    assert_usable(&browser, "the retry confirmation").await;
    browser.click("main form button[type=submit]").await;
    browser
        .wait_for(&format!("location.pathname === '/admin/issues/{issue}'"))
        .await;
    let notice: String = browser
        .eval("document.querySelector('.notice').textContent")
        .await;
    assert_eq!(notice.trim(), "1 delivery queued again.");
    wait_long(&browser, DONE, 15).await;
    assert_eq!(count(&browser, "sent").await, "3");
    assert_eq!(count(&browser, "failed").await, "0");
    assert_eq!(progress(&app, issue).await, (3, 0, 0));
    assert_eq!(app.mail.received_by("reader2@example.com").len(), 1);
    browser.close().await;
}
