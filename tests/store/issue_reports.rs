//! What the admin's issue pages read: each issue's tallies, which every
//! outcome keeps in its own transaction and which must always equal a
//! count of the deliveries; the failed and skipped deliveries; and
//! "retry failed", which puts back only the failures worth it, once.

use chrono::{DateTime, Duration, Utc};
use tidings::domain::consent::ConsentContext;
use tidings::domain::delivery::{
    ClaimedDelivery, DeliveryOutcome, DeliveryStatus, UnsentDelivery, UnsentQuery,
};
use tidings::domain::issue::{IssueProgress, IssueSummary};
use tidings::domain::retry::RetryPlan;

use crate::on_both_backends;
use crate::support::{
    broadcast, claim, enqueue, minutes, sent, signup, store, t0, Backend, TestStore, LEASE_SECONDS,
};

on_both_backends!(
    tallies_always_equal_a_count_of_the_deliveries,
    a_retry_puts_back_only_the_failures_worth_it_and_only_once,
    issues_are_listed_newest_first_a_page_at_a_time,
    failed_and_skipped_deliveries_come_a_page_at_a_time,
    the_next_send_is_the_head_of_the_queue,
);

const POLICY: &str = "permanent error (554): 5.7.1 Message rejected as spam";
const NO_SUCH_USER: &str = "permanent error (550): 5.1.1 No such user";
const GAVE_UP: &str = "gave up after 4 attempts: transient error (451): 4.3.0 Try again later";

/// `count` confirmed readers, a post, and its issue; returns the issue id.
async fn issue_to_readers(store: &TestStore, count: u64, slot: &str) -> i64 {
    store
        .bulk_insert_confirmed(count, "reader", "example.com", t0())
        .await
        .unwrap();
    enqueue(store, "Tip").await;
    broadcast(store, slot, t0()).await.issue_id
}

async fn summary(store: &TestStore, issue: i64) -> IssueSummary {
    store
        .issue_summary(issue)
        .await
        .unwrap()
        .expect("the issue")
}

/// The tally against `COUNT(*)` of the issue's deliveries by status.
async fn assert_tally_is_exact(store: &TestStore, issue: i64, step: &str) -> IssueProgress {
    let progress = summary(store, issue).await.progress;
    let counted = store.issue_progress(issue).await.unwrap();
    assert_eq!(
        (progress.sent, progress.failed, progress.skipped),
        (counted.sent, counted.failed, counted.skipped),
        "{step}"
    );
    assert_eq!(progress.pending(), counted.unfinished(), "{step}");
    assert_eq!(progress.recipients, counted.total(), "{step}");
    progress
}

fn failed(delivery: &ClaimedDelivery, error: &str, at: DateTime<Utc>) -> DeliveryOutcome {
    DeliveryOutcome::Failed {
        id: delivery.id,
        subscriber_id: delivery.subscriber_id,
        error: error.into(),
        hard_bounce: error.starts_with("permanent"),
        at,
    }
}

fn skipped(delivery: &ClaimedDelivery, at: DateTime<Utc>) -> DeliveryOutcome {
    DeliveryOutcome::Skipped {
        id: delivery.id,
        reason: "subscriber is unsubscribed now".into(),
        at,
    }
}

async fn unsubscribe(store: &TestStore, subscriber_id: i64) {
    store
        .unsubscribe(subscriber_id, ConsentContext::default(), t0())
        .await
        .unwrap();
}

