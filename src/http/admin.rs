//! The admin API, behind `Authorization: Bearer <admin.token>`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::token_matches;
use super::{ApiError, SharedState};
use crate::domain::consent::ConsentEvent;
use crate::domain::delivery::DeliveryCounts;
use crate::domain::post::{NewPost, Post, PostBody, PostChanges, PostEdit, PostSubject};
use crate::domain::post::{PostCounts, PostStatus};
use crate::domain::subscriber::{Subscriber, SubscriberCounts, SubscriberQuery, SubscriberStatus};
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

/// JSON bodies whose problems come back as our JSON errors: 415 without a
/// JSON content type, 413 for a body over the limit, 422 for the rest.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::Rejected(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Send a JSON body with `Content-Type: application/json`.".into(),
            )),
            Err(JsonRejection::BytesRejection(rejection)) => Err(ApiError::Rejected(
                rejection.status(),
                rejection.body_text(),
            )),
            Err(rejection) => Err(ApiError::Invalid(rejection.body_text())),
        }
    }
}

/// Path parameters whose problems are JSON 400s, e.g. `/posts/abc`.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection| ApiError::Rejected(rejection.status(), rejection.body_text()))
    }
}

/// Query strings whose problems are JSON 400s, e.g. `?limit=-1`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| ApiError::Rejected(rejection.status(), rejection.body_text()))
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

#[derive(Deserialize, ToSchema)]
pub struct CreatePost {
    /// One line, at most 200 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    subject: String,
    /// Not blank; no control characters but line breaks and tabs.
    #[schema(
        min_length = 1,
        pattern = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]*$"
    )]
    body_markdown: String,
}

/// A post just queued.
#[derive(Serialize, ToSchema)]
pub struct CreatedPost {
    id: i64,
    position: i64,
    status: PostStatus,
}

#[utoipa::path(
    post, path = "/api/admin/posts", tag = "admin",
    request_body = CreatePost,
    responses(
        (status = 201, description = "Queued at the end of the queue", body = CreatedPost),
        (status = 413, description = "Body too large", body = super::error::ErrorBody),
        (status = 415, description = "Not a JSON body", body = super::error::ErrorBody),
        (status = 422, description = "Empty subject or body, control characters, or a malformed body", body = super::error::ErrorBody),
    )
)]
pub(super) async fn create_post(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<CreatePost>,
) -> Result<(StatusCode, Json<CreatedPost>), ApiError> {
    let post = NewPost {
        subject: parse_subject(&body.subject)?,
        body_markdown: parse_body(body.body_markdown)?,
    };
    let stored = state.newsletter.add_post(&post).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedPost {
            id: stored.id,
            position: stored.position,
            status: stored.status,
        }),
    ))
}

/// A post as the queue lists it, without its body.
#[derive(Serialize, ToSchema)]
pub struct PostSummary {
    id: i64,
    subject: String,
    position: i64,
    status: PostStatus,
    sent_at: Option<DateTime<Utc>>,
}

impl From<Post> for PostSummary {
    fn from(post: Post) -> Self {
        PostSummary {
            id: post.id,
            subject: post.subject,
            position: post.position,
            status: post.status,
            sent_at: post.sent_at,
        }
    }
}

#[utoipa::path(
    get, path = "/api/admin/posts", tag = "admin",
    responses((status = 200, description = "Every post, in queue order", body = [PostSummary]))
)]
pub(super) async fn list_posts(
    State(state): State<SharedState>,
) -> Result<Json<Vec<PostSummary>>, ApiError> {
    let posts = state.store().list_posts().await?;
    Ok(Json(posts.into_iter().map(PostSummary::from).collect()))
}

#[utoipa::path(
    get, path = "/api/admin/posts/{id}", tag = "admin",
    params(("id" = i64, Path, description = "The post's id", minimum = 1, example = 1)),
    responses(
        (status = 200, description = "The post", body = Post),
        (status = 400, description = "The id is not a number", body = super::error::ErrorBody),
        (status = 404, description = "No such post", body = super::error::ErrorBody),
    )
)]
pub(super) async fn get_post(
    State(state): State<SharedState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Post>, ApiError> {
    state
        .store()
        .get_post(id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(id))
}

/// The fields to change; the others stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditPost {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    subject: Option<String>,
    #[schema(
        min_length = 1,
        pattern = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]*$"
    )]
    body_markdown: Option<String>,
    /// 1-based place among the queued posts.
    #[schema(minimum = 1)]
    position: Option<i64>,
}

