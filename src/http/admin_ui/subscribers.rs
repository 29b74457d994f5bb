//! `/admin/subscribers`: the list with its counts, search and status
//! filter, a page at a time; adding one subscriber; the CSV export.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{local_time, page, AdminError, AdminUser, Section, SharedState};
use crate::domain::subscriber::{
    AddOutcome, EmailAddress, OperatorSource, Subscriber, SubscriberCounts, SubscriberName,
    SubscriberStatus,
};
use crate::domain::subscriber_search::SearchTerm;
use crate::subscriber_admin;

/// `?status=`: empty for all, else one of the statuses (a 422 otherwise).
pub fn parse_status(text: Option<&str>) -> Result<Option<SubscriberStatus>, AdminError> {
    match text.map(str::trim).filter(|text| !text.is_empty()) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            AdminError::Invalid(format!(
                "“{text}” is not a status. Choose pending, confirmed, unsubscribed or bounced."
            ))
        }),
    }
}

/// `/admin/subscribers` with these parameters (the empty ones left out).
fn list_url(pairs: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs.iter().filter(|(_, value)| !value.is_empty()) {
        query.append_pair(key, value);
    }
    match query.finish() {
        query if query.is_empty() => "/admin/subscribers".to_owned(),
        query => format!("/admin/subscribers?{query}"),
    }
}

/// Counts by status from the snapshot `/metrics` keeps: counting a million
/// rows per page view would cost more than the rest of the page.
async fn counts(state: &SharedState) -> Result<SubscriberCounts, AdminError> {
    let counts = crate::http::metrics::counts_snapshot(state).await?;
    Ok(counts.subscribers.clone())
}

pub fn subscriber_json(timezone: Tz, subscriber: &Subscriber) -> Value {
    json!({
        "id": subscriber.id,
        "email": subscriber.email,
        "name": subscriber.name,
        "status": subscriber.status.as_str(),
        "created": local_time(timezone, subscriber.created_at),
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    q: Option<String>,
    status: Option<String>,
    after: Option<String>,
    notice: Option<String>,
    added: Option<u64>,
    existing: Option<u64>,
    skipped: Option<u64>,
    queued: Option<u64>,
}

/// A fixed sentence per `?notice=`, so a link cannot put words on the page.
fn notice(query: &ListQuery) -> Option<String> {
    let count = |value: Option<u64>| value.unwrap_or(0);
    match query.notice.as_deref()? {
        "imported" => Some(format!(
            "Import done: {} added, {} already on the list, {} invalid rows skipped, {} \
             confirmation emails queued.",
            count(query.added),
            count(query.existing),
            count(query.skipped),
            count(query.queued)
        )),
        _ => None,
    }
}

/// The add form as typed, and what is wrong with it.
#[derive(Debug, Default, Deserialize)]
pub struct AddForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    /// "They already agreed": added as confirmed, as `--confirmed` does.
    #[serde(default)]
    confirmed: Option<String>,
}

#[derive(Default)]
struct AddFormView<'a> {
    form: Option<&'a AddForm>,
    email_error: Option<String>,
    name_error: Option<String>,
    exists: Option<(String, Option<i64>)>,
}

