//! The links we email, and what a click on one proves. Building a link and
//! checking it live here together, with the routes they point at and how
//! long a confirmation link works, so the email, the page and the router
//! cannot disagree.
//!
//! A link carries a token `id || HMAC(key, purpose || id)`: nothing secret
//! is stored per subscriber, the same link can be rebuilt for every retry,
//! and a guess has to beat 128 bits of MAC. The format is fixed: links
//! already sitting in inboxes must keep working.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const MAC_BYTES: usize = 16;
pub const KEY_BYTES: usize = 32;

/// Where a confirmation link points.
pub const CONFIRM_PATH: &str = "/confirm";
/// Where an unsubscribe link (and `List-Unsubscribe`) points.
pub const UNSUBSCRIBE_PATH: &str = "/unsubscribe";

/// How long a confirmation link works. The email and the expired-link page
/// state it in hours, so it is kept in hours.
pub const CONFIRMATION_TTL_HOURS: i64 = 72;

pub fn confirmation_ttl() -> chrono::Duration {
    chrono::Duration::hours(CONFIRMATION_TTL_HOURS)
}

/// Builds the links in our emails and reads the tokens that come back.
#[derive(Clone, Debug)]
pub struct Links {
    /// Without a trailing slash (the config trims it).
    base_url: String,
    key: TokenKey,
}

impl Links {
    pub fn new(base_url: impl Into<String>, key: TokenKey) -> Self {
        Self {
            base_url: base_url.into(),
            key,
        }
    }

    pub fn confirm_url(&self, confirmation_id: i64) -> String {
        self.url(CONFIRM_PATH, TokenPurpose::Confirm, confirmation_id)
    }

    pub fn unsubscribe_url(&self, subscriber_id: i64) -> String {
        self.url(UNSUBSCRIBE_PATH, TokenPurpose::Unsubscribe, subscriber_id)
    }

    fn url(&self, path: &str, purpose: TokenPurpose, id: i64) -> String {
        format!(
            "{}{path}?token={}",
            self.base_url,
            self.key.issue(purpose, id)
        )
    }

    /// The confirmation a request's token names; `None` when there is no
    /// token or we did not issue it.
    pub fn confirmation_id(&self, token: Option<&str>) -> Option<i64> {
        token.and_then(|token| self.key.verify(TokenPurpose::Confirm, token))
    }

    /// The subscriber a request's unsubscribe token names, as above.
    pub fn subscriber_id(&self, token: Option<&str>) -> Option<i64> {
        token.and_then(|token| self.key.verify(TokenPurpose::Unsubscribe, token))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// Identifies a confirmation request (which expires and is single use).
    Confirm,
    /// Identifies a subscriber; never expires.
    Unsubscribe,
}

impl TokenPurpose {
    fn label(self) -> &'static [u8] {
        match self {
            TokenPurpose::Confirm => b"tidings/confirm/v1",
            TokenPurpose::Unsubscribe => b"tidings/unsubscribe/v1",
        }
    }
}

