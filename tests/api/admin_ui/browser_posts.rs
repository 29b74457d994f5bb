//! The posts pages in a real browser: writing a post while the preview
//! follows, reordering the queue, and a test email, each page checked by
//! axe-core and at a phone's width.

use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
use fantoccini::Locator;

use super::browser::{assert_usable, browser_log_in};
use super::posts::{stored, subjects};
use crate::browser::{Browser, Viewport};
use crate::helpers::{spawn_app, Backend, TestApp};

async fn type_into(browser: &Browser, css: &str, text: &str) {
    browser
        .client()
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("{css}: {error}"))
        .send_keys(text)
        .await
        .unwrap();
}

/// The text the preview frame shows. The frame is sandboxed without
/// `allow-same-origin`, so the page's own scripts cannot read it; WebDriver
/// switches into it instead.
async fn frame_text(browser: &Browser) -> String {
    let client = browser.client();
    let frame = client
        .find(Locator::Css(r#"iframe[name="preview"]"#))
        .await
        .unwrap();
    frame.enter_frame().await.unwrap();
    let text = match client.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    client.enter_parent_frame().await.unwrap();
    text
}

/// Waits (up to 10 s) until the preview frame shows `wanted`.
async fn wait_for_preview(browser: &Browser, wanted: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = frame_text(browser).await;
        if text.contains(wanted) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the preview never showed {wanted:?}; it shows:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The queue's subjects in the order the page shows them.
async fn queue_on_page(browser: &Browser) -> Vec<String> {
    browser
        .eval("Array.from(document.querySelectorAll('.queue-list .subject')).map(e => e.textContent.trim())")
        .await
}

async fn app_with_browser() -> Option<(Browser, TestApp)> {
    let browser = Browser::start().await?;
    let app = spawn_app(Backend::Sqlite).await;
    browser_log_in(&browser, &app).await;
    Some((browser, app))
}

/// 2. Writes a post and watches the preview change as it is typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_writes_a_post_and_watches_the_preview_change() {
    let Some((browser, app)) = app_with_browser().await else {
        return;
    };
    app.enqueue("Already queued", "Something.").await;
    browser
        .client()
        .goto(&app.url("/admin/posts"))
        .await
        .unwrap();
    assert_usable(&browser, "the queue").await;
    browser.set_viewport(Viewport::DESKTOP).await;
    browser.click(r#"a[href="/admin/posts/new"]"#).await;
    browser
        .wait_for("location.pathname === '/admin/posts/new'")
        .await;
    assert_usable(&browser, "a new post's editor").await;
    browser.set_viewport(Viewport::DESKTOP).await;

    type_into(&browser, "#subject", "Listening first").await;
    type_into(&browser, "#body_markdown", "Ask one *open* question").await;
    // Nothing was pressed: the script posts the form as it is typed.
    let shown = wait_for_preview(&browser, "Ask one open question").await;
    assert!(shown.contains("Listening first"), "{shown}");
    // Rendered text: the label is styled in capitals.
    assert!(
        shown.to_lowercase().contains("issue #2"),
        "numbered after the queued post: {shown}"
    );
    type_into(&browser, "#body_markdown", " before you answer.").await;
    wait_for_preview(&browser, "question before you answer.").await;

    // The plain-text part is a click away, and keeps following.
    browser
        .click(r#"button[formaction="/admin/preview/text"]"#)
        .await;
    let text = wait_for_preview(&browser, "Unsubscribe:").await;
    assert!(
        text.contains("Ask one open question before you answer."),
        "{text}"
    );
    type_into(&browser, "#body_markdown", " Then wait.").await;
    wait_for_preview(&browser, "answer. Then wait.").await;
    let pressed: String = browser
        .eval(r#"document.querySelector('button[formaction="/admin/preview/text"]').getAttribute('aria-pressed')"#)
        .await;
    assert_eq!(pressed, "true");
    assert!(stored(&app).await.len() == 1, "a preview stores nothing");

    browser.click("#post-form button.primary").await;
    browser
        .wait_for("document.querySelector('.notice') !== null")
        .await;
    let posts = stored(&app).await;
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[1].subject, "Listening first");
    assert_eq!(
        posts[1].body_markdown,
        "Ask one *open* question before you answer. Then wait."
    );
    let path: String = browser.eval("location.pathname").await;
    assert_eq!(path, format!("/admin/posts/{}", posts[1].id));
    assert_usable(&browser, "a saved post's editor").await;
    browser.close().await;
}

/// 3. Reorders the queue with its buttons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_reorders_the_queue() {
    let Some((browser, app)) = app_with_browser().await else {
        return;
    };
    for subject in ["Alpha", "Bravo", "Charlie"] {
        app.enqueue(subject, "Body.").await;
    }
    let ids: Vec<i64> = stored(&app).await.iter().map(|post| post.id).collect();
    browser
        .client()
        .goto(&app.url("/admin/posts"))
        .await
        .unwrap();
    assert_eq!(queue_on_page(&browser).await, ["Alpha", "Bravo", "Charlie"]);

    browser
        .click(&format!(
            r#"#post-{} form:has(input[value="up"]) button"#,
            ids[2]
        ))
        .await;
    browser
        .wait_for("location.search.includes('done=moved')")
        .await;
    assert_eq!(queue_on_page(&browser).await, ["Alpha", "Charlie", "Bravo"]);
    assert_eq!(subjects(&app).await, ["Alpha", "Charlie", "Bravo"]);
    let notice: String = browser
        .eval("document.querySelector('.notice').textContent")
        .await;
    assert_eq!(notice, "“Charlie” is now number 2 in the queue.");
    assert_usable(&browser, "the queue after a move").await;
    browser.set_viewport(Viewport::DESKTOP).await;

    browser
        .click(&format!(
            r#"#post-{} form:has(input[value="down"]) button"#,
            ids[0]
        ))
        .await;
    browser
        .wait_for("document.querySelector('.notice').textContent.includes('Alpha')")
        .await;
    assert_eq!(queue_on_page(&browser).await, ["Charlie", "Alpha", "Bravo"]);
    assert_eq!(subjects(&app).await, ["Charlie", "Alpha", "Bravo"]);
    // The new first has no Move up; the last has no Move down.
    let ends: [bool; 2] = browser
        .eval(
            "[!!document.querySelector('.queue-list li:first-child input[value=\"up\"]'), \
              !!document.querySelector('.queue-list li:last-child input[value=\"down\"]')]",
        )
        .await;
    assert_eq!(ends, [false, false]);
    browser.close().await;
}

/// 4. Sends a test email, which arrives at the test SMTP server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sends_a_test_email() {
    let Some((browser, app)) = app_with_browser().await else {
        return;
    };
    let id = app.enqueue("Check me", "A line worth *testing*.").await;
    browser
        .client()
        .goto(&app.url(&format!("/admin/posts/{id}")))
        .await
        .unwrap();
    type_into(&browser, "#to", "proofreader@example.net").await;
    browser
        .click(r#"form[action$="/test"] button[type="submit"]"#)
        .await;
    browser
        .wait_for("document.querySelector('.notice') !== null")
        .await;
    let notice: String = browser
        .eval("document.querySelector('.notice').textContent")
        .await;
    assert_eq!(notice, "Test sent to proofreader@example.net.");
    let mails = app.mail.received();
    assert_eq!(mails.len(), 1, "only the test");
    assert_eq!(mails[0].to, ["proofreader@example.net"]);
    assert_eq!(mails[0].subject(), "[Test] Check me");
    assert!(mails[0].text().contains("A line worth testing."));
    assert_usable(&browser, "the editor after a test").await;
    browser.close().await;
}

/// 3b. Reorders the queue by dragging a post with the mouse: the pointer
/// goes down on the last post, moves over the top half of the first, and
/// lets go. The page saves the new place and reloads with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_drags_a_post_to_the_top_of_the_queue() {
    let Some((browser, app)) = app_with_browser().await else {
        return;
    };
    for subject in ["Alpha", "Bravo", "Charlie"] {
        app.enqueue(subject, "Body.").await;
    }
    let ids: Vec<i64> = stored(&app).await.iter().map(|post| post.id).collect();
    browser.set_viewport(Viewport::DESKTOP).await;
    browser
        .client()
        .goto(&app.url("/admin/posts"))
        .await
        .unwrap();
    let charlie = format!("#post-{}", ids[2]);
    let charlie = browser.client().find(Locator::Css(&charlie)).await;
    let [from, to]: [f64; 2] = browser
        .eval(&format!(
            "[document.getElementById('post-{}').getBoundingClientRect().top, \
              document.getElementById('post-{}').getBoundingClientRect().top]",
            ids[2], ids[0]
        ))
        .await;
    let mut mouse = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element: charlie.unwrap(),
            duration: None,
            x: 0.0,
            y: 0.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        });
    // Small steps, as a hand makes: the browser starts a drag only after
    // the pointer has travelled a few pixels, and asks the page where it
    // may drop at each step.
    let steps = 12;
    let distance = from - to + 8.0;
    for _ in 0..steps {
        mouse = mouse.then(PointerAction::MoveBy {
            duration: Some(Duration::from_millis(40)),
            x: 0.0,
            y: -distance / f64::from(steps),
        });
    }
    // A browser under a person's hand asks again every few milliseconds
    // while the pointer rests; this one asks only when it moves, so the
    // hand settles with two one-pixel moves before letting go.
    for _ in 0..2 {
        mouse = mouse.then(PointerAction::MoveBy {
            duration: Some(Duration::from_millis(40)),
            x: 1.0,
            y: 0.0,
        });
    }
    let mouse = mouse.then(PointerAction::Up {
        button: MOUSE_BUTTON_LEFT,
    });
    browser.client().perform_actions(mouse).await.unwrap();
    browser
        .wait_for("location.search.includes('done=moved')")
        .await;
    assert_eq!(queue_on_page(&browser).await, ["Charlie", "Alpha", "Bravo"]);
    assert_eq!(subjects(&app).await, ["Charlie", "Alpha", "Bravo"]);
    let notice: String = browser
        .eval("document.querySelector('.notice').textContent")
        .await;
    assert_eq!(notice, "“Charlie” is now number 1 in the queue.");
    browser.close().await;
}
