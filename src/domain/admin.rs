//! The people who run the newsletter from the admin web UI: the password
//! rule, and when a session ends.

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

use super::subscriber::EmailAddress;

/// NIST SP 800-63B asks for at least 8 characters and lets longer ones be
/// required; 12 is OWASP's advice for a password that guards a whole list
/// of other people's addresses.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Long enough for any passphrase or password manager; the bound keeps a
/// pasted file out of the hash.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// A session ends after this long without a request: a working day of
/// writing needs no second login, and a browser left open on a shared
/// machine is locked out by the next morning.
pub const SESSION_IDLE_TIMEOUT: Duration = Duration::hours(12);
/// And this long after the login, however busy: a stolen cookie works for
/// a week at most, and a weekly newsletter asks for one login per issue.
pub const SESSION_MAX_AGE: Duration = Duration::days(7);
/// `last_seen_at` is written at most this often, so a page's requests do
/// not each cost a write; the idle timeout is that much less exact.
pub const SESSION_TOUCH_INTERVAL: Duration = Duration::minutes(1);

/// Failed logins allowed from one IP address per window, refilled evenly:
/// a person mistyping never meets it, a guesser gets 40 tries an hour.
pub const LOGIN_FAILURES_PER_IP: u32 = 10;
/// Failed logins allowed for one account per window, from anywhere, so
/// that guessing from many addresses gains nothing. Lower than per IP,
/// yet a stranger who trips it locks the owner out for minutes, not days.
pub const LOGIN_FAILURES_PER_ACCOUNT: u32 = 5;
pub const LOGIN_FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// A password that meets the rule. Its `Debug` does not show it.
pub struct AdminPassword(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is empty")]
    Empty,
    #[error("the password is too short: it needs at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("the password is too long: at most {MAX_PASSWORD_CHARS} characters")]
    TooLong,
}

impl AdminPassword {
    /// Takes the password as typed: spaces count, nothing is trimmed.
    pub fn parse(input: &str) -> Result<Self, PasswordError> {
        let chars = input.chars().count();
        if chars == 0 {
            Err(PasswordError::Empty)
        } else if chars < MIN_PASSWORD_CHARS {
            Err(PasswordError::TooShort)
        } else if chars > MAX_PASSWORD_CHARS {
            Err(PasswordError::TooLong)
        } else {
            Ok(Self(input.to_owned()))
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AdminPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminPassword(…)")
    }
}

/// Someone who may log in, as `admin list` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAccount {
    pub id: i64,
    pub email: String,
    pub created_at: DateTime<Utc>,
}

/// What a login is checked against.
#[derive(Debug, Clone)]
pub struct AdminCredentials {
    pub id: i64,
    /// An argon2id PHC string.
    pub password_hash: String,
}

/// An account to create, or whose password to replace.
#[derive(Debug, Clone)]
pub struct NewAdmin {
    pub email: EmailAddress,
    pub password_hash: String,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetAdminOutcome {
    Created {
        id: i64,
    },
    /// The address had an account: its password is replaced and its
    /// sessions are ended.
    PasswordReset {
        id: i64,
    },
}

/// The SHA-256 of a session token: what the database keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTokenHash(pub [u8; 32]);

impl SessionTokenHash {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSession {
    pub admin_id: i64,
    pub email: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A session to store, started at `now`.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub token_hash: SessionTokenHash,
    pub admin_id: i64,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl NewSession {
    pub fn start(token_hash: SessionTokenHash, admin_id: i64, now: DateTime<Utc>) -> Self {
        Self {
            token_hash,
            admin_id,
            now,
            expires_at: now + SESSION_MAX_AGE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Live,
    /// Past its absolute end.
    Expired,
    /// No request for [`SESSION_IDLE_TIMEOUT`].
    Idle,
}

pub fn session_state(session: &AdminSession, now: DateTime<Utc>) -> SessionState {
    if now >= session.expires_at {
        SessionState::Expired
    } else if now - session.last_seen_at >= SESSION_IDLE_TIMEOUT {
        SessionState::Idle
    } else {
        SessionState::Live
    }
}

/// Whether a request at `now` should write the session's `last_seen_at`.
pub fn needs_touch(session: &AdminSession, now: DateTime<Utc>) -> bool {
    now - session.last_seen_at >= SESSION_TOUCH_INTERVAL
}

/// Every session whose last request was before this is idle at `now`.
pub fn idle_cutoff(now: DateTime<Utc>) -> DateTime<Utc> {
    now - SESSION_IDLE_TIMEOUT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + Duration::hours(hours)
    }

    fn session(created: i64, last_seen: i64) -> AdminSession {
        AdminSession {
            admin_id: 1,
            email: "owner@example.com".into(),
            created_at: at(created),
            last_seen_at: at(last_seen),
            expires_at: NewSession::start(SessionTokenHash::of("t"), 1, at(created)).expires_at,
        }
    }

    #[test]
    fn a_password_needs_twelve_characters_and_spaces_count() {
        assert_eq!(AdminPassword::parse("").unwrap_err(), PasswordError::Empty);
        assert_eq!(
            AdminPassword::parse("elevenchars").unwrap_err(),
            PasswordError::TooShort
        );
        assert!(AdminPassword::parse("twelve chars").is_ok());
        // Characters, not bytes: six two-byte letters are still too short.
        assert_eq!(
            AdminPassword::parse("éééééé").unwrap_err(),
            PasswordError::TooShort
        );
        assert_eq!(
            AdminPassword::parse(&"x".repeat(MAX_PASSWORD_CHARS + 1)).unwrap_err(),
            PasswordError::TooLong
        );
    }

    #[test]
    fn a_password_never_shows_in_debug_output() {
        let password = AdminPassword::parse("correct horse battery").unwrap();
        assert!(!format!("{password:?}").contains("horse"));
    }

    #[test]
    fn a_session_ends_after_twelve_idle_hours() {
        assert_eq!(session_state(&session(0, 0), at(11)), SessionState::Live);
        assert_eq!(session_state(&session(0, 0), at(12)), SessionState::Idle);
        assert_eq!(session_state(&session(0, 10), at(21)), SessionState::Live);
    }

    #[test]
    fn a_busy_session_still_ends_seven_days_after_login() {
        let busy = session(0, 7 * 24 - 1);
        assert_eq!(session_state(&busy, at(7 * 24 - 1)), SessionState::Live);
        assert_eq!(session_state(&busy, at(7 * 24)), SessionState::Expired);
    }

    #[test]
    fn last_seen_is_written_at_most_once_a_minute() {
        let fresh = session(0, 0);
        assert!(!needs_touch(&fresh, at(0) + Duration::seconds(59)));
        assert!(needs_touch(&fresh, at(0) + Duration::seconds(60)));
    }

    #[test]
    fn a_token_hash_is_its_sha256() {
        let hash = SessionTokenHash::of("abc");
        assert_eq!(hash.0[..4], [0xba, 0x78, 0x16, 0xbf]);
        assert_ne!(hash, SessionTokenHash::of("abd"));
    }
}
