//! What every HTML page must carry, checked alike by the API and the
//! end-to-end suites.

use reqwest::header::HeaderMap;

/// A header's value as text; empty when it is missing.
pub fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The headers every HTML page must carry; `token` pages may not be cached.
pub fn assert_page_headers(headers: &HeaderMap, what: &str, token: bool) {
    assert!(
        header(headers, "content-type").starts_with("text/html"),
        "{what} is a page"
    );
    let policy = header(headers, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ] {
        assert!(policy.contains(directive), "{what}: {policy}");
    }
    assert!(
        !policy.contains("script-src"),
        "{what}: no script: {policy}"
    );
    assert_eq!(
        header(headers, "x-content-type-options"),
        "nosniff",
        "{what}"
    );
    assert_eq!(header(headers, "referrer-policy"), "no-referrer", "{what}");
    if token {
        assert_eq!(header(headers, "cache-control"), "no-store", "{what}");
    }
}
