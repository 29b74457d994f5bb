//! The issues pages over HTTP: the history, an issue's report after a real
//! send with scripted SMTP replies, "retry failed", and sending the next
//! post from the browser; each action checked in the database.

use std::time::{Duration, Instant};

use reqwest::header::ORIGIN;
use serde_json::Value;
use tidings::domain::issue::IssueSummary;

use super::{assert_csrf_protected, log_in, AdminClient};
use crate::helpers::{spawn_with, Backend, Options, Reply, TestApp};
use crate::on_both_backends;

on_both_backends!(
    issue_pages_and_actions_need_a_session,
    the_report_shows_counts_replies_and_attempts_after_a_real_send,
    a_retry_sends_again_only_the_failures_worth_it_and_only_once,
    the_retry_form_refuses_a_forged_request_and_changes_nothing,
    sending_now_from_the_admin_makes_one_issue_per_confirmation,
    sending_now_with_nothing_to_send_says_why,
    long_histories_and_lists_come_a_page_at_a_time,
);

/// Retries wait an hour: each test moves the clock on when it wants one.
async fn app(backend: Backend) -> TestApp {
    spawn_with(Options::new(backend), |settings| {
        settings.smtp.retry_base = Duration::from_secs(3600);
    })
    .await
}

/// Lets every delivery end: moves the clock past each backoff and wakes
/// the worker, until nothing is pending or in flight.
async fn send_until_done(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let deliveries = app.deliveries().await;
        if deliveries.pending + deliveries.sending == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "still sending: {deliveries:?}");
        if deliveries.sending == 0 {
            app.clock.advance(chrono::Duration::hours(3));
        }
        app.state.newsletter.wake_worker();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends the next queued post through the API; returns the issue's id.
async fn send(app: &TestApp) -> i64 {
    let response = app.send_now().await;
    assert_eq!(response.status(), 202);
    let created: Value = response.json().await.unwrap();
    created["issue_id"].as_i64().unwrap()
}

async fn summary(app: &TestApp, issue: i64) -> IssueSummary {
    app.state
        .store()
        .issue_summary(issue)
        .await
        .unwrap()
        .expect("the issue")
}

/// The issue's tallies against a count of its deliveries.
async fn assert_tallies_are_counts(app: &TestApp, issue: i64) {
    let progress = summary(app, issue).await.progress;
    let counted = app.state.store().issue_progress(issue).await.unwrap();
    assert_eq!(
        (progress.sent, progress.failed, progress.skipped),
        (counted.sent, counted.failed, counted.skipped)
    );
    assert_eq!(progress.pending(), counted.unfinished());
}

/// The text of an HTML fragment, tags dropped and spaces squeezed.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The table row of `address` on a page.
fn row_of(html: &str, address: &str) -> String {
    let at = html
        .find(&format!(">{address}<"))
        .unwrap_or_else(|| panic!("no row for {address} in:\n{html}"));
    let start = html[..at].rfind("<tr").unwrap();
    let end = at + html[at..].find("</tr>").unwrap();
    text(&html[start..end])
}

async fn issue_pages_and_actions_need_a_session(backend: Backend) {
    let app = app(backend).await;
    app.add_confirmed(1).await;
    app.enqueue("Tip", "Body").await;
    let issue = send(&app).await;
    for path in [
        "/admin/issues".to_owned(),
        format!("/admin/issues/{issue}"),
        format!("/admin/issues/{issue}/progress"),
        format!("/admin/issues/{issue}/retry"),
        "/admin/issues/send-now".to_owned(),
    ] {
        let response = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 303, "{path}");
        assert!(AdminClient::location(&response).starts_with("/admin/login?next="));
    }
    for path in [
        format!("/admin/issues/{issue}/retry"),
        "/admin/issues/send-now".to_owned(),
    ] {
        let response = app
            .client
            .post(app.url(&path))
            .header(ORIGIN, &app.address)
            .form(&[("key", uuid::Uuid::new_v4().to_string())])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
    }
    send_until_done(&app).await;
    assert_eq!(
        app.state.store().list_issues(None, 10).await.unwrap().len(),
        1
    );
    // With a session: an id that names no issue is a friendly 404.
    let admin = log_in(&app).await;
    for path in [
        "/admin/issues/999",
        "/admin/issues/abc",
        "/admin/issues/999/progress",
    ] {
        let response = admin.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        assert!(response.text().await.unwrap().contains("There is no issue"));
    }
    let response = admin
        .get(&format!("/admin/issues/{issue}?show=everything"))
        .await;
    assert_eq!(response.status(), 422);
}

