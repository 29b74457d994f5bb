//! `/admin/subscribers/import`: a CSV upload, a preview of what it would
//! do (written nowhere), and the confirming form that imports it.
//!
//! Both forms are multipart, which the CSRF layer does not read, so their
//! action carries the proof (`?csrf=`). The preview carries the file back
//! in a hidden field of the confirming form; multipart leaves its bytes as
//! they are, so that form is no larger than the upload, and both fit the
//! admin's body limit (see `subscriber_admin::MAX_IMPORT_BYTES`).

use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use serde_json::{json, Value};

use super::{page, AdminError, AdminUser, Section, SharedState};
use crate::subscriber_admin::{self, ImportPreview, PreviewRow, MAX_IMPORT_BYTES};
use crate::subscriber_csv::ImportRow;

/// The upload form, with `error` beside the file field.
fn form_page(
    state: &SharedState,
    user: &AdminUser,
    status: StatusCode,
    error: Option<String>,
) -> Result<Response, AdminError> {
    let mut response = page(
        state,
        user,
        Section::Subscribers,
        "subscribers_import",
        "Import subscribers",
        json!({
            "error": error,
            "max_kb": MAX_IMPORT_BYTES / 1024,
        }),
    )?;
    *response.status_mut() = status;
    Ok(response)
}

pub async fn form(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
) -> Result<Response, AdminError> {
    form_page(&state, &user, StatusCode::OK, None)
}

/// The parts of an import form: the CSV (the file, or the hidden field
/// the preview carries it in) and the confirmation choice.
struct Upload {
    csv: Option<Vec<u8>>,
    send_confirmations: bool,
}

async fn read_upload(mut multipart: Multipart) -> Result<Upload, AdminError> {
    let mut upload = Upload {
        csv: None,
        send_confirmations: false,
    };
    let unreadable =
        |_| AdminError::Invalid("The upload could not be read. Please try again.".into());
    while let Some(field) = multipart.next_field().await.map_err(unreadable)? {
        match field.name() {
            Some("file" | "csv") => {
                let bytes = field.bytes().await.map_err(unreadable)?;
                if !bytes.is_empty() {
                    upload.csv = Some(bytes.to_vec());
                }
            }
            Some("send_confirmations") => upload.send_confirmations = true,
            _ => {}
        }
    }
    Ok(upload)
}

/// The CSV as text, or what is wrong with it.
fn csv_text(csv: Option<Vec<u8>>) -> Result<String, String> {
    let csv = csv.ok_or("Choose a CSV file to upload.")?;
    if csv.len() > MAX_IMPORT_BYTES {
        return Err(format!(
            "The file is larger than {} KB. Split it, or import it on the server with \
             `tidings subscriber import FILE.csv`, which takes any size.",
            MAX_IMPORT_BYTES / 1024
        ));
    }
    String::from_utf8(csv).map_err(|_| "The file is not UTF-8 text: save it as CSV UTF-8.".into())
}

fn row_json(shown: &PreviewRow) -> Value {
    let ImportRow {
        line,
        email,
        name,
        status,
    } = &shown.row;
    json!({
        "line": line,
        "email": email.as_str(),
        "name": name.as_ref().map(|name| name.as_str()),
        "status": status.map_or("pending", |status| status.as_str()),
        "repeats_line": shown.repeats_line,
    })
}

fn preview_json(preview: &ImportPreview) -> Value {
    let more = |count: usize, shown: usize| count.saturating_sub(shown);
    json!({
        "new_count": preview.new_count,
        "existing_count": preview.existing_count,
        "invalid_count": preview.invalid_count,
        "new": preview.new.iter().map(row_json).collect::<Vec<_>>(),
        "existing": preview.existing.iter().map(row_json).collect::<Vec<_>>(),
        "invalid": preview.invalid.iter().map(|error| json!({
            "line": error.line,
            "message": error.message,
        })).collect::<Vec<_>>(),
        "new_more": more(preview.new_count, preview.new.len()),
        "existing_more": more(preview.existing_count, preview.existing.len()),
        "invalid_more": more(preview.invalid_count, preview.invalid.len()),
    })
}

/// Reads the upload and shows what importing it would do. Writes nothing.
pub async fn preview(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    multipart: Multipart,
) -> Result<Response, AdminError> {
    let upload = read_upload(multipart).await?;
    let csv = match csv_text(upload.csv) {
        Ok(csv) => csv,
        Err(error) => {
            return form_page(&state, &user, StatusCode::UNPROCESSABLE_ENTITY, Some(error))
        }
    };
    let preview = subscriber_admin::preview_import(state.store(), &csv).await?;
    page(
        &state,
        &user,
        Section::Subscribers,
        "subscribers_import_preview",
        "Check the import",
        json!({
            "preview": preview_json(&preview),
            "csv": csv,
        }),
    )
}

/// Imports what the preview showed: the new rows are added, the rest
/// skipped or counted as already there.
pub async fn confirm(
    State(state): State<SharedState>,
    Extension(user): Extension<AdminUser>,
    multipart: Multipart,
) -> Result<Response, AdminError> {
    let upload = read_upload(multipart).await?;
    let csv = csv_text(upload.csv).map_err(AdminError::Invalid)?;
    let counts =
        subscriber_admin::import(&state.newsletter, &csv, upload.send_confirmations).await?;
    tracing::info!(admin_id = user.admin_id, ?counts, "subscribers imported");
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("notice", "imported")
        .append_pair("added", &counts.added.to_string())
        .append_pair("existing", &counts.existing.to_string())
        .append_pair("skipped", &counts.skipped.to_string())
        .append_pair("queued", &counts.queued.to_string())
        .finish();
    Ok(Redirect::to(&format!("/admin/subscribers?{query}")).into_response())
}
