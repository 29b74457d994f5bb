//! What a person can do to issues from the admin: retry an issue's
//! failures, and send the next post now. Each has a confirmation page (a
//! GET that changes nothing) whose form does it, then goes to the issue.

use axum::extract::{Path, State};
use axum::response::{Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use serde_json::json;

use super::issues::{deliveries, find_issue, grouped, title};
use super::{page, AdminError, AdminUser, Section, SharedState};
use crate::domain::issue::ScheduleMode;
use crate::domain::retry::RetryPlan;

/// Why the failures a retry leaves alone stay failed, one line per reason.
fn kept_reasons(plan: &RetryPlan) -> Vec<String> {
    [
        (plan.unsubscribed, "the subscriber has unsubscribed since"),
        (plan.bounced, "the subscriber is marked bounced"),
        (
            plan.not_subscribed,
            "the subscriber is no longer on the list",
        ),
        (
            plan.bad_address,
            "the server said the address does not exist or takes no mail (5.1.x)",
        ),
    ]
    .into_iter()
    .filter(|(count, _)| *count > 0)
    .map(|(count, why)| format!("{}: {why}", deliveries(count)))
    .collect()
}

/// `GET /admin/issues/{id}/retry`: what a retry would do, and its button.
pub async fn confirm_retry(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    Path(raw): Path<String>,
) -> Result<Response, AdminError> {
    let issue = find_issue(&state, &raw).await?;
    let plan = state.newsletter.retry_plan(issue.id).await?;
    let name = title(&issue);
    page(
        &state,
        &user,
        Section::Issues,
        "issue_retry",
        &format!("Retry failures of {name}"),
        json!({
            "issue": { "id": issue.id, "title": name },
            "retry": deliveries(plan.retry),
            "any_to_retry": plan.retry > 0,
            "kept": kept_reasons(&plan),
            "failed": deliveries(u64::try_from(issue.progress.failed).unwrap_or_default()),
        }),
    )
}

/// `POST /admin/issues/{id}/retry`: puts the failures worth retrying back
/// in the outbox, then shows the issue with how many.
pub async fn retry(
    State(state): State<SharedState>,
    Path(raw): Path<String>,
) -> Result<Redirect, AdminError> {
    let issue = find_issue(&state, &raw).await?;
    let plan = state.newsletter.retry_failed(issue.id).await?;
    Ok(Redirect::to(&format!(
        "/admin/issues/{}?queued={}",
        issue.id, plan.retry
    )))
}

const EMPTY_QUEUE: &str =
    "Nothing to send: the queue has no post. Add a post, then send it from here.";
const NOBODY_CONFIRMED: &str = "Nothing to send: nobody has confirmed a subscription yet.";

/// `GET /admin/issues/send-now`: names the post and how many get it.
pub async fn confirm_send_now(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
) -> Result<Response, AdminError> {
    let next = state.newsletter.next_send().await?;
    let sequence = state.newsletter.mode() == ScheduleMode::Sequence;
    // Counting a million confirmed rows per view would take 100 ms: the
    // number comes from the snapshot the dashboard and /metrics share.
    let confirmed = crate::http::metrics::counts_snapshot(&state)
        .await?
        .subscribers
        .confirmed;
    if !next.anyone_confirmed {
        return Err(AdminError::Conflict(NOBODY_CONFIRMED.into()));
    }
    if !sequence && next.post_id.is_none() {
        return Err(AdminError::Conflict(EMPTY_QUEUE.into()));
    }
    page(
        &state,
        &user,
        Section::Issues,
        "send_now",
        "Send the next post now",
        json!({
            "sequence": sequence,
            "post_id": next.post_id,
            "subject": next.subject,
            "confirmed": grouped(confirmed),
            "one_reader": confirmed == 1,
            // One key per confirmation: submitted twice, it is one issue.
            "key": uuid::Uuid::new_v4().to_string(),
        }),
    )
}

#[derive(Deserialize)]
pub struct SendNowForm {
    key: Option<String>,
}

/// `POST /admin/issues/send-now`: the same send-now as the API's, then the
/// new issue's page.
pub async fn send_now(
    State(state): State<SharedState>,
    Form(form): Form<SendNowForm>,
) -> Result<Redirect, AdminError> {
    let key = form
        .key
        .as_deref()
        .and_then(|key| uuid::Uuid::parse_str(key).ok())
        .ok_or_else(|| {
            AdminError::Invalid(
                "This form is incomplete. Open “Send the next post now” again and confirm there."
                    .into(),
            )
        })?;
    let issue_id = state.newsletter.send_now_once(key).await?;
    Ok(Redirect::to(&format!("/admin/issues/{issue_id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_to_keep_a_failure_is_one_line() {
        let plan = RetryPlan {
            retry: 3,
            unsubscribed: 1,
            bad_address: 2,
            ..Default::default()
        };
        assert_eq!(
            kept_reasons(&plan),
            vec![
                "1 delivery: the subscriber has unsubscribed since".to_owned(),
                "2 deliveries: the server said the address does not exist or takes no mail (5.1.x)"
                    .to_owned(),
            ]
        );
        assert!(kept_reasons(&RetryPlan::default()).is_empty());
    }
}
