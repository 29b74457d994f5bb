//! `/admin`: the next send, the list's growth, the last issues and any
//! warnings, on one screen.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::chart::growth_svg;
use super::issues::issue_view;
use super::{page, AdminError, AdminUser, Section, SharedState};
use crate::domain::growth::{growth, window_start, GrowthDay};
use crate::domain::issue::ScheduleMode;
use crate::domain::post::PostStatus;
use crate::http::metrics::counts_snapshot;

/// How many of the latest issues the dashboard shows.
const RECENT_ISSUES: u32 = 5;

/// The chart changes by the day: it is counted at most this often.
const GROWTH_MAX_AGE: Duration = Duration::from_secs(600);

/// The last growth chart drawn, shared by every dashboard view.
#[derive(Default)]
pub struct GrowthCache(Mutex<Option<(Instant, Vec<GrowthDay>)>>);

impl GrowthCache {
    fn fresh(&self) -> Option<Vec<GrowthDay>> {
        let cached = self.0.lock().expect("growth lock");
        cached
            .as_ref()
            .filter(|(at, _)| at.elapsed() < GROWTH_MAX_AGE)
            .map(|(_, days)| days.clone())
    }

    fn keep(&self, days: &[GrowthDay]) {
        *self.0.lock().expect("growth lock") = Some((Instant::now(), days.to_vec()));
    }
}

async fn growth_days(
    state: &SharedState,
    confirmed_now: i64,
) -> Result<Vec<GrowthDay>, AdminError> {
    if let Some(days) = state.admin_ui.growth.fresh() {
        return Ok(days);
    }
    let start = window_start(state.newsletter.now(), state.settings.schedule.timezone);
    let changes = state
        .store()
        .daily_changes(start.with_timezone(&Utc))
        .await?;
    let days = growth(start, &changes, confirmed_now);
    state.admin_ui.growth.keep(&days);
    Ok(days)
}

/// "3 days, 4 hours", "2 hours, 5 minutes", "12 minutes", "less than a minute".
pub fn time_until(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let minutes = (to - from).num_minutes().max(0);
    let plural =
        |count: i64, unit: &str| format!("{count} {unit}{}", if count == 1 { "" } else { "s" });
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => "less than a minute".to_owned(),
        (0, 0, m) => plural(m, "minute"),
        (0, h, 0) => plural(h, "hour"),
        (0, h, m) => format!("{}, {}", plural(h, "hour"), plural(m, "minute")),
        (d, 0, _) => plural(d, "day"),
        (d, h, _) => format!("{}, {}", plural(d, "day"), plural(h, "hour")),
    }
}

async fn next_send(state: &SharedState) -> Result<Value, AdminError> {
    let Some(at) = state.scheduler.next_send_at() else {
        return Ok(Value::Null);
    };
    let zone = state.settings.schedule.timezone;
    let posts = state.store().list_posts().await?;
    let next_post = posts
        .iter()
        .filter(|post| post.status == PostStatus::Queued)
        .min_by_key(|post| (post.position, post.id));
    Ok(json!({
        "at": at.with_timezone(&zone).format("%A %-d %B %Y, %H:%M %Z").to_string(),
        "in": time_until(state.newsletter.now(), at),
        "sequence": state.settings.schedule.mode == ScheduleMode::Sequence,
        "post": next_post.map(|post| json!({ "id": post.id, "subject": post.subject })),
    }))
}

fn problems(state: &SharedState) -> Value {
    let (report, running) = state.admin_ui.checks.get(&state.settings, false);
    let problems: Vec<Value> = report
        .iter()
        .flat_map(|report| report.problems())
        .map(|finding| {
            json!({
                "error": finding.severity == crate::domain::deliverability::Severity::Error,
                "text": finding.text,
            })
        })
        .collect();
    let errors = problems
        .iter()
        .filter(|problem| problem["error"] == true)
        .count();
    let warnings = problems.len() - errors;
    let counted =
        |count: usize, what: &str| format!("{count} {what}{}", if count == 1 { "" } else { "s" });
    json!({
        "running": running,
        "summary": format!("{}, {}", counted(errors, "error"), counted(warnings, "warning")),
        "problems": problems,
    })
}

pub async fn show(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
) -> Result<Response, AdminError> {
    let counts = counts_snapshot(&state).await?;
    let subscribers = &counts.subscribers;
    let days = growth_days(&state, subscribers.confirmed).await?;
    let change = match (days.first(), days.last()) {
        (Some(first), Some(last)) => last.size - first.size,
        _ => 0,
    };
    let joined: i64 = days.iter().map(|day| day.joined).sum();
    let zone = state.settings.schedule.timezone;
    let recent: Vec<Value> = state
        .store()
        .list_issues(None, RECENT_ISSUES)
        .await?
        .iter()
        .map(|issue| issue_view(issue, zone))
        .collect();
    let left: i64 = days.iter().map(|day| day.left).sum();
    page(
        &state,
        &user,
        Section::Dashboard,
        "dashboard",
        "Dashboard",
        json!({
            "next_send": next_send(&state).await?,
            "subscribers": {
                "confirmed": subscribers.confirmed,
                "pending": subscribers.pending,
                "unsubscribed": subscribers.unsubscribed,
                "bounced": subscribers.bounced,
            },
            "growth": {
                "svg": growth_svg(&days),
                "change": format!("{change:+}"),
                "joined": joined,
                "left": left,
            },
            "checks": problems(&state),
            "recent_issues": recent,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_until_reads_as_words() {
        let now: DateTime<Utc> = "2037-01-05T09:00:00Z".parse().unwrap();
        let later = |minutes| now + chrono::Duration::minutes(minutes);
        assert_eq!(time_until(now, later(0)), "less than a minute");
        assert_eq!(time_until(now, later(1)), "1 minute");
        assert_eq!(time_until(now, later(60)), "1 hour");
        assert_eq!(time_until(now, later(125)), "2 hours, 5 minutes");
        assert_eq!(time_until(now, later(1440)), "1 day");
        assert_eq!(
            time_until(now, later(3 * 1440 + 4 * 60 + 59)),
            "3 days, 4 hours"
        );
        assert_eq!(time_until(later(5), now), "less than a minute");
    }
}
