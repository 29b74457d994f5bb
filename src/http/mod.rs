//! The HTTP edge: public signup pages and the authenticated admin API.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};
use axum::routing::{get, post};
use axum::Router;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::domain::consent::ConsentContext;
use crate::links::{CONFIRM_PATH, UNSUBSCRIBE_PATH};
use crate::metrics::Metrics;
use crate::newsletter::Newsletter;
use crate::render::{Page, RenderError, Templates};
use crate::schedule::Scheduler;
use crate::store::SharedStore;

mod admin;
pub mod admin_ui;
mod auth;
mod body;
pub mod client_ip;
mod error;
mod headers;
pub mod limiter;
mod metrics;
pub mod openapi;
mod public;
pub mod server;
mod unsubscribe_by_email;

pub use auth::AuthThrottle;
pub use body::BodyBudget;
pub use error::{ApiError, PageError};
pub use limiter::Limiter;
pub use unsubscribe_by_email::LinkRequestLimits;

/// The service the handlers call, and what only HTTP needs besides.
pub struct AppState {
    pub newsletter: Arc<Newsletter>,
    /// For the admin token and the proxy rule.
    pub settings: Arc<Settings>,
    pub templates: Arc<Templates>,
    pub pages: StaticPages,
    pub signup_limiter: Option<Limiter>,
    /// For emailing an unsubscribe link to whoever asks by address.
    pub link_request_limits: LinkRequestLimits,
    /// Failed bearer-token checks (admin API, metrics), per client.
    pub auth_failures: AuthThrottle,
    pub body_budget: BodyBudget,
    pub metrics: Arc<Metrics>,
    /// For `next_send_at` in the stats and metrics.
    pub scheduler: Arc<Scheduler>,
    /// Logins and sessions of the admin web UI.
    pub admin_accounts: crate::admin_accounts::AdminAccounts,
    /// What the admin pages keep between requests.
    pub admin_ui: admin_ui::AdminUiState,
}

/// The pages whose content never changes while the daemon runs: the signup
/// form and the "check your inbox" answer. Rendered once at start, they are
/// served as bytes; rendering them per request was nearly half of what
/// GET / cost the daemon, and a tenth of a signup.
pub struct StaticPages {
    pub signup: Bytes,
    pub subscribed: Bytes,
}

impl StaticPages {
    pub fn render(templates: &Templates) -> Result<Self, RenderError> {
        let page = |page, title| {
            templates
                .page(page, serde_json::json!({ "title": title }))
                .map(Bytes::from)
        };
        Ok(Self {
            signup: page(Page::Signup, public::SIGNUP_TITLE)?,
            subscribed: page(Page::Subscribed, public::SUBSCRIBED_TITLE)?,
        })
    }
}

pub type SharedState = Arc<AppState>;

impl AppState {
    /// For the handlers that only read (lists, counts, health): those
    /// have no rule beyond their query.
    pub fn store(&self) -> &SharedStore {
        self.newsletter.store()
    }
}

/// `None` when the limit is 0 (off).
pub fn signup_limiter(per_hour: u32) -> Option<Limiter> {
    Limiter::new(
        per_hour,
        Duration::from_secs(3600),
        limiter::DEFAULT_CAPACITY,
    )
}

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/", get(public::signup_page))
        .route("/subscribe", post(public::subscribe))
        .route(
            CONFIRM_PATH,
            get(public::confirm_page).post(public::confirm),
        )
        .route(
            UNSUBSCRIBE_PATH,
            get(public::unsubscribe_page).post(public::unsubscribe),
        )
        .route(
            unsubscribe_by_email::PATH,
            get(unsubscribe_by_email::form).post(unsubscribe_by_email::request),
        )
        .route("/healthz", get(public::health))
        .route("/metrics", get(metrics::metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            body::bound_public,
        ))
        .nest("/api/admin", admin::router(state.clone()))
        .nest("/admin", admin_ui::router(state.clone()))
        .route("/api/openapi.json", get(openapi::document))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        // Outside the limits above, so their 413 and 408 are shaped too.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            error::uniform_errors,
        ))
        .layer(axum::middleware::from_fn(headers::security_headers))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The client's IP and user agent, as recorded in the consent log.
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    pub fn consent(&self) -> ConsentContext {
        ConsentContext {
            ip: self.ip.map(|ip| ip.to_string()),
            user_agent: self.user_agent.clone(),
        }
    }
}

impl FromRequestParts<SharedState> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let user_agent = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(|agent| agent.chars().take(512).collect());
        Ok(ClientInfo {
            ip: client_ip_of(&parts.headers, &parts.extensions, state),
            user_agent,
        })
    }
}

/// The peer's address, or the client's behind a trusted proxy (see
/// `client_ip::client_ip`).
pub fn client_ip_of(
    headers: &HeaderMap,
    extensions: &Extensions,
    state: &SharedState,
) -> Option<IpAddr> {
    let peer = extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok());
    Some(client_ip::client_ip(
        peer,
        forwarded,
        &state.settings.http.trusted_proxies,
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn static_pages_are_rendered_from_the_operators_templates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("subscribed.html.hbs"),
            "{{#> layout.html}}<p>Look for us in {{title}}</p>{{/layout.html}}",
        )
        .unwrap();
        let mut newsletter = crate::config::defaults().newsletter;
        newsletter.name = "Coalition Notes".into();
        let templates = Templates::load(dir.path(), &newsletter).unwrap();
        let pages = StaticPages::render(&templates).unwrap();
        let subscribed = std::str::from_utf8(&pages.subscribed).unwrap();
        assert!(
            subscribed.contains("Look for us in Check your inbox"),
            "{subscribed}"
        );
        assert!(
            subscribed.contains("Coalition Notes"),
            "the layout's newsletter name"
        );
        let signup = std::str::from_utf8(&pages.signup).unwrap();
        assert!(
            signup.contains("name=\"website\""),
            "the built-in form: {signup}"
        );
        assert!(signup.contains("Coalition Notes"));
        // The built-in templates render too, with no folder at all.
        let built_in = Templates::load(Path::new("/nonexistent"), &newsletter).unwrap();
        assert!(StaticPages::render(&built_in).is_ok());
    }
}
