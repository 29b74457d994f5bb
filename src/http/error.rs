//! One error type per audience: JSON for the API, friendly pages for people.
//! A 5xx is logged once, with its cause chain, and never shown in detail.

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::newsletter::NewsletterError;

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
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(error.into())
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
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
            NewsletterError::Render(_) | NewsletterError::Store(_) => ApiError::internal(error),
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

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
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
