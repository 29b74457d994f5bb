//! Public routes: the signup page, double opt-in and one-click unsubscribe.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{ClientInfo, PageError, SharedState};
use crate::domain::signup::{ConfirmLink, ConfirmOutcome};
use crate::domain::subscriber::{EmailAddress, SubscriberName, UnsubscribeOutcome};
use crate::links::CONFIRMATION_TTL_HOURS;
use crate::render::Page;

fn page(
    state: &SharedState,
    status: StatusCode,
    page: Page,
    context: serde_json::Value,
) -> Result<Response, PageError> {
    let html = state.templates.page(page, context)?;
    Ok((status, Html(html)).into_response())
}

fn error_page(
    state: &SharedState,
    status: StatusCode,
    title: &str,
    message: &str,
    show_subscribe_link: bool,
) -> Result<Response, PageError> {
    page(
        state,
        status,
        Page::Error,
        json!({ "title": title, "message": message, "show_subscribe_link": show_subscribe_link }),
    )
}

pub const SIGNUP_TITLE: &str = "Subscribe";
pub const SUBSCRIBED_TITLE: &str = "Check your inbox";

pub async fn signup_page(State(state): State<SharedState>) -> Response {
    Html(state.pages.signup.clone()).into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct SubscribeForm {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// The honeypot: people never see it, bots fill it in.
    #[serde(default)]
    website: Option<String>,
}

fn is_json(headers: &HeaderMap) -> bool {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    content_type.starts_with("application/json") || content_type.contains("+json")
}

/// One answer shape per kind of client: JSON for scripts, pages for people.
struct SubscribeReply<'a> {
    state: &'a SharedState,
    json: bool,
    form: &'a SubscribeForm,
}

impl SubscribeReply<'_> {
    fn accepted(&self) -> Result<Response, PageError> {
        if self.json {
            return Ok((StatusCode::ACCEPTED, Json(json!({ "status": "pending" }))).into_response());
        }
        Ok((
            StatusCode::ACCEPTED,
            Html(self.state.pages.subscribed.clone()),
        )
            .into_response())
    }

    fn rejected(&self, status: StatusCode, message: &str) -> Result<Response, PageError> {
        if self.json {
            return Ok((status, Json(json!({ "error": message }))).into_response());
        }
        page(
            self.state,
            status,
            Page::Signup,
            json!({
                "title": SIGNUP_TITLE,
                "error": message,
                "email": self.form.email,
                "name": self.form.name,
            }),
        )
    }
}

pub async fn subscribe(
    State(state): State<SharedState>,
    client: ClientInfo,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let json = is_json(&headers);
    let parsed: Result<SubscribeForm, String> = if json {
        serde_json::from_slice(&body).map_err(|error| error.to_string())
    } else {
        serde_urlencoded::from_bytes(&body).map_err(|error| error.to_string())
    };
    let unreadable = parsed.is_err();
    let form = parsed.unwrap_or_default();
    let reply = SubscribeReply {
        state: &state,
        json,
        form: &form,
    };
    if unreadable {
        return reply.rejected(
            StatusCode::UNPROCESSABLE_ENTITY,
            "We could not read that request. Send a form or JSON with an `email` field.",
        );
    }
    if let (Some(limiter), Some(ip)) = (&state.signup_limiter, client.ip) {
        if let Err(retry) = limiter.check(ip) {
            let mut response = reply.rejected(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many signups from your network. Please wait a while and try again.",
            )?;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry.seconds()));
            return Ok(response);
        }
    }
    if form
        .website
        .as_deref()
        .is_some_and(|text| !text.trim().is_empty())
    {
        state.metrics.record_honeypot_hit();
        return reply.accepted();
    }
    let email = match EmailAddress::parse(form.email.as_deref().unwrap_or_default()) {
        Ok(email) => email,
        Err(error) => return reply.rejected(StatusCode::UNPROCESSABLE_ENTITY, &error.to_string()),
    };
    let name = match SubscriberName::parse_optional(form.name.as_deref()) {
        Ok(name) => name,
        Err(error) => return reply.rejected(StatusCode::UNPROCESSABLE_ENTITY, &error.to_string()),
    };
    state
        .newsletter
        .sign_up(email, name, client.consent())
        .await?;
    // The same answer whatever the address's state, so nobody can probe the list.
    reply.accepted()
}

#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

