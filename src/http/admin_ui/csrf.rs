//! Cross-site request forgery: every request that changes something must
//! come from one of our own pages, twice over.
//!
//! 1. Its `Origin` (or, failing that, its `Referer`) is this site: the
//!    origin of `newsletter.base_url`, or the host the request was sent to.
//!    A request with neither header is refused: every browser sends
//!    `Origin` with a form's POST.
//! 2. It carries the session's CSRF proof: the form field `csrf`, the
//!    header `X-CSRF-Token` (scripts), or `?csrf=` (file uploads, whose
//!    multipart body this layer does not read).
//!
//! Either failure is a 403 before the handler runs, so nothing changes.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::error::AdminError;
use super::session::AdminUser;
use super::SharedState;
use crate::http::body::ADMIN_BODY_LIMIT;

pub const CSRF_FIELD: &str = "csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Whether the request says it comes from this site.
pub fn same_origin(headers: &HeaderMap, base_url: &str) -> bool {
    let stated = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|value| value.to_str().ok())
        .and_then(|value| url::Url::parse(value).ok());
    let Some(stated) = stated else {
        return false;
    };
    if !matches!(stated.scheme(), "http" | "https") {
        return false;
    }
    let ours = url::Url::parse(base_url).ok();
    if ours.is_some_and(|ours| ours.origin() == stated.origin()) {
        return true;
    }
    // Reached by another name than base_url (its address, or localhost
    // through an SSH tunnel): the browser still names the host it sent to.
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok());
    host.is_some_and(|host| authority(&stated).eq_ignore_ascii_case(host))
}

/// `host[:port]` as a `Host` header gives it (no default port).
fn authority(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

pub fn proof_matches(expected: &str, presented: &str) -> bool {
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The layer, after the session's: checks both proofs on every request
/// that is not a read.
pub async fn require_csrf(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Result<Response, AdminError> {
    if is_safe(request.method()) {
        return Ok(next.run(request).await);
    }
    if !same_origin(request.headers(), &state.settings.newsletter.base_url) {
        return Err(AdminError::Forbidden(ORIGIN_REFUSED));
    }
    let expected = request
        .extensions()
        .get::<AdminUser>()
        .map(|user| user.csrf.clone())
        .ok_or(AdminError::SessionEnded)?;
    let (request, presented) = presented_proof(request).await?;
    match presented {
        Some(presented) if proof_matches(&expected, &presented) => Ok(next.run(request).await),
        _ => Err(AdminError::Forbidden(PROOF_REFUSED)),
    }
}

pub const ORIGIN_REFUSED: &str =
    "This request did not come from one of this site's pages, so nothing was changed.";
pub const PROOF_REFUSED: &str = "This form has expired or did not come from this site, so \
     nothing was changed. Go back, reload the page and try again.";

/// The proof the request carries, with the request to pass on (its form
/// body read and put back).
async fn presented_proof(request: Request) -> Result<(Request, Option<String>), AdminError> {
    if let Some(header) = request.headers().get(CSRF_HEADER) {
        let proof = header.to_str().ok().map(str::to_owned);
        return Ok((request, proof));
    }
    if let Some(proof) = request
        .uri()
        .query()
        .and_then(|query| field(query.as_bytes()))
    {
        return Ok((request, Some(proof)));
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Ok((request, None));
    }
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, ADMIN_BODY_LIMIT)
        .await
        .map_err(|_| AdminError::TooLarge)?;
    let proof = field(&bytes);
    Ok((Request::from_parts(parts, Body::from(bytes)), proof))
}

fn field(form: &[u8]) -> Option<String> {
    url::form_urlencoded::parse(form)
        .find(|(key, _)| key == CSRF_FIELD)
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), value.parse().unwrap());
        }
        map
    }

    const BASE: &str = "https://news.example.org";

    #[test]
    fn the_origin_of_base_url_or_of_the_host_asked_is_ours() {
        let ours = [
            headers(&[(header::ORIGIN, "https://news.example.org")]),
            headers(&[(header::REFERER, "https://news.example.org/admin/posts")]),
            headers(&[
                (header::ORIGIN, "http://127.0.0.1:8080"),
                (header::HOST, "127.0.0.1:8080"),
            ]),
        ];
        for map in ours {
            assert!(same_origin(&map, BASE), "{map:?}");
        }
    }

    #[test]
    fn another_site_or_no_origin_at_all_is_refused() {
        let theirs = [
            headers(&[]),
            headers(&[(header::ORIGIN, "https://evil.example")]),
            headers(&[(header::ORIGIN, "null")]),
            headers(&[(header::ORIGIN, "http://news.example.org")]),
            headers(&[(header::ORIGIN, "https://news.example.org.evil.example")]),
            headers(&[
                (header::ORIGIN, "https://evil.example"),
                (header::HOST, "news.example.org"),
            ]),
            headers(&[
                (header::ORIGIN, "https://evil.example"),
                (header::REFERER, "https://news.example.org/admin"),
            ]),
        ];
        for map in theirs {
            assert!(!same_origin(&map, BASE), "{map:?}");
        }
    }

    #[test]
    fn the_proof_is_read_from_a_form() {
        assert_eq!(field(b"subject=Hi&csrf=abc%2B"), Some("abc+".into()));
        assert_eq!(field(b"subject=Hi"), None);
    }
}
