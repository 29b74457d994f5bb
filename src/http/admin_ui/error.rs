//! What the admin pages answer when a request cannot be served: a page
//! saying so in plain words, with the status a script would expect. A 5xx
//! is logged once with its cause chain and never shown in detail.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use crate::http::limiter::RetryAfter;
use crate::newsletter::NewsletterError;
use crate::render::admin::templates;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// An action without a live session (a page redirects to the login).
    #[error("no session")]
    SessionEnded,
    /// The Origin or the CSRF proof was wrong: nothing was changed.
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    /// The action no longer fits what is stored (a post already sent).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the request body is too large")]
    TooLarge,
    #[error("too many failed logins")]
    TooManyLogins(RetryAfter),
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

const RETRY_AFTER_OUTAGE: u64 = 10;

impl AdminError {
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        AdminError::Internal(error.into())
    }
}

impl From<StoreError> for AdminError {
    fn from(error: StoreError) -> Self {
        if error.is_outage() {
            return AdminError::Unavailable(error.into());
        }
        AdminError::internal(error)
    }
}

impl From<NewsletterError> for AdminError {
    fn from(error: NewsletterError) -> Self {
        match error {
            NewsletterError::NoSuchPost(id) => {
                AdminError::NotFound(format!("There is no post {id}."))
            }
            NewsletterError::NoSuchAdmin(email) => {
                AdminError::NotFound(format!("There is no admin account for {email}."))
            }
            NewsletterError::NothingToSend => AdminError::Conflict(
                "Nothing to send: the queue is empty, or nobody has confirmed yet.".into(),
            ),
            error if error.is_outage() => AdminError::Unavailable(error.into()),
            error => AdminError::internal(error),
        }
    }
}

impl From<crate::render::RenderError> for AdminError {
    fn from(error: crate::render::RenderError) -> Self {
        AdminError::internal(error)
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, title, message, retry_after) = match &self {
            AdminError::SessionEnded => (
                StatusCode::FORBIDDEN,
                "Please log in again",
                "Your session has ended, so nothing was changed. Log in again, then repeat \
                 what you were doing."
                    .to_owned(),
                None,
            ),
            AdminError::Forbidden(message) => (
                StatusCode::FORBIDDEN,
                "Not allowed",
                (*message).to_owned(),
                None,
            ),
            AdminError::NotFound(message) => {
                (StatusCode::NOT_FOUND, "Not found", message.clone(), None)
            }
            AdminError::Conflict(message) => (
                StatusCode::CONFLICT,
                "Cannot do that",
                message.clone(),
                None,
            ),
            AdminError::Invalid(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "Please check what you entered",
                message.clone(),
                None,
            ),
            AdminError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too large",
                "What you sent is too large.".to_owned(),
                None,
            ),
            AdminError::TooManyLogins(retry) => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                format!(
                    "Too many failed logins. Wait {} before trying again.",
                    wait_in_words(retry.seconds())
                ),
                Some(retry.seconds()),
            ),
            AdminError::Unavailable(error) => {
                tracing::warn!(error = ?error, "admin page failed: the database is unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Please try again shortly",
                    "The database is not available just now. Please try again in a moment."
                        .to_owned(),
                    Some(RETRY_AFTER_OUTAGE),
                )
            }
            AdminError::Internal(error) => {
                tracing::error!(error = ?error, "admin page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "Something went wrong on our side. Please try again in a few minutes."
                        .to_owned(),
                    None,
                )
            }
        };
        let context = json!({
            "title": title,
            "message": message,
            "show_login": matches!(self, AdminError::SessionEnded),
        });
        let html = templates()
            .render("error", &context)
            .unwrap_or_else(|error| {
                tracing::error!(error = ?error, "the admin error page failed");
                "<!doctype html><meta charset=\"utf-8\"><title>Error</title><h1>Error</h1>".into()
            });
        let mut response = (status, Html(html)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// "3 minutes", "1 minute", "40 seconds".
pub fn wait_in_words(seconds: u64) -> String {
    match seconds {
        0..=59 => format!("{seconds} second{}", if seconds == 1 { "" } else { "s" }),
        _ => {
            let minutes = seconds.div_ceil(60);
            format!("{minutes} minute{}", if minutes == 1 { "" } else { "s" })
        }
    }
}