#[derive(Clone)]
pub struct TokenKey([u8; KEY_BYTES]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    pub fn generate() -> [u8; KEY_BYTES] {
        let mut bytes = [0u8; KEY_BYTES];
        rand::Rng::fill(&mut rand::rngs::OsRng, &mut bytes);
        bytes
    }

    fn mac(&self, purpose: TokenPurpose, id: i64) -> [u8; MAC_BYTES] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(purpose.label());
        mac.update(&id.to_be_bytes());
        let full = mac.finalize().into_bytes();
        full[..MAC_BYTES].try_into().expect("SHA-256 is 32 bytes")
    }

    pub fn issue(&self, purpose: TokenPurpose, id: i64) -> String {
        let mut raw = [0u8; 8 + MAC_BYTES];
        raw[..8].copy_from_slice(&id.to_be_bytes());
        raw[8..].copy_from_slice(&self.mac(purpose, id));
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The id a token was issued for, or `None` for anything we did not issue.
    pub fn verify(&self, purpose: TokenPurpose, token: &str) -> Option<i64> {
        if token.len() > 64 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        if raw.len() != 8 + MAC_BYTES {
            return None;
        }
        let id = i64::from_be_bytes(raw[..8].try_into().ok()?);
        let expected = self.mac(purpose, id);
        bool::from(expected.ct_eq(&raw[8..])).then_some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::from_bytes(&TokenKey::generate()).unwrap()
    }

    #[test]
    fn a_token_verifies_for_its_own_purpose_only() {
        let key = key();
        let token = key.issue(TokenPurpose::Unsubscribe, 42);
        assert_eq!(key.verify(TokenPurpose::Unsubscribe, &token), Some(42));
        assert_eq!(key.verify(TokenPurpose::Confirm, &token), None);
    }

    #[test]
    fn forged_or_foreign_tokens_fail() {
        let key = key();
        let other = self::key();
        let token = key.issue(TokenPurpose::Confirm, 7);
        assert_eq!(other.verify(TokenPurpose::Confirm, &token), None);
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            key.verify(
                TokenPurpose::Confirm,
                std::str::from_utf8(&tampered).unwrap()
            ),
            None
        );
        for junk in ["", "abc", "%%%%", &"A".repeat(500)] {
            assert_eq!(key.verify(TokenPurpose::Confirm, junk), None);
        }
    }

    /// The token part of a link we built.
    fn token(url: &str) -> &str {
        url.split_once("?token=").unwrap().1
    }

    #[test]
    fn links_point_at_the_routes_and_carry_tokens_that_read_back() {
        let links = Links::new("https://news.example.org", key());
        let confirm = links.confirm_url(7);
        assert!(confirm.starts_with("https://news.example.org/confirm?token="));
        assert_eq!(links.confirmation_id(Some(token(&confirm))), Some(7));
        assert_eq!(links.subscriber_id(Some(token(&confirm))), None);
        let unsubscribe = links.unsubscribe_url(42);
        assert!(unsubscribe.starts_with("https://news.example.org/unsubscribe?token="));
        assert_eq!(links.subscriber_id(Some(token(&unsubscribe))), Some(42));
        assert_eq!(links.confirmation_id(Some(token(&unsubscribe))), None);
        assert_eq!(links.confirmation_id(None), None);
    }

    /// Worked out independently (Python's hmac) from the format above.
    const STABLE_UNSUBSCRIBE_42: &str = "AAAAAAAAACrsY7UBfjPAf5B0_cgc7PXy";

    /// A token from before this module existed: links already in inboxes
    /// must keep working, so the format and MAC never change.
    #[test]
    fn the_token_format_is_stable() {
        let key = TokenKey::from_bytes(&[7u8; KEY_BYTES]).unwrap();
        let token = key.issue(TokenPurpose::Unsubscribe, 42);
        assert_eq!(token, STABLE_UNSUBSCRIBE_42);
        assert_eq!(key.verify(TokenPurpose::Unsubscribe, &token), Some(42));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Whatever arrives in `?token=`, nothing panics and nothing we did
        /// not issue is accepted.
        #[test]
        fn random_strings_are_never_accepted(token in "\\PC{0,80}|[A-Za-z0-9_-]{30,40}") {
            let key = key();
            proptest::prop_assert_eq!(key.verify(TokenPurpose::Confirm, &token), None);
            proptest::prop_assert_eq!(key.verify(TokenPurpose::Unsubscribe, &token), None);
        }

        #[test]
        fn a_real_token_with_one_character_changed_is_never_accepted(
            id in proptest::prelude::any::<i64>(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            replacement in proptest::prelude::any::<char>(),
        ) {
            let key = key();
            let token = key.issue(TokenPurpose::Unsubscribe, id);
            proptest::prop_assert_eq!(key.verify(TokenPurpose::Unsubscribe, &token), Some(id));
            let mut chars: Vec<char> = token.chars().collect();
            let at = at.index(chars.len());
            proptest::prop_assume!(chars[at] != replacement);
            chars[at] = replacement;
            let changed: String = chars.into_iter().collect();
            proptest::prop_assert_eq!(key.verify(TokenPurpose::Unsubscribe, &changed), None, "{}", changed);
        }
    }
}