const LINK_NOT_FOUND: &str = "We could not find that link. It may have been copied incompletely. \
    You can subscribe again below.";

/// Shows a button that POSTs, and changes nothing: mail scanners open
/// (GET and HEAD) every link in an email, and must never give consent.
pub async fn confirm_page(
    State(state): State<SharedState>,
    Query(query): Query<TokenQuery>,
) -> Result<Response, PageError> {
    match state
        .newsletter
        .confirmation_link(query.token.as_deref())
        .await?
    {
        ConfirmLink::Open => page(
            &state,
            StatusCode::OK,
            Page::Confirm,
            json!({ "title": "Confirm your subscription", "token": query.token }),
        ),
        ConfirmLink::Closed(outcome) => confirm_answer(&state, outcome),
    }
}

/// The button: confirms, with the consent of whoever pressed it.
pub async fn confirm(
    State(state): State<SharedState>,
    client: ClientInfo,
    Query(query): Query<TokenQuery>,
) -> Result<Response, PageError> {
    let outcome = state
        .newsletter
        .confirm(query.token.as_deref(), client.consent())
        .await?;
    confirm_answer(&state, outcome)
}

fn confirm_answer(state: &SharedState, outcome: ConfirmOutcome) -> Result<Response, PageError> {
    match outcome {
        ConfirmOutcome::Confirmed { .. } | ConfirmOutcome::AlreadyConfirmed { .. } => page(
            state,
            StatusCode::OK,
            Page::Confirmed,
            json!({ "title": "You're subscribed" }),
        ),
        ConfirmOutcome::Unknown => error_page(
            state,
            StatusCode::NOT_FOUND,
            "Link not found",
            LINK_NOT_FOUND,
            true,
        ),
        ConfirmOutcome::Expired => error_page(
            state,
            StatusCode::GONE,
            "This link has expired",
            &format!(
                "Confirmation links work for {CONFIRMATION_TTL_HOURS} hours, and this one is \
                 older. Subscribe again and we will send you a fresh link."
            ),
            true,
        ),
        ConfirmOutcome::NoLongerSubscribed => error_page(
            state,
            StatusCode::GONE,
            "This link is no longer valid",
            "This link was used, and the subscription it confirmed has ended since. \
             To receive the tips again, subscribe again and we will send you a fresh link.",
            true,
        ),
    }
}

/// Shows a button and changes nothing: link scanners prefetch GETs.
pub async fn unsubscribe_page(
    State(state): State<SharedState>,
    Query(query): Query<TokenQuery>,
) -> Result<Response, PageError> {
    let works = state
        .newsletter
        .unsubscribe_link_works(query.token.as_deref())
        .await?;
    if !works {
        return error_page(
            &state,
            StatusCode::NOT_FOUND,
            "Link not found",
            LINK_NOT_FOUND,
            true,
        );
    }
    page(
        &state,
        StatusCode::OK,
        Page::Unsubscribe,
        json!({ "title": "Unsubscribe", "token": query.token }),
    )
}

/// RFC 8058 one-click: any body (or none), no cookies, no redirect.
pub async fn unsubscribe(
    State(state): State<SharedState>,
    client: ClientInfo,
    Query(query): Query<TokenQuery>,
) -> Result<Response, PageError> {
    match state
        .newsletter
        .unsubscribe(query.token.as_deref(), client.consent())
        .await?
    {
        UnsubscribeOutcome::Unknown => error_page(
            &state,
            StatusCode::NOT_FOUND,
            "Link not found",
            LINK_NOT_FOUND,
            true,
        ),
        UnsubscribeOutcome::Unsubscribed | UnsubscribeOutcome::AlreadyUnsubscribed => page(
            &state,
            StatusCode::OK,
            Page::Unsubscribed,
            json!({ "title": "You're unsubscribed" }),
        ),
    }
}

pub async fn health(State(state): State<SharedState>) -> Response {
    let answered =
        tokio::time::timeout(std::time::Duration::from_secs(3), state.store().ping()).await;
    match answered {
        Ok(Ok(())) => (StatusCode::OK, Json(json!({ "status": "ok" }))).into_response(),
        Ok(Err(error)) => {
            tracing::error!(error = ?anyhow::Error::from(error), "health check: database did not answer");
            unavailable()
        }
        Err(_) => {
            tracing::error!("health check: database timed out");
            unavailable()
        }
    }
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": "unavailable", "error": "the database is not answering" })),
    )
        .into_response()
}
