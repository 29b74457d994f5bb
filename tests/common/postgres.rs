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

/// Runs async database work on a thread with its own runtime, so it works
/// from sync tests, async tests and `Drop` alike.
fn on_own_thread<T, F, Work>(work: Work) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
    Work: FnOnce() -> F + Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work())
    })
    .join()
    .unwrap()
}

fn run_admin(statement: String) -> Result<(), sqlx::Error> {
    on_own_thread(move || async move {
        let mut connection = sqlx::PgConnection::connect(&admin_url()).await?;
        sqlx::query(&statement).execute(&mut connection).await?;
        Ok(())
    })
}

/// Rows of (text, integer) from a query, e.g. counts by status.
#[allow(dead_code)] // only the end-to-end suite reads rows this way
pub fn query_pairs(url: &str, sql: &str) -> Vec<(String, i64)> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    on_own_thread(move || async move {
        let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query_as::<_, (String, i64)>(&sql)
            .fetch_all(&mut connection)
            .await
            .unwrap()
    })
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