async fn the_report_shows_counts_replies_and_attempts_after_a_real_send(backend: Backend) {
    let app = app(backend).await;
    app.add_confirmed(4).await;
    // reader3 leaves through the link in the issue before.
    let leave = app.unsubscribe_link("reader3@example.com").await;
    send_until_done(&app).await;
    app.mail
        .fail_next("reader1@example.com", &[Reply::Permanent]);
    app.mail
        .fail_next("reader2@example.com", &[Reply::Temporary; 4]);
    app.mail
        .fail_next("reader3@example.com", &[Reply::Temporary]);
    app.enqueue("Coalitions need exits", "Body").await;
    let issue = send(&app).await;
    // reader3's first try got a 451; they leave before the second.
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.mail.attempts_for("reader3@example.com") < 2 {
        assert!(Instant::now() < deadline, "no try to reader3");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.client.post(leave).send().await.unwrap().status(), 200);
    send_until_done(&app).await;
    assert_eq!(
        app.mail.attempts_for("reader2@example.com"),
        5,
        "1 + max_attempts"
    );
    assert_tallies_are_counts(&app, issue).await;

    let admin = log_in(&app).await;
    let list = admin.page("/admin/issues").await;
    let row = row_of(&list, "Coalitions need exits");
    // Recipients, sent, failed, pending, skipped.
    assert!(row.contains("Coalitions need exits 4 1 2 0 1"), "{row}");
    assert!(list.contains(&format!("href=\"/admin/issues/{issue}\"")));

    let page = admin.page(&format!("/admin/issues/{issue}")).await;
    let words = text(&page);
    for expected in ["1 sent", "2 failed", "1 skipped", "0 pending", "Done"] {
        assert!(words.contains(expected), "{expected} in {words}");
    }
    assert!(page.contains("Retry failed"));
    // Failures are listed first, each address linked to its subscriber.
    let reader1_id = app.subscriber_id("reader1@example.com").await;
    assert!(page.contains(&format!(
        "<a href=\"/admin/subscribers/{reader1_id}\">reader1@example.com</a>"
    )));
    let reader1 = row_of(&page, "reader1@example.com");
    assert!(
        reader1.contains("failed 1 550 5.1.1 No such user"),
        "{reader1}"
    );
    let failed = admin
        .page(&format!("/admin/issues/{issue}?show=failed"))
        .await;
    let reader2 = row_of(&failed, "reader2@example.com");
    assert!(
        reader2.contains("failed 4 451 4.3.0 Try again later (gave up after 4 attempts)"),
        "{reader2}"
    );
    let skipped = admin
        .page(&format!("/admin/issues/{issue}?show=skipped"))
        .await;
    let reader3 = row_of(&skipped, "reader3@example.com");
    assert!(
        reader3.contains("skipped 2 subscriber is unsubscribed now"),
        "{reader3}"
    );

    let progress: Value = admin
        .get(&format!("/admin/issues/{issue}/progress"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            &progress["recipients"],
            &progress["sent"],
            &progress["failed"],
            &progress["skipped"],
            &progress["pending"],
            &progress["done"]
        ),
        (
            &Value::from(4),
            &Value::from(1),
            &Value::from(2),
            &Value::from(1),
            &Value::from(0),
            &Value::from(true)
        )
    );
    assert!(progress["finished"].as_str().unwrap().ends_with("UTC"));
}

