//! The editor's preview frame and its test emails over HTTP: the same
//! email a subscriber gets, and a test that reaches one address only.

use reqwest::{Method, Response};
use tidings::domain::post::PostStatus;

use super::posts::{status_and_body, stored};
use super::{log_in, AdminClient};
use crate::helpers::{free_port, spawn_app, spawn_with, Backend, Options, Reply};
use crate::on_both_backends;

on_both_backends!(
    the_preview_is_the_email_a_subscriber_gets,
    a_test_email_reaches_the_address_given_and_nobody_else,
    a_test_email_the_mail_server_refuses_is_a_clear_error,
);

/// The body of a POST to a preview route, for a form with these fields.
async fn preview(admin: &AdminClient, path: &str, fields: &[(&str, &str)]) -> Response {
    let response = admin.post_form(path, fields).await;
    assert_eq!(response.status(), 200, "{path}");
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("sandbox"), "{policy}");
    assert!(policy.contains("frame-ancestors 'self'"), "{policy}");
    assert!(!policy.contains("script-src"), "{policy}");
    response
}

async fn the_preview_is_the_email_a_subscriber_gets(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = log_in(&app).await;
    app.enqueue("Before it", "First.").await;
    let subject = "Preview me";
    let body = "Some **bold** advice and [a link](https://example.org/x).\n";
    let id = app.enqueue(subject, body).await;
    let api = app
        .admin(Method::GET, &format!("/api/admin/posts/{id}/preview"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let id_text = id.to_string();
    let fields = [
        ("subject", subject),
        ("body_markdown", body),
        ("post", id_text.as_str()),
    ];
    let html = preview(&admin, "/admin/preview", &fields)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(html, api, "the same email as the API's preview");
    let saved = admin.page(&format!("/admin/preview/{id}")).await;
    assert_eq!(saved, api);

    // Unsaved changes show, and nothing is stored.
    let changed = [
        ("subject", "A new title"),
        ("body_markdown", "Rewritten *entirely*."),
        ("post", id_text.as_str()),
    ];
    let html = preview(&admin, "/admin/preview", &changed)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("A new title") && html.contains("entirely"),
        "{html}"
    );
    assert!(html.contains("Issue #2"), "numbered by its place: {html}");
    assert_eq!(stored(&app).await[1].subject, subject);

    // The plain-text part, in a page of its own for the frame.
    let text = preview(&admin, "/admin/preview/text", &fields)
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("<pre"), "{text}");
    assert!(text.contains("advice and a link"), "{text}");
    assert!(text.contains("https://example.org/x"), "{text}");
    assert!(!text.contains("<strong"), "{text}");
    let saved_text = admin.page(&format!("/admin/preview/{id}/text")).await;
    assert_eq!(saved_text, text);

    // A new post, never saved: numbered as the next in the series.
    let html = preview(
        &admin,
        "/admin/preview",
        &[
            ("subject", "Brand new"),
            ("body_markdown", "Not saved <b>yet</b>."),
        ],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        html.contains("Brand new") && html.contains("Issue #3"),
        "{html}"
    );
    assert!(
        !html.contains("<b>yet</b>"),
        "raw HTML is not passed on: {html}"
    );
    // Half typed is still a preview.
    preview(
        &admin,
        "/admin/preview",
        &[("subject", ""), ("body_markdown", "")],
    )
    .await;
    assert_eq!(stored(&app).await.len(), 2);
    let note = admin.get("/admin/preview").await;
    assert_eq!(note.status(), 200);
    assert!(note.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("sandbox"));
}