async fn tallies_always_equal_a_count_of_the_deliveries(backend: Backend) {
    let store = store(backend).await;
    let issue = issue_to_readers(&store, 10, "week-1").await;
    // A confirmation email in the same outbox counts in no issue.
    store
        .signup(signup("newcomer@example.com", None, t0()))
        .await
        .unwrap();
    let fresh = assert_tally_is_exact(&store, issue, "made").await;
    assert_eq!((fresh.recipients, fresh.pending()), (10, 10));
    assert_eq!(summary(&store, issue).await.finished_at, None);

    let at = t0() + minutes(1);
    let batch = claim(&store, "worker", at, 5).await;
    assert_eq!(batch.len(), 5);
    let outcomes: Vec<DeliveryOutcome> = batch.iter().map(|d| sent(d.id, at)).collect();
    assert_eq!(store.record_outcomes("worker", &outcomes).await.unwrap(), 5);
    let progress = assert_tally_is_exact(&store, issue, "sends alone").await;
    assert_eq!(progress.sent, 4, "the confirmation led the batch");
    // Told twice (a retried write), nothing counts twice.
    assert_eq!(store.record_outcomes("worker", &outcomes).await.unwrap(), 0);
    assert_tally_is_exact(&store, issue, "sends again").await;

    let batch = claim(&store, "worker", at, 4).await;
    let mixed = [
        sent(batch[0].id, at),
        failed(&batch[1], POLICY, at),
        skipped(&batch[2], at),
        DeliveryOutcome::Retry {
            id: batch[3].id,
            error: "transient error (451): 4.3.0 Try again later".into(),
            next_attempt_at: at + minutes(5),
        },
    ];
    assert_eq!(store.record_outcomes("worker", &mixed).await.unwrap(), 4);
    let progress = assert_tally_is_exact(&store, issue, "mixed").await;
    assert_eq!(
        (progress.sent, progress.failed, progress.skipped),
        (5, 1, 1)
    );

    // A crash: claims taken back when the lease runs out, and the dead
    // worker's late outcomes fenced off.
    let later = at + minutes(10);
    let doomed = claim(&store, "crashed", later, 10).await;
    assert_eq!(doomed.len(), 3);
    let after_lease = later + Duration::seconds(LEASE_SECONDS + 1);
    assert_eq!(store.reclaim_expired_leases(after_lease).await.unwrap(), 3);
    let late: Vec<DeliveryOutcome> = doomed.iter().map(|d| sent(d.id, later)).collect();
    assert_eq!(store.record_outcomes("crashed", &late).await.unwrap(), 0);
    assert_tally_is_exact(&store, issue, "reclaimed").await;
    // And a dead instance's claims taken over.
    let doomed = claim(&store, "killed", after_lease, 10).await;
    assert_eq!(store.take_over("killed").await.unwrap(), 3);
    drop(doomed);
    assert_tally_is_exact(&store, issue, "taken over").await;

    let end = after_lease + minutes(1);
    let rest = claim(&store, "worker", end, 10).await;
    let outcomes: Vec<DeliveryOutcome> = rest.iter().map(|d| sent(d.id, end)).collect();
    assert_eq!(store.record_outcomes("worker", &outcomes).await.unwrap(), 3);
    let done = assert_tally_is_exact(&store, issue, "done").await;
    assert!(done.is_done());
    assert_eq!(summary(&store, issue).await.finished_at, Some(end));

    // A retry reopens the issue; its second end closes it again.
    let retried = store.retry_failures(issue, end).await.unwrap();
    assert_eq!(retried.retry, 1);
    let reopened = assert_tally_is_exact(&store, issue, "retried").await;
    assert_eq!((reopened.failed, reopened.pending()), (0, 1));
    assert_eq!(summary(&store, issue).await.finished_at, None);
    let again = claim(&store, "worker", end, 10).await;
    assert_eq!(again.len(), 1);
    let last = end + minutes(1);
    store
        .record_outcomes("worker", &[failed(&again[0], POLICY, last)])
        .await
        .unwrap();
    assert_tally_is_exact(&store, issue, "failed again").await;
    assert_eq!(summary(&store, issue).await.finished_at, Some(last));
}

async fn a_retry_puts_back_only_the_failures_worth_it_and_only_once(backend: Backend) {
    let store = store(backend).await;
    let issue = issue_to_readers(&store, 5, "week-1").await;
    let at = t0() + minutes(1);
    let batch = claim(&store, "worker", at, 10).await;
    let outcomes = [
        failed(&batch[0], GAVE_UP, at),
        failed(&batch[1], POLICY, at),
        failed(&batch[2], NO_SUCH_USER, at),
        failed(&batch[3], POLICY, at),
        sent(batch[4].id, at),
    ];
    store.record_outcomes("worker", &outcomes).await.unwrap();
    // The fourth reader has left since.
    unsubscribe(&store, batch[3].subscriber_id).await;

    let expected = RetryPlan {
        retry: 2,
        unsubscribed: 1,
        bad_address: 1,
        ..Default::default()
    };
    assert_eq!(store.retry_plan(issue).await.unwrap(), expected);
    assert_eq!(
        store.retry_plan(issue).await.unwrap(),
        expected,
        "a plan writes nothing"
    );
    let now = at + minutes(30);
    assert_eq!(store.retry_failures(issue, now).await.unwrap(), expected);
    assert_tally_is_exact(&store, issue, "retried").await;

    // Due at once, with fresh attempts, and only the two worth it.
    let again = claim(&store, "worker", now, 10).await;
    let mut ids: Vec<i64> = again.iter().map(|d| d.id).collect();
    ids.sort();
    assert_eq!(ids, vec![batch[0].id, batch[1].id]);
    assert!(again.iter().all(|d| d.attempts == 1), "{again:?}");
    let still_failed = unsent(&store, issue, DeliveryStatus::Failed, None, 10).await;
    let still: Vec<i64> = still_failed.iter().map(|d| d.id).collect();
    assert_eq!(still, vec![batch[2].id, batch[3].id]);

    // A second retry (a double click) changes nothing.
    let second = store.retry_failures(issue, now).await.unwrap();
    assert_eq!(
        second,
        RetryPlan {
            unsubscribed: 1,
            bad_address: 1,
            ..Default::default()
        }
    );
    assert_tally_is_exact(&store, issue, "retried twice").await;
    assert_eq!(claim(&store, "worker", now, 10).await.len(), 0);
    // An issue with no failures, or none at all, has nothing to retry.
    assert_eq!(
        store.retry_failures(issue + 1, now).await.unwrap(),
        RetryPlan::default()
    );
}

