//! `/admin/posts`: the queue in the order it goes out, with a post moved
//! up or down (or dragged, with the script) and deleted after a
//! confirmation; below it the posts already sent, each linking to its
//! issue. The editor is in `post_editor.rs`.

use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::{long_local_time, page, AdminError, AdminUser, Section, SharedState};
use crate::domain::editor::{Direction, MoveRefused};
use crate::domain::issue::ScheduleMode;
use crate::domain::post::{Post, PostChanges, PostEdit, PostListing, PostStatus};
use crate::domain::subscriber::EmailAddress;
use crate::newsletter::MoveOutcome;

/// A post's id from the path; anything else is a post that is not there.
pub struct PostId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for PostId {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(text) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| no_such_post())?;
        text.parse().map(PostId).map_err(|_| no_such_post())
    }
}

/// A form body whose problems are an admin page, not axum's plain text.
pub struct PageForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for PageForm<T> {
    type Rejection = AdminError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Form::<T>::from_request(request, state).await {
            Ok(Form(value)) => Ok(PageForm(value)),
            Err(FormRejection::BytesRejection(_)) => Err(AdminError::TooLarge),
            Err(rejection) => Err(AdminError::Invalid(rejection.body_text())),
        }
    }
}

pub fn no_such_post() -> AdminError {
    AdminError::NotFound("There is no such post. It may have been deleted.".into())
}

pub fn already_sent(subject: &str) -> AdminError {
    AdminError::Conflict(format!(
        "“{subject}” has been sent, so it stays as it went out: it can no longer be \
         edited, moved or deleted."
    ))
}

/// A queued post, or the answer for one that is missing or sent.
pub async fn queued_post(state: &SharedState, post_id: i64) -> Result<Post, AdminError> {
    match state.store().get_post(post_id).await? {
        None => Err(no_such_post()),
        Some(post) if post.status == PostStatus::Sent => Err(already_sent(&post.subject)),
        Some(post) => Ok(post),
    }
}

/// The answer for an action the store refused because the post was sent.
async fn refused_as_sent(state: &SharedState, post_id: i64) -> AdminError {
    match state.store().get_post(post_id).await {
        Ok(Some(post)) => already_sent(&post.subject),
        Ok(None) => no_such_post(),
        Err(error) => error.into(),
    }
}

/// What an action just did, carried by the redirect after it (`?done=`).
/// Only fixed words are read: a crafted link cannot put text on the page.
#[derive(Debug, Default, Deserialize)]
pub struct Done {
    done: Option<String>,
    /// The post moved.
    post: Option<i64>,
    /// Where a test email went.
    to: Option<String>,
}

impl Done {
    /// The notice for the editor and the queue; `posts` names a moved post.
    pub fn notice(&self, posts: &[PostListing]) -> Option<String> {
        match self.done.as_deref()? {
            "saved" => Some("Saved.".into()),
            "deleted" => Some("The post was deleted.".into()),
            "moved" => {
                let moved = posts.iter().find(|post| Some(post.id) == self.post)?;
                let place = queue(posts).position(|post| post.id == moved.id)? + 1;
                Some(format!(
                    "“{}” is now number {place} in the queue.",
                    moved.subject
                ))
            }
            "test-sent" => {
                let to = EmailAddress::parse(self.to.as_deref()?).ok()?;
                Some(format!("Test sent to {}.", to.as_str()))
            }
            _ => None,
        }
    }
}

fn queue(posts: &[PostListing]) -> impl Iterator<Item = &PostListing> {
    posts
        .iter()
        .filter(|post| post.status == PostStatus::Queued)
}

