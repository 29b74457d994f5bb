//! Deliveries on SQLite: claims under a lease, outcomes (in `outcomes`),
//! and what a shutdown gives back.

use std::collections::HashMap;

use async_trait::async_trait;

use super::{millis, outcomes, to_json, SqliteStore};
use crate::domain::delivery::{ClaimRequest, ClaimedDelivery, DeliveryOutcome};
use crate::store::rows::{self, ClaimRow, Millis, RecipientRow};
use crate::store::sql::DeliverySql;
use crate::store::{StoreError, StoreResult};

/// A claimed row with what orders it.
#[derive(sqlx::FromRow)]
struct DueClaim {
    #[sqlx(flatten)]
    claim: ClaimRow,
    priority: i64,
    next_attempt_at: Millis,
}

#[async_trait]
impl DeliverySql for SqliteStore {
    async fn claim_deliveries(&self, request: ClaimRequest) -> StoreResult<Vec<ClaimedDelivery>> {
        let mut writer = self.lock().await;
        let mut claimed: Vec<DueClaim> = sqlx::query_as(
            "UPDATE deliveries SET status = 'sending', lease_owner = ?1, lease_until = ?2 \
             WHERE id IN (SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?3 \
                          ORDER BY priority, next_attempt_at, id LIMIT ?4) \
             RETURNING id, subscriber_id, issue_id, post_id, confirmation_id, message_id, attempts, \
                 priority, next_attempt_at",
        )
        .bind(&request.owner)
        .bind(millis(request.lease_until))
        .bind(millis(request.now))
        .bind(i64::from(request.limit))
        .fetch_all(&mut *writer)
        .await?;
        drop(writer);
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        // RETURNING gives the rows in table order; the worker sends a batch
        // in the order it gets it, so a confirmation must lead its batch.
        claimed.sort_by_key(|due| (due.priority, due.next_attempt_at, due.claim.id));
        let subscriber_ids: Vec<i64> = claimed.iter().map(|due| due.claim.subscriber_id).collect();
        let recipients: HashMap<i64, RecipientRow> = sqlx::query_as::<_, RecipientRow>(
            "SELECT id AS subscriber_id, email, name, status FROM subscribers \
             WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(to_json(&subscriber_ids))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|recipient| (recipient.subscriber_id, recipient))
        .collect();
        claimed
            .into_iter()
            .map(|DueClaim { claim, .. }| {
                let recipient = recipients
                    .get(&claim.subscriber_id)
                    .cloned()
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("delivery {} has no subscriber", claim.id))
                    })?;
                rows::claimed_delivery(claim, recipient)
            })
            .collect()
    }

    async fn record_outcomes(&self, owner: &str, outcomes: &[DeliveryOutcome]) -> StoreResult<u64> {
        if outcomes.is_empty() {
            return Ok(0);
        }
        let mut writer = self.lock().await;
        outcomes::record(&mut writer, owner, outcomes).await
    }

    async fn release_claims(&self, owner: &str, delivery_ids: &[i64]) -> StoreResult<u64> {
        if delivery_ids.is_empty() {
            return Ok(0);
        }
        let mut writer = self.lock().await;
        let result = sqlx::query(
            "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = ? AND status = 'sending' AND id IN (SELECT value FROM json_each(?))",
        )
        .bind(owner)
        .bind(to_json(&delivery_ids))
        .execute(&mut *writer)
        .await?;
        Ok(result.rows_affected())
    }
}
