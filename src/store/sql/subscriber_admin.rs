//! The admin's subscriber pages, on either backend: search by index
//! ranges, one subscriber and their emails, an unsubscribe by the
//! operator, and erasure (the rules are in `domain::subscriber_search` and
//! `domain::erasure`; where the SQL differs, `Dialect` says how).

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Database, Decode, Encode, Executor, FromRow, IntoArguments, Type};

use super::subscribers::{BounceRow, EmailAndStatus, ExistingRow};
use super::{Dialect, SqlBackend, SubscriberWrites};
use crate::domain::consent::{ConsentContext, ConsentKind};
use crate::domain::erasure::{self, EraseOutcome, Found};
use crate::domain::subscriber::{SubscriberStatus, UnsubscribeOutcome};
use crate::domain::subscriber_record::{SubscriberDelivery, SubscriberRecord};
use crate::domain::subscriber_search::{first_hits, SearchField, SearchHit, SubscriberSearch};
use crate::store::rows::{
    ConsentDetailRow, ErasureStateRow, SearchHitRow, SubscriberDeliveryRow, SubscriberRecordRow,
    SUBSCRIBER_COLUMNS, SUBSCRIBER_RECORD_COLUMNS,
};
use crate::store::{StoreResult, SubscriberAdminStore};

/// Addresses looked up per statement by `existing_emails`.
const LOOKUP_CHUNK: usize = 500;

type Time<B> = <<B as SqlBackend>::Db as Dialect>::Time;

/// One range of a search: `field`'s key in one status, from the cursor.
fn range_query<DB: Dialect>(field: SearchField) -> String {
    let key = match field {
        SearchField::Address => DB::SEARCH_EMAIL,
        SearchField::Domain => DB::SEARCH_DOMAIN,
        SearchField::Name => DB::SEARCH_NAME,
    };
    // A name match whose address matches too is the address's hit. The
    // name index holds named rows only, and says so in its WHERE.
    let name_only = match field {
        SearchField::Name => format!(
            " AND name IS NOT NULL AND NOT ({email} >= $6 AND {email} < $3)",
            email = DB::SEARCH_EMAIL
        ),
        SearchField::Address | SearchField::Domain => String::new(),
    };
    // $2 is the prefix or the cursor's key, whichever is later; rows at
    // the cursor's key come after its id.
    format!(
        "SELECT {key} AS search_key, {SUBSCRIBER_COLUMNS} FROM subscribers \
         WHERE status = $1 AND {key} >= $2 AND {key} < $3 AND ({key} > $2 OR id > $4)\
         {name_only} AND erased_at IS NULL \
         ORDER BY {key}, id LIMIT $5"
    )
}

