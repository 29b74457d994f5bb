//! The service behind the admin web UI's accounts and sessions, shared by
//! the CLI (`tidings admin`) and HTTP. Passwords are hashed with argon2id
//! at the argon2 crate's defaults (19 MiB, 2 passes, 1 lane), which are
//! OWASP's first recommended setting; the PHC string keeps the parameters,
//! so stronger ones later still verify the old hashes. A session token is
//! 256 random bits; the database keeps only its SHA-256.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;

use crate::clock::SharedClock;
use crate::domain::admin::{
    idle_cutoff, needs_touch, session_state, AdminAccount, AdminPassword, AdminSession, NewAdmin,
    NewSession, SessionState, SessionTokenHash, SetAdminOutcome,
};
use crate::domain::subscriber::EmailAddress;
use crate::newsletter::{NewsletterError, NewsletterResult};
use crate::store::SharedStore;

/// A new session's token, for the cookie. Only its hash is stored.
pub struct SessionToken(String);

impl SessionToken {
    fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::Rng::fill(&mut rand::rngs::OsRng, &mut bytes);
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(…)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    Accepted {
        admin_id: i64,
    },
    /// A wrong password and an unknown address look the same.
    Refused,
}

fn hash_password(password: &str) -> NewsletterResult<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| NewsletterError::PasswordHash(error.to_string()))
}

fn password_matches(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// What an unknown address's login is checked against, so that it costs
/// as much as a known one's and its timing does not tell who has an account.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("no account has this password").unwrap_or_default())
}

/// Argon2 is tens of milliseconds of CPU by design: off the runtime's threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .expect("a password hash does not panic")
}

pub struct AdminAccounts {
    store: SharedStore,
    clock: SharedClock,
}

impl AdminAccounts {
    pub fn new(store: SharedStore, clock: SharedClock) -> Self {
        Self { store, clock }
    }

    /// Creates the account, or resets the password of the one with this
    /// address (and ends its sessions).
    pub async fn set(
        &self,
        email: EmailAddress,
        password: AdminPassword,
    ) -> NewsletterResult<SetAdminOutcome> {
        let password_hash = blocking(move || hash_password(password.expose())).await?;
        let admin = NewAdmin {
            email,
            password_hash,
            now: self.clock.now(),
        };
        Ok(self.store.set_admin(&admin).await?)
    }

    pub async fn list(&self) -> NewsletterResult<Vec<AdminAccount>> {
        Ok(self.store.list_admins().await?)
    }

    /// Removes the account and its sessions.
    pub async fn remove(&self, email: &EmailAddress) -> NewsletterResult<()> {
        if self.store.remove_admin(email.as_str()).await? {
            Ok(())
        } else {
            Err(NewsletterError::NoSuchAdmin(email.as_str().to_owned()))
        }
    }

    /// Checks a login. An unknown address is checked against a dummy hash,
    /// so it takes as long as a wrong password.
    pub async fn verify_login(
        &self,
        email: &EmailAddress,
        password: &str,
    ) -> NewsletterResult<LoginOutcome> {
        let credentials = self.store.admin_credentials(email.as_str()).await?;
        let (admin_id, phc) = match credentials {
            Some(found) => (Some(found.id), found.password_hash),
            None => (None, dummy_hash().to_owned()),
        };
        let password = password.to_owned();
        let matches = blocking(move || password_matches(&password, &phc)).await;
        Ok(match admin_id {
            Some(admin_id) if matches => LoginOutcome::Accepted { admin_id },
            _ => LoginOutcome::Refused,
        })
    }

    /// Starts a session; the token is for the cookie.
    pub async fn start_session(&self, admin_id: i64) -> NewsletterResult<SessionToken> {
        let token = SessionToken::generate();
        let now = self.clock.now();
        let session = NewSession::start(SessionTokenHash::of(token.as_str()), admin_id, now);
        self.store
            .insert_admin_session(&session, idle_cutoff(now))
            .await?;
        Ok(token)
    }

    /// The live session this token names, its last use recorded; `None`
    /// for an unknown, expired or idle one (which is then forgotten).
    pub async fn session(&self, token: &str) -> NewsletterResult<Option<AdminSession>> {
        let hash = SessionTokenHash::of(token);
        let Some(mut session) = self.store.admin_session(&hash).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        if session_state(&session, now) != SessionState::Live {
            self.store.delete_admin_session(&hash).await?;
            return Ok(None);
        }
        if needs_touch(&session, now) {
            self.store.touch_admin_session(&hash, now).await?;
            session.last_seen_at = now;
        }
        Ok(Some(session))
    }

    /// Logs out: the token no longer names a session.
    pub async fn end_session(&self, token: &str) -> NewsletterResult<()> {
        self.store
            .delete_admin_session(&SessionTokenHash::of(token))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_argon2id_and_verifies_only_its_password() {
        let phc = hash_password("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(password_matches("correct horse battery", &phc));
        assert!(!password_matches("correct horse batterY", &phc));
        assert!(!password_matches("correct horse battery", "not a hash"));
    }

    #[test]
    fn an_unknown_address_is_checked_against_a_hash_of_the_same_cost() {
        let real = hash_password("correct horse battery").unwrap();
        let (real, dummy) = (
            PasswordHash::new(&real).unwrap(),
            PasswordHash::new(dummy_hash()).unwrap(),
        );
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.params, real.params);
    }

    #[test]
    fn two_hashes_of_one_password_differ_by_their_salt() {
        assert_ne!(
            hash_password("same password").unwrap(),
            hash_password("same password").unwrap()
        );
    }

    #[test]
    fn session_tokens_are_256_random_bits() {
        let (a, b) = (SessionToken::generate(), SessionToken::generate());
        assert_eq!(a.as_str().len(), 43, "32 bytes in unpadded base64url");
        assert_ne!(a.as_str(), b.as_str());
    }
}