async fn a_test_email_reaches_the_address_given_and_nobody_else(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = log_in(&app).await;
    // The tester is on the list too: the test's unsubscribe link must not
    // unsubscribe them, nor anyone.
    let tester = "tester@example.net";
    app.subscribe_and_confirm(tester).await;
    app.subscribe_and_confirm("reader@example.com").await;
    let id = app.enqueue("Try me", "A **test** of the post.").await;
    let before = app.mail.received().len();

    let response = admin
        .post_form(
            &format!("/admin/posts/{id}/test"),
            &[("to", " Tester@Example.net ")],
        )
        .await;
    assert_eq!(response.status(), 303);
    let location = AdminClient::location(&response);
    let editor = admin.page(&location).await;
    assert!(
        editor.contains("Test sent to tester@example.net."),
        "{editor}"
    );

    // Sent before the answer: it is already there, and it is the only one.
    let mails = app.mail.received();
    assert_eq!(mails.len(), before + 1, "one email");
    let mail = mails.last().unwrap();
    assert_eq!(mail.to, [tester]);
    assert_eq!(mail.subject(), "[Test] Try me");
    assert!(mail.html().contains(">test</strong>"), "{}", mail.html());
    assert!(
        mail.text().contains("A test of the post."),
        "{}",
        mail.text()
    );
    let preview = admin.page(&format!("/admin/preview/{id}")).await;
    assert_eq!(
        mail.html().replace("\r\n", "\n"),
        preview,
        "what the preview showed"
    );
    for header in [
        "Message-ID",
        "Date",
        "List-Id",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    ] {
        assert!(mail.header(header).is_some(), "{header}");
    }

    // Its unsubscribe link, even one-click, unsubscribes nobody.
    let link = mail.header("List-Unsubscribe").unwrap();
    let link = app.local(link.trim_start_matches('<').trim_end_matches('>'));
    app.client
        .post(&link)
        .form(&[("List-Unsubscribe", "One-Click")])
        .send()
        .await
        .unwrap();
    assert_eq!(app.status_of(tester).await.as_deref(), Some("confirmed"));
    assert_eq!(
        app.status_of("reader@example.com").await.as_deref(),
        Some("confirmed")
    );

    // A bad address is refused beside its field, and nothing is sent.
    let (status, html) = status_and_body(
        admin
            .post_form(
                &format!("/admin/posts/{id}/test"),
                &[("to", "not an address")],
            )
            .await,
    )
    .await;
    assert_eq!(status, 422);
    let at = html
        .find(r#"id="to-error""#)
        .expect("a message beside the field");
    assert!(html[at..].contains("spaces"), "{html}");
    assert!(html.contains(r#"value="not an address""#));
    assert_eq!(app.mail.received().len(), before + 1);
    // The post was not touched by any of it.
    assert_eq!(stored(&app).await[0].status, PostStatus::Queued);
}

async fn a_test_email_the_mail_server_refuses_is_a_clear_error(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = log_in(&app).await;
    let id = app.enqueue("Try me", "Body.").await;
    app.mail
        .fail_next("bounce@example.net", &[Reply::Permanent]);
    let (status, html) = status_and_body(
        admin
            .post_form(
                &format!("/admin/posts/{id}/test"),
                &[("to", "bounce@example.net")],
            )
            .await,
    )
    .await;
    assert_eq!(status, 502);
    assert!(
        html.contains("Nothing was sent to bounce@example.net."),
        "{html}"
    );
    assert!(html.contains("550 5.1.1 No such user"), "{html}");
    assert!(
        html.contains(r#"name="subject""#),
        "the editor, still usable"
    );

    // No mail server at all.
    let port = free_port();
    let down = spawn_with(
        Options {
            smtp_port: Some(port),
            ..Options::new(backend)
        },
        |_| {},
    )
    .await;
    let admin = log_in(&down).await;
    let id = down.enqueue("Try me", "Body.").await;
    let response = admin
        .post_form(
            &format!("/admin/posts/{id}/test"),
            &[("to", "tester@example.net")],
        )
        .await;
    let (status, html) = status_and_body(response).await;
    assert_eq!(status, 502);
    assert!(html.contains("could not be reached"), "{html}");
    assert!(
        !html.contains(&format!("127.0.0.1:{port}")),
        "no details: {html}"
    );
    assert!(!html.contains("os error"), "no details: {html}");
}
