//! What every backend answers before any newsletter work: its name, a
//! ping, migrations that can run again, and the key behind emailed links.

use tidings::config;
use tidings::links::TokenPurpose;

use crate::on_both_backends;
use crate::support::{connect, store, Backend};

on_both_backends!(
    the_store_names_its_backend_answers_and_migrates_again,
    the_token_key_is_made_once_and_kept_across_connections,
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
