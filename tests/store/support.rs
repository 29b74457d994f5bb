//! A migrated store on a fresh database, and the small fixtures the
//! contract tests share. Every instant is chosen by the test, from [`t0`].

use chrono::{DateTime, Duration, Utc};
use tidings::config::DatabaseSettings;
use tidings::domain::consent::{ConsentContext, ConsentEvent};
use tidings::domain::delivery::{ClaimRequest, ClaimedDelivery, DeliveryOutcome, DeliveryPayload};
use tidings::domain::issue::{CreateIssueOutcome, IssueCreated, NewIssue, ScheduleMode};
use tidings::domain::post::{NewPost, PostSubject};
use tidings::domain::signup::SignupRequest;
use tidings::domain::subscriber::{
    AddOutcome, EmailAddress, OperatorSource, OperatorSubscriber, Subscriber, SubscriberName,
    SubscriberQuery, SubscriberStatus,
};
use tidings::store::SharedStore;

pub use crate::database::Backend;
use crate::database::TestDatabase;

/// A store and the database under it, dropped together (the store first).
pub struct TestStore {
    pub store: SharedStore,
    pub url: String,
    _database: TestDatabase,
}

impl std::ops::Deref for TestStore {
    type Target = dyn tidings::store::Store;

    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

/// A connected, migrated store on a database of its own.
pub async fn store(backend: Backend) -> TestStore {
    let (database, url) = TestDatabase::create(backend).await;
    let store = connect(&url).await;
    store.migrate().await.expect("migrations run");
    TestStore {
        store,
        url,
        _database: database,
    }
}

/// Another connection to the same database, as a restart or a second
/// instance would open.
pub async fn connect(url: &str) -> SharedStore {
    let settings = DatabaseSettings::from_url(url, 4).expect("a database URL");
    tidings::store::connect(&settings)
        .await
        .expect("the store opens")
}

/// The instant every test starts from. Whole seconds, so both backends
/// store it exactly.
pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T09:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

pub fn minutes(n: i64) -> Duration {
    Duration::minutes(n)
}

pub fn email(text: &str) -> EmailAddress {
    EmailAddress::parse(text).expect("a valid address")
}

pub fn consent(ip: &str, user_agent: &str) -> ConsentContext {
    ConsentContext {
        ip: Some(ip.to_owned()),
        user_agent: Some(user_agent.to_owned()),
    }
}

pub const CONFIRMATION_TTL_HOURS: i64 = 72;
pub const RESEND_WINDOW_MINUTES: i64 = 10;

/// A signup from 192.0.2.1, with the daemon's link lifetime and window.
pub fn signup(address: &str, name: Option<&str>, now: DateTime<Utc>) -> SignupRequest {
    SignupRequest {
        email: email(address),
        name: SubscriberName::parse_optional(name).unwrap(),
        consent: consent("192.0.2.1", "SignupTest/1.0"),
        now,
        confirmation_ttl: Duration::hours(CONFIRMATION_TTL_HOURS),
        resend_window: minutes(RESEND_WINDOW_MINUTES),
    }
}

pub fn operator(
    address: &str,
    name: Option<&str>,
    status: SubscriberStatus,
    now: DateTime<Utc>,
) -> OperatorSubscriber {
    OperatorSubscriber {
        email: email(address),
        name: SubscriberName::parse_optional(name).unwrap(),
        status,
        source: OperatorSource::Cli,
        now,
        confirmation_ttl: Duration::hours(CONFIRMATION_TTL_HOURS),
    }
}

/// Adds `address` as the operator would, in `status`; returns its id.
pub async fn add(store: &TestStore, address: &str, status: SubscriberStatus) -> i64 {
    match store
        .add_subscriber(operator(address, None, status, t0()))
        .await
        .unwrap()
    {
        AddOutcome::Added { id, .. } => id,
        AddOutcome::AlreadyExists => panic!("{address} was already on the list"),
    }
}

/// Every subscriber, in id order.
pub async fn subscribers(store: &TestStore) -> Vec<Subscriber> {
    store
        .list_subscribers(SubscriberQuery {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
}

pub async fn subscriber(store: &TestStore, id: i64) -> Subscriber {
    subscribers(store)
        .await
        .into_iter()
        .find(|subscriber| subscriber.id == id)
        .unwrap_or_else(|| panic!("no subscriber {id}"))
}

pub async fn status_of(store: &TestStore, id: i64) -> SubscriberStatus {
    subscriber(store, id).await.status
}

pub async fn consent_kinds(store: &TestStore, id: i64) -> Vec<&'static str> {
    events(store, id)
        .await
        .iter()
        .map(|event| event.kind.as_str())
        .collect()
}

pub async fn events(store: &TestStore, id: i64) -> Vec<ConsentEvent> {
    store.consent_events(id).await.unwrap()
}

pub fn new_post(subject: &str, body: &str) -> NewPost {
    NewPost {
        subject: PostSubject::parse(subject).unwrap(),
        body_markdown: tidings::domain::post::PostBody::parse(body).unwrap(),
    }
}

/// Queues a post; returns its id.
pub async fn enqueue(store: &TestStore, subject: &str) -> i64 {
    store
        .insert_post(&new_post(subject, &format!("{subject}: the body.")), t0())
        .await
        .unwrap()
        .id
}

pub fn issue(slot_key: &str, mode: ScheduleMode, now: DateTime<Utc>) -> NewIssue {
    NewIssue {
        slot_key: slot_key.to_owned(),
        slot_at: None,
        mode,
        now,
    }
}

/// Creates a broadcast issue for `slot_key`, which must be created.
pub async fn broadcast(store: &TestStore, slot_key: &str, now: DateTime<Utc>) -> IssueCreated {
    match store
        .create_issue(issue(slot_key, ScheduleMode::Broadcast, now))
        .await
        .unwrap()
    {
        CreateIssueOutcome::Created(created) => created,
        other => panic!("no issue for {slot_key}: {other:?}"),
    }
}

pub const LEASE_SECONDS: i64 = 30;

/// Claims up to `limit` due deliveries for `owner`, leased for 30 s.
pub async fn claim(
    store: &TestStore,
    owner: &str,
    now: DateTime<Utc>,
    limit: u32,
) -> Vec<ClaimedDelivery> {
    store
        .claim_deliveries(ClaimRequest {
            owner: owner.to_owned(),
            now,
            lease_until: now + Duration::seconds(LEASE_SECONDS),
            limit,
        })
        .await
        .unwrap()
}

/// The confirmation ids queued so far for `subscriber_id`, oldest first,
/// as the worker finds them: by claiming what is due at `now`. Everything
/// claimed is handed back, so the outbox is as it was.
pub async fn confirmations_for(
    store: &TestStore,
    subscriber_id: i64,
    now: DateTime<Utc>,
) -> Vec<i64> {
    let claimed = claim(store, "peek", now, 10_000).await;
    let ids: Vec<i64> = claimed.iter().map(|delivery| delivery.id).collect();
    assert_eq!(
        store.release_claims("peek", &ids).await.unwrap(),
        ids.len() as u64
    );
    let mut confirmations: Vec<i64> = claimed
        .iter()
        .filter(|delivery| delivery.subscriber_id == subscriber_id)
        .filter_map(|delivery| match delivery.payload {
            DeliveryPayload::Confirmation { confirmation_id } => Some(confirmation_id),
            DeliveryPayload::Issue { .. } => None,
        })
        .collect();
    confirmations.sort();
    confirmations
}

/// The one confirmation queued for `subscriber_id`.
pub async fn only_confirmation(store: &TestStore, subscriber_id: i64) -> i64 {
    let ids = confirmations_for(store, subscriber_id, t0() + Duration::days(1)).await;
    assert_eq!(ids.len(), 1, "confirmations for {subscriber_id}: {ids:?}");
    ids[0]
}

pub fn sent(id: i64, at: DateTime<Utc>) -> DeliveryOutcome {
    DeliveryOutcome::Sent {
        id,
        reply: "250 2.0.0 Ok: queued".into(),
        at,
    }
}

pub fn hard_bounce(delivery: &ClaimedDelivery, at: DateTime<Utc>) -> DeliveryOutcome {
    DeliveryOutcome::Failed {
        id: delivery.id,
        subscriber_id: delivery.subscriber_id,
        error: "550 5.1.1 No such user".into(),
        hard_bounce: true,
        at,
    }
}
