//! Links we email carry tokens. A token is `id || HMAC(key, purpose || id)`,
//! so nothing secret is stored per subscriber, the same link can be rebuilt
//! for every retry, and a guess has to beat 128 bits of MAC.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const MAC_BYTES: usize = 16;
pub const KEY_BYTES: usize = 32;

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
}
