//! Logging in and out of the admin pages.
//!
//! The login form has no session yet, so its CSRF proof is a random value
//! in a cookie of its own that the form repeats (double submit), on top of
//! the Origin check. Failed logins are throttled per IP address and per
//! account; while either is throttled even the right password is refused,
//! so a guesser learns nothing from the answer.

use std::net::IpAddr;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::csrf::{proof_matches, same_origin, ORIGIN_REFUSED, PROOF_REFUSED};
use super::error::{wait_in_words, AdminError};
use super::session::{
    after_login, cookie, set_cookie, AdminUser, LOGIN_COOKIE, LOGIN_PATH, SESSION_COOKIE,
};
use super::SharedState;
use crate::admin_accounts::LoginOutcome;
use crate::domain::admin::{
    LOGIN_FAILURES_PER_ACCOUNT, LOGIN_FAILURES_PER_IP, LOGIN_FAILURE_WINDOW,
};
use crate::domain::subscriber::EmailAddress;
use crate::http::limiter::{Limiter, RetryAfter, DEFAULT_CAPACITY};
use crate::http::ClientInfo;
use crate::render::admin::templates;

/// Failed logins, per client IP and per account.
pub struct LoginThrottle {
    per_ip: Option<Limiter>,
    per_account: Option<Limiter>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            per_ip: Limiter::new(
                LOGIN_FAILURES_PER_IP,
                LOGIN_FAILURE_WINDOW,
                DEFAULT_CAPACITY,
            ),
            per_account: Limiter::new(
                LOGIN_FAILURES_PER_ACCOUNT,
                LOGIN_FAILURE_WINDOW,
                DEFAULT_CAPACITY,
            ),
        }
    }
}

impl LoginThrottle {
    /// How long this client, or this account, must wait; `None` to go on.
    fn refuses(&self, ip: Option<IpAddr>, account: Option<&str>) -> Option<RetryAfter> {
        let ip_wait = ip
            .zip(self.per_ip.as_ref())
            .and_then(|(ip, limiter)| limiter.peek(ip).err());
        let account_wait = account
            .zip(self.per_account.as_ref())
            .and_then(|(account, limiter)| limiter.peek_address(account).err());
        match (ip_wait, account_wait) {
            (Some(a), Some(b)) => Some(RetryAfter(a.0.max(b.0))),
            (wait, None) | (None, wait) => wait,
        }
    }

    fn failed(&self, ip: Option<IpAddr>, account: Option<&str>) {
        if let (Some(ip), Some(limiter)) = (ip, &self.per_ip) {
            let _ = limiter.check(ip);
        }
        if let (Some(account), Some(limiter)) = (account, &self.per_account) {
            let _ = limiter.check_address(account);
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

fn new_login_proof() -> String {
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The form, with `error` above it when a login was refused.
fn login_page(
    state: &SharedState,
    status: StatusCode,
    next: &str,
    email: &str,
    error: Option<String>,
) -> Result<Response, AdminError> {
    let proof = new_login_proof();
    let html = templates().render(
        "login",
        &json!({
            "title": "Log in",
            "newsletter": { "name": state.settings.newsletter.name },
            "csrf": proof,
            "next": next,
            "email": email,
            "error": error,
        }),
    )?;
    let mut response = (status, Html(html)).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(state, LOGIN_COOKIE, Some(&proof)),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().unwrap());
    Ok(response)
}

pub async fn form(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Result<Response, AdminError> {
    let next = after_login(query.next.as_deref());
    // Already logged in: straight on.
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        if state.admin_accounts.session(token).await?.is_some() {
            return Ok(Redirect::to(next).into_response());
        }
    }
    login_page(&state, StatusCode::OK, next, "", None)
}

pub async fn log_in(
    State(state): State<SharedState>,
    client: ClientInfo,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, AdminError> {
    if !same_origin(&headers, &state.settings.newsletter.base_url) {
        return Err(AdminError::Forbidden(ORIGIN_REFUSED));
    }
    let issued = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if issued.is_empty() || !proof_matches(issued, &form.csrf) {
        return Err(AdminError::Forbidden(PROOF_REFUSED));
    }
    let next = after_login(form.next.as_deref());
    let email = EmailAddress::parse(&form.email).ok();
    let account = email.as_ref().map(EmailAddress::as_str);
    let throttle = &state.admin_ui.login_throttle;
    if let Some(wait) = throttle.refuses(client.ip, account) {
        let message = format!(
            "Too many failed logins. Wait {} before trying again.",
            wait_in_words(wait.seconds())
        );
        let mut page = login_page(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            next,
            &form.email,
            Some(message),
        )?;
        page.headers_mut()
            .insert(header::RETRY_AFTER, wait.seconds().into());
        return Ok(page);
    }
    let outcome = match &email {
        Some(email) => {
            state
                .admin_accounts
                .verify_login(email, &form.password)
                .await?
        }
        None => LoginOutcome::Refused,
    };
    let LoginOutcome::Accepted { admin_id } = outcome else {
        throttle.failed(client.ip, account);
        tracing::info!(ip = ?client.ip, "admin login refused");
        return login_page(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            next,
            &form.email,
            Some("That email address and password do not match an account.".into()),
        );
    };
    let token = state.admin_accounts.start_session(admin_id).await?;
    tracing::info!(admin_id, "admin logged in");
    let mut response = Redirect::to(next).into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, Some(token.as_str())),
    );
    headers.append(header::SET_COOKIE, set_cookie(&state, LOGIN_COOKIE, None));
    Ok(response)
}

/// Behind the session and CSRF layers like every other action.
pub async fn log_out(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        state.admin_accounts.end_session(token).await?;
    }
    tracing::info!(admin_id = user.admin_id, "admin logged out");
    let mut response = Redirect::to(LOGIN_PATH).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&state, SESSION_COOKIE, None));
    Ok(response)
}
