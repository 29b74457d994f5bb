//! Admin accounts and their sessions, through the store and through the
//! service that the CLI and HTTP share: a reset replaces the password and
//! ends the sessions; a login is refused alike for a wrong password and an
//! unknown address; a session ends when idle, when old, at logout, and
//! with its account.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use tidings::admin_accounts::{AdminAccounts, LoginOutcome};
use tidings::clock::Clock;
use tidings::domain::admin::{AdminPassword, NewAdmin, SetAdminOutcome};
use tidings::newsletter::NewsletterError;

use crate::on_both_backends;
use crate::support::{email, store, t0, Backend, TestStore};

on_both_backends!(
    an_account_is_listed_and_a_second_add_resets_its_password,
    removing_an_account_ends_its_sessions_and_an_unknown_one_is_an_error,
    a_login_needs_the_right_password_of_a_known_address,
    a_session_names_its_account_until_logout,
    a_session_ends_after_twelve_idle_hours_and_its_row_goes,
    a_session_in_use_is_kept_alive_but_ends_seven_days_after_login,
    a_password_reset_logs_everyone_out,
);

/// A clock the test moves by hand.
struct TestClock(Mutex<DateTime<Utc>>);

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

impl TestClock {
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

const PASSWORD: &str = "correct horse battery";

fn accounts(store: &TestStore) -> (AdminAccounts, Arc<TestClock>) {
    let clock = Arc::new(TestClock(Mutex::new(t0())));
    (
        AdminAccounts::new(store.store.clone(), clock.clone()),
        clock,
    )
}

async fn add(accounts: &AdminAccounts, address: &str, password: &str) -> SetAdminOutcome {
    accounts
        .set(email(address), AdminPassword::parse(password).unwrap())
        .await
        .unwrap()
}

/// A new account's id.
async fn new_admin(accounts: &AdminAccounts, address: &str) -> i64 {
    match add(accounts, address, PASSWORD).await {
        SetAdminOutcome::Created { id } => id,
        reset => panic!("{address} had an account: {reset:?}"),
    }
}

async fn login(accounts: &AdminAccounts, address: &str, password: &str) -> LoginOutcome {
    accounts
        .verify_login(&email(address), password)
        .await
        .unwrap()
}

async fn an_account_is_listed_and_a_second_add_resets_its_password(backend: Backend) {
    let store = store(backend).await;
    let created = store
        .set_admin(&NewAdmin {
            email: email("Owner@Example.com"),
            password_hash: "$argon2id$first".into(),
            now: t0(),
        })
        .await
        .unwrap();
    let SetAdminOutcome::Created { id } = created else {
        panic!("{created:?}");
    };
    let reset = store
        .set_admin(&NewAdmin {
            email: email("owner@example.com"),
            password_hash: "$argon2id$second".into(),
            now: t0() + Duration::hours(1),
        })
        .await
        .unwrap();
    assert_eq!(reset, SetAdminOutcome::PasswordReset { id });

    let listed = store.list_admins().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].email, "owner@example.com");
    assert_eq!(
        listed[0].created_at,
        t0(),
        "a reset keeps the creation time"
    );
    let credentials = store
        .admin_credentials("owner@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(credentials.password_hash, "$argon2id$second");
}

async fn removing_an_account_ends_its_sessions_and_an_unknown_one_is_an_error(backend: Backend) {
    let store = store(backend).await;
    let (accounts, _) = accounts(&store);
    let id = new_admin(&accounts, "owner@example.com").await;
    let other = new_admin(&accounts, "ed@example.com").await;
    let token = accounts.start_session(id).await.unwrap();
    let kept = accounts.start_session(other).await.unwrap();

    accounts.remove(&email("owner@example.com")).await.unwrap();
    assert!(accounts.session(token.as_str()).await.unwrap().is_none());
    assert!(accounts.session(kept.as_str()).await.unwrap().is_some());
    let left: Vec<String> = accounts
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|admin| admin.email)
        .collect();
    assert_eq!(left, ["ed@example.com"]);
    assert_eq!(
        login(&accounts, "owner@example.com", PASSWORD).await,
        LoginOutcome::Refused
    );

    let again = accounts.remove(&email("owner@example.com")).await;
    assert!(
        matches!(again, Err(NewsletterError::NoSuchAdmin(ref who)) if who == "owner@example.com"),
        "{again:?}"
    );
}

