//! The SQLite writer's own machinery, on real database files.

use std::time::{Duration, Instant};

use super::*;
use crate::domain::signup::{SignupOutcome, SignupRequest};
use crate::domain::subscriber::EmailAddress;
use crate::store::{Store, SubscriberStore};

async fn store_in(dir: &tempfile::TempDir) -> SqliteStore {
    let url = format!("sqlite://{}", dir.path().join("tidings.db").display());
    let settings = DatabaseSettings::from_url(&url, 4).expect("a SQLite URL");
    let store = SqliteStore::connect(&settings)
        .await
        .expect("the store opens");
    store.migrate().await.expect("migrations run");
    store
}

fn signup(email: &str) -> SignupRequest {
    SignupRequest {
        email: EmailAddress::parse(email).expect("a valid address"),
        name: None,
        consent: Default::default(),
        now: Utc::now(),
        confirmation_ttl: chrono::Duration::hours(72),
        resend_window: chrono::Duration::minutes(10),
    }
}

#[tokio::test]
async fn a_transaction_begun_by_hand_and_abandoned_is_rolled_back_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir).await;
    {
        let mut writer = store.lock().await;
        writer.begin_by_hand();
        sqlx::query(
            "BEGIN IMMEDIATE; INSERT INTO settings (key, value) VALUES ('abandoned', x'00')",
        )
        .execute(&mut *writer)
        .await
        .unwrap();
        // Dropped here without finishing, as a cancelled future would be.
    }
    let outcomes = store
        .signup_group(&[signup("after@example.com")])
        .await
        .expect("the next writer gets a clean connection");
    assert!(matches!(
        outcomes[0],
        SignupOutcome::ConfirmationQueued { .. }
    ));
    let abandoned: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM settings WHERE key = 'abandoned'")
            .fetch_optional(store.pool())
            .await
            .unwrap();
    assert_eq!(abandoned, None, "the abandoned write was rolled back");
    assert_eq!(store.subscriber_counts().await.unwrap().pending, 1);
}

/// The WAL header's checkpoint sequence number, which SQLite bumps each
/// time the WAL starts over from its beginning.
fn wal_restarts(dir: &tempfile::TempDir) -> u32 {
    let header = std::fs::read(dir.path().join("tidings.db-wal")).expect("the WAL exists");
    u32::from_be_bytes(header[12..16].try_into().unwrap())
}

#[tokio::test]
async fn the_wal_starts_over_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir).await;
    store
        .signup_group(&[signup("first@example.com")])
        .await
        .unwrap();
    let before = wal_restarts(&dir);
    // The writer never checkpoints; without the checkpointer the WAL would
    // only ever grow.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut signups: i64 = 0;
    while wal_restarts(&dir) == before {
        assert!(
            Instant::now() < deadline,
            "the WAL never started over in {signups} signups"
        );
        signups += 1;
        store
            .signup_group(&[signup(&format!("reader{signups}@example.com"))])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        store.subscriber_counts().await.unwrap().pending,
        signups + 1
    );
}
