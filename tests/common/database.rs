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

/// Every `table.column` of the database at `url` whose text holds
/// `needle` (ASCII case aside): for checking that something is gone from
/// every table, including tables added after the test was written.
#[allow(dead_code)] // not every suite looks for traces
pub async fn mentions(url: &str, needle: &str) -> Vec<String> {
    use sqlx::Connection;
    let pattern = format!("%{needle}%");
    let mut found = Vec::new();
    if url.starts_with("sqlite:") {
        let mut connection = sqlx::SqliteConnection::connect(url).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )
        .fetch_all(&mut connection)
        .await
        .unwrap();
        for table in tables {
            let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?)")
                .bind(&table)
                .fetch_all(&mut connection)
                .await
                .unwrap();
            for column in columns {
                let count: i64 = sqlx::query_scalar(&format!(
                    "SELECT COUNT(*) FROM \"{table}\" WHERE CAST(\"{column}\" AS TEXT) LIKE ?"
                ))
                .bind(&pattern)
                .fetch_one(&mut connection)
                .await
                .unwrap();
                if count > 0 {
                    found.push(format!("{table}.{column}"));
                }
            }
        }
    } else {
        let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public'",
        )
        .fetch_all(&mut connection)
        .await
        .unwrap();
        for (table, column) in columns {
            let count: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM \"{table}\" WHERE CAST(\"{column}\" AS TEXT) ILIKE $1"
            ))
            .bind(&pattern)
            .fetch_one(&mut connection)
            .await
            .unwrap();
            if count > 0 {
                found.push(format!("{table}.{column}"));
            }
        }
    }
    found
}