async fn a_retry_sends_again_only_the_failures_worth_it_and_only_once(backend: Backend) {
    let app = app(backend).await;
    app.add_confirmed(5).await;
    let leave = app.unsubscribe_link("reader4@example.com").await;
    send_until_done(&app).await;
    // 5.1.1; 4xx until it gave up; a policy 5xx; a policy 5xx to someone
    // who then leaves; and one delivered.
    app.mail
        .fail_next("reader1@example.com", &[Reply::Permanent]);
    app.mail
        .fail_next("reader2@example.com", &[Reply::Temporary; 4]);
    app.mail.fail_next("reader3@example.com", &[Reply::Policy]);
    app.mail.fail_next("reader4@example.com", &[Reply::Policy]);
    app.enqueue("Tip", "Body").await;
    let issue = send(&app).await;
    send_until_done(&app).await;
    assert_eq!(summary(&app, issue).await.progress.failed, 4);
    assert_eq!(app.client.post(leave).send().await.unwrap().status(), 200);
    let attempts = |who: &str| app.mail.attempts_for(&format!("{who}@example.com"));
    let before: Vec<usize> = ["reader1", "reader4"].map(attempts).to_vec();

    let admin = log_in(&app).await;
    let confirm = text(&admin.page(&format!("/admin/issues/{issue}/retry")).await);
    for expected in [
        "2 deliveries will be sent again",
        "1 delivery: the subscriber has unsubscribed since",
        "1 delivery: the server said the address does not exist",
        "Send 2 deliveries again",
    ] {
        assert!(confirm.contains(expected), "{expected} in {confirm}");
    }
    assert_eq!(
        summary(&app, issue).await.progress.failed,
        4,
        "a GET changes nothing"
    );

    let response = admin
        .post_form(&format!("/admin/issues/{issue}/retry"), &[])
        .await;
    assert_eq!(response.status(), 303);
    let location = AdminClient::location(&response);
    assert_eq!(location, format!("/admin/issues/{issue}?queued=2"));
    assert!(text(&admin.page(&location).await).contains("2 deliveries queued again."));
    app.mail.wait_for("reader2@example.com", 2).await;
    app.mail.wait_for("reader3@example.com", 2).await;
    send_until_done(&app).await;
    let progress = summary(&app, issue).await.progress;
    assert_eq!((progress.sent, progress.failed), (3, 2));
    assert_tallies_are_counts(&app, issue).await;
    // Each sent once more; the two left alone were not tried again.
    assert_eq!(app.mail.received_by("reader2@example.com").len(), 2);
    assert_eq!(app.mail.received_by("reader3@example.com").len(), 2);
    assert_eq!(["reader1", "reader4"].map(attempts).to_vec(), before);

    // A second retry (a double click) changes nothing.
    let again = admin
        .post_form(&format!("/admin/issues/{issue}/retry"), &[])
        .await;
    assert_eq!(
        AdminClient::location(&again),
        format!("/admin/issues/{issue}?queued=0")
    );
    send_until_done(&app).await;
    assert_eq!(summary(&app, issue).await.progress, progress);
    assert_eq!(app.mail.received_by("reader2@example.com").len(), 2);
    assert_eq!(["reader1", "reader4"].map(attempts).to_vec(), before);
    let nothing = text(&admin.page(&format!("/admin/issues/{issue}/retry")).await);
    assert!(
        nothing.contains("None is worth sending again now"),
        "{nothing}"
    );
}

async fn the_retry_form_refuses_a_forged_request_and_changes_nothing(backend: Backend) {
    let app = app(backend).await;
    app.add_confirmed(1).await;
    app.mail.fail_next("reader1@example.com", &[Reply::Policy]);
    app.enqueue("Tip", "Body").await;
    let issue = send(&app).await;
    send_until_done(&app).await;
    let admin = log_in(&app).await;
    assert_csrf_protected(&admin, &format!("/admin/issues/{issue}/retry"), &[]).await;
    let progress = summary(&app, issue).await.progress;
    assert_eq!((progress.failed, progress.pending()), (1, 0));
    assert_eq!(app.deliveries().await.failed, 1);
}

