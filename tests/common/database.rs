//! The two backends every test runs on, and a fresh database on each.
//! Shared by the HTTP suite and the store contract suite.

use crate::postgres::PgDatabase;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn(Backend)` once per backend, as
/// `<name>::sqlite` and `<name>::postgres`: the same test, not a copy.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::database::Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::database::Backend::Postgres).await
                }
            }
        )*
    };
}

/// The test's database, dropped (or its folder removed) when the test ends.
pub enum TestDatabase {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(#[allow(dead_code)] PgDatabase),
}

impl TestDatabase {
    /// A new, empty database and its URL: a file in a temporary folder,
    /// or a PostgreSQL database of its own on 127.0.0.1:5432.
    pub async fn create(backend: Backend) -> (Self, String) {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("tidings.db").display());
                (TestDatabase::Sqlite(dir), url)
            }
            Backend::Postgres => {
                let database = PgDatabase::create();
                let url = database.url.clone();
                (TestDatabase::Postgres(database), url)
            }
        }
    }
}
