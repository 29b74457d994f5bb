//! The admin web UI: server-rendered pages under `/admin` for the person
//! who runs the newsletter. Every page works without JavaScript; the one
//! script (`/admin/assets/admin.js`) only adds live preview, live progress
//! and drag to reorder on top.
//!
//! Layers, outermost first: the session (no session: to the login page),
//! then CSRF and Origin on everything that is not a read.

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

use super::SharedState;
use crate::render::admin::templates;

mod assets;
mod chart;
mod csrf;
mod dashboard;
pub mod error;
mod issue_actions;
mod issues;
mod login;
mod post_editor;
mod posts;
mod preview;
mod session;
mod settings;
mod subscriber_import;
mod subscriber_page;
mod subscribers;

pub use csrf::{same_origin, CSRF_FIELD, CSRF_HEADER};
pub use error::AdminError;
pub use login::LoginThrottle;
pub use post_editor::TestEmailLimit;
pub use session::{AdminUser, LOGIN_COOKIE, SESSION_COOKIE};

/// What the admin pages keep between requests, per instance.
#[derive(Default)]
pub struct AdminUiState {
    /// Failed logins, per IP and per account.
    pub login_throttle: LoginThrottle,
    /// The last `tidings check` report.
    pub checks: crate::check::LatestChecks,
    pub growth: dashboard::GrowthCache,
    /// Test emails from the post editor, per admin account.
    pub test_emails: TestEmailLimit,
}

pub fn router(state: SharedState) -> Router<SharedState> {
    let pages = Router::new()
        .route("/", get(dashboard::show))
        .route("/settings", get(settings::show))
        .route("/settings/check", post(settings::check_again))
        .route("/logout", post(login::log_out))
        // Posts: the queue, the editor, its preview frame and test emails.
        .route("/posts", get(posts::queue_page).post(post_editor::create))
        .route("/posts/new", get(post_editor::new_post))
        .route(
            "/posts/{id}",
            get(post_editor::edit).post(post_editor::save),
        )
        .route("/posts/{id}/move", post(posts::move_post))
        .route("/posts/{id}/place", post(posts::set_place))
        .route(
            "/posts/{id}/delete",
            get(posts::confirm_delete).post(posts::delete),
        )
        .route("/posts/{id}/test", post(post_editor::send_test))
        .route("/preview", get(preview::note).post(preview::draft))
        .route("/preview/text", post(preview::draft_text))
        .route("/preview/{id}", get(preview::saved))
        .route("/preview/{id}/text", get(preview::saved_text))
        // Issues: what was sent and to whom, retrying failures, sending now.
        .route("/issues", get(issues::list))
        .route(
            "/issues/send-now",
            get(issue_actions::confirm_send_now).post(issue_actions::send_now),
        )
        .route("/issues/{id}", get(issues::show))
        .route("/issues/{id}/progress", get(issues::progress))
        .route(
            "/issues/{id}/retry",
            get(issue_actions::confirm_retry).post(issue_actions::retry),
        )
        // Subscribers: the list, one subscriber, import and export.
        .route(
            "/subscribers",
            get(subscribers::list).post(subscribers::add),
        )
        .route("/subscribers/export.csv", get(subscribers::export))
        .route(
            "/subscribers/import",
            get(subscriber_import::form).post(subscriber_import::preview),
        )
        .route(
            "/subscribers/import/confirm",
            post(subscriber_import::confirm),
        )
        .route("/subscribers/{id}", get(subscriber_page::show))
        .route(
            "/subscribers/{id}/unsubscribe",
            post(subscriber_page::unsubscribe),
        )
        .route(
            "/subscribers/{id}/erase",
            get(subscriber_page::confirm_erase).post(subscriber_page::erase),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            csrf::require_csrf,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            session::require_session,
        ));
    Router::new()
        .route("/login", get(login::form).post(login::log_in))
        .route("/assets/{file}", get(assets::serve))
        .merge(pages)
        .layer(middleware::from_fn(no_store))
        .route_layer(middleware::from_fn_with_state(
            state,
            super::body::bound_admin,
        ))
}

/// The sections of the admin, for the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Dashboard,
    Posts,
    Issues,
    Subscribers,
    Settings,
}

impl Section {
    fn key(self) -> &'static str {
        match self {
            Section::Dashboard => "dashboard",
            Section::Posts => "posts",
            Section::Issues => "issues",
            Section::Subscribers => "subscribers",
            Section::Settings => "settings",
        }
    }
}

/// Renders an admin page: `template` fills in the layout, which gets the
/// title, the section, who is logged in and the CSRF proof besides the
/// page's own `context` (a JSON object).
pub fn page(
    state: &SharedState,
    user: &AdminUser,
    section: Section,
    template: &str,
    title: &str,
    context: Value,
) -> Result<Response, AdminError> {
    let mut context = match context {
        Value::Object(map) => map,
        Value::Null => serde_json::Map::new(),
        other => return Err(AdminError::internal(anyhow::anyhow!("context {other}"))),
    };
    let shared = json!({
        "title": title,
        "section": { section.key(): true },
        "admin": { "email": user.email },
        "csrf": user.csrf,
        "newsletter": { "name": state.settings.newsletter.name },
    });
    if let Value::Object(shared) = shared {
        for (key, value) in shared {
            context.entry(key).or_insert(value);
        }
    }
    let html = templates().render(template, &Value::Object(context))?;
    Ok(Html(html).into_response())
}

/// Admin pages show people's addresses: no cache keeps them.
async fn no_store(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/admin/assets/");
    let mut response = next.run(request).await;
    if !is_asset {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A moment on an admin page, in the schedule's time zone, so that sends,
/// signups and deliveries all read on one clock: `2026-11-23 10:00 CET`.
pub(super) fn local_time(timezone: Tz, at: DateTime<Utc>) -> String {
    at.with_timezone(&timezone)
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

/// The same clock written out, for the moment a page is about (the next
/// send, when a post went out): `Mon 23 Nov 2026, 10:00 CET`.
pub(super) fn long_local_time(timezone: Tz, at: DateTime<Utc>) -> String {
    at.with_timezone(&timezone)
        .format("%a %-d %b %Y, %H:%M %Z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_the_schedule_time_zone() {
        let at = DateTime::parse_from_rfc3339("2026-11-23T09:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(local_time(chrono_tz::UTC, at), "2026-11-23 09:00 UTC");
        assert_eq!(
            local_time(chrono_tz::Europe::Berlin, at),
            "2026-11-23 10:00 CET"
        );
        assert_eq!(
            long_local_time(chrono_tz::Europe::Berlin, at),
            "Mon 23 Nov 2026, 10:00 CET"
        );
    }
}
