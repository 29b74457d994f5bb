//! The OpenAPI document served at `GET /api/openapi.json`.
//!
//! The admin handlers carry their own `#[utoipa::path]`; the public routes
//! are described here, on functions that exist only to be documented, so
//! that the page handlers stay plain. What every route of a kind can answer
//! (401 and 429 behind a token, 503 with `Retry-After` when the server is
//! busy) is added once, by `CommonAnswers`. A test compares this document
//! with the router, route by route and method by method.

#![allow(dead_code)] // the public functions below are documentation only

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, ObjectBuilder, Ref, RefOr, Schema, Type};
use utoipa::{Modify, OpenApi, ToSchema};

use super::admin;
use super::error::ErrorBody;
use crate::domain::consent::{ConsentEvent, ConsentKind};
use crate::domain::delivery::DeliveryCounts;
use crate::domain::post::{Post, PostCounts, PostStatus};
use crate::domain::subscriber::{Subscriber, SubscriberCounts, SubscriberStatus};

/// A signup, as a form or as JSON.
#[derive(Serialize, ToSchema)]
pub struct SubscribeRequest {
    #[schema(format = Email)]
    email: String,
    /// At most 100 characters, no control characters.
    #[schema(max_length = 100, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    name: Option<String>,
}

/// The answer to any valid address, whatever its state on the list.
#[derive(Serialize, ToSchema)]
pub struct SubscribeAccepted {
    /// Always `pending`.
    status: String,
}

