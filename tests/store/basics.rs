//! What every backend answers before any newsletter work: its name, a
//! ping, migrations that can run again, and the key behind emailed links.

use tidings::config;
use tidings::domain::subscriber::SubscriberQuery;
use tidings::links::TokenPurpose;

use crate::on_both_backends;
use crate::support::{connect, store, Backend};

on_both_backends!(
    the_store_names_its_backend_answers_and_migrates_again,
    the_token_key_is_made_once_and_kept_across_connections,
    a_probe_write_commits_and_changes_nothing_else,
);

async fn the_store_names_its_backend_answers_and_migrates_again(backend: Backend) {
    let store = store(backend).await;
    let expected = match backend {
        Backend::Sqlite => config::Backend::Sqlite,
        Backend::Postgres => config::Backend::Postgres,
    };
    assert_eq!(store.backend(), expected);
    store.ping().await.unwrap();
    // Every start migrates; a database already up to date is left alone.
    store.migrate().await.unwrap();
    let again = connect(&store.url).await;
    again.migrate().await.unwrap();
    again.ping().await.unwrap();
}

async fn the_token_key_is_made_once_and_kept_across_connections(backend: Backend) {
    let store = store(backend).await;
    let first = store.token_key().await.unwrap();
    let second = store.token_key().await.unwrap();
    let restarted = connect(&store.url).await.token_key().await.unwrap();
    // The key has no equality of its own: compare what it signs.
    let link = |key: &tidings::links::TokenKey| key.issue(TokenPurpose::Unsubscribe, 42);
    assert_eq!(link(&first), link(&second));
    assert_eq!(
        link(&first),
        link(&restarted),
        "links emailed before a restart keep working after it"
    );
    assert_eq!(
        restarted.verify(TokenPurpose::Unsubscribe, &link(&first)),
        Some(42)
    );
    let other = crate::support::store(backend)
        .await
        .token_key()
        .await
        .unwrap();
    assert_ne!(link(&first), link(&other), "each installation its own key");
}

async fn a_probe_write_commits_and_changes_nothing_else(backend: Backend) {
    let store = store(backend).await;
    let key = store.token_key().await.unwrap();
    for _ in 0..3 {
        store.probe_write().await.unwrap();
    }
    let link = |key: &tidings::links::TokenKey| key.issue(TokenPurpose::Unsubscribe, 7);
    assert_eq!(link(&store.token_key().await.unwrap()), link(&key));
    assert!(store.list_subscribers(everyone()).await.unwrap().is_empty());
}

fn everyone() -> SubscriberQuery {
    SubscriberQuery {
        status: None,
        after: None,
        limit: 10,
    }
}
