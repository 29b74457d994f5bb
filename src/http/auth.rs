//! Bearer tokens: constant-time checks, and a throttle on wrong guesses.
//!
//! Without one, a token could be guessed at thousands of tries a second.
//! Each client IP may fail `http.failed_auth_per_ip_per_minute` times a
//! minute; past that it gets 429 until the allowance refills, even with the
//! right token, so a guesser cannot tell a hit while throttled.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::limiter::{Limiter, DEFAULT_CAPACITY};

/// `None` when `http.failed_auth_per_ip_per_minute` is 0 (for fuzzing).
pub struct AuthThrottle(Option<Limiter>);

impl AuthThrottle {
    pub fn new(failures_per_minute: u32) -> Self {
        Self(Limiter::new(
            failures_per_minute,
            Duration::from_secs(60),
            DEFAULT_CAPACITY,
        ))
    }
}

impl AuthThrottle {
    /// A 429 for a client that has used up its failures, before any check.
    pub fn refuses(&self, ip: Option<IpAddr>) -> Option<Response> {
        let retry = self.0.as_ref()?.peek(ip?).err()?;
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({
                "error": "Too many failed authentications from your address. \
                          Wait before trying again."
            })),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry.seconds()));
        Some(response)
    }

    /// Counts a wrong or missing token against the client.
    pub fn failed(&self, ip: Option<IpAddr>) {
        if let (Some(limiter), Some(ip)) = (&self.0, ip) {
            let _ = limiter.check(ip);
        }
    }
}

/// The token of `Authorization: Bearer <token>`, if there is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// Compares digests, so neither the token nor its length leaks through timing.
pub fn token_matches(expected: &str, presented: &str) -> bool {
    let expected = Sha256::digest(expected.as_bytes());
    let presented = Sha256::digest(presented.as_bytes());
    expected.ct_eq(&presented).into()
}