/// A signup that could not be taken while the database is away or full.
#[derive(Serialize, ToSchema)]
pub struct SubscribeUnavailable {
    /// For a person to read.
    error: String,
    /// `true` when the signup may have been stored all the same, so its
    /// confirmation email may still come; signing up again is harmless.
    /// `false`: nothing was stored.
    may_still_arrive: bool,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable`.
    status: String,
    /// With `unavailable`: `database_unreachable`, `database_not_writable`,
    /// `disk_nearly_full` (below `database.min_free_space`, SQLite only)
    /// or `task_stopped`.
    reason: Option<String>,
    /// With `unavailable`: the reason, for a person to read.
    error: Option<String>,
}

#[utoipa::path(get, path = "/", tag = "public",
    responses((status = 200, description = "The signup page", body = String, content_type = "text/html")))]
fn signup_page() {}

#[utoipa::path(post, path = "/subscribe", tag = "public",
    request_body(description = "A form or JSON; the answer is in the same shape", content(
        (SubscribeRequest = "application/json"),
        (SubscribeRequest = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 202, description = "Any valid address: a confirmation email is on its way unless the address is already confirmed",
            content((SubscribeAccepted = "application/json"), (String = "text/html"))),
        (status = 413, description = "Body too large",
            content((ErrorBody = "application/json"), (String = "text/html"))),
        (status = 415, description = "A body that is neither a form nor JSON",
            content((ErrorBody = "application/json"), (String = "text/html"))),
        (status = 422, description = "An invalid address, an over-long name, or an unreadable body",
            content((ErrorBody = "application/json"), (String = "text/html"))),
        (status = 429, description = "Too many signups from this client",
            headers(("Retry-After" = u64, description = "Seconds until this client may sign up again")),
            content((ErrorBody = "application/json"), (String = "text/html"))),
        (status = 503, description = "The database is away, or its disk is nearly full; answered within about 5 s, with `Retry-After`",
            content((SubscribeUnavailable = "application/json"), (String = "text/html")),
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ))]
fn subscribe() {}

#[utoipa::path(get, path = "/confirm", tag = "public",
    params(("token" = Option<String>, Query, description = "The token from the confirmation email")),
    responses(
        (status = 200, description = "A page with one button that confirms; nothing changes yet", body = String, content_type = "text/html"),
        (status = 400, description = "An unreadable query", body = String, content_type = "text/html"),
        (status = 404, description = "An unknown token", body = String, content_type = "text/html"),
        (status = 410, description = "An expired token", body = String, content_type = "text/html"),
    ))]
fn confirm_page() {}

#[utoipa::path(head, path = "/confirm", tag = "public",
    params(("token" = Option<String>, Query, description = "The token from the confirmation email")),
    responses(
        (status = 200, description = "As GET, without the page", body = String, content_type = "text/html"),
        (status = 400, description = "An unreadable query", body = String, content_type = "text/html"),
        (status = 404, description = "An unknown token", body = String, content_type = "text/html"),
        (status = 410, description = "An expired token", body = String, content_type = "text/html"),
    ))]
fn confirm_head() {}

#[utoipa::path(post, path = "/confirm", tag = "public",
    params(("token" = Option<String>, Query, description = "The token from the confirmation email")),
    responses(
        (status = 200, description = "Confirmed (again, for a token already used)", body = String, content_type = "text/html"),
        (status = 400, description = "An unreadable query", body = String, content_type = "text/html"),
        (status = 404, description = "An unknown token", body = String, content_type = "text/html"),
        (status = 410, description = "An expired token", body = String, content_type = "text/html"),
        (status = 413, description = "Body too large", body = String, content_type = "text/html"),
    ))]
fn confirm() {}

#[utoipa::path(get, path = "/unsubscribe", tag = "public",
    params(("token" = Option<String>, Query, description = "The token from an issue's unsubscribe link")),
    responses(
        (status = 200, description = "A page with one button that unsubscribes; nothing changes yet", body = String, content_type = "text/html"),
        (status = 400, description = "An unreadable query", body = String, content_type = "text/html"),
        (status = 404, description = "An unknown token", body = String, content_type = "text/html"),
    ))]
fn unsubscribe_page() {}

#[utoipa::path(post, path = "/unsubscribe", tag = "public",
    params(("token" = Option<String>, Query, description = "The token from an issue's unsubscribe link")),
    request_body(description = "RFC 8058 one-click: `List-Unsubscribe=One-Click`, or no body", content(
        ("application/x-www-form-urlencoded"),
        ("multipart/form-data"),
    )),
    responses(
        (status = 200, description = "Unsubscribed (again, for a token already used); never a redirect", body = String, content_type = "text/html"),
        (status = 400, description = "An unreadable query", body = String, content_type = "text/html"),
        (status = 404, description = "An unknown token", body = String, content_type = "text/html"),
        (status = 413, description = "Body too large", body = String, content_type = "text/html"),
    ))]
fn unsubscribe() {}

#[utoipa::path(get, path = "/unsubscribe/by-email", tag = "public",
    responses((status = 200, description = "A form that emails a reader their unsubscribe link", body = String, content_type = "text/html")))]
fn unsubscribe_by_email_form() {}

#[utoipa::path(post, path = "/unsubscribe/by-email", tag = "public",
    request_body(description = "The reader's address", content((LinkRequest = "application/x-www-form-urlencoded"))),
    responses(
        (status = 202, description = "Any valid address, whatever its state: if it is on the list and still gets email, its unsubscribe link is on its way (at most one email per address in `http.confirmation_window`)", body = String, content_type = "text/html"),
        (status = 413, description = "Body too large", body = String, content_type = "text/html"),
        (status = 422, description = "An invalid address, or an unreadable body", body = String, content_type = "text/html"),
        (status = 429, description = "Too many requests from this client",
            headers(("Retry-After" = u64, description = "Seconds until this client may ask again")),
            body = String, content_type = "text/html"),
    ))]
fn unsubscribe_by_email() {}

/// Asks for an unsubscribe link by address.
#[derive(Serialize, ToSchema)]
pub struct LinkRequest {
    #[schema(format = Email)]
    email: String,
}

#[utoipa::path(get, path = "/healthz", tag = "public",
    responses(
        (status = 200, description = "The database takes writes, and every task runs", body = Health),
        (status = 503, description = "The database cannot be reached or cannot take a write, its disk is nearly full, or a task has stopped", body = Health),
    ))]
fn health() {}

#[utoipa::path(get, path = "/metrics", tag = "public",
    responses((status = 200, description = "Prometheus text", body = String, content_type = "text/plain")))]
fn metrics() {}

#[utoipa::path(get, path = "/api/openapi.json", tag = "public",
    responses((status = 200, description = "This document", body = Object, content_type = "application/json")))]
fn openapi_document() {}

#[derive(OpenApi)]
#[openapi(
    info(title = "tidings", description = "A self-hosted weekly email newsletter: signup, double opt-in, one-click unsubscribe, and the admin API."),
    paths(
        signup_page, subscribe, confirm_page, confirm_head, confirm, unsubscribe_page,
        unsubscribe, unsubscribe_by_email_form, unsubscribe_by_email, health, metrics,
        openapi_document,
        admin::create_post, admin::list_posts, admin::get_post, admin::update_post,
        admin::delete_post, admin::preview_post, admin::send_now, admin::list_subscribers,
        admin::consent_log, admin::stats,
    ),
    components(schemas(
        ErrorBody, SubscribeRequest, SubscribeAccepted, LinkRequest, SubscribeUnavailable, Health, Post, PostStatus, PostCounts,
        Subscriber, SubscriberStatus, SubscriberCounts, ConsentEvent, ConsentKind, DeliveryCounts,
    )),
    modifiers(&CommonAnswers),
    tags(
        (name = "public", description = "Pages and endpoints anyone may call"),
        (name = "admin", description = "Needs `Authorization: Bearer <admin.token>`"),
    ),
)]
pub struct ApiDoc;

/// The name of the bearer scheme in the document.
const BEARER: &str = "bearer";

/// The answers that every route of a kind shares, added in one place.
struct CommonAnswers;

/// Who reads a route's errors: programs, people, or either.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Readers {
    Programs,
    People,
    Either,
}

impl Readers {
    fn of(path: &str) -> Self {
        match path {
            "/subscribe" => Readers::Either,
            "/healthz" | "/metrics" => Readers::Programs,
            path if path.starts_with("/api/") => Readers::Programs,
            _ => Readers::People,
        }
    }

    fn content(self) -> Vec<(&'static str, Content)> {
        let json = || ("application/json", Content::new(Some(error_schema())));
        let html = || ("text/html", Content::new(Some(text_schema())));
        match self {
            Readers::Programs => vec![json()],
            Readers::People => vec![html()],
            Readers::Either => vec![json(), html()],
        }
    }
}

fn error_schema() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name("ErrorBody"))
}

fn text_schema() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).into()
}

fn header(description: &str) -> Header {
    let mut header = Header::new(text_schema());
    header.description = Some(description.to_owned());
    header
}

fn answer(description: &str, readers: Readers) -> utoipa::openapi::Response {
    let mut response = utoipa::openapi::Response::new(description);
    for (content_type, content) in readers.content() {
        response.content.insert(content_type.to_owned(), content);
    }
    response
}

fn add(operation: &mut Operation, status: &str, response: utoipa::openapi::Response) {
    operation
        .responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| RefOr::T(response));
}

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let readers = Readers::of(path);
            let guarded = path.starts_with("/api/admin/") || path == "/metrics";
            let operations = [
                &mut item.get,
                &mut item.head,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                if guarded {
                    let mut unauthorized = answer("A missing or wrong bearer token", readers);
                    unauthorized.headers.insert(
                        "WWW-Authenticate".into(),
                        header("`Bearer`: the scheme to use"),
                    );
                    add(operation, "401", unauthorized);
                    let mut throttled =
                        answer("Too many failed authentications from this client", readers);
                    throttled.headers.insert(
                        "Retry-After".into(),
                        header("Seconds until this client may try again"),
                    );
                    add(operation, "429", throttled);
                    operation.security =
                        Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
                }
                let busy = if path.starts_with("/api/admin/") {
                    "The admin API is disabled (admin.token is empty), or the server is busy"
                } else {
                    "The server is busy"
                };
                add(operation, "503", answer(busy, readers));
                if let Some(RefOr::T(response)) = operation.responses.responses.get_mut("503") {
                    response.headers.insert(
                        "Retry-After".into(),
                        header("Seconds to wait, when the server is busy"),
                    );
                }
            }
        }
    }
}

/// The document as served: built once, on first use.
pub fn document_json() -> &'static Bytes {
    static DOCUMENT: OnceLock<Bytes> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let json = ApiDoc::openapi()
            .to_json()
            .expect("the OpenAPI document serialises");
        Bytes::from(json)
    })
}

pub async fn document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json().clone(),
    )
        .into_response()
}