async fn issues_are_listed_newest_first_a_page_at_a_time(backend: Backend) {
    let store = store(backend).await;
    let first = issue_to_readers(&store, 2, "week-1").await;
    enqueue(&store, "Second tip").await;
    let second = broadcast(&store, "week-2", t0() + Duration::days(7))
        .await
        .issue_id;
    enqueue(&store, "Third tip").await;
    let third = broadcast(&store, "week-3", t0() + Duration::days(14))
        .await
        .issue_id;

    let page = store.list_issues(None, 2).await.unwrap();
    let ids: Vec<i64> = page.iter().map(|issue| issue.id).collect();
    assert_eq!(ids, vec![third, second]);
    assert_eq!(page[0].subject.as_deref(), Some("Third tip"));
    assert_eq!(page[0].number, 3);
    assert_eq!(page[0].created_at, t0() + Duration::days(14));
    assert_eq!(page[0].progress.recipients, 2);
    let rest = store.list_issues(Some(second), 2).await.unwrap();
    let ids: Vec<i64> = rest.iter().map(|issue| issue.id).collect();
    assert_eq!(ids, vec![first]);
    assert_eq!(rest[0].subject.as_deref(), Some("Tip"));
    assert!(store.list_issues(Some(first), 2).await.unwrap().is_empty());
    assert!(store.issue_summary(third + 1).await.unwrap().is_none());
}

async fn unsent(
    store: &TestStore,
    issue_id: i64,
    status: DeliveryStatus,
    after: Option<i64>,
    limit: u32,
) -> Vec<UnsentDelivery> {
    store
        .unsent_deliveries(UnsentQuery {
            issue_id,
            status,
            after,
            limit,
        })
        .await
        .unwrap()
}

async fn failed_and_skipped_deliveries_come_a_page_at_a_time(backend: Backend) {
    let store = store(backend).await;
    let issue = issue_to_readers(&store, 4, "week-1").await;
    let at = t0() + minutes(1);
    let batch = claim(&store, "worker", at, 10).await;
    store
        .record_outcomes(
            "worker",
            &[
                failed(&batch[0], NO_SUCH_USER, at),
                failed(&batch[1], GAVE_UP, at),
                skipped(&batch[2], at),
                sent(batch[3].id, at),
            ],
        )
        .await
        .unwrap();

    let first = unsent(&store, issue, DeliveryStatus::Failed, None, 1).await;
    assert_eq!(
        first,
        vec![UnsentDelivery {
            id: batch[0].id,
            subscriber_id: batch[0].subscriber_id,
            email: Some(batch[0].email.clone()),
            status: DeliveryStatus::Failed,
            attempts: 1,
            last_error: Some(NO_SUCH_USER.into()),
            closed_at: Some(at),
        }]
    );
    let next = unsent(&store, issue, DeliveryStatus::Failed, Some(batch[0].id), 1).await;
    assert_eq!(next[0].id, batch[1].id);
    assert_eq!(next[0].last_error.as_deref(), Some(GAVE_UP));
    assert!(
        unsent(&store, issue, DeliveryStatus::Failed, Some(batch[1].id), 1)
            .await
            .is_empty()
    );
    let skips = unsent(&store, issue, DeliveryStatus::Skipped, None, 10).await;
    assert_eq!(skips.len(), 1);
    assert_eq!(skips[0].id, batch[2].id);
    assert_eq!(skips[0].closed_at, Some(at));
}

async fn the_next_send_is_the_head_of_the_queue(backend: Backend) {
    let store = store(backend).await;
    let nothing = store.next_send().await.unwrap();
    assert_eq!((nothing.post_id, nothing.anyone_confirmed), (None, false));
    store
        .bulk_insert_confirmed(3, "reader", "example.com", t0())
        .await
        .unwrap();
    let head = enqueue(&store, "First").await;
    enqueue(&store, "Second").await;
    let next = store.next_send().await.unwrap();
    assert_eq!(next.post_id, Some(head));
    assert_eq!(next.subject.as_deref(), Some("First"));
    assert!(next.anyone_confirmed);
}