async fn sending_now_from_the_admin_makes_one_issue_per_confirmation(backend: Backend) {
    let app = app(backend).await;
    app.add_confirmed(3).await;
    let first = app.enqueue("First tip", "Body").await;
    app.enqueue("Second tip", "Body").await;
    let admin = log_in(&app).await;
    let confirm = admin.page("/admin/issues/send-now").await;
    let words = text(&confirm);
    assert!(
        words.contains("First tip goes to all 3 confirmed subscribers now"),
        "{words}"
    );
    assert!(confirm.contains(&format!("href=\"/admin/posts/{first}\"")));
    let key = field(&confirm, "key");

    assert_csrf_protected(&admin, "/admin/issues/send-now", &[("key", &key)]).await;
    assert!(app
        .state
        .store()
        .list_issues(None, 10)
        .await
        .unwrap()
        .is_empty());

    let response = admin
        .post_form("/admin/issues/send-now", &[("key", &key)])
        .await;
    assert_eq!(response.status(), 303);
    let location = AdminClient::location(&response);
    let issues = app.state.store().list_issues(None, 10).await.unwrap();
    assert_eq!(issues.len(), 1);
    assert_eq!(location, format!("/admin/issues/{}", issues[0].id));
    assert_eq!(issues[0].post_id, Some(first));
    assert_eq!(issues[0].progress.recipients, 3);
    // The same confirmation again (a double click) is the same issue.
    let again = admin
        .post_form("/admin/issues/send-now", &[("key", &key)])
        .await;
    assert_eq!(AdminClient::location(&again), location);
    assert_eq!(
        app.state.store().list_issues(None, 10).await.unwrap().len(),
        1
    );
    send_until_done(&app).await;
    assert_eq!(app.mail.received().len(), 3, "sent once");
    let page = text(&admin.page(&location).await);
    assert!(page.contains("First tip"), "{page}");
    assert!(page.contains("3 sent"), "{page}");
    // A form without its key is refused, and sends nothing.
    let response = admin.post_form("/admin/issues/send-now", &[]).await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        app.state.store().list_issues(None, 10).await.unwrap().len(),
        1
    );
}

/// The value of the hidden field `name` in a page's form.
fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("the field") + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

async fn sending_now_with_nothing_to_send_says_why(backend: Backend) {
    let app = app(backend).await;
    let admin = log_in(&app).await;
    app.enqueue("Tip", "Body").await;
    let response = admin.get("/admin/issues/send-now").await;
    assert_eq!(response.status(), 409);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("nobody has confirmed"));
    app.add_confirmed(1).await;
    send(&app).await;
    let response = admin.get("/admin/issues/send-now").await;
    assert_eq!(response.status(), 409);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("the queue has no post"));
    // A confirmation page opened before the queue emptied.
    let response = admin
        .post_form(
            "/admin/issues/send-now",
            &[("key", &uuid::Uuid::new_v4().to_string())],
        )
        .await;
    assert_eq!(response.status(), 409);
    assert!(response.text().await.unwrap().contains("Nothing to send"));
    assert_eq!(
        app.state.store().list_issues(None, 10).await.unwrap().len(),
        1
    );
}

async fn long_histories_and_lists_come_a_page_at_a_time(backend: Backend) {
    let app = app(backend).await;
    app.add_confirmed(1).await;
    let mut issues = Vec::new();
    for week in 1..=50 {
        app.enqueue(&format!("Week {week}"), "Body").await;
        issues.push(send(&app).await);
    }
    send_until_done(&app).await;
    // Week 51 goes to 51 readers, and none takes it.
    app.state
        .store()
        .bulk_insert_confirmed(
            50,
            "late",
            "example.com",
            tidings::clock::Clock::now(&*app.clock),
        )
        .await
        .unwrap();
    app.mail
        .fail_next("reader1@example.com", &[Reply::Permanent]);
    for n in 1..=50 {
        app.mail
            .fail_next(&format!("late{n}@example.com"), &[Reply::Permanent]);
    }
    app.enqueue("Week 51", "Body").await;
    let big = send(&app).await;
    send_until_done(&app).await;
    assert_eq!(summary(&app, big).await.progress.failed, 51);
    let admin = log_in(&app).await;

    let newest = admin.page("/admin/issues").await;
    assert!(newest.contains(">Week 51<") && newest.contains(">Week 2<"));
    assert!(!newest.contains(">Week 1<"));
    let older = format!("/admin/issues?before={}", issues[1]);
    assert!(newest.contains(&format!("href=\"{older}\"")), "{newest}");
    let last = admin.page(&older).await;
    assert!(last.contains(">Week 1<") && !last.contains(">Week 2<"));
    assert!(!last.contains("Older issues"));

    let failed = admin
        .page(&format!("/admin/issues/{big}?show=failed"))
        .await;
    assert_eq!(failed.matches("<span class=\"badge failed\">").count(), 50);
    let next = failed
        .split("href=\"")
        .find(|link| link.contains("after="))
        .and_then(|link| link.split('"').next())
        .unwrap()
        .replace("&amp;", "&");
    let rest = admin.page(&next).await;
    assert_eq!(rest.matches("<span class=\"badge failed\">").count(), 1);
    assert!(rest.contains(">late50@example.com<"), "{rest}");
}
