//! `tidings migrate-data`: copies a SQLite installation into an empty
//! PostgreSQL database, table by table in id order, keeping every id (the
//! links already emailed carry them), then checks the row counts.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Postgres, QueryBuilder, Row};

use super::sql::SqlBackend;
use super::{PostgresStore, SqliteStore, Store, StoreError};
use crate::config::{Backend, DatabaseSettings};

const PAGE: i64 = 2000;

#[derive(Clone, Copy)]
enum Kind {
    Integer,
    Text,
    /// Epoch milliseconds in SQLite, TIMESTAMPTZ in PostgreSQL.
    Time,
}

use Kind::{Integer, Text, Time};

/// Tables in foreign-key order, with their columns; `id` comes first.
/// Admin sessions are not copied: everyone logs in again after the move.
const TABLES: [(&str, &[(&str, Kind)]); 7] = [
    (
        "subscribers",
        &[
            ("id", Integer),
            ("email", Text),
            ("name", Text),
            ("status", Text),
            ("bounce_count", Integer),
            ("created_at", Time),
            ("confirmed_at", Time),
            ("unsubscribed_at", Time),
            ("last_confirmation_sent_at", Time),
            ("erased_at", Time),
        ],
    ),
    (
        "confirmations",
        &[
            ("id", Integer),
            ("subscriber_id", Integer),
            ("created_at", Time),
            ("expires_at", Time),
            ("used_at", Time),
        ],
    ),
    (
        "consent_events",
        &[
            ("id", Integer),
            ("subscriber_id", Integer),
            ("email", Text),
            ("kind", Text),
            ("occurred_at", Time),
            ("ip", Text),
            ("user_agent", Text),
            ("detail", Text),
        ],
    ),
    (
        "posts",
        &[
            ("id", Integer),
            ("subject", Text),
            ("body_markdown", Text),
            ("position", Integer),
            ("status", Text),
            ("created_at", Time),
            ("sent_at", Time),
        ],
    ),
    (
        "issues",
        &[
            ("id", Integer),
            ("slot_key", Text),
            ("slot_at", Time),
            ("mode", Text),
            ("post_id", Integer),
            ("number", Integer),
            ("recipients", Integer),
            ("created_at", Time),
        ],
    ),
    (
        "deliveries",
        &[
            ("id", Integer),
            ("kind", Text),
            ("priority", Integer),
            ("subscriber_id", Integer),
            ("issue_id", Integer),
            ("post_id", Integer),
            ("confirmation_id", Integer),
            ("message_id", Text),
            ("status", Text),
            ("attempts", Integer),
            ("next_attempt_at", Time),
            ("lease_owner", Text),
            ("lease_until", Time),
            ("last_error", Text),
            ("smtp_reply", Text),
            ("created_at", Time),
            ("sent_at", Time),
            ("closed_at", Time),
        ],
    ),
    (
        "admin_users",
        &[
            ("id", Integer),
            ("email", Text),
            ("password_hash", Text),
            ("created_at", Time),
        ],
    ),
];

/// Each issue's tally (see migration 0006), counted from its deliveries.
const TALLY_COPIED_ISSUES: &str = "INSERT INTO issue_tallies (issue_id, sent, failed, skipped, \
         finished_at) \
     SELECT i.id, \
         COUNT(d.id) FILTER (WHERE d.status = 'sent'), \
         COUNT(d.id) FILTER (WHERE d.status = 'failed'), \
         COUNT(d.id) FILTER (WHERE d.status = 'skipped'), \
         CASE WHEN COUNT(d.id) FILTER (WHERE d.status IN ('pending', 'sending')) = 0 \
             THEN GREATEST(MAX(d.sent_at), MAX(d.closed_at), i.created_at) END \
     FROM issues i LEFT JOIN deliveries d ON d.issue_id = i.id \
     GROUP BY i.id";

