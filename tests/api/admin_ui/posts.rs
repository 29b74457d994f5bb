//! The posts pages over HTTP: the queue, the editor, the preview frame and
//! test emails, each action checked in the database (and the mail server).

use reqwest::header::ORIGIN;
use reqwest::{Method, Response};
use tidings::domain::post::{Post, PostStatus};

use super::{assert_csrf_protected, log_in, AdminClient};
use crate::helpers::{spawn_app, Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    every_posts_page_and_action_needs_a_session,
    every_posts_form_refuses_a_forgery_and_changes_nothing,
    a_post_is_written_saved_and_edited,
    a_refused_field_comes_back_with_its_message_and_what_was_typed,
    posts_move_up_and_down_and_to_a_dropped_place,
    a_post_is_deleted_after_a_confirmation,
    a_sent_post_is_read_only_and_its_actions_are_refused,
);

/// Every post in queue order, as stored.
pub async fn stored(app: &TestApp) -> Vec<Post> {
    app.state.store().list_posts().await.unwrap()
}

pub async fn subjects(app: &TestApp) -> Vec<String> {
    stored(app)
        .await
        .into_iter()
        .filter(|post| post.status == PostStatus::Queued)
        .map(|post| post.subject)
        .collect()
}

/// Writes a post through the editor's form; its id.
pub async fn write_post(admin: &AdminClient, subject: &str, body: &str) -> i64 {
    let response = admin
        .post_form(
            "/admin/posts",
            &[("subject", subject), ("body_markdown", body)],
        )
        .await;
    assert_eq!(response.status(), 303);
    let location = AdminClient::location(&response);
    let id = location
        .strip_prefix("/admin/posts/")
        .and_then(|rest| rest.strip_suffix("?done=saved"))
        .unwrap_or_else(|| panic!("to the new post's editor: {location}"));
    id.parse().unwrap()
}

pub async fn status_and_body(response: Response) -> (u16, String) {
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn every_posts_page_and_action_needs_a_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = app.enqueue("Kept", "Body.").await;
    for page in [
        "/admin/posts".to_owned(),
        "/admin/posts/new".to_owned(),
        format!("/admin/posts/{id}"),
        format!("/admin/posts/{id}/delete"),
        "/admin/preview".to_owned(),
        format!("/admin/preview/{id}"),
        format!("/admin/preview/{id}/text"),
    ] {
        let response = app.client.get(app.url(&page)).send().await.unwrap();
        assert_eq!(response.status(), 303, "{page}");
        let location = AdminClient::location(&response);
        assert!(location.starts_with("/admin/login?next="), "{location}");
    }
    let fields = [
        ("subject", "Forged"),
        ("body_markdown", "Forged."),
        ("direction", "down"),
        ("place", "1"),
        ("to", "someone@example.com"),
    ];
    for action in [
        "/admin/posts".to_owned(),
        format!("/admin/posts/{id}"),
        format!("/admin/posts/{id}/move"),
        format!("/admin/posts/{id}/place"),
        format!("/admin/posts/{id}/delete"),
        format!("/admin/posts/{id}/test"),
        "/admin/preview".to_owned(),
        "/admin/preview/text".to_owned(),
    ] {
        let response = app
            .client
            .post(app.url(&action))
            .header(ORIGIN, &app.address)
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{action}");
    }
    let posts = stored(&app).await;
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].subject, "Kept");
    assert!(app.mail.received().is_empty());
}

