//! One error type per audience: JSON for the API, friendly pages for people.
//! A 5xx is logged once, with its cause chain, and never shown in detail.
//! Errors that no handler chose (an unknown route, a wrong method, a body
//! too large, a timeout) are given the same two shapes by `uniform_errors`.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::SharedState;
use crate::newsletter::NewsletterError;
use crate::render::Page;

/// Every error from the API, and from `/subscribe` for a JSON client.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person to read; a 5xx never says more than that.
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("admin API disabled")]
    Disabled,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("too many requests")]
    TooManyRequests,
    /// A request an extractor could not read: the status is the extractor's
    /// (400, 413, 415, 422), and the message says what was wrong with it.
    #[error("{1}")]
    Rejected(StatusCode, String),
    /// The database is away or full: 503 with Retry-After.
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Seconds a client is asked to wait out a database outage.
const RETRY_AFTER_SECONDS: u32 = 10;
const UNAVAILABLE_MESSAGE: &str =
    "The database is not available just now. Please try again in a moment.";

impl ApiError {
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(error.into())
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        if error.is_outage() {
            return ApiError::Unavailable(error.into());
        }
        ApiError::internal(error)
    }
}

/// What a script is told when the service says no; a failure is internal.
impl From<NewsletterError> for ApiError {
    fn from(error: NewsletterError) -> Self {
        match error {
            NewsletterError::NothingToSend => ApiError::Conflict(
                "Nothing to send: the queue has no post for anyone, or there are no confirmed \
                 subscribers."
                    .into(),
            ),
            NewsletterError::NoSuchPost(id) => {
                ApiError::NotFound(format!("There is no post {id}."))
            }
            error if error.is_outage() => ApiError::Unavailable(error.into()),
            NewsletterError::NoSuchAdmin(email) => {
                ApiError::NotFound(format!("There is no admin account for {email}."))
            }
            NewsletterError::Render(_)
            | NewsletterError::PasswordHash(_)
            | NewsletterError::Store(_)
            | NewsletterError::Signup(_)
            | NewsletterError::DiskNearlyFull(_) => ApiError::internal(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "Missing or wrong bearer token. Send `Authorization: Bearer <admin.token>`."
                    .to_owned(),
            ),
            ApiError::Disabled => (
                StatusCode::SERVICE_UNAVAILABLE,
                "The admin API is disabled. Set admin.token in the config file, or the \
                 TIDINGS_ADMIN__TOKEN environment variable, to a secret of at least 16 \
                 characters, then restart tidings."
                    .to_owned(),
            ),
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, message.clone()),
            ApiError::Conflict(message) => (StatusCode::CONFLICT, message.clone()),
            ApiError::Invalid(message) => (StatusCode::UNPROCESSABLE_ENTITY, message.clone()),
            ApiError::TooManyRequests => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests. Please wait a while and try again.".to_owned(),
            ),
            ApiError::Rejected(status, message) => (*status, message.clone()),
            ApiError::Unavailable(error) => {
                tracing::warn!(error = ?error, "request failed: the database is unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    UNAVAILABLE_MESSAGE.to_owned(),
                )
            }
            ApiError::Internal(error) => {
                tracing::error!(error = ?error, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on our side.".to_owned(),
                )
            }
        };
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if matches!(self, ApiError::Unavailable(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

/// A failure while serving a page; the handler has already chosen the page.
#[derive(Debug)]
pub struct PageError(pub anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for PageError {
    fn from(error: E) -> Self {
        PageError(error.into())
    }
}

impl PageError {
    /// Whether the failure was the database being away or full.
    fn is_outage(&self) -> bool {
        self.0.chain().any(|cause| {
            cause
                .downcast_ref::<NewsletterError>()
                .is_some_and(NewsletterError::is_outage)
                || cause
                    .downcast_ref::<crate::store::StoreError>()
                    .is_some_and(crate::store::StoreError::is_outage)
        })
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if self.is_outage() {
            tracing::warn!(error = ?self.0, "page failed: the database is unavailable");
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                Html(
                    "<!doctype html><meta charset=\"utf-8\"><title>Please try again shortly</title>\
                     <h1>We cannot reach our database just now</h1>\
                     <p>Please try again in a moment.</p>",
                ),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            return response;
        }
        tracing::error!(error = ?self.0, "page failed");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Html(
                "<!doctype html><meta charset=\"utf-8\"><title>Something went wrong</title>\
                 <h1>Something went wrong on our side</h1><p>Please try again in a few minutes.</p>",
            ),
        )
            .into_response()
    }
}

/// Who reads an error: a program (JSON) or a person (a page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    Json,
    Html,
}

/// Whether a request body is JSON, by its `Content-Type`; the signup
/// handler answers in the same shape as the body it was sent.
pub fn sends_json(headers: &HeaderMap) -> bool {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    content_type.starts_with("application/json") || content_type.contains("+json")
}

impl Audience {
    fn of(path: &str, headers: &HeaderMap) -> Self {
        let api = path == "/api" || path.starts_with("/api/");
        let machine = matches!(path, "/healthz" | "/metrics");
        if api || machine || (path == "/subscribe" && sends_json(headers)) {
            Audience::Json
        } else {
            Audience::Html
        }
    }

    fn already_speaks(self, response: &Response) -> bool {
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        match self {
            Audience::Json => content_type.starts_with("application/json"),
            Audience::Html => content_type.starts_with("text/html"),
        }
    }
}

/// The longest rejection text worth reading back to the client.
const MAX_DETAIL_BYTES: usize = 1024;

/// A layer over the whole router: an error response that is not yet in its
/// audience's shape (axum's plain-text rejections, empty 404s and 405s, the
/// body limit's 413, the timeout's 408) is rewritten as JSON `{"error": …}`
/// under `/api/`, on `/healthz` and `/metrics` and for JSON signups, and as
/// an HTML page everywhere else. Status and headers (`Allow`,
/// `Retry-After`, `WWW-Authenticate`) are kept.
pub async fn uniform_errors(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let audience = Audience::of(request.uri().path(), request.headers());
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || audience.already_speaks(&response)
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let detail = rejection_detail(status, &parts.headers, body).await;
    let message = message_for(status, &method, detail.as_deref());
    parts.headers.remove(header::CONTENT_LENGTH);
    let (content_type, body) = match audience {
        Audience::Json => (
            "application/json",
            Body::from(json!({ "error": message }).to_string()),
        ),
        Audience::Html => (
            "text/html; charset=utf-8",
            Body::from(page(&state, status, &message)),
        ),
    };
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Response::from_parts(parts, body)
}

/// The text of a 4xx rejection (e.g. "Failed to deserialize query string:
/// limit: invalid digit found in string"), which tells the client what to
/// fix. A 5xx body is never read back: it could carry internals.
async fn rejection_detail(status: StatusCode, headers: &HeaderMap, body: Body) -> Option<String> {
    let plain = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/plain"));
    if !status.is_client_error() || !plain {
        return None;
    }
    let bytes = axum::body::to_bytes(body, MAX_DETAIL_BYTES).await.ok()?;
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn message_for(status: StatusCode, method: &Method, detail: Option<&str>) -> String {
    match status {
        StatusCode::NOT_FOUND => "There is nothing at this address.".to_owned(),
        // axum adds `Allow` after this layer has run, so it is not named here.
        StatusCode::METHOD_NOT_ALLOWED => {
            format!("This address does not answer {method}; see the Allow header.")
        }
        StatusCode::REQUEST_TIMEOUT => "The request took too long.".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is too large.".to_owned(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            "Unsupported content type: send JSON with `Content-Type: application/json`.".to_owned()
        }
        StatusCode::TOO_MANY_REQUESTS => {
            "Too many requests. Please wait a while and try again.".to_owned()
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            "The server is busy. Please try again in a moment.".to_owned()
        }
        status if status.is_server_error() => "Something went wrong on our side.".to_owned(),
        status => match detail {
            Some(detail) => detail.to_owned(),
            None => status
                .canonical_reason()
                .unwrap_or("The request was refused.")
                .to_owned(),
        },
    }
}

/// The error page, or a bare one if even the template fails.
fn page(state: &SharedState, status: StatusCode, message: &str) -> String {
    let title = match status {
        StatusCode::NOT_FOUND => "Page not found",
        status => status.canonical_reason().unwrap_or("Error"),
    };
    let context = json!({ "title": title, "message": message, "show_subscribe_link": false });
    state
        .templates
        .page(Page::Error, context)
        .unwrap_or_else(|error| {
            tracing::error!(error = ?error, "error page failed to render");
            "<!doctype html><meta charset=\"utf-8\"><title>Error</title><h1>Error</h1>".to_owned()
        })
}
