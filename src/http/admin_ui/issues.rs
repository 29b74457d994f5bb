//! `/admin/issues`: what was sent and to whom. The list of issues, newest
//! first; an issue's page, with its progress (live while it sends, through
//! `/admin/issues/{id}/progress`) and its failed and skipped deliveries.
//! Every count comes from the issue's tally (see the store's
//! `issue_tallies`), never from counting deliveries, so a page costs the
//! same for ten recipients as for a million. The actions (retry, send now)
//! are in `issue_actions`.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{local_time, page, AdminError, AdminUser, Section, SharedState};
use crate::domain::delivery::{DeliveryStatus, UnsentDelivery, UnsentQuery};
use crate::domain::issue::{IssueProgress, IssueSummary, ScheduleMode};
use crate::domain::retry::FailureReply;

/// Issues per page of the list; a weekly newsletter sends about this many
/// a year.
const ISSUES_PER_PAGE: u32 = 50;
/// Failed or skipped deliveries per page of an issue.
const DELIVERIES_PER_PAGE: u32 = 50;

/// An id from the path or a query; anything else names no issue.
pub(super) fn parse_id(text: &str) -> Option<i64> {
    text.parse().ok().filter(|id| *id > 0)
}

/// The issue `raw` names, or a 404 page.
pub(super) async fn find_issue(state: &SharedState, raw: &str) -> Result<IssueSummary, AdminError> {
    let missing = || AdminError::NotFound(format!("There is no issue {raw}."));
    let id = parse_id(raw).ok_or_else(missing)?;
    state
        .newsletter
        .store()
        .issue_summary(id)
        .await?
        .ok_or_else(missing)
}

