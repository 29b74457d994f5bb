//! Request bodies, bounded: per route, over all requests, and in time.
//!
//! axum's `Bytes` and `Json` extractors collect a whole body before the
//! handler runs, and hyper keeps reading as long as the client sends. So
//! a thousand clients each sending half of a 1 MB body held half a
//! gigabyte, whatever the handler would have done with it. Here a body is
//! read only with a share of a global byte budget (the declared length, or
//! the route's limit when none is declared); without one the request gets
//! a quick 503 and its body is never read. A body that stalls is cut off.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::Semaphore;

use super::SharedState;

/// A signup is a few hundred bytes; the unsubscribe form less.
pub const PUBLIC_BODY_LIMIT: usize = 16 * 1024;
/// A post's Markdown.
pub const ADMIN_BODY_LIMIT: usize = 1024 * 1024;

pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    /// Refused bodies being read and thrown away (see [`discard`]). Each
    /// costs a connection's read buffer, up to a few hundred kB, so only
    /// a few at a time; the rest are closed on at once.
    discards: Semaphore,
    read_timeout: Duration,
}

impl BodyBudget {
    pub fn new(total_bytes: usize, read_timeout: Duration) -> Self {
        // Shares are taken as u32; no budget needs more than 4 GiB.
        let total = total_bytes.min(u32::MAX as usize);
        Self {
            bytes: Arc::new(Semaphore::new(total)),
            discards: Semaphore::new(MAX_DISCARDS),
            read_timeout,
        }
    }
}

pub async fn bound_public(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    bound(&state, PUBLIC_BODY_LIMIT, request, next).await
}

pub async fn bound_admin(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    bound(&state, ADMIN_BODY_LIMIT, request, next).await
}

async fn bound(state: &SharedState, limit: usize, request: Request, next: Next) -> Response {
    let json = wants_json(request.uri().path(), request.headers());
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let chunked = request.headers().contains_key(header::TRANSFER_ENCODING);
    let share = match declared {
        Some(0) => return next.run(request).await,
        None if !chunked => return next.run(request).await,
        Some(length) if length > limit as u64 => {
            if length <= DISCARD_LIMIT {
                discard(
                    &state.body_budget,
                    &mut request.into_body().into_data_stream(),
                )
                .await;
            }
            return too_large(json, limit);
        }
        Some(length) => length as u32,
        None => limit as u32,
    };
    let budget = &state.body_budget;
    let Ok(permit) = budget.bytes.clone().try_acquire_many_owned(share) else {
        state.metrics.record_busy_refusal();
        return refuse(
            json,
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is busy. Please try again in a moment.",
            Some(1),
        );
    };
    let (parts, body) = request.into_parts();
    let mut stream = body.into_data_stream();
    let bytes =
        match tokio::time::timeout(budget.read_timeout, read_within(&mut stream, limit)).await {
            Ok(Read::Whole(bytes)) => bytes,
            Ok(Read::TooLarge) => {
                discard(budget, &mut stream).await;
                return too_large(json, limit);
            }
            // The client went away or sent less than it declared.
            Ok(Read::EndedEarly) => {
                return refuse(
                    json,
                    StatusCode::BAD_REQUEST,
                    "The request body ended early.",
                    None,
                )
            }
            Err(_) => {
                return refuse(
                    json,
                    StatusCode::REQUEST_TIMEOUT,
                    "The request body took too long to arrive.",
                    None,
                );
            }
        };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    // The handler has dropped the body by now: its bytes are free again.
    drop(permit);
    response
}

enum Read {
    Whole(Bytes),
    TooLarge,
    EndedEarly,
}

async fn read_within(stream: &mut BodyDataStream, limit: usize) -> Read {
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return Read::EndedEarly;
        };
        if bytes.len() + chunk.len() > limit {
            return Read::TooLarge;
        }
        bytes.extend_from_slice(&chunk);
    }
    Read::Whole(Bytes::from(bytes))
}

/// A client that is refused while it is still sending gets a reset
/// connection, not the refusal, if the server closes on its unread bytes.
/// So the rest of a modest body is read and thrown away (no memory kept)
/// for a moment before the answer goes out.
const DISCARD_LIMIT: u64 = 8 * 1024 * 1024;
const DISCARD_TIME: Duration = Duration::from_secs(2);
const MAX_DISCARDS: usize = 32;

async fn discard(budget: &BodyBudget, stream: &mut BodyDataStream) {
    let Ok(_slot) = budget.discards.try_acquire() else {
        return;
    };
    let drain = async {
        let mut seen = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len() as u64;
            if seen > DISCARD_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
}

fn too_large(json: bool, limit: usize) -> Response {
    refuse(
        json,
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("The request body is too large: this route takes at most {limit} bytes."),
        None,
    )
}

/// Scripts get JSON: the API, and anyone who sends or asks for it.
pub fn wants_json(path: &str, headers: &HeaderMap) -> bool {
    let says_json = |name| {
        headers
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
            .is_some_and(|value| value.contains("application/json") || value.contains("+json"))
    };
    path.starts_with("/api/") || says_json(header::CONTENT_TYPE) || says_json(header::ACCEPT)
}

/// A refusal before the handler ran. The connection is closed after it,
/// since the body may not have been read to its end.
pub fn refuse(
    json: bool,
    status: StatusCode,
    message: &str,
    retry_after_seconds: Option<u64>,
) -> Response {
    let mut response = if json {
        (status, Json(json!({ "error": message }))).into_response()
    } else {
        let page = format!(
            "<!doctype html><meta charset=\"utf-8\"><title>{title}</title>\
             <h1>{title}</h1><p>{message}</p>",
            title = status.canonical_reason().unwrap_or("Error"),
        );
        (status, Html(page)).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if let Some(seconds) = retry_after_seconds {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