async fn list_page(
    state: &SharedState,
    user: &AdminUser,
    query: &ListQuery,
    add: AddFormView<'_>,
) -> Result<Response, AdminError> {
    let status = parse_status(query.status.as_deref())?;
    let q = query.q.as_deref().unwrap_or("").trim();
    let term = SearchTerm::parse(q).map_err(|error| AdminError::Invalid(error.to_string()))?;
    let searching = term.is_some();
    let counts = counts(state).await?;
    let list =
        subscriber_admin::list_page(state.store(), status, term, query.after.as_deref()).await?;
    let status_text = status.map_or("", SubscriberStatus::as_str);
    let count_of = |status: SubscriberStatus| match status {
        SubscriberStatus::Pending => counts.pending,
        SubscriberStatus::Confirmed => counts.confirmed,
        SubscriberStatus::Unsubscribed => counts.unsubscribed,
        SubscriberStatus::Bounced => counts.bounced,
    };
    let by_status: Vec<Value> = SubscriberStatus::ALL
        .iter()
        .map(|each| {
            json!({
                "status": each.as_str(),
                "count": count_of(*each),
                "href": list_url(&[("q", q), ("status", each.as_str())]),
                "current": status == Some(*each),
            })
        })
        .collect();
    let total: i64 = SubscriberStatus::ALL
        .iter()
        .map(|each| count_of(*each))
        .sum();
    let next = list
        .next
        .as_deref()
        .map(|after| list_url(&[("q", q), ("status", status_text), ("after", after)]));
    let form = add.form;
    let context = json!({
        "counts": by_status,
        "total": total,
        "all_href": list_url(&[("q", q)]),
        "q": q,
        "searching": searching,
        "status": status_text,
        "statuses": SubscriberStatus::ALL.iter().map(|each| json!({
            "value": each.as_str(),
            "selected": status == Some(*each),
        })).collect::<Vec<_>>(),
        "filtered": searching || status.is_some(),
        "subscribers": list.subscribers.iter().map(|subscriber| subscriber_json(state.settings.schedule.timezone, subscriber)).collect::<Vec<_>>(),
        "next": next,
        "first_href": (query.after.is_some()).then(|| list_url(&[("q", q), ("status", status_text)])),
        "export_href": match status {
            Some(status) => format!("/admin/subscribers/export.csv?status={status}"),
            None => "/admin/subscribers/export.csv".to_owned(),
        },
        "notice": notice(query),
        "add": {
            "email": form.map_or("", |form| form.email.as_str()),
            "name": form.map_or("", |form| form.name.as_str()),
            "confirmed": form.is_some_and(|form| form.confirmed.is_some()),
            "email_error": add.email_error,
            "name_error": add.name_error,
            "exists": add.exists.as_ref().map(|(email, id)| json!({ "email": email, "id": id })),
        },
    });
    page(
        state,
        user,
        Section::Subscribers,
        "subscribers",
        "Subscribers",
        context,
    )
}

pub async fn list(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    Query(query): Query<ListQuery>,
) -> Result<Response, AdminError> {
    list_page(&state, &user, &query, AddFormView::default()).await
}

/// Adds one subscriber as `tidings subscriber add` does: pending with a
/// confirmation email, or confirmed when the operator says they agreed.
pub async fn add(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    Form(form): Form<AddForm>,
) -> Result<Response, AdminError> {
    let email = EmailAddress::parse(&form.email);
    let name = SubscriberName::parse_optional(Some(&form.name));
    let (email, name) = match (email, name) {
        (Ok(email), Ok(name)) => (email, name),
        (email, name) => {
            let view = AddFormView {
                form: Some(&form),
                email_error: email.err().map(|error| error.to_string()),
                name_error: name.err().map(|error| error.to_string()),
                exists: None,
            };
            let mut response = list_page(&state, &user, &ListQuery::default(), view).await?;
            *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(response);
        }
    };
    let status = if form.confirmed.is_some() {
        SubscriberStatus::Confirmed
    } else {
        SubscriberStatus::Pending
    };
    let outcome = state
        .newsletter
        .add_subscriber(email.clone(), name, status, OperatorSource::Admin)
        .await?;
    match outcome {
        AddOutcome::Added { id, .. } => {
            tracing::info!(
                subscriber_id = id,
                admin_id = user.admin_id,
                "subscriber added"
            );
            Ok(Redirect::to(&format!("/admin/subscribers/{id}?notice=added")).into_response())
        }
        AddOutcome::AlreadyExists => {
            let id = state
                .store()
                .subscriber_by_email(email.as_str())
                .await?
                .map(|(id, _)| id);
            let view = AddFormView {
                form: Some(&form),
                exists: Some((email.as_str().to_owned(), id)),
                ..AddFormView::default()
            };
            let mut response = list_page(&state, &user, &ListQuery::default(), view).await?;
            *response.status_mut() = StatusCode::CONFLICT;
            Ok(response)
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ExportQuery {
    status: Option<String>,
}

/// The list as CSV, streamed a batch at a time as it is read.
pub async fn export(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    Query(query): Query<ExportQuery>,
) -> Result<Response, AdminError> {
    let status = parse_status(query.status.as_deref())?;
    tracing::info!(admin_id = user.admin_id, status = ?status, "subscriber list exported");
    let rows = subscriber_admin::export(state.store().clone(), status);
    let rows = futures::StreamExt::inspect(rows, |chunk| {
        if let Err(error) = chunk {
            // The download ends short; the browser reports it failed.
            tracing::error!(error = ?error, "the subscriber export failed halfway");
        }
    });
    let filename = match status {
        Some(status) => format!("subscribers-{status}.csv"),
        None => "subscribers.csv".to_owned(),
    };
    let mut response = Body::from_stream(rows).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
            .map_err(AdminError::internal)?,
    );
    Ok(response)
}