async fn a_login_needs_the_right_password_of_a_known_address(backend: Backend) {
    let store = store(backend).await;
    let (accounts, _) = accounts(&store);
    let id = new_admin(&accounts, "owner@example.com").await;
    assert_eq!(
        login(&accounts, "OWNER@example.com", PASSWORD).await,
        LoginOutcome::Accepted { admin_id: id }
    );
    assert_eq!(
        login(&accounts, "owner@example.com", "correct horse battery!").await,
        LoginOutcome::Refused
    );
    assert_eq!(
        login(&accounts, "nobody@example.com", PASSWORD).await,
        LoginOutcome::Refused
    );
}

async fn a_session_names_its_account_until_logout(backend: Backend) {
    let store = store(backend).await;
    let (accounts, _) = accounts(&store);
    let id = new_admin(&accounts, "owner@example.com").await;
    let token = accounts.start_session(id).await.unwrap();
    let session = accounts.session(token.as_str()).await.unwrap().unwrap();
    assert_eq!(session.admin_id, id);
    assert_eq!(session.email, "owner@example.com");
    assert!(
        accounts
            .session("a-token-never-issued")
            .await
            .unwrap()
            .is_none(),
        "an unknown token names nobody"
    );

    accounts.end_session(token.as_str()).await.unwrap();
    assert!(accounts.session(token.as_str()).await.unwrap().is_none());
}

async fn a_session_ends_after_twelve_idle_hours_and_its_row_goes(backend: Backend) {
    let store = store(backend).await;
    let (accounts, clock) = accounts(&store);
    let id = new_admin(&accounts, "owner@example.com").await;
    let token = accounts.start_session(id).await.unwrap();
    clock.advance(Duration::hours(12));
    assert!(accounts.session(token.as_str()).await.unwrap().is_none());
    let hash = tidings::domain::admin::SessionTokenHash::of(token.as_str());
    assert!(
        store.admin_session(&hash).await.unwrap().is_none(),
        "an idle session is forgotten, not kept"
    );
}

async fn a_session_in_use_is_kept_alive_but_ends_seven_days_after_login(backend: Backend) {
    let store = store(backend).await;
    let (accounts, clock) = accounts(&store);
    let id = new_admin(&accounts, "owner@example.com").await;
    let token = accounts.start_session(id).await.unwrap();
    // A request every eleven hours: never idle for twelve.
    for _ in 0..15 {
        clock.advance(Duration::hours(11));
        let session = accounts.session(token.as_str()).await.unwrap();
        assert!(session.is_some(), "alive at {}", clock.now());
    }
    // 15 × 11 h = 6 days 21 h; at 7 days it ends however busy.
    clock.advance(Duration::hours(3));
    assert!(accounts.session(token.as_str()).await.unwrap().is_none());
}

async fn a_password_reset_logs_everyone_out(backend: Backend) {
    let store = store(backend).await;
    let (accounts, _) = accounts(&store);
    let id = new_admin(&accounts, "owner@example.com").await;
    let token = accounts.start_session(id).await.unwrap();
    let reset = add(&accounts, "owner@example.com", "a brand new passphrase").await;
    assert_eq!(reset, SetAdminOutcome::PasswordReset { id });
    assert!(accounts.session(token.as_str()).await.unwrap().is_none());
    assert_eq!(
        login(&accounts, "owner@example.com", PASSWORD).await,
        LoginOutcome::Refused
    );
    assert_eq!(
        login(&accounts, "owner@example.com", "a brand new passphrase").await,
        LoginOutcome::Accepted { admin_id: id }
    );
}