#[async_trait]
impl<B: SqlBackend> SubscriberAdminStore for B
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'r> i64: Decode<'r, B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<&'q str>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db>,
    for<'r> String: Decode<'r, B::Db>,
    for<'q> Time<B>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<Time<B>>: Encode<'q, B::Db> + Type<B::Db>,
    usize: sqlx::ColumnIndex<<B::Db as Database>::Row>,
    for<'r> EmailAndStatus: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> ExistingRow<Time<B>>: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> BounceRow: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> SearchHitRow<Time<B>>: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> SubscriberRecordRow<Time<B>>: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> SubscriberDeliveryRow<Time<B>>: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> ConsentDetailRow: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> ErasureStateRow<Time<B>>: FromRow<'r, <B::Db as Database>::Row>,
{
    async fn search_subscribers(&self, search: &SubscriberSearch) -> StoreResult<Vec<SearchHit>> {
        let (from_key, from_id) = search.start();
        let (prefix, upper) = (search.term.prefix(), search.term.upper());
        let limit = i64::from(search.limit);
        let mut hits = Vec::new();
        for (field, status) in search.ranges() {
            let sql = range_query::<B::Db>(field);
            let mut query = sqlx::query_as::<_, SearchHitRow<Time<B>>>(&sql)
                .bind(status.as_str())
                .bind(from_key.as_str())
                .bind(upper.as_str())
                .bind(from_id)
                .bind(limit);
            if field == SearchField::Name {
                query = query.bind(prefix);
            }
            for row in query.fetch_all(self.pool()).await? {
                hits.push(SearchHit::try_from(row)?);
            }
        }
        Ok(first_hits(hits, search.limit as usize))
    }

    async fn subscriber_record(&self, subscriber_id: i64) -> StoreResult<Option<SubscriberRecord>> {
        let row: Option<SubscriberRecordRow<Time<B>>> = sqlx::query_as(&format!(
            "SELECT {SUBSCRIBER_RECORD_COLUMNS} FROM subscribers WHERE id = $1"
        ))
        .bind(subscriber_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(SubscriberRecord::try_from).transpose()
    }

    async fn subscriber_deliveries(
        &self,
        subscriber_id: i64,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<SubscriberDelivery>> {
        // Two halves, each on its index: issues by (subscriber_id,
        // post_id), at most one per post; the rest (confirmations) by
        // deliveries_unposted_by_subscriber. Neither grows with the list.
        // The cursor is applied outside a materialized CTE: inside, a
        // generic PostgreSQL plan with fresh statistics (just after a big
        // fan-out) read the whole primary key for `id < $2` (70 ms a view
        // at 1M deliveries, benches/admin.sh).
        let rows: Vec<SubscriberDeliveryRow<Time<B>>> = sqlx::query_as(
            "WITH theirs AS MATERIALIZED ( \
                 SELECT d.id, d.kind, d.issue_id, p.subject, d.status, d.attempts, \
                     d.created_at, d.sent_at \
                 FROM deliveries AS d LEFT JOIN posts AS p ON p.id = d.post_id \
                 WHERE d.subscriber_id = $1 AND d.post_id IS NOT NULL \
                 UNION ALL \
                 SELECT d.id, d.kind, d.issue_id, NULL, d.status, d.attempts, \
                     d.created_at, d.sent_at \
                 FROM deliveries AS d \
                 WHERE d.subscriber_id = $1 AND d.post_id IS NULL \
             ) \
             SELECT id, kind, issue_id, subject, status, attempts, created_at, sent_at \
             FROM theirs WHERE id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(subscriber_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(SubscriberDelivery::try_from).collect()
    }

    async fn existing_emails(&self, emails: &[String]) -> StoreResult<HashSet<String>> {
        let sql = format!(
            "SELECT email FROM subscribers WHERE {}",
            <B::Db as Dialect>::EMAIL_IN_JSON
        );
        let mut found = HashSet::new();
        for chunk in emails.chunks(LOOKUP_CHUNK) {
            let list = serde_json::to_string(chunk)
                .map_err(|error| crate::store::StoreError::Corrupt(error.to_string()))?;
            let rows: Vec<String> = sqlx::query_scalar(&sql)
                .bind(list)
                .fetch_all(self.pool())
                .await?;
            found.extend(rows);
        }
        Ok(found)
    }

    async fn unsubscribe_by_operator(
        &self,
        subscriber_id: i64,
        detail: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<UnsubscribeOutcome> {
        let mut tx = self.write().await?;
        let nobody = ConsentContext::default();
        let outcome = SubscriberWrites::<B::Db>::unsubscribe(
            &mut tx,
            subscriber_id,
            &nobody,
            Some(detail),
            now,
        )
        .await?;
        if outcome == UnsubscribeOutcome::Unsubscribed {
            B::commit(tx).await?;
        } else {
            B::roll_back(tx).await?;
        }
        Ok(outcome)
    }

    async fn erase_subscriber(
        &self,
        subscriber_id: i64,
        detail: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<EraseOutcome> {
        let for_update = <B::Db as Dialect>::FOR_UPDATE;
        let mut tx = self.write().await?;
        let row: Option<ErasureStateRow<Time<B>>> = sqlx::query_as(&format!(
            "SELECT erased_at FROM subscribers WHERE id = $1{for_update}"
        ))
        .bind(subscriber_id)
        .fetch_optional(&mut *tx)
        .await?;
        let found = match row {
            None => Found::Nobody,
            Some(row) if row.erased_at.is_some() => Found::Erased,
            Some(_) => Found::Present,
        };
        if let Some(outcome) = erasure::erase(found) {
            B::roll_back(tx).await?;
            return Ok(outcome);
        }
        let placeholder = erasure::placeholder(subscriber_id);
        let at = Time::<B>::from(now);
        sqlx::query(
            "UPDATE subscribers SET email = $1, name = NULL, status = $2, \
             unsubscribed_at = COALESCE(unsubscribed_at, $3), erased_at = $3 WHERE id = $4",
        )
        .bind(placeholder.as_str())
        .bind(SubscriberStatus::Unsubscribed.as_str())
        .bind(at)
        .bind(subscriber_id)
        .execute(&mut *tx)
        .await?;
        SubscriberWrites::<B::Db>::void_confirmations(&mut tx, subscriber_id, at).await?;
        let events: Vec<ConsentDetailRow> = sqlx::query_as(
            "SELECT id, kind, detail FROM consent_events WHERE subscriber_id = $1 ORDER BY id",
        )
        .bind(subscriber_id)
        .fetch_all(&mut *tx)
        .await?;
        for event in &events {
            let detail = erasure::kept_detail(event.kind()?, event.detail.as_deref());
            sqlx::query(
                "UPDATE consent_events SET email = $1, ip = NULL, user_agent = NULL, detail = $2 \
                 WHERE id = $3",
            )
            .bind(placeholder.as_str())
            .bind(detail)
            .bind(event.id)
            .execute(&mut *tx)
            .await?;
        }
        // A server's reply or error may quote the address; an email still
        // waiting is never sent. One statement per index (see
        // `subscriber_deliveries`).
        for has_post in ["IS NOT NULL", "IS NULL"] {
            sqlx::query(&format!(
                "UPDATE deliveries SET last_error = NULL, smtp_reply = NULL \
                 WHERE subscriber_id = $1 AND post_id {has_post} \
                 AND (last_error IS NOT NULL OR smtp_reply IS NOT NULL)"
            ))
            .bind(subscriber_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(&format!(
                "UPDATE deliveries SET status = 'skipped', last_error = 'subscriber erased' \
                 WHERE subscriber_id = $1 AND post_id {has_post} AND status = 'pending'"
            ))
            .bind(subscriber_id)
            .execute(&mut *tx)
            .await?;
        }
        SubscriberWrites::<B::Db>::record_consent(
            &mut tx,
            subscriber_id,
            &placeholder,
            ConsentKind::Erased,
            &ConsentContext::default(),
            Some(detail),
            now,
        )
        .await?;
        B::commit(tx).await?;
        Ok(EraseOutcome::Erased)
    }
}
