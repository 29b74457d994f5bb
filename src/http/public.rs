//! Public routes: the signup page, double opt-in and one-click unsubscribe.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::sends_json;
use super::{unsubscribe_by_email, ClientInfo, PageError, SharedState};
use crate::domain::masked::masked_address;
use crate::domain::signup::{ConfirmLink, ConfirmOutcome};
use crate::domain::subscriber::{EmailAddress, SubscriberName, UnsubscribeOutcome};
use crate::links::CONFIRMATION_TTL_HOURS;
use crate::newsletter::NewsletterError;
use crate::render::Page;
use crate::signups::SignupError;

pub(super) fn page(
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

/// The form field an error is about: the page shows it beside that field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Email,
    Name,
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
        self.rejected_with(status, message, json!({ "error": message }), None)
    }

    /// 422 for one field's value, shown beside that field.
    fn invalid(&self, field: Field, message: &str) -> Result<Response, PageError> {
        let body = json!({ "error": message });
        self.rejected_with(StatusCode::UNPROCESSABLE_ENTITY, message, body, Some(field))
    }

    /// A signup that could not be taken: 503 with Retry-After while the
    /// database is away or full, saying whether the email may still come;
    /// 500 otherwise. Either in the client's own shape.
    fn failed(&self, error: NewsletterError) -> Result<Response, PageError> {
        if !error.is_outage() {
            // The signup writer has logged its own failures.
            if !matches!(error, NewsletterError::Signup(SignupError::Failed(_))) {
                tracing::error!(error = ?anyhow::Error::from(error), "signup failed");
            }
            return self.rejected(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side. Please try again in a few minutes.",
            );
        }
        tracing::debug!(error = %error, "signup answered with 503");
        let (message, retry_after) = match &error {
            NewsletterError::DiskNearlyFull(_) => (NOT_TAKING_SIGNUPS, RETRY_AFTER_FULL_DISK),
            NewsletterError::Signup(error) if error.may_have_written() => {
                (MAY_STILL_ARRIVE, RETRY_AFTER_OUTAGE)
            }
            _ => (NOT_STORED, RETRY_AFTER_OUTAGE),
        };
        let may_still_arrive = message == MAY_STILL_ARRIVE;
        let body = json!({ "error": message, "may_still_arrive": may_still_arrive });
        let mut response =
            self.rejected_with(StatusCode::SERVICE_UNAVAILABLE, message, body, None)?;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        Ok(response)
    }

    fn rejected_with(
        &self,
        status: StatusCode,
        message: &str,
        body: serde_json::Value,
        field: Option<Field>,
    ) -> Result<Response, PageError> {
        if self.json {
            return Ok((status, Json(body)).into_response());
        }
        let about = |wanted: Option<Field>| (field == wanted).then_some(message);
        page(
            self.state,
            status,
            Page::Signup,
            json!({
                "title": SIGNUP_TITLE,
                "error": about(None),
                "email_error": about(Some(Field::Email)),
                "name_error": about(Some(Field::Name)),
                "email": self.form.email,
                "name": self.form.name,
            }),
        )
    }
}

/// Seconds a client is asked to wait: an outage may be short; a full
/// disk needs its operator.
const RETRY_AFTER_OUTAGE: u32 = 10;
const RETRY_AFTER_FULL_DISK: u32 = 60;

const NOT_STORED: &str = "We could not take your signup just now, and nothing was stored. \
    Please try again in a minute.";
const NOT_TAKING_SIGNUPS: &str = "We are not taking signups for a little while, and nothing \
    was stored. Please try again later.";
const MAY_STILL_ARRIVE: &str = "We could not finish your signup in time, but it may still \
    have gone through: if a confirmation email arrives, it is genuine. Signing up again is \
    harmless; you will not get more than one email.";

pub async fn subscribe(
    State(state): State<SharedState>,
    client: ClientInfo,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let json = sends_json(&headers);
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
        Err(error) => return reply.invalid(Field::Email, &error.to_string()),
    };
    let name = match SubscriberName::parse_optional(form.name.as_deref()) {
        Ok(name) => name,
        Err(error) => return reply.invalid(Field::Name, &error.to_string()),
    };
    match state
        .newsletter
        .sign_up(email, name, client.consent())
        .await
    {
        // The same answer whatever the address's state, so nobody can probe the list.
        Ok(_) => reply.accepted(),
        Err(error) => reply.failed(error),
    }
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
    let address = state
        .newsletter
        .unsubscribe_link_address(query.token.as_deref())
        .await?;
    let Some(address) = address else {
        return unsubscribe_by_email::broken_link(&state);
    };
    page(
        &state,
        StatusCode::OK,
        Page::Unsubscribe,
        json!({
            "title": "Unsubscribe",
            "token": query.token,
            // Partly hidden: the link may have been forwarded.
            "address": masked_address(&address),
        }),
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
        UnsubscribeOutcome::Unknown => unsubscribe_by_email::broken_link(&state),
        UnsubscribeOutcome::Unsubscribed | UnsubscribeOutcome::AlreadyUnsubscribed => page(
            &state,
            StatusCode::OK,
            Page::Unsubscribed,
            json!({ "title": "You're unsubscribed" }),
        ),
    }
}

/// 200 when this instance can take signups and send; 503 naming the first
/// problem otherwise (see `crate::health`). Cheap: it reads flags and, at
/// most once a second, writes one row.
pub async fn health(State(state): State<SharedState>) -> Response {
    match state.newsletter.health().check(&**state.store()).await {
        None => (StatusCode::OK, Json(json!({ "status": "ok" }))).into_response(),
        Some(problem) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "unavailable",
                "reason": problem.code(),
                "error": problem.describe(),
            })),
        )
            .into_response(),
    }
}
