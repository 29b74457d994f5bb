//! The admin API, behind `Authorization: Bearer <admin.token>`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, SharedState};
use crate::domain::post::{NewPost, Post, PostBody, PostChanges, PostEdit, PostSubject};
use crate::domain::subscriber::{SubscriberQuery, SubscriberStatus};
use crate::newsletter::NewsletterError;

const MAX_PAGE: u32 = 1000;

pub fn router(state: SharedState) -> Router<SharedState> {
    Router::new()
        .route("/posts", post(create_post).get(list_posts))
        .route(
            "/posts/{id}",
            get(get_post).patch(update_post).delete(delete_post),
        )
        .route("/posts/{id}/preview", get(preview_post))
        .route("/send-now", post(send_now))
        .route("/subscribers", get(list_subscribers))
        .route("/subscribers/{id}/consent", get(consent_log))
        .route("/stats", get(stats))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            super::body::bound_admin,
        ))
        .route_layer(middleware::from_fn_with_state(state, require_token))
}

/// Compares digests, so neither the token nor its length leaks through timing.
fn token_matches(expected: &str, presented: &str) -> bool {
    let expected = Sha256::digest(expected.as_bytes());
    let presented = Sha256::digest(presented.as_bytes());
    expected.ct_eq(&presented).into()
}

async fn require_token(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(expected) = state.settings.admin.token.as_deref() else {
        return Err(ApiError::Disabled);
    };
    // Wrong guesses are throttled per client; past the allowance even the
    // right token waits, so a guesser learns nothing while throttled.
    let ip = super::client_ip_of(request.headers(), request.extensions(), &state);
    if let Some(throttled) = state.auth_failures.refuses(ip) {
        return Ok(throttled);
    }
    match super::auth::bearer(request.headers()) {
        Some(token) if token_matches(expected, token) => Ok(next.run(request).await),
        _ => {
            state.auth_failures.failed(ip);
            Err(ApiError::Unauthorized)
        }
    }
}

/// JSON bodies whose problems come back as our JSON errors.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::Invalid(
                "Send a JSON body with `Content-Type: application/json`.".into(),
            )),
            Err(rejection) => Err(ApiError::Invalid(rejection.body_text())),
        }
    }
}

fn not_found(id: i64) -> ApiError {
    NewsletterError::NoSuchPost(id).into()
}

fn already_sent(id: i64) -> ApiError {
    ApiError::Conflict(format!(
        "Post {id} has been sent; sent posts cannot change."
    ))
}

fn parse_subject(text: &str) -> Result<PostSubject, ApiError> {
    PostSubject::parse(text).map_err(|error| ApiError::Invalid(error.to_string()))
}

fn parse_body(text: String) -> Result<PostBody, ApiError> {
    PostBody::parse(&text).map_err(|error| ApiError::Invalid(error.to_string()))
}

#[derive(Deserialize)]
struct CreatePost {
    subject: String,
    body_markdown: String,
}

async fn create_post(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<CreatePost>,
) -> Result<Response, ApiError> {
    let post = NewPost {
        subject: parse_subject(&body.subject)?,
        body_markdown: parse_body(body.body_markdown)?,
    };
    let stored = state.newsletter.add_post(&post).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": stored.id, "position": stored.position, "status": stored.status })),
    )
        .into_response())
}

fn post_summary(post: &Post) -> serde_json::Value {
    json!({
        "id": post.id,
        "subject": post.subject,
        "position": post.position,
        "status": post.status,
        "sent_at": post.sent_at,
    })
}

async fn list_posts(State(state): State<SharedState>) -> Result<Json<serde_json::Value>, ApiError> {
    let posts = state.store().list_posts().await?;
    Ok(Json(posts.iter().map(post_summary).collect()))
}

async fn get_post(
    State(state): State<SharedState>,
    Path(id): Path<i64>,
) -> Result<Json<Post>, ApiError> {
    state
        .store()
        .get_post(id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(id))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditPost {
    subject: Option<String>,
    body_markdown: Option<String>,
    position: Option<i64>,
}

async fn update_post(
    State(state): State<SharedState>,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<EditPost>,
) -> Result<Json<Post>, ApiError> {
    if body.position.is_some_and(|position| position < 1) {
        return Err(ApiError::Invalid("position starts at 1".into()));
    }
    let changes = PostChanges {
        subject: body.subject.as_deref().map(parse_subject).transpose()?,
        body_markdown: body.body_markdown.map(parse_body).transpose()?,
        position: body.position,
    };
    match state.store().update_post(id, changes).await? {
        PostEdit::Updated(post) => Ok(Json(post)),
        PostEdit::NotFound => Err(not_found(id)),
        PostEdit::AlreadySent => Err(already_sent(id)),
        PostEdit::Deleted => Err(ApiError::internal(anyhow::anyhow!(
            "update reported a delete"
        ))),
    }
}

async fn delete_post(
    State(state): State<SharedState>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    match state.store().delete_post(id).await? {
        PostEdit::Deleted => Ok(StatusCode::NO_CONTENT),
        PostEdit::NotFound => Err(not_found(id)),
        PostEdit::AlreadySent => Err(already_sent(id)),
        PostEdit::Updated(_) => Err(ApiError::internal(anyhow::anyhow!(
            "delete reported an update"
        ))),
    }
}

async fn preview_post(
    State(state): State<SharedState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let html = state.newsletter.preview(id).await?;
    Ok(Html(html).into_response())
}

async fn send_now(State(state): State<SharedState>) -> Result<Response, ApiError> {
    let created = state.newsletter.send_now().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "issue_id": created.issue_id,
            "post_id": created.post_id,
            "recipients": created.recipients,
        })),
    )
        .into_response())
}

#[derive(Deserialize)]
struct SubscriberPage {
    status: Option<String>,
    limit: Option<u32>,
    after: Option<i64>,
}

async fn list_subscribers(
    State(state): State<SharedState>,
    Query(page): Query<SubscriberPage>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let status = page
        .status
        .as_deref()
        .filter(|text| !text.is_empty())
        .map(str::parse::<SubscriberStatus>)
        .transpose()
        .map_err(ApiError::Invalid)?;
    let limit = page.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let subscribers = state
        .store()
        .list_subscribers(SubscriberQuery {
            status,
            after: page.after,
            limit,
        })
        .await?;
    let next_after = (subscribers.len() as u32 == limit)
        .then(|| subscribers.last().map(|last| last.id))
        .flatten();
    Ok(Json(
        json!({ "subscribers": subscribers, "next_after": next_after }),
    ))
}

async fn consent_log(
    State(state): State<SharedState>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !state.store().subscriber_exists(id).await? {
        return Err(ApiError::NotFound(format!("There is no subscriber {id}.")));
    }
    let events = state.store().consent_events(id).await?;
    Ok(Json(json!({ "subscriber_id": id, "events": events })))
}

async fn stats(State(state): State<SharedState>) -> Result<Json<serde_json::Value>, ApiError> {
    let subscribers = state.store().subscriber_counts().await?;
    let posts = state.store().post_counts().await?;
    let deliveries = state.store().delivery_counts().await?;
    Ok(Json(json!({
        "subscribers": subscribers,
        "posts": posts,
        "deliveries": deliveries,
        "next_send_at": state.scheduler.next_send_at(),
    })))
}