enum Value {
    Integer(Option<i64>),
    Text(Option<String>),
    Time(Option<DateTime<Utc>>),
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("only sqlite: → postgres:// is supported (from {from} to {to})")]
    Direction { from: Backend, to: Backend },
    #[error("the target database already has data in `{0}`; migrate into an empty database")]
    TargetNotEmpty(&'static str),
    #[error("`{table}` has {source_rows} rows in the source but {target_rows} in the target")]
    CountMismatch {
        table: &'static str,
        source_rows: i64,
        target_rows: i64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for TransferError {
    fn from(error: sqlx::Error) -> Self {
        TransferError::Store(StoreError::Database(error))
    }
}

/// Rows copied per table, as verified in the target.
pub type TransferReport = Vec<(&'static str, i64)>;

pub async fn copy_sqlite_to_postgres(
    from: &DatabaseSettings,
    to: &DatabaseSettings,
) -> Result<TransferReport, TransferError> {
    if from.backend != Backend::Sqlite || to.backend != Backend::Postgres {
        return Err(TransferError::Direction {
            from: from.backend,
            to: to.backend,
        });
    }
    let source = SqliteStore::connect(from).await?;
    source.migrate().await?;
    let target = PostgresStore::connect(to).await?;
    target.migrate().await?;
    for (table, _) in TABLES {
        let (rows,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(target.pool())
            .await?;
        if rows > 0 {
            return Err(TransferError::TargetNotEmpty(table));
        }
    }
    let mut transaction = target.pool().begin().await?;
    // The token key: without it, every link already emailed would break.
    let settings: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT key, value FROM settings")
        .fetch_all(source.pool())
        .await?;
    for (key, value) in settings {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *transaction)
        .await?;
    }
    for (table, columns) in TABLES {
        copy_table(&source, &mut transaction, table, columns).await?;
        // Ids were copied as they are; new rows continue after them.
        sqlx::query(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
             COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
        ))
        .execute(&mut *transaction)
        .await?;
    }
    // Tallies are counts of the deliveries just copied: made again here,
    // as the migration that added them made them.
    sqlx::query(TALLY_COPIED_ISSUES)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    for (table, _) in TABLES {
        target.vacuum_analyze(table).await?;
    }
    verify(&source, &target).await
}

async fn copy_table(
    source: &SqliteStore,
    target: &mut sqlx::Transaction<'static, Postgres>,
    table: &'static str,
    columns: &[(&str, Kind)],
) -> Result<(), TransferError> {
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let select = format!(
        "SELECT {} FROM {table} WHERE id > ? ORDER BY id LIMIT ?",
        names.join(", ")
    );
    let mut after = 0i64;
    loop {
        let rows = sqlx::query(&select)
            .bind(after)
            .bind(PAGE)
            .fetch_all(source.pool())
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get(0)?;
        let mut values = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut record = Vec::with_capacity(columns.len());
            for (index, (_, kind)) in columns.iter().enumerate() {
                record.push(match kind {
                    Integer => Value::Integer(row.try_get(index)?),
                    Text => Value::Text(row.try_get(index)?),
                    Time => Value::Time(
                        row.try_get::<Option<i64>, _>(index)?
                            .and_then(DateTime::from_timestamp_millis),
                    ),
                });
            }
            values.push(record);
        }
        let mut insert =
            QueryBuilder::<Postgres>::new(format!("INSERT INTO {table} ({}) ", names.join(", ")));
        insert.push_values(values, |mut builder, record| {
            for value in record {
                match value {
                    Value::Integer(number) => builder.push_bind(number),
                    Value::Text(text) => builder.push_bind(text),
                    Value::Time(time) => builder.push_bind(time),
                };
            }
        });
        let query: Query<'_, Postgres, PgArguments> = insert.build();
        query.execute(&mut **target).await?;
    }
    Ok(())
}

async fn verify(
    source: &SqliteStore,
    target: &PostgresStore,
) -> Result<TransferReport, TransferError> {
    let mut report = Vec::new();
    for (table, _) in TABLES {
        let count = format!("SELECT COUNT(*) FROM {table}");
        let (source_rows,): (i64,) = sqlx::query_as(&count).fetch_one(source.pool()).await?;
        let (target_rows,): (i64,) = sqlx::query_as(&count).fetch_one(target.pool()).await?;
        if source_rows != target_rows {
            return Err(TransferError::CountMismatch {
                table,
                source_rows,
                target_rows,
            });
        }
        report.push((table, target_rows));
    }
    Ok(report)
}
