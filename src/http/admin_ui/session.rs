//! Who is logged in: the session cookie, and the layer that lets only a
//! live session through to the admin pages.
//!
//! The cookie holds a 256-bit token; the database holds its SHA-256, so
//! every instance sharing the database honours it. It is `HttpOnly` (no
//! script reads it), `SameSite=Lax` (another site's forms do not carry it)
//! and `Secure` when `newsletter.base_url` is https.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::error::AdminError;
use super::SharedState;

pub const SESSION_COOKIE: &str = "tidings_admin";
/// The login form's own CSRF proof, before there is a session.
pub const LOGIN_COOKIE: &str = "tidings_login";
pub const LOGIN_PATH: &str = "/admin/login";

/// The person behind a request, for handlers (`Extension<AdminUser>`).
#[derive(Debug, Clone)]
pub struct AdminUser {
    pub admin_id: i64,
    pub email: String,
    /// The CSRF proof every form and script sends back while logged in.
    pub csrf: String,
}

/// The CSRF proof of a session: a hash of its token, so it needs no
/// storage, changes with every login, and tells nothing about the token.
pub fn csrf_for(session_token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"tidings admin csrf\0")
        .chain_update(session_token.as_bytes())
        .finalize();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` for the admin pages only; `None` clears it.
pub fn set_cookie(state: &SharedState, name: &str, value: Option<&str>) -> HeaderValue {
    let secure = if state.settings.newsletter.base_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let line = match value {
        // A browser session cookie: the server ends the session anyway.
        Some(value) => format!("{name}={value}; Path=/admin; HttpOnly; SameSite=Lax{secure}"),
        None => format!("{name}=; Path=/admin; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&line).expect("a cookie of URL-safe characters")
}

/// Lets a live session through with an [`AdminUser`]; without one, a page
/// goes to the login (and back after it), and an action gets 403.
pub async fn require_session(
    State(state): State<SharedState>,
    mut request: Request,
    next: Next,
) -> Result<Response, AdminError> {
    let token = cookie(request.headers(), SESSION_COOKIE).map(str::to_owned);
    let session = match &token {
        Some(token) => state.admin_accounts.session(token).await?,
        None => None,
    };
    let (Some(token), Some(session)) = (token, session) else {
        if request.method() == Method::GET || request.method() == Method::HEAD {
            return Ok(to_login(request.uri()).into_response());
        }
        return Err(AdminError::SessionEnded);
    };
    request.extensions_mut().insert(AdminUser {
        admin_id: session.admin_id,
        email: session.email,
        csrf: csrf_for(&token),
    });
    Ok(next.run(request).await)
}

/// The login page, which returns to `uri` after it.
fn to_login(uri: &axum::http::Uri) -> Redirect {
    let back = uri.path_and_query().map_or("/admin", |path| path.as_str());
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("next", back)
        .finish();
    Redirect::to(&format!("{LOGIN_PATH}?{query}"))
}

/// Where to go after logging in: only a path of the admin pages, so a
/// crafted link cannot send someone elsewhere.
pub fn after_login(next: Option<&str>) -> &str {
    match next {
        Some(path)
            if (path == "/admin" || path.starts_with("/admin/"))
                && !path.contains("//")
                && !path.contains('\\')
                && !path.starts_with(LOGIN_PATH) =>
        {
            path
        }
        _ => "/admin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_return_path_stays_inside_the_admin() {
        assert_eq!(after_login(Some("/admin/posts/3")), "/admin/posts/3");
        assert_eq!(after_login(Some("/admin")), "/admin");
        for elsewhere in [
            "https://evil.example/admin",
            "//evil.example/admin",
            "/admin//evil.example",
            "/admin/\\evil.example",
            "/administrator",
            "/",
            "/admin/login?next=/admin",
        ] {
            assert_eq!(after_login(Some(elsewhere)), "/admin", "{elsewhere}");
        }
        assert_eq!(after_login(None), "/admin");
    }

    #[test]
    fn the_csrf_proof_differs_per_session_and_is_not_the_token_hash() {
        let (a, b) = (csrf_for("token-a"), csrf_for("token-b"));
        assert_ne!(a, b);
        assert_eq!(a, csrf_for("token-a"));
        let stored = Sha256::digest(b"token-a");
        assert_ne!(
            a,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(stored)
        );
    }

    #[test]
    fn a_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "a=1; tidings_admin=abc".parse().unwrap());
        headers.append(header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "tidings"), None);
    }
}
