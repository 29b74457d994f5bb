//! `/admin/settings`: the configuration in effect, secrets redacted, and
//! the last `tidings check`. Settings are changed in the config file or
//! the environment, as the page says: the daemon reads them at start.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use serde_json::json;

use super::{page, AdminError, AdminUser, Section, SharedState};
use crate::config::effective::effective;
use crate::domain::deliverability::Severity;

pub async fn show(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
) -> Result<Response, AdminError> {
    let (report, running) = state.admin_ui.checks.get(&state.settings, false);
    let zone = state.settings.schedule.timezone;
    let checks = report.map(|report| {
        json!({
            "at": report.finished_at.with_timezone(&zone).format("%-d %B %Y, %H:%M %Z").to_string(),
            "findings": report.findings.iter().map(|finding| json!({
                "severity": match finding.severity {
                    Severity::Ok => "ok",
                    Severity::Warning => "warning",
                    Severity::Error => "error",
                },
                "text": finding.text,
            })).collect::<Vec<_>>(),
        })
    });
    page(
        &state,
        &user,
        Section::Settings,
        "settings",
        "Settings",
        json!({
            "sections": effective(&state.settings),
            "checks": checks,
            "running": running,
        }),
    )
}

/// Runs `tidings check` again, in the background.
pub async fn check_again(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
) -> Result<Response, AdminError> {
    state.admin_ui.checks.get(&state.settings, true);
    tracing::info!(admin_id = user.admin_id, "configuration check asked for");
    Ok(Redirect::to("/admin/settings#checks").into_response())
}
