//! Security headers, set in one layer so that no page can forget them.
//!
//! Every response says `nosniff` and `no-referrer` (tokens ride in URLs,
//! and a Referer would carry them to other sites); the admin pages say
//! `same-origin`, so that their forms' `Origin` can be checked. Every HTML page gets a
//! Content-Security-Policy that allows only what the templates use: inline
//! styles, images, and forms that post back here; no script at all, and no
//! framing. The admin preview is a post's HTML, so it gets a stricter
//! policy still: a sandbox, with no forms. The pages behind emailed links
//! carry a token, so neither they nor their error pages may be cached.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::links::{CONFIRM_PATH, UNSUBSCRIBE_PATH};

/// For the signup, confirmation and unsubscribe pages.
pub const PAGE_POLICY: &str = "default-src 'none'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' https: data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// For the admin preview of a post: it is shown, never run.
pub const PREVIEW_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
    img-src https: data:; form-action 'none'; base-uri 'none'; frame-ancestors 'none'; sandbox";

/// For the admin pages: their own script and stylesheet, requests back to
/// this site, and the preview frame, which shows a page of this site.
pub const ADMIN_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' https: data:; connect-src 'self'; \
    frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// For the admin preview of a post inside the editor's sandboxed frame.
pub const ADMIN_PREVIEW_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
    img-src https: data:; form-action 'none'; base-uri 'none'; frame-ancestors 'self'; sandbox";

/// For everything that is not a page (JSON, metrics): nothing to load.
pub const DATA_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// Whether the URL path carries an emailed token.
fn carries_token(path: &str) -> bool {
    path == CONFIRM_PATH || path == UNSUBSCRIBE_PATH
}

fn is_preview(path: &str) -> bool {
    path.starts_with("/api/admin/posts/") && path.ends_with("/preview")
}

fn is_admin_page(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

/// The editor's preview frame: `/admin/preview…`.
fn is_admin_preview(path: &str) -> bool {
    path.starts_with("/admin/preview")
}

fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"))
}

pub async fn security_headers(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let policy = if !is_html(headers) {
        DATA_POLICY
    } else if is_preview(&path) {
        PREVIEW_POLICY
    } else if is_admin_preview(&path) {
        ADMIN_PREVIEW_POLICY
    } else if is_admin_page(&path) {
        ADMIN_POLICY
    } else {
        PAGE_POLICY
    };
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(policy),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The admin's own forms need their Origin: under `no-referrer` a
    // browser sends `Origin: null`, which the CSRF check refuses. Its
    // URLs carry no tokens, and other sites still get no Referer.
    let referrer = if is_admin_page(&path) {
        "same-origin"
    } else {
        "no-referrer"
    };
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static(referrer));
    if carries_token(&path) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_preview_path_gets_the_sandbox() {
        assert!(is_preview("/api/admin/posts/7/preview"));
        assert!(!is_preview("/api/admin/posts/7"));
        assert!(!is_preview("/preview"));
        assert!(PREVIEW_POLICY.contains("sandbox"));
        for policy in [PAGE_POLICY, PREVIEW_POLICY, DATA_POLICY] {
            assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
            assert!(!policy.contains("script-src"), "{policy}");
        }
        // Only the admin runs a script, and only its own.
        assert!(ADMIN_POLICY.contains("script-src 'self';"));
        assert!(ADMIN_PREVIEW_POLICY.contains("sandbox"));
        assert!(!ADMIN_PREVIEW_POLICY.contains("script-src"));
    }
}