#[utoipa::path(
    patch, path = "/api/admin/posts/{id}", tag = "admin",
    params(("id" = i64, Path, description = "The post's id", minimum = 1, example = 1)),
    request_body = EditPost,
    responses(
        (status = 200, description = "The post as edited", body = Post),
        (status = 400, description = "The id is not a number", body = super::error::ErrorBody),
        (status = 404, description = "No such post", body = super::error::ErrorBody),
        (status = 409, description = "The post has been sent", body = super::error::ErrorBody),
        (status = 413, description = "Body too large", body = super::error::ErrorBody),
        (status = 415, description = "Not a JSON body", body = super::error::ErrorBody),
        (status = 422, description = "A bad field, an unknown field, or a malformed body", body = super::error::ErrorBody),
    )
)]
pub(super) async fn update_post(
    State(state): State<SharedState>,
    ApiPath(id): ApiPath<i64>,
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

#[utoipa::path(
    delete, path = "/api/admin/posts/{id}", tag = "admin",
    params(("id" = i64, Path, description = "The post's id", minimum = 1, example = 1)),
    responses(
        (status = 204, description = "Removed from the queue"),
        (status = 400, description = "The id is not a number", body = super::error::ErrorBody),
        (status = 404, description = "No such post", body = super::error::ErrorBody),
        (status = 409, description = "The post has been sent", body = super::error::ErrorBody),
    )
)]
pub(super) async fn delete_post(
    State(state): State<SharedState>,
    ApiPath(id): ApiPath<i64>,
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

#[utoipa::path(
    get, path = "/api/admin/posts/{id}/preview", tag = "admin",
    params(("id" = i64, Path, description = "The post's id", minimum = 1, example = 1)),
    responses(
        (status = 200, description = "The email's HTML, as a subscriber would see it", body = String, content_type = "text/html"),
        (status = 400, description = "The id is not a number", body = super::error::ErrorBody),
        (status = 404, description = "No such post", body = super::error::ErrorBody),
    )
)]
pub(super) async fn preview_post(
    State(state): State<SharedState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response, ApiError> {
    let html = state.newsletter.preview(id).await?;
    Ok(Html(html).into_response())
}

/// An issue created by send-now; its emails go out in the background.
#[derive(Serialize, ToSchema)]
pub struct SendNowAccepted {
    issue_id: i64,
    /// The post everyone gets; null in sequence mode.
    post_id: Option<i64>,
    recipients: u64,
}

#[utoipa::path(
    post, path = "/api/admin/send-now", tag = "admin",
    responses(
        (status = 202, description = "An issue was created and is being sent", body = SendNowAccepted),
        (status = 409, description = "Nothing to send", body = super::error::ErrorBody),
    )
)]
pub(super) async fn send_now(
    State(state): State<SharedState>,
) -> Result<(StatusCode, Json<SendNowAccepted>), ApiError> {
    let created = state.newsletter.send_now().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SendNowAccepted {
            issue_id: created.issue_id,
            post_id: created.post_id,
            recipients: created.recipients,
        }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubscriberPage {
    /// Only subscribers with this status; empty means all.
    #[param(value_type = Option<SubscriberStatus>)]
    status: Option<String>,
    /// At most this many (1 to 1000, default 100).
    limit: Option<u32>,
    /// The cursor: only subscribers with a greater id.
    after: Option<i64>,
}

/// One page of subscribers; `next_after` is the cursor for the next page.
#[derive(Serialize, ToSchema)]
pub struct SubscriberList {
    subscribers: Vec<Subscriber>,
    next_after: Option<i64>,
}

#[utoipa::path(
    get, path = "/api/admin/subscribers", tag = "admin",
    params(SubscriberPage),
    responses(
        (status = 200, description = "One page, in id order", body = SubscriberList),
        (status = 400, description = "A query parameter is not of its type", body = super::error::ErrorBody),
        (status = 422, description = "An unknown status", body = super::error::ErrorBody),
    )
)]
pub(super) async fn list_subscribers(
    State(state): State<SharedState>,
    ApiQuery(page): ApiQuery<SubscriberPage>,
) -> Result<Json<SubscriberList>, ApiError> {
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
    Ok(Json(SubscriberList {
        subscribers,
        next_after,
    }))
}

/// A subscriber's consent log, oldest first.
#[derive(Serialize, ToSchema)]
pub struct ConsentLog {
    subscriber_id: i64,
    events: Vec<ConsentEvent>,
}

#[utoipa::path(
    get, path = "/api/admin/subscribers/{id}/consent", tag = "admin",
    params(("id" = i64, Path, description = "The subscriber's id", minimum = 1, example = 1)),
    responses(
        (status = 200, description = "Every consent event of the subscriber", body = ConsentLog),
        (status = 400, description = "The id is not a number", body = super::error::ErrorBody),
        (status = 404, description = "No such subscriber", body = super::error::ErrorBody),
    )
)]
pub(super) async fn consent_log(
    State(state): State<SharedState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<ConsentLog>, ApiError> {
    if !state.store().subscriber_exists(id).await? {
        return Err(ApiError::NotFound(format!("There is no subscriber {id}.")));
    }
    let events = state.store().consent_events(id).await?;
    Ok(Json(ConsentLog {
        subscriber_id: id,
        events,
    }))
}

/// Counts of everything, and when the next issue goes out.
#[derive(Serialize, ToSchema)]
pub struct Stats {
    subscribers: SubscriberCounts,
    posts: PostCounts,
    deliveries: DeliveryCounts,
    next_send_at: Option<DateTime<Utc>>,
}

#[utoipa::path(
    get, path = "/api/admin/stats", tag = "admin",
    responses((status = 200, description = "The counts", body = Stats))
)]
pub(super) async fn stats(State(state): State<SharedState>) -> Result<Json<Stats>, ApiError> {
    let store = state.store();
    Ok(Json(Stats {
        subscribers: store.subscriber_counts().await?,
        posts: store.post_counts().await?,
        deliveries: store.delivery_counts().await?,
        next_send_at: state.scheduler.next_send_at(),
    }))
}
