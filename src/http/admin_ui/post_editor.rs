//! The post editor: `/admin/posts/new` and `/admin/posts/{id}`, saved
//! with the same rules as the JSON API (`PostSubject`, `PostBody`), with
//! the live preview beside the form (`preview.rs` draws it) and a test
//! email to one address. A sent post opens read-only.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use serde::Deserialize;
use serde_json::json;

use super::posts::{already_sent, no_such_post, queued_post, Done, PageForm, PostId};
use super::{long_local_time, page, AdminError, AdminUser, Section, SharedState};
use crate::domain::editor::{TestEmailOutcome, TEST_EMAILS_PER_HOUR};
use crate::domain::post::{
    BodyError, NewPost, Post, PostBody, PostChanges, PostEdit, PostStatus, PostSubject,
    SubjectError, MAX_SUBJECT_CHARS,
};
use crate::domain::subscriber::EmailAddress;
use crate::http::limiter::{Limiter, RetryAfter};

/// Test emails per admin account (see [`TEST_EMAILS_PER_HOUR`]).
pub struct TestEmailLimit(Option<Limiter>);

impl Default for TestEmailLimit {
    fn default() -> Self {
        // A few accounts at most: a small map is plenty.
        Self(Limiter::new(
            TEST_EMAILS_PER_HOUR,
            Duration::from_secs(3600),
            1024,
        ))
    }
}

