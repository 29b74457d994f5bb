//! Deliveries on PostgreSQL: claims with `FOR UPDATE SKIP LOCKED` under a
//! lease, outcomes (in `outcomes`), and what a shutdown gives back.

use async_trait::async_trait;

use super::{outcomes, PostgresStore};
use crate::domain::delivery::{ClaimRequest, ClaimedDelivery, DeliveryOutcome};
use crate::store::rows::{self, ClaimWithRecipient};
use crate::store::sql::DeliverySql;
use crate::store::StoreResult;

#[async_trait]
impl DeliverySql for PostgresStore {
    async fn claim_deliveries(&self, request: ClaimRequest) -> StoreResult<Vec<ClaimedDelivery>> {
        let claimed: Vec<ClaimWithRecipient> = sqlx::query_as(
            "WITH due AS ( \
                 SELECT id FROM deliveries \
                 WHERE status = 'pending' AND next_attempt_at <= $3 \
                 ORDER BY priority, next_attempt_at, id LIMIT $4 \
                 FOR UPDATE SKIP LOCKED), \
             claimed AS ( \
                 UPDATE deliveries d SET status = 'sending', lease_owner = $1, lease_until = $2 \
                 FROM due WHERE d.id = due.id \
                 RETURNING d.id, d.subscriber_id, d.issue_id, d.post_id, d.confirmation_id, \
                     d.message_id, d.attempts, d.priority, d.next_attempt_at) \
             SELECT c.id, c.subscriber_id, c.issue_id, c.post_id, c.confirmation_id, c.message_id, \
                 c.attempts, s.email, s.name, s.status \
             FROM claimed c JOIN subscribers s ON s.id = c.subscriber_id \
             ORDER BY c.priority, c.next_attempt_at, c.id",
        )
        .bind(&request.owner)
        .bind(request.lease_until)
        .bind(request.now)
        .bind(i64::from(request.limit))
        .fetch_all(&self.pool)
        .await?;
        claimed
            .into_iter()
            .map(|row| rows::claimed_delivery(row.claim, row.recipient))
            .collect()
    }

    async fn record_outcomes(&self, owner: &str, outcomes: &[DeliveryOutcome]) -> StoreResult<u64> {
        outcomes::record(self, owner, outcomes).await
    }

    async fn release_claims(&self, owner: &str, delivery_ids: &[i64]) -> StoreResult<u64> {
        if delivery_ids.is_empty() {
            return Ok(0);
        }
        let result = sqlx::query(
            "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = $1 AND status = 'sending' AND id = ANY($2::bigint[])",
        )
        .bind(owner)
        .bind(delivery_ids)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }
}
