//! The list's growth per day, on either backend: two GROUP BYs over index
//! ranges of the window (migration 0008), never the whole list.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Type};

use super::{Dialect, SqlBackend};
use crate::domain::growth::DailyChanges;
use crate::store::rows::DayCountRow;
use crate::store::{GrowthStore, StoreResult};

#[async_trait]
impl<B: SqlBackend> GrowthStore for B
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> <B::Db as Dialect>::Time: Encode<'q, B::Db> + Type<B::Db>,
    for<'r> i64: Decode<'r, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
    for<'r> DayCountRow: FromRow<'r, <B::Db as Database>::Row>,
{
    async fn daily_changes(&self, since: DateTime<Utc>) -> StoreResult<DailyChanges> {
        let since = <B::Db as Dialect>::Time::from(since);
        let joined = <B::Db as Dialect>::days_since("confirmed_at");
        let joined: Vec<DayCountRow> = sqlx::query_as(&format!(
            "SELECT {joined} AS day, COUNT(*) AS count FROM subscribers \
             WHERE confirmed_at >= $1 AND status <> 'bounced' GROUP BY 1"
        ))
        .bind(since)
        .fetch_all(self.pool())
        .await?;
        let left = <B::Db as Dialect>::days_since("unsubscribed_at");
        let left: Vec<DayCountRow> = sqlx::query_as(&format!(
            "SELECT {left} AS day, COUNT(*) AS count FROM subscribers \
             WHERE unsubscribed_at >= $1 AND confirmed_at IS NOT NULL \
             AND status = 'unsubscribed' GROUP BY 1"
        ))
        .bind(since)
        .fetch_all(self.pool())
        .await?;
        let pairs =
            |rows: Vec<DayCountRow>| rows.into_iter().map(|row| (row.day, row.count)).collect();
        Ok(DailyChanges {
            joined: pairs(joined),
            left: pairs(left),
        })
    }
}
