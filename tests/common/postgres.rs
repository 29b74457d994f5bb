//! A fresh PostgreSQL database per test, dropped when the test ends.
//! Shared by the integration and end-to-end suites.

use sqlx::Connection;

pub fn admin_url() -> String {
    std::env::var("TIDINGS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub struct PgDatabase {
    pub url: String,
    name: String,
}

/// Runs `statement` on the admin database from a thread of its own, so it
/// works from sync tests, async tests and `Drop` alike.
fn run_admin(statement: String) -> Result<(), sqlx::Error> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut connection = sqlx::PgConnection::connect(&admin_url()).await?;
            sqlx::query(&statement).execute(&mut connection).await?;
            Ok(())
        })
    })
    .join()
    .unwrap()
}

impl PgDatabase {
    pub fn create() -> Self {
        let name = format!("tidings_test_{}", uuid::Uuid::new_v4().simple());
        run_admin(format!("CREATE DATABASE {name}"))
            .expect("PostgreSQL must be running for the tests (TIDINGS_TEST_POSTGRES_URL)");
        let mut url = url::Url::parse(&admin_url()).unwrap();
        url.set_path(&format!("/{name}"));
        Self {
            url: url.to_string(),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = run_admin(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}
