//! Unsubscribing without a working link: a form that emails the reader
//! their own unsubscribe link. Offered wherever an unsubscribe link turns
//! out broken (truncated by a mail client, mistyped), where a big
//! "subscribe again" button used to leave readers only the spam button.
//!
//! Every valid address gets the same answer at the same moment, so the
//! form cannot tell anyone who is on the list (see
//! `Newsletter::email_unsubscribe_link`). Each client IP may ask as often
//! as it may sign up (`http.subscribe_per_ip_per_hour`), and each address
//! gets at most one email per `http.confirmation_window`, like
//! confirmations: the form cannot be used to flood an inbox.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::limiter::{self, Limiter};
use super::public::page;
use super::{ClientInfo, PageError, SharedState};
use crate::config::HttpSettings;
use crate::domain::subscriber::EmailAddress;
use crate::newsletter::signup_answer_at;
use crate::render::Page;

/// Where the form is, and where it posts.
pub const PATH: &str = "/unsubscribe/by-email";

/// The limits on asking for a link; `None` is off (a limit of 0).
pub struct LinkRequestLimits {
    per_client: Option<Limiter>,
    per_address: Option<Limiter>,
}

impl LinkRequestLimits {
    pub fn new(settings: &HttpSettings) -> Self {
        Self {
            per_client: Limiter::new(
                settings.subscribe_per_ip_per_hour,
                Duration::from_secs(3600),
                limiter::DEFAULT_CAPACITY,
            ),
            per_address: Limiter::new(1, settings.confirmation_window, limiter::DEFAULT_CAPACITY),
        }
    }
}

const TITLE: &str = "Unsubscribe";

/// The page for an unsubscribe link that names nobody: 404, with the form.
pub fn broken_link(state: &SharedState) -> Result<Response, PageError> {
    form_page(
        state,
        StatusCode::NOT_FOUND,
        json!({
            "title": "Link not found",
            "message": "We could not find that unsubscribe link. It may have been cut short \
                        when it was copied. We can email you a link that works.",
        }),
    )
}

pub async fn form(State(state): State<SharedState>) -> Result<Response, PageError> {
    form_page(
        &state,
        StatusCode::OK,
        json!({
            "title": TITLE,
            "message": "Lost the link from our emails? We can email you a new one.",
        }),
    )
}

#[derive(Debug, Default, Deserialize)]
struct LinkRequestForm {
    #[serde(default)]
    email: Option<String>,
}

pub async fn request(
    State(state): State<SharedState>,
    client: ClientInfo,
    body: Bytes,
) -> Result<Response, PageError> {
    let Ok(form) = serde_urlencoded::from_bytes::<LinkRequestForm>(&body) else {
        let error = "We could not read that request. Send a form with an `email` field.";
        return form_page(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "title": TITLE, "error": error }),
        );
    };
    let limits = &state.link_request_limits;
    if let (Some(limiter), Some(ip)) = (&limits.per_client, client.ip) {
        if let Err(retry) = limiter.check(ip) {
            let error = "Too many requests from your network. Please wait a while and try again.";
            let mut response = form_page(
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                json!({ "title": TITLE, "error": error, "email": form.email }),
            )?;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry.seconds()));
            return Ok(response);
        }
    }
    let email = match EmailAddress::parse(form.email.as_deref().unwrap_or_default()) {
        Ok(email) => email,
        Err(error) => {
            return form_page(
                &state,
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "title": TITLE, "email_error": error.to_string(), "email": form.email }),
            )
        }
    };
    let within_limit = limits
        .per_address
        .as_ref()
        .is_none_or(|limiter| limiter.check_address(email.as_str()).is_ok());
    if within_limit {
        let outcome = state.newsletter.email_unsubscribe_link(&email).await?;
        tracing::debug!(?outcome, "unsubscribe link asked for by address");
    } else {
        // Answered like any other: an address asked for twice is no news.
        tokio::time::sleep_until(signup_answer_at()).await;
    }
    page(
        &state,
        StatusCode::ACCEPTED,
        Page::UnsubscribeRequested,
        json!({ "title": "Check your inbox" }),
    )
}

fn form_page(
    state: &SharedState,
    status: StatusCode,
    context: serde_json::Value,
) -> Result<Response, PageError> {
    page(state, status, Page::UnsubscribeByEmail, context)
}
