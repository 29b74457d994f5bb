//! The HTTP edge: public signup pages and the authenticated admin API.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tower_http::limit::RequestBodyLimitLayer;
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
mod error;
mod headers;
pub mod openapi;
mod public;

pub use error::{ApiError, PageError};

/// The service the handlers call, and what only HTTP needs besides.
pub struct AppState {
    pub newsletter: Arc<Newsletter>,
    /// For the admin token and the proxy rule.
    pub settings: Arc<Settings>,
    pub templates: Arc<Templates>,
    pub pages: StaticPages,
    pub signup_limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    pub metrics: Arc<Metrics>,
    /// For `next_send_at` in the stats and metrics.
    pub scheduler: Arc<Scheduler>,
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

pub fn signup_limiter(per_hour: u32) -> Option<DefaultKeyedRateLimiter<IpAddr>> {
    NonZeroU32::new(per_hour).map(|burst| {
        let quota = Quota::with_period(Duration::from_secs(3600) / burst.get())
            .expect("a positive period")
            .allow_burst(burst);
        RateLimiter::keyed(quota)
    })
}

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/", get(public::signup_page))
        .route("/subscribe", post(public::subscribe))
        .route(CONFIRM_PATH, get(public::confirm))
        .route(
            UNSUBSCRIBE_PATH,
            get(public::unsubscribe_page).post(public::unsubscribe),
        )
        .route("/healthz", get(public::health))
        .route("/metrics", get(public::metrics))
        .nest("/api/admin", admin::router(state.clone()))
        .route("/api/openapi.json", get(openapi::document))
        .layer(RequestBodyLimitLayer::new(1024 * 1024))
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
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let forwarded = state
            .settings
            .http
            .trust_forwarded_for
            .then(|| {
                parts
                    .headers
                    .get("x-forwarded-for")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.split(',').next())
                    .and_then(|first| first.trim().parse::<IpAddr>().ok())
            })
            .flatten();
        let user_agent = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(|agent| agent.chars().take(512).collect());
        Ok(ClientInfo {
            ip: forwarded.or(peer),
            user_agent,
        })
    }
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