/// `1,234,567`.
pub(super) fn grouped(number: i64) -> String {
    let digits = number.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if number < 0 {
        out.push('-');
    }
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// "1 delivery", "3 deliveries".
pub(super) fn deliveries(count: u64) -> String {
    let noun = if count == 1 { "delivery" } else { "deliveries" };
    format!(
        "{} {noun}",
        grouped(i64::try_from(count).unwrap_or(i64::MAX))
    )
}

/// What an issue is called on its pages: its post's subject, or what a
/// sequence issue sends.
pub(super) fn title(issue: &IssueSummary) -> String {
    match (&issue.subject, issue.mode) {
        (Some(subject), _) => subject.clone(),
        (None, ScheduleMode::Sequence) => {
            format!("Issue {} (each reader's next post)", issue.number)
        }
        (None, ScheduleMode::Broadcast) => format!("Issue {}", issue.number),
    }
}

/// The counts and the bar's parts, as the templates and the script show
/// them; the order is the bar's.
fn progress_view(progress: &IssueProgress) -> serde_json::Value {
    let share = |part: i64| {
        if progress.recipients == 0 {
            "0".to_owned()
        } else {
            format!("{:.3}", part as f64 * 100.0 / progress.recipients as f64)
        }
    };
    let parts = [
        ("sent", progress.sent),
        ("failed", progress.failed),
        ("skipped", progress.skipped),
        ("pending", progress.pending()),
    ];
    json!({
        "recipients": grouped(progress.recipients),
        "sent": grouped(progress.sent),
        "failed": grouped(progress.failed),
        "skipped": grouped(progress.skipped),
        "pending": grouped(progress.pending()),
        "done": progress.is_done(),
        "bar": parts.iter().map(|(status, count)| json!({
            "status": status,
            "width": share(*count),
        })).collect::<Vec<_>>(),
    })
}

pub(super) fn issue_view(issue: &IssueSummary, timezone: Tz) -> serde_json::Value {
    json!({
        "id": issue.id,
        "number": issue.number,
        "title": title(issue),
        "post_id": issue.post_id,
        "started": local_time(timezone, issue.created_at),
        "started_date": issue
            .created_at
            .with_timezone(&timezone)
            .format("%Y-%m-%d %H:%M")
            .to_string(),
        "started_iso": issue.created_at.to_rfc3339(),
        "finished": issue.finished_at.map(|at| local_time(timezone, at)),
        "finished_iso": issue.finished_at.map(|at| at.to_rfc3339()),
        "progress": progress_view(&issue.progress),
    })
}

#[derive(Deserialize)]
pub struct ListQuery {
    before: Option<String>,
}

/// `GET /admin/issues`: newest first, a page at a time by id.
pub async fn list(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    Query(query): Query<ListQuery>,
) -> Result<Response, AdminError> {
    let before = match query.before.as_deref().filter(|text| !text.is_empty()) {
        Some(text) => Some(parse_id(text).ok_or_else(|| {
            AdminError::Invalid(format!("`{text}` is not an issue number to list from."))
        })?),
        None => None,
    };
    let timezone = state.settings.schedule.timezone;
    // One more than a page tells whether there is a next one.
    let mut issues = state
        .newsletter
        .store()
        .list_issues(before, ISSUES_PER_PAGE + 1)
        .await?;
    let more = issues.len() > ISSUES_PER_PAGE as usize;
    issues.truncate(ISSUES_PER_PAGE as usize);
    let next_before = more.then(|| issues.last().map(|issue| issue.id)).flatten();
    let rows: Vec<_> = issues
        .iter()
        .map(|issue| issue_view(issue, timezone))
        .collect();
    page(
        &state,
        &user,
        Section::Issues,
        "issues",
        "Issues",
        json!({
            "issues": rows,
            "timezone": timezone.name(),
            "next_before": next_before,
            "older_page": before.is_some(),
        }),
    )
}

#[derive(Deserialize)]
pub struct IssueQuery {
    /// `failed` or `skipped`: which deliveries to list.
    show: Option<String>,
    after: Option<String>,
    /// How many a retry just put back (the notice after its redirect).
    queued: Option<String>,
}

fn unsent_view(delivery: &UnsentDelivery, timezone: Tz) -> serde_json::Value {
    let reply = delivery
        .last_error
        .as_deref()
        .map(FailureReply::parse)
        .unwrap_or_else(|| FailureReply::parse(""));
    let words = match reply.gave_up_after {
        Some(attempts) if reply.text.is_empty() => format!("gave up after {attempts} attempts"),
        Some(attempts) => format!("{} (gave up after {attempts} attempts)", reply.text),
        None => reply.text.clone(),
    };
    json!({
        "subscriber_id": delivery.subscriber_id,
        "email": delivery.email,
        "status": delivery.status.as_str(),
        "attempts": delivery.attempts,
        "code": reply.code_text(),
        "words": words,
        "when": delivery.closed_at.map(|at| local_time(timezone, at)),
        "when_iso": delivery.closed_at.map(|at| at.to_rfc3339()),
    })
}

/// `GET /admin/issues/{id}`.
pub async fn show(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    Path(raw): Path<String>,
    Query(query): Query<IssueQuery>,
) -> Result<Response, AdminError> {
    let issue = find_issue(&state, &raw).await?;
    let timezone = state.settings.schedule.timezone;
    let status = match query.show.as_deref() {
        Some("failed") => DeliveryStatus::Failed,
        Some("skipped") => DeliveryStatus::Skipped,
        None | Some("") if issue.progress.failed == 0 && issue.progress.skipped > 0 => {
            DeliveryStatus::Skipped
        }
        None | Some("") => DeliveryStatus::Failed,
        Some(other) => {
            return Err(AdminError::Invalid(format!(
                "`{other}` is not a list of deliveries; show=failed or show=skipped."
            )))
        }
    };
    let after = match query.after.as_deref().filter(|text| !text.is_empty()) {
        Some(text) => Some(parse_id(text).ok_or_else(|| {
            AdminError::Invalid(format!("`{text}` is not a delivery to list from."))
        })?),
        None => None,
    };
    let mut unsent = state
        .newsletter
        .store()
        .unsent_deliveries(UnsentQuery {
            issue_id: issue.id,
            status,
            after,
            limit: DELIVERIES_PER_PAGE + 1,
        })
        .await?;
    let more = unsent.len() > DELIVERIES_PER_PAGE as usize;
    unsent.truncate(DELIVERIES_PER_PAGE as usize);
    let next_after = more
        .then(|| unsent.last().map(|delivery| delivery.id))
        .flatten();
    let notice = query
        .queued
        .as_deref()
        .and_then(|text| text.parse::<u64>().ok())
        .map(|count| match count {
            0 => "No delivery was queued again: none of the failures is worth retrying now."
                .to_owned(),
            count => format!("{} queued again.", deliveries(count)),
        });
    let failed = status == DeliveryStatus::Failed;
    page(
        &state,
        &user,
        Section::Issues,
        "issue",
        &title(&issue),
        json!({
            "issue": issue_view(&issue, timezone),
            "notice": notice,
            "can_retry": issue.progress.failed > 0,
            "show_failed": failed,
            "show": status.as_str(),
            "deliveries": unsent.iter().map(|d| unsent_view(d, timezone)).collect::<Vec<_>>(),
            "next_after": next_after,
            "first_page": after.is_none(),
            "page_size": DELIVERIES_PER_PAGE,
        }),
    )
}

/// What the issue page's script polls while the issue sends.
#[derive(Serialize)]
pub struct ProgressJson {
    recipients: i64,
    sent: i64,
    failed: i64,
    skipped: i64,
    pending: i64,
    done: bool,
    /// When it finished, as the page words it.
    finished: Option<String>,
}

/// `GET /admin/issues/{id}/progress`: one row read, whatever the size.
pub async fn progress(
    State(state): State<SharedState>,
    Path(raw): Path<String>,
) -> Result<Response, AdminError> {
    let issue = find_issue(&state, &raw).await?;
    let timezone = state.settings.schedule.timezone;
    let progress = issue.progress;
    Ok(Json(ProgressJson {
        recipients: progress.recipients,
        sent: progress.sent,
        failed: progress.failed,
        skipped: progress.skipped,
        pending: progress.pending(),
        done: progress.is_done(),
        finished: issue.finished_at.map(|at| local_time(timezone, at)),
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_in_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_000_000), "1,000,000");
        assert_eq!(grouped(-12345), "-12,345");
        assert_eq!(deliveries(1), "1 delivery");
        assert_eq!(deliveries(1200), "1,200 deliveries");
    }

    #[test]
    fn ids_are_positive_numbers() {
        assert_eq!(parse_id("42"), Some(42));
        for bad in ["0", "-1", "4x", "", "99999999999999999999"] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }
}