async fn every_posts_form_refuses_a_forgery_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = log_in(&app).await;
    let first = app.enqueue("First", "One.").await;
    let second = app.enqueue("Second", "Two.").await;
    let before = stored(&app).await;
    let post = [("subject", "Forged"), ("body_markdown", "Forged.")];
    assert_csrf_protected(&admin, "/admin/posts", &post).await;
    assert_csrf_protected(&admin, &format!("/admin/posts/{first}"), &post).await;
    assert_csrf_protected(
        &admin,
        &format!("/admin/posts/{first}/move"),
        &[("direction", "down")],
    )
    .await;
    assert_csrf_protected(
        &admin,
        &format!("/admin/posts/{second}/place"),
        &[("place", "1")],
    )
    .await;
    assert_csrf_protected(&admin, &format!("/admin/posts/{first}/delete"), &[]).await;
    assert_csrf_protected(
        &admin,
        &format!("/admin/posts/{first}/test"),
        &[("to", "tester@example.net")],
    )
    .await;
    assert_csrf_protected(&admin, "/admin/preview", &post).await;
    assert_csrf_protected(&admin, "/admin/preview/text", &post).await;
    // The script's way: the header instead of the field, still checked.
    let response = admin
        .request(Method::POST, &format!("/admin/posts/{second}/place"))
        .header(ORIGIN, &admin.address)
        .header("x-csrf-token", "not-the-proof")
        .form(&[("place", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    let after = stored(&app).await;
    assert_eq!(after.len(), before.len());
    for (before, after) in before.iter().zip(&after) {
        assert_eq!(
            (
                before.id,
                &before.subject,
                &before.body_markdown,
                before.position
            ),
            (
                after.id,
                &after.subject,
                &after.body_markdown,
                after.position
            )
        );
    }
    assert!(app.mail.received().is_empty(), "no test email went out");
}

async fn a_post_is_written_saved_and_edited(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = log_in(&app).await;
    let html = admin.page("/admin/posts/new").await;
    assert!(html.contains(r#"name="subject""#), "{html}");
    assert!(html.contains(r#"name="body_markdown""#));
    assert!(html.contains(r#"<iframe sandbox name="preview""#));

    let id = write_post(&admin, "  Hello readers  ", "First **words**.\n").await;
    let editor = admin.page(&format!("/admin/posts/{id}?done=saved")).await;
    assert!(editor.contains("Saved."), "{editor}");
    assert!(
        editor.contains(r#"value="Hello readers""#),
        "trimmed: {editor}"
    );
    assert!(editor.contains("First **words**."));
    assert!(editor.contains(&format!(r#"action="/admin/posts/{id}/test""#)));
    let posts = stored(&app).await;
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].subject, "Hello readers");
    assert_eq!(posts[0].body_markdown, "First **words**.\n");
    assert_eq!(posts[0].status, PostStatus::Queued);

    let response = admin
        .post_form(
            &format!("/admin/posts/{id}"),
            &[
                ("subject", "Hello again"),
                ("body_markdown", "Better words."),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        AdminClient::location(&response),
        format!("/admin/posts/{id}?done=saved")
    );
    let listed: serde_json::Value = app
        .admin(Method::GET, &format!("/api/admin/posts/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["subject"], "Hello again");
    assert_eq!(listed["body_markdown"], "Better words.");

    // The queue lists it, with its editor a click away.
    let queue = admin.page("/admin/posts").await;
    assert!(queue.contains("Hello again"), "{queue}");
    assert!(queue.contains(&format!(r#"href="/admin/posts/{id}""#)));
    assert!(
        queue.contains(r#"href="/admin/posts/new""#),
        "a New post button"
    );
    // Escaped like everything else.
    write_post(&admin, "<script>alert(1)</script>", "x").await;
    let queue = admin.page("/admin/posts").await;
    assert!(!queue.contains("<script>alert"), "{queue}");
    assert!(queue.contains("&lt;script&gt;"));

    let missing = admin.get("/admin/posts/424242").await;
    assert_eq!(missing.status(), 404);
    let nonsense = admin.get("/admin/posts/abc").await;
    assert_eq!(nonsense.status(), 404);
}

async fn a_refused_field_comes_back_with_its_message_and_what_was_typed(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = log_in(&app).await;
    let long = "x".repeat(201);
    let cases = [
        ("", "Some body.", "subject", "Write a subject."),
        ("Two\r\nlines", "Some body.", "subject", "must be one line"),
        (
            long.as_str(),
            "Some body.",
            "subject",
            "at most 200 characters",
        ),
        ("Fine", "   \n ", "body", "the body is empty"),
        ("Fine", "Bell \u{7} here", "body", "U+0007"),
    ];
    for (subject, body, field, message) in cases {
        let (status, html) = status_and_body(
            admin
                .post_form(
                    "/admin/posts",
                    &[("subject", subject), ("body_markdown", body)],
                )
                .await,
        )
        .await;
        assert_eq!(status, 422, "{subject:?} {body:?}");
        let error_id = format!(r#"id="{field}-error""#);
        let at = html.find(&error_id).unwrap_or_else(|| panic!("{html}"));
        assert!(html[at..].contains(message), "{message} in {html}");
        assert!(html.contains(r#"aria-invalid="true""#));
        // What was typed is still there.
        if field == "body" {
            assert!(html.contains(r#"value="Fine""#), "{html}");
        } else {
            assert!(html.contains("Some body."), "{html}");
        }
    }
    // A form whose fields are missing altogether is refused the same way.
    let response = admin.post_form("/admin/posts", &[]).await;
    assert_eq!(response.status(), 422);
    assert!(stored(&app).await.is_empty(), "nothing was stored");

    // Saving an existing post refuses the same things and keeps it.
    let id = app.enqueue("Stays", "As it was.").await;
    let (status, html) = status_and_body(
        admin
            .post_form(
                &format!("/admin/posts/{id}"),
                &[("subject", " "), ("body_markdown", "Changed.")],
            )
            .await,
    )
    .await;
    assert_eq!(status, 422);
    assert!(html.contains("Write a subject."));
    assert!(html.contains("Changed."), "what was typed: {html}");
    let post = &stored(&app).await[0];
    assert_eq!(
        (post.subject.as_str(), post.body_markdown.as_str()),
        ("Stays", "As it was.")
    );
}

async fn posts_move_up_and_down_and_to_a_dropped_place(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = log_in(&app).await;
    let a = app.enqueue("A", "a").await;
    let b = app.enqueue("B", "b").await;
    let c = app.enqueue("C", "c").await;
    let queue = admin.page("/admin/posts").await;
    // The first has no Move up, the last no Move down.
    let row = |id: i64| {
        let start = queue.find(&format!(r#"<li id="post-{id}""#)).unwrap();
        let end = start + queue[start..].find("</li>").unwrap();
        queue[start..end].to_owned()
    };
    assert!(!row(a).contains(r#"value="up""#) && row(a).contains(r#"value="down""#));
    assert!(row(b).contains(r#"value="up""#) && row(b).contains(r#"value="down""#));
    assert!(row(c).contains(r#"value="up""#) && !row(c).contains(r#"value="down""#));

    let response = admin
        .post_form(&format!("/admin/posts/{c}/move"), &[("direction", "up")])
        .await;
    assert_eq!(response.status(), 303);
    let location = AdminClient::location(&response);
    assert!(
        location.starts_with("/admin/posts?done=moved"),
        "{location}"
    );
    assert_eq!(subjects(&app).await, ["A", "C", "B"]);
    let queue = admin.page(&location).await;
    assert!(
        queue.contains("“C” is now number 2 in the queue."),
        "{queue}"
    );

    let response = admin
        .post_form(&format!("/admin/posts/{a}/move"), &[("direction", "down")])
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(subjects(&app).await, ["C", "A", "B"]);

    // Past either end, or an unknown direction: refused, nothing moves.
    let top = admin
        .post_form(&format!("/admin/posts/{c}/move"), &[("direction", "up")])
        .await;
    assert_eq!(top.status(), 409);
    let bottom = admin
        .post_form(&format!("/admin/posts/{b}/move"), &[("direction", "down")])
        .await;
    assert_eq!(bottom.status(), 409);
    let sideways = admin
        .post_form(&format!("/admin/posts/{b}/move"), &[("direction", "left")])
        .await;
    assert_eq!(sideways.status(), 422);
    let missing = admin
        .post_form("/admin/posts/424242/move", &[("direction", "up")])
        .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(subjects(&app).await, ["C", "A", "B"]);

    // A drop, as the script sends it: the proof in a header.
    let response = admin
        .request(Method::POST, &format!("/admin/posts/{b}/place"))
        .header(ORIGIN, &admin.address)
        .header("x-csrf-token", &admin.csrf)
        .form(&[("place", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(subjects(&app).await, ["B", "C", "A"]);
    for place in ["0", "-1", "first", ""] {
        let response = admin
            .post_form(&format!("/admin/posts/{b}/place"), &[("place", place)])
            .await;
        assert_eq!(response.status(), 422, "{place:?}");
    }
    assert_eq!(subjects(&app).await, ["B", "C", "A"]);
}

async fn a_post_is_deleted_after_a_confirmation(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = log_in(&app).await;
    let keep = app.enqueue("Keep", "k").await;
    let drop = app.enqueue("Drop <me>", "d").await;
    let question = admin.page(&format!("/admin/posts/{drop}/delete")).await;
    assert!(question.contains("Drop &lt;me&gt;"), "{question}");
    assert!(question.contains(&format!(r#"action="/admin/posts/{drop}/delete""#)));
    // Opening the question deletes nothing.
    assert_eq!(stored(&app).await.len(), 2);
    let response = admin
        .post_form(&format!("/admin/posts/{drop}/delete"), &[])
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        AdminClient::location(&response),
        "/admin/posts?done=deleted"
    );
    let posts = stored(&app).await;
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].id, keep);
    let queue = admin.page("/admin/posts?done=deleted").await;
    assert!(queue.contains("The post was deleted."));
    let again = admin
        .post_form(&format!("/admin/posts/{drop}/delete"), &[])
        .await;
    assert_eq!(again.status(), 404);
}

async fn a_sent_post_is_read_only_and_its_actions_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = log_in(&app).await;
    app.subscribe_and_confirm("reader@example.com").await;
    let sent = app.enqueue("Went out", "As sent.").await;
    let queued = app.enqueue("Waiting", "Later.").await;
    let response = app.send_now().await;
    assert_eq!(response.status(), 202);
    let issue: serde_json::Value = response.json().await.unwrap();
    let issue_id = issue["issue_id"].as_i64().unwrap();
    app.wait_until_idle().await;

    let page = admin.page(&format!("/admin/posts/{sent}")).await;
    assert!(page.contains("Went out"));
    assert!(!page.contains(r#"name="subject""#), "no fields: {page}");
    assert!(!page.contains("<textarea"));
    assert!(!page.contains(">Save<"));
    assert!(!page.contains(r#"name="to""#), "no test form");
    assert!(
        page.contains(&format!(r#"href="/admin/issues/{issue_id}""#)),
        "{page}"
    );
    assert!(page.contains(&format!(r#"src="/admin/preview/{sent}""#)));

    let queue = admin.page("/admin/posts").await;
    let sent_section = &queue[queue.find(r#"id="sent-heading""#).unwrap()..];
    assert!(sent_section.contains("Went out"));
    assert!(sent_section.contains(&format!(r#"href="/admin/issues/{issue_id}""#)));
    assert!(!sent_section.contains("Waiting"));
    assert!(!queue.contains(&format!(r#"action="/admin/posts/{sent}/move""#)));

    let refused = [
        (
            format!("/admin/posts/{sent}"),
            vec![("subject", "Rewritten"), ("body_markdown", "History.")],
        ),
        (
            format!("/admin/posts/{sent}/move"),
            vec![("direction", "down")],
        ),
        (format!("/admin/posts/{sent}/place"), vec![("place", "2")]),
        (format!("/admin/posts/{sent}/delete"), vec![]),
        (
            format!("/admin/posts/{sent}/test"),
            vec![("to", "tester@example.net")],
        ),
    ];
    for (path, fields) in refused {
        let (status, html) = status_and_body(admin.post_form(&path, &fields).await).await;
        assert_eq!(status, 409, "{path}");
        assert!(html.contains("has been sent"), "{path}: {html}");
    }
    let question = admin.get(&format!("/admin/posts/{sent}/delete")).await;
    assert_eq!(question.status(), 409);
    let posts = stored(&app).await;
    let post = posts.iter().find(|post| post.id == sent).unwrap();
    assert_eq!(
        (post.subject.as_str(), post.body_markdown.as_str()),
        ("Went out", "As sent.")
    );
    assert_eq!(post.status, PostStatus::Sent);
    assert!(posts.iter().any(|post| post.id == queued));
    assert!(app.mail.received_by("tester@example.net").is_empty());
}
