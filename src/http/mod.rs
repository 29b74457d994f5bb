//! The HTTP edge: public signup pages and the authenticated admin API.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Notify;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::delivery::compose::Composer;
use crate::metrics::Metrics;
use crate::render::Templates;
use crate::schedule::Scheduler;
use crate::signups::Signups;
use crate::store::{ConsentContext, SharedStore};
use crate::tokens::TokenKey;

mod admin;
mod error;
mod public;

pub use error::{ApiError, PageError};

pub struct AppState {
    pub store: SharedStore,
    pub settings: Arc<Settings>,
    pub templates: Arc<Templates>,
    pub composer: Arc<Composer>,
    pub scheduler: Arc<Scheduler>,
    pub token_key: TokenKey,
    pub clock: SharedClock,
    pub wake_worker: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    pub signup_limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    pub signups: Signups,
}

pub type SharedState = Arc<AppState>;

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
        .route("/confirm", get(public::confirm))
        .route(
            "/unsubscribe",
            get(public::unsubscribe_page).post(public::unsubscribe),
        )
        .route("/healthz", get(public::health))
        .route("/metrics", get(public::metrics))
        .nest("/api/admin", admin::router(state.clone()))
        .layer(RequestBodyLimitLayer::new(1024 * 1024))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
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
