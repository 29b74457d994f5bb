//! `/admin`: the next send, the list's growth, the last issues and any
//! warnings, on one screen.

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use serde_json::json;

use super::{page, AdminError, AdminUser, Section, SharedState};

pub async fn page_handler(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
) -> Result<Response, AdminError> {
    page(
        &state,
        &user,
        Section::Dashboard,
        "dashboard",
        "Dashboard",
        json!({}),
    )
}
