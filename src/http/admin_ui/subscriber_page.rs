//! `/admin/subscribers/{id}`: one subscriber with their consent log and
//! the emails they were sent; unsubscribing them, and erasing them after
//! a page that asks first.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use serde::Deserialize;
use serde_json::{json, Value};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::{local_time, page, AdminError, AdminUser, Section, SharedState};
use crate::domain::erasure::EraseOutcome;
use crate::domain::subscriber::UnsubscribeOutcome;
use crate::domain::subscriber_record::{SentEmail, SubscriberRecord, DELIVERIES_PER_PAGE};
use crate::subscriber_admin;

/// The id in the path; anything else is no subscriber.
fn subscriber_id(text: &str) -> Result<i64, AdminError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| not_found(text))
}

fn not_found(id: impl std::fmt::Display) -> AdminError {
    AdminError::NotFound(format!("There is no subscriber {id}."))
}

async fn record(state: &SharedState, id: i64) -> Result<SubscriberRecord, AdminError> {
    state
        .store()
        .subscriber_record(id)
        .await?
        .ok_or_else(|| not_found(id))
}

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    notice: Option<String>,
    /// The deliveries' cursor: only ids below it.
    before: Option<String>,
}

/// A fixed sentence per `?notice=`, so a link cannot put words on the page.
fn notice(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "added" => "Added.",
        "unsubscribed" => "Unsubscribed. They get no more issues; the consent log records that you did it.",
        "already_unsubscribed" => "They were already unsubscribed: nothing changed.",
        "erased" => "Erased. Their address, name, IP addresses and browsers are gone from the database; the consent log keeps when things happened and that you erased them.",
        "already_erased" => "They were already erased: nothing changed.",
        _ => return None,
    })
}

fn record_json(timezone: Tz, record: &SubscriberRecord) -> Value {
    let optional = |at: Option<DateTime<Utc>>| at.map(|at| local_time(timezone, at));
    json!({
        "id": record.id,
        "email": record.email,
        "name": record.name,
        "status": record.status.as_str(),
        "bounce_count": record.bounce_count,
        "created": local_time(timezone, record.created_at),
        "confirmed": optional(record.confirmed_at),
        "unsubscribed": optional(record.unsubscribed_at),
        "erased": optional(record.erased_at),
        "can_unsubscribe": record.erased_at.is_none()
            && record.status != crate::domain::subscriber::SubscriberStatus::Unsubscribed,
    })
}

pub async fn show(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Response, AdminError> {
    let id = subscriber_id(&id)?;
    let record = record(&state, id).await?;
    let timezone = state.settings.schedule.timezone;
    let store = state.store();
    let events = store.consent_events(id).await?;
    let before = query.before.as_deref().and_then(|text| text.parse().ok());
    let mut deliveries = store
        .subscriber_deliveries(id, before, DELIVERIES_PER_PAGE + 1)
        .await?;
    let more = deliveries.len() > DELIVERIES_PER_PAGE as usize;
    deliveries.truncate(DELIVERIES_PER_PAGE as usize);
    let older = more
        .then(|| {
            deliveries
                .last()
                .map(|last| format!("/admin/subscribers/{id}?before={}", last.id))
        })
        .flatten();
    let events: Vec<Value> = events
        .iter()
        .map(|event| {
            json!({
                "kind": event.kind.as_str(),
                "when": local_time(timezone, event.occurred_at),
                "ip": event.ip,
                "user_agent": event.user_agent,
                "detail": event.detail,
            })
        })
        .collect();
    let deliveries: Vec<Value> = deliveries
        .iter()
        .map(|delivery| {
            let (issue_id, subject) = match &delivery.email {
                SentEmail::Issue { issue_id, subject } => (Some(*issue_id), subject.as_str()),
                SentEmail::Confirmation => (None, "Confirmation email"),
            };
            json!({
                "issue_id": issue_id,
                "subject": subject,
                "status": delivery.status.as_str(),
                "attempts": delivery.attempts,
                "when": local_time(timezone, delivery.sent_at.unwrap_or(delivery.created_at)),
            })
        })
        .collect();
    let title = match record.erased_at {
        Some(_) => format!("Erased subscriber {id}"),
        None => record.email.clone(),
    };
    page(
        &state,
        &user,
        Section::Subscribers,
        "subscriber",
        &title,
        json!({
            "subscriber": record_json(timezone, &record),
            "heading": title,
            "events": events,
            "deliveries": deliveries,
            "older": older,
            "newer": before.map(|_| format!("/admin/subscribers/{id}")),
            "notice": notice(query.notice.as_deref()),
        }),
    )
}

/// Unsubscribes on the operator's word.
pub async fn unsubscribe(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    let id = subscriber_id(&id)?;
    let outcome = subscriber_admin::unsubscribe(&state.newsletter, id, &user.email).await?;
    let code = match outcome {
        UnsubscribeOutcome::Unsubscribed => "unsubscribed",
        UnsubscribeOutcome::AlreadyUnsubscribed => "already_unsubscribed",
        UnsubscribeOutcome::Unknown => return Err(not_found(id)),
    };
    tracing::info!(
        subscriber_id = id,
        admin_id = user.admin_id,
        ?outcome,
        "admin unsubscribe"
    );
    Ok(Redirect::to(&format!("/admin/subscribers/{id}?notice={code}")).into_response())
}

/// The page that asks before erasing.
pub async fn confirm_erase(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    let id = subscriber_id(&id)?;
    let record = record(&state, id).await?;
    if record.erased_at.is_some() {
        return Ok(
            Redirect::to(&format!("/admin/subscribers/{id}?notice=already_erased")).into_response(),
        );
    }
    page(
        &state,
        &user,
        Section::Subscribers,
        "subscriber_erase",
        "Erase a subscriber",
        json!({ "subscriber": record_json(state.settings.schedule.timezone, &record) }),
    )
}

pub async fn erase(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    let id = subscriber_id(&id)?;
    let code = match subscriber_admin::erase(&state.newsletter, id, &user.email).await? {
        EraseOutcome::Erased => "erased",
        EraseOutcome::AlreadyErased => "already_erased",
        EraseOutcome::Unknown => return Err(not_found(id)),
    };
    Ok(Redirect::to(&format!("/admin/subscribers/{id}?notice={code}")).into_response())
}
