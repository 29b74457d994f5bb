//! Which store errors are an outage: the database cannot be reached or
//! cannot take a write just now (a full disk, an I/O error, a lost
//! connection, a server shutting down). They pass without anyone fixing
//! code or data, so the HTTP edge answers them with 503 and Retry-After
//! rather than 500, and `/healthz` reports them.

use sqlx::error::DatabaseError;

use super::StoreError;

/// SQLite's primary result codes that mean "not now" rather than "never":
/// BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL.
const SQLITE_OUTAGES: [i64; 8] = [5, 6, 7, 8, 10, 13, 14, 15];

/// PostgreSQL SQLSTATE classes that mean the same: connection exception,
/// insufficient resources (53100 is a full disk), operator intervention
/// (a shutdown), system error (I/O).
const POSTGRES_OUTAGE_CLASSES: [&str; 4] = ["08", "53", "57", "58"];
/// A read-only transaction: a standby, or a server set read-only.
const POSTGRES_READ_ONLY: &str = "25006";

impl StoreError {
    /// Whether the database is unreachable or cannot take writes just now.
    pub fn is_outage(&self) -> bool {
        match self {
            StoreError::Database(error) => sqlx_outage(error),
            StoreError::PartlyWritten(error) => error.is_outage(),
            // The daemon is stopping: not now, but soon again.
            StoreError::NotRunning(_) => true,
            StoreError::Migrate(_) | StoreError::Corrupt(_) => false,
        }
    }

    /// Whether a write that failed this way may have committed all the
    /// same: a connection that broke after the COMMIT may have been sent,
    /// or a part committed before the failure. An error the database
    /// answered, or no connection at all, means nothing was written.
    pub fn may_have_written(&self) -> bool {
        match self {
            StoreError::PartlyWritten(_) => true,
            StoreError::Database(error) => matches!(
                error,
                sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed
            ),
            StoreError::Migrate(_) | StoreError::Corrupt(_) | StoreError::NotRunning(_) => false,
        }
    }
}

fn sqlx_outage(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(error) => database_outage(error.as_ref()),
        _ => false,
    }
}

fn database_outage(error: &dyn DatabaseError) -> bool {
    let Some(code) = error.code() else {
        return false;
    };
    if error
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some()
    {
        // Extended codes carry the primary code in their low byte.
        return code
            .parse::<i64>()
            .is_ok_and(|code| SQLITE_OUTAGES.contains(&(code & 0xff)));
    }
    code == POSTGRES_READ_ONLY
        || code
            .get(..2)
            .is_some_and(|class| POSTGRES_OUTAGE_CLASSES.contains(&class))
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;

    #[test]
    fn a_lost_connection_is_an_outage_that_may_have_written() {
        let lost = StoreError::Database(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )));
        assert!(lost.is_outage());
        assert!(lost.may_have_written());
        let no_connection = StoreError::Database(sqlx::Error::PoolTimedOut);
        assert!(no_connection.is_outage());
        assert!(!no_connection.may_have_written(), "it never began");
        let partly = StoreError::PartlyWritten(Box::new(no_connection));
        assert!(partly.is_outage() && partly.may_have_written());
    }

    #[test]
    fn bugs_and_bad_data_are_not_outages() {
        for error in [
            StoreError::Database(sqlx::Error::RowNotFound),
            StoreError::Corrupt("a status".into()),
        ] {
            assert!(!error.is_outage(), "{error:?}");
            assert!(!error.may_have_written(), "{error:?}");
        }
    }

    #[tokio::test]
    async fn a_database_that_cannot_take_writes_is_an_outage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut writable = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER UNIQUE)")
            .execute(&mut writable)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut writable)
            .await
            .unwrap();
        let duplicate = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut writable)
            .await
            .unwrap_err();
        assert!(!StoreError::from(duplicate).is_outage(), "a constraint");
        let read_only = format!("sqlite://{}?mode=ro", path.display());
        let mut read_only = sqlx::SqliteConnection::connect(&read_only).await.unwrap();
        let refused = sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut read_only)
            .await
            .unwrap_err();
        let refused = StoreError::from(refused);
        assert!(refused.is_outage(), "{refused:?}");
        assert!(!refused.may_have_written());
    }
}