impl TestEmailLimit {
    fn check(&self, admin_email: &str) -> Result<(), RetryAfter> {
        self.0
            .as_ref()
            .map_or(Ok(()), |limiter| limiter.check_address(admin_email))
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct PostForm {
    #[serde(default)]
    subject: String,
    #[serde(default)]
    body_markdown: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct TestForm {
    #[serde(default)]
    to: String,
}

fn subject_message(error: &SubjectError) -> String {
    match error {
        SubjectError::Empty => "Write a subject.".into(),
        SubjectError::ControlCharacter => {
            "The subject must be one line, without tabs or other control characters.".into()
        }
        SubjectError::TooLong => {
            format!("The subject can be at most {MAX_SUBJECT_CHARS} characters long.")
        }
    }
}

fn body_message(error: &BodyError) -> String {
    match error {
        BodyError::Empty => "Write the post: the body is empty.".into(),
        BodyError::ControlCharacter(code, line) => format!(
            "Line {line} holds a control character (U+{code:04X}), which has no place in an \
             email. Remove it."
        ),
    }
}

/// What the editor shows: the form as typed, with a message beside each
/// field that was refused.
#[derive(Default)]
struct Editor<'a> {
    /// The post being edited; `None` for a new one.
    post: Option<&'a Post>,
    subject: &'a str,
    body_markdown: &'a str,
    subject_error: Option<String>,
    body_error: Option<String>,
    to: &'a str,
    to_error: Option<String>,
    notice: Option<String>,
    alert: Option<String>,
}

impl<'a> Editor<'a> {
    fn of(post: &'a Post) -> Self {
        Self {
            post: Some(post),
            subject: &post.subject,
            body_markdown: &post.body_markdown,
            ..Default::default()
        }
    }
}

fn editor_page(
    state: &SharedState,
    user: &AdminUser,
    status: StatusCode,
    editor: Editor<'_>,
) -> Result<Response, AdminError> {
    let (title, action, preview_src) = match editor.post {
        Some(post) => (
            "Edit a post".to_owned(),
            format!("/admin/posts/{}", post.id),
            format!("/admin/preview/{}", post.id),
        ),
        None => (
            "New post".to_owned(),
            "/admin/posts".to_owned(),
            "/admin/preview".to_owned(),
        ),
    };
    let mut response = page(
        state,
        user,
        Section::Posts,
        "post_editor",
        &title,
        json!({
            "heading": title,
            "read_only": false,
            "post_id": editor.post.map(|post| post.id),
            "action": action,
            "preview_src": preview_src,
            "subject": editor.subject,
            "body_markdown": editor.body_markdown,
            "subject_error": editor.subject_error,
            "body_error": editor.body_error,
            "to": editor.to,
            "to_error": editor.to_error,
            "notice": editor.notice,
            "alert": editor.alert,
        }),
    )?;
    *response.status_mut() = status;
    Ok(response)
}

/// A sent post: what went out, read-only, with its issue.
async fn sent_page(
    state: &SharedState,
    user: &AdminUser,
    post: &Post,
) -> Result<Response, AdminError> {
    let listings = state.store().list_post_listings().await?;
    let issue_id = listings
        .iter()
        .find(|listing| listing.id == post.id)
        .and_then(|listing| listing.issue_id);
    page(
        state,
        user,
        Section::Posts,
        "post_editor",
        "A sent post",
        json!({
            "heading": "A sent post",
            "read_only": true,
            "post_id": post.id,
            "preview_src": format!("/admin/preview/{}", post.id),
            "subject": post.subject,
            "sent_at": post.sent_at.map(|at| long_local_time(state.settings.schedule.timezone, at)),
            "issue_id": issue_id,
        }),
    )
}

pub async fn new_post(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
) -> Result<Response, AdminError> {
    editor_page(&state, &user, StatusCode::OK, Editor::default())
}

pub async fn edit(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    PostId(post_id): PostId,
    Query(done): Query<Done>,
) -> Result<Response, AdminError> {
    let post = state
        .store()
        .get_post(post_id)
        .await?
        .ok_or_else(no_such_post)?;
    if post.status == PostStatus::Sent {
        return sent_page(&state, &user, &post).await;
    }
    let editor = Editor {
        notice: done.notice(&[]),
        ..Editor::of(&post)
    };
    editor_page(&state, &user, StatusCode::OK, editor)
}

/// The messages for the fields a form got wrong.
struct Refused {
    subject: Option<String>,
    body: Option<String>,
}

impl PostForm {
    /// The subject and body, parsed as the JSON API parses them.
    fn parse(&self) -> Result<NewPost, Refused> {
        match (
            PostSubject::parse(&self.subject),
            PostBody::parse(&self.body_markdown),
        ) {
            (Ok(subject), Ok(body_markdown)) => Ok(NewPost {
                subject,
                body_markdown,
            }),
            (subject, body) => Err(Refused {
                subject: subject.err().as_ref().map(subject_message),
                body: body.err().as_ref().map(body_message),
            }),
        }
    }

    /// The editor again (422), with what was typed and a message beside
    /// each field refused.
    fn refused(
        &self,
        state: &SharedState,
        user: &AdminUser,
        post: Option<&Post>,
        refused: Refused,
    ) -> Result<Response, AdminError> {
        let editor = Editor {
            post,
            subject: &self.subject,
            body_markdown: &self.body_markdown,
            subject_error: refused.subject,
            body_error: refused.body,
            ..Default::default()
        };
        editor_page(state, user, StatusCode::UNPROCESSABLE_ENTITY, editor)
    }
}

fn saved(post_id: i64) -> Response {
    Redirect::to(&format!("/admin/posts/{post_id}?done=saved")).into_response()
}

pub async fn create(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    PageForm(form): PageForm<PostForm>,
) -> Result<Response, AdminError> {
    let post = match form.parse() {
        Ok(post) => post,
        Err(refused) => return form.refused(&state, &user, None, refused),
    };
    let stored = state.newsletter.add_post(&post).await?;
    tracing::info!(
        post_id = stored.id,
        admin_id = user.admin_id,
        "a post was added"
    );
    Ok(saved(stored.id))
}

pub async fn save(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    PostId(post_id): PostId,
    PageForm(form): PageForm<PostForm>,
) -> Result<Response, AdminError> {
    let post = queued_post(&state, post_id).await?;
    let parsed = match form.parse() {
        Ok(parsed) => parsed,
        Err(refused) => return form.refused(&state, &user, Some(&post), refused),
    };
    let changes = PostChanges {
        subject: Some(parsed.subject),
        body_markdown: Some(parsed.body_markdown),
        position: None,
    };
    match state.store().update_post(post_id, changes).await? {
        PostEdit::Updated(_) => {
            tracing::info!(post_id, admin_id = user.admin_id, "a post was saved");
            Ok(saved(post_id))
        }
        // Sent between the look above and the save.
        PostEdit::AlreadySent => Err(already_sent(&post.subject)),
        PostEdit::NotFound | PostEdit::Deleted => Err(no_such_post()),
    }
}

/// The mail server's reply (code and words), when that is what a failure
/// carries: worth showing. lettre words it `permanent error (550): …`,
/// with the words repeated once more by the cause chain. Anything else (a
/// connection error, a file path) stays in the log.
fn smtp_reply(failure: &str) -> Option<String> {
    let rest = failure
        .strip_prefix("permanent error (")
        .or_else(|| failure.strip_prefix("transient error ("))?;
    let (code, words) = rest.split_once(')')?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let words = words.trim_start_matches(':').trim();
    let words = match words.split_once(": ") {
        Some((first, second)) if first == second => first,
        _ => words,
    };
    let words = words.lines().next().unwrap_or_default();
    Some(format!("{code} {words}").trim_end().to_owned())
}

pub async fn send_test(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    PostId(post_id): PostId,
    PageForm(form): PageForm<TestForm>,
) -> Result<Response, AdminError> {
    let post = queued_post(&state, post_id).await?;
    let refused = |status, to_error: Option<String>, alert: Option<String>| {
        editor_page(
            &state,
            &user,
            status,
            Editor {
                to: &form.to,
                to_error,
                alert,
                ..Editor::of(&post)
            },
        )
    };
    let to = match EmailAddress::parse(&form.to) {
        Ok(to) => to,
        Err(error) => {
            return refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(error.to_string()),
                None,
            )
        }
    };
    if let Err(wait) = state.admin_ui.test_emails.check(&user.email) {
        let message = format!(
            "That is {TEST_EMAILS_PER_HOUR} test emails within an hour. Wait {} before the next.",
            super::error::wait_in_words(wait.seconds())
        );
        let mut response = refused(StatusCode::TOO_MANY_REQUESTS, Some(message), None)?;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, wait.seconds().into());
        return Ok(response);
    }
    let failure = match state.newsletter.send_test(post_id, &to).await? {
        TestEmailOutcome::Sent { .. } => {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("done", "test-sent")
                .append_pair("to", to.as_str())
                .finish();
            return Ok(Redirect::to(&format!("/admin/posts/{post_id}?{query}")).into_response());
        }
        TestEmailOutcome::Refused { reply } => match smtp_reply(&reply) {
            Some(reply) => format!("The mail server refused the test email: “{reply}”."),
            None => "The test email could not be sent. The log says why.".into(),
        },
        TestEmailOutcome::Unreachable { .. } => "The mail server could not be reached, so the \
            test email was not sent. Check smtp.url, then try again; the log says more."
            .into(),
    };
    refused(
        StatusCode::BAD_GATEWAY,
        None,
        Some(format!("Nothing was sent to {}. {failure}", to.as_str())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_smtp_reply_is_shown() {
        assert_eq!(
            smtp_reply("permanent error (550): 5.1.1 No such user: 5.1.1 No such user").as_deref(),
            Some("550 5.1.1 No such user")
        );
        assert_eq!(
            smtp_reply("transient error (451): later\nmore").as_deref(),
            Some("451 later")
        );
        assert_eq!(smtp_reply("network error: connection reset"), None);
        assert_eq!(smtp_reply("cannot write /var/outbox/x.eml: denied"), None);
        assert_eq!(smtp_reply("permanent error (5x0): odd"), None);
    }

    #[test]
    fn each_refused_field_gets_words_for_a_person() {
        assert_eq!(subject_message(&SubjectError::Empty), "Write a subject.");
        assert!(body_message(&BodyError::ControlCharacter(7, 3)).contains("Line 3"));
        assert!(body_message(&BodyError::ControlCharacter(7, 3)).contains("U+0007"));
    }
}