pub async fn queue_page(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    Query(done): Query<Done>,
) -> Result<Response, AdminError> {
    let posts = state.store().list_post_listings().await?;
    let queued: Vec<&PostListing> = queue(&posts).collect();
    let last = queued.len();
    let queue_rows: Vec<_> = queued
        .iter()
        .enumerate()
        .map(|(index, post)| {
            json!({
                "id": post.id,
                "place": index + 1,
                "subject": post.subject,
                "first": index == 0,
                "last": index + 1 == last,
            })
        })
        .collect();
    // Newest first: the last one sent is the one most often looked for.
    let sent_rows: Vec<_> = posts
        .iter()
        .rev()
        .filter(|post| post.status == PostStatus::Sent)
        .map(|post| {
            json!({
                "id": post.id,
                "subject": post.subject,
                "sent_at": post.sent_at.map(|at| long_local_time(state.settings.schedule.timezone, at)).unwrap_or_default(),
                "sent_iso": post.sent_at.map(|at| at.to_rfc3339()).unwrap_or_default(),
                "issue_id": post.issue_id,
            })
        })
        .collect();
    let next_send = state.scheduler.next_send_at().map(|at| {
        json!({
            "text": long_local_time(state.settings.schedule.timezone, at),
            "iso": at.to_rfc3339(),
            "broadcast": state.settings.schedule.mode == ScheduleMode::Broadcast,
        })
    });
    page(
        &state,
        &user,
        Section::Posts,
        "posts",
        "Posts",
        json!({
            "notice": done.notice(&posts),
            "queue": queue_rows,
            "sent": sent_rows,
            "next_send": next_send,
        }),
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct MoveForm {
    #[serde(default)]
    direction: String,
}

fn moved(post_id: i64) -> Response {
    Redirect::to(&format!(
        "/admin/posts?done=moved&post={post_id}#post-{post_id}"
    ))
    .into_response()
}

pub async fn move_post(
    State(state): State<SharedState>,
    PostId(post_id): PostId,
    PageForm(form): PageForm<MoveForm>,
) -> Result<Response, AdminError> {
    let direction = Direction::parse(&form.direction)
        .ok_or_else(|| AdminError::Invalid("A post moves up or down.".into()))?;
    match state.newsletter.move_post(post_id, direction).await? {
        MoveOutcome::Moved { .. } => Ok(moved(post_id)),
        MoveOutcome::NotFound | MoveOutcome::Refused(MoveRefused::NotQueued) => Err(no_such_post()),
        MoveOutcome::AlreadySent => Err(refused_as_sent(&state, post_id).await),
        MoveOutcome::Refused(refused) => {
            Err(AdminError::Conflict(format!("Not moved: {refused}.")))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct PlaceForm {
    #[serde(default)]
    place: String,
}

/// Where the script's drag and drop puts a post: its new 1-based place
/// in the queue (`place`).
pub async fn set_place(
    State(state): State<SharedState>,
    PostId(post_id): PostId,
    PageForm(form): PageForm<PlaceForm>,
) -> Result<Response, AdminError> {
    let place = form
        .place
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|place| *place >= 1)
        .ok_or_else(|| AdminError::Invalid("A place in the queue is a number from 1.".into()))?;
    let changes = PostChanges {
        position: Some(place),
        ..Default::default()
    };
    match state.store().update_post(post_id, changes).await? {
        PostEdit::Updated(_) => Ok(moved(post_id)),
        PostEdit::AlreadySent => Err(refused_as_sent(&state, post_id).await),
        PostEdit::NotFound | PostEdit::Deleted => Err(no_such_post()),
    }
}

/// The question before a delete; without a script this page is the
/// confirmation.
pub async fn confirm_delete(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    PostId(post_id): PostId,
) -> Result<Response, AdminError> {
    let post = queued_post(&state, post_id).await?;
    page(
        &state,
        &user,
        Section::Posts,
        "post_delete",
        "Delete a post",
        json!({ "id": post.id, "subject": post.subject }),
    )
}

pub async fn delete(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    PostId(post_id): PostId,
) -> Result<Response, AdminError> {
    match state.store().delete_post(post_id).await? {
        PostEdit::Deleted => {
            tracing::info!(post_id, admin_id = user.admin_id, "a post was deleted");
            Ok(Redirect::to("/admin/posts?done=deleted").into_response())
        }
        PostEdit::AlreadySent => Err(refused_as_sent(&state, post_id).await),
        PostEdit::NotFound | PostEdit::Updated(_) => Err(no_such_post()),
    }
}
