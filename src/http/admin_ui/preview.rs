//! `/admin/preview…`: what the editor's sandboxed frame shows, the email
//! HTML exactly as a subscriber gets it, or its plain-text part, for the
//! form as typed (POST, saved or not) or for a saved post (GET). Under
//! this path every answer gets the sandbox policy (`ADMIN_PREVIEW_POLICY`):
//! no script runs, nothing posts, and only our own pages may frame it.

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::posts::{PageForm, PostId};
use super::{AdminError, SharedState};
use crate::domain::editor::Draft;
use crate::render::admin::templates;
use crate::render::RenderedEmail;

#[derive(Debug, Default, Deserialize)]
pub struct PreviewForm {
    #[serde(default)]
    subject: String,
    #[serde(default)]
    body_markdown: String,
    /// The post being edited, whose place in the series numbers it.
    #[serde(default)]
    post: Option<String>,
}

impl PreviewForm {
    fn post_id(&self) -> Option<i64> {
        self.post.as_deref().and_then(|id| id.trim().parse().ok())
    }
}

/// A page of our own for the frame: a plain-text part, or a note.
fn frame_page(title: &str, text: &str, message: &str) -> Result<Response, AdminError> {
    let html = templates().render(
        "preview_frame",
        &json!({ "title": title, "text": text, "message": message }),
    )?;
    Ok(Html(html).into_response())
}

/// What the frame shows before the first preview of a new post.
pub async fn note() -> Result<Response, AdminError> {
    frame_page(
        "Preview",
        "",
        "The email shows here as you write. Without JavaScript, press Preview to see it.",
    )
}

/// The email the form as typed would make.
async fn render_draft(
    state: &SharedState,
    form: &PreviewForm,
) -> Result<RenderedEmail, AdminError> {
    let draft = Draft::from_form(&form.subject, &form.body_markdown);
    Ok(state
        .newsletter
        .draft_preview(&draft, form.post_id())
        .await?)
}

pub async fn draft(
    State(state): State<SharedState>,
    PageForm(form): PageForm<PreviewForm>,
) -> Result<Response, AdminError> {
    Ok(Html(render_draft(&state, &form).await?.html).into_response())
}

pub async fn draft_text(
    State(state): State<SharedState>,
    PageForm(form): PageForm<PreviewForm>,
) -> Result<Response, AdminError> {
    let email = render_draft(&state, &form).await?;
    frame_page("Plain-text preview", &email.text, "")
}

pub async fn saved(
    State(state): State<SharedState>,
    PostId(post_id): PostId,
) -> Result<Response, AdminError> {
    let email = state.newsletter.saved_preview(post_id).await?;
    Ok(Html(email.html).into_response())
}

pub async fn saved_text(
    State(state): State<SharedState>,
    PostId(post_id): PostId,
) -> Result<Response, AdminError> {
    let email = state.newsletter.saved_preview(post_id).await?;
    frame_page("Plain-text preview", &email.text, "")
}
