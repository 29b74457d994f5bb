//! The admin's subscriber pages in the store: prefix search by index
//! ranges, a subscriber's record and emails, which addresses are listed,
//! an unsubscribe by the operator, and erasure.

use std::collections::HashSet;

use tidings::domain::consent::ConsentKind;
use tidings::domain::delivery::DeliveryStatus;
use tidings::domain::erasure::EraseOutcome;
use tidings::domain::subscriber::{
    AddOutcome, SubscriberQuery, SubscriberStatus, UnsubscribeOutcome,
};
use tidings::domain::subscriber_record::SentEmail;
use tidings::domain::subscriber_search::{SearchCursor, SearchTerm, SubscriberSearch};

use crate::database::mentions;
use crate::on_both_backends;
use crate::support::{
    add, broadcast, claim, consent, enqueue, events, minutes, operator, sent, signup, store,
    subscribers, t0, Backend, TestStore,
};

on_both_backends!(
    a_search_matches_the_start_of_an_address_a_name_or_a_domain,
    a_search_walks_every_hit_once_a_page_at_a_time,
    a_subscriber_has_a_record_and_a_list_of_emails_newest_first,
    listed_addresses_are_found_in_bulk,
    an_operator_unsubscribe_is_logged_as_theirs,
    erasure_leaves_no_personal_data_and_one_anonymous_event,
    the_consent_log_refuses_any_other_change,
);

async fn named(store: &TestStore, address: &str, name: &str, status: SubscriberStatus) -> i64 {
    match store
        .add_subscriber(operator(address, Some(name), status, t0()))
        .await
        .unwrap()
    {
        AddOutcome::Added { id, .. } => id,
        AddOutcome::AlreadyExists => panic!("{address} is on the list"),
    }
}

fn search(text: &str, status: Option<SubscriberStatus>) -> SubscriberSearch {
    SubscriberSearch {
        term: SearchTerm::parse(text).unwrap().unwrap(),
        status,
        after: None,
        limit: 50,
    }
}

async fn found(store: &TestStore, text: &str, status: Option<SubscriberStatus>) -> Vec<i64> {
    store
        .search_subscribers(&search(text, status))
        .await
        .unwrap()
        .iter()
        .map(|hit| hit.subscriber.id)
        .collect()
}

async fn a_search_matches_the_start_of_an_address_a_name_or_a_domain(backend: Backend) {
    let store = store(backend).await;
    use SubscriberStatus::*;
    let ada = named(&store, "ada@example.com", "Ada Lovelace", Confirmed).await;
    let adam = named(&store, "adam@example.org", "Adam Smith", Pending).await;
    let zoe = named(&store, "zoe@lab.example.net", "Zoë Adair", Bounced).await;
    let percent = named(&store, "a_b%c@example.com", "Under Score", Confirmed).await;
    let plain = add(&store, "plain@example.com", Unsubscribed).await;

    assert_eq!(
        found(&store, "ADA", None).await,
        [ada, adam],
        "address prefix"
    );
    assert_eq!(found(&store, "zoë a", None).await, [zoe], "name prefix");
    assert_eq!(found(&store, "Adam S", None).await, [adam], "name");
    assert_eq!(
        found(&store, "ada", Some(Pending)).await,
        [adam],
        "filtered"
    );
    assert_eq!(found(&store, "lovelace", None).await, Vec::<i64>::new());
    assert_eq!(
        found(&store, "@EXAMPLE.c", None).await,
        [ada, percent, plain]
    );
    assert_eq!(found(&store, "@lab.", None).await, [zoe]);
    // `%` and `_` are themselves, not wildcards.
    assert_eq!(found(&store, "a_b%", None).await, [percent]);
    assert_eq!(found(&store, "a%", None).await, Vec::<i64>::new());
    // Found by the address, once, even though the name matches too.
    let twice = named(&store, "bo@example.com", "Bo", Confirmed).await;
    assert_eq!(found(&store, "bo", None).await, [twice]);
    // An erased record is nobody's.
    store
        .erase_subscriber(ada, "source=test", t0())
        .await
        .unwrap();
    assert_eq!(found(&store, "ada", None).await, [adam]);
    assert_eq!(found(&store, "erased", None).await, Vec::<i64>::new());
}

async fn a_search_walks_every_hit_once_a_page_at_a_time(backend: Backend) {
    let store = store(backend).await;
    let mut expected = HashSet::new();
    for n in 0..37 {
        let status = SubscriberStatus::ALL[n % 4];
        // Same names, so keys tie and the id decides.
        let id = named(&store, &format!("walk{n}@example.com"), "Walker", status).await;
        expected.insert(id);
        let id = named(&store, &format!("x{n}@example.com"), "Walker Two", status).await;
        expected.insert(id);
    }
    add(&store, "other@example.com", SubscriberStatus::Confirmed).await;
    let mut seen = Vec::new();
    let mut after: Option<SearchCursor> = None;
    loop {
        let page = store
            .search_subscribers(&SubscriberSearch {
                after: after.clone(),
                limit: 7,
                ..search("WALK", None)
            })
            .await
            .unwrap();
        seen.extend(page.iter().map(|hit| hit.subscriber.id));
        match page.last() {
            Some(last) if page.len() == 7 => after = Some(last.cursor()),
            _ => break,
        }
    }
    assert_eq!(seen.len(), expected.len(), "no hit twice");
    assert_eq!(seen.iter().copied().collect::<HashSet<_>>(), expected);
}

async fn a_subscriber_has_a_record_and_a_list_of_emails_newest_first(backend: Backend) {
    let store = store(backend).await;
    let outcome = store
        .signup(signup("reader@example.com", Some("Rea"), t0()))
        .await;
    let id = match outcome.unwrap() {
        tidings::domain::signup::SignupOutcome::ConfirmationQueued { subscriber_id } => {
            subscriber_id
        }
        other => panic!("{other:?}"),
    };
    let confirm = claim(&store, "w", t0(), 10).await;
    let link = match confirm[0].payload {
        tidings::domain::delivery::DeliveryPayload::Confirmation { confirmation_id } => {
            confirmation_id
        }
        _ => panic!("a confirmation"),
    };
    store
        .record_outcomes("w", &[sent(confirm[0].id, t0())])
        .await
        .unwrap();
    store
        .confirm(link, consent("192.0.2.9", "Browser/1"), t0() + minutes(1))
        .await
        .unwrap();
    for n in 0..3 {
        enqueue(&store, &format!("Tip {n}")).await;
        broadcast(&store, &format!("slot-{n}"), t0() + minutes(10 + n)).await;
    }
    let record = store.subscriber_record(id).await.unwrap().unwrap();
    assert_eq!(record.email, "reader@example.com");
    assert_eq!(record.name.as_deref(), Some("Rea"));
    assert_eq!(record.status, SubscriberStatus::Confirmed);
    assert_eq!(record.confirmed_at, Some(t0() + minutes(1)));
    assert_eq!(record.erased_at, None);
    assert!(store.subscriber_record(id + 100).await.unwrap().is_none());

    let all = store.subscriber_deliveries(id, None, 10).await.unwrap();
    let subjects: Vec<String> = all
        .iter()
        .map(|delivery| match &delivery.email {
            SentEmail::Issue { subject, .. } => subject.clone(),
            SentEmail::Confirmation => "confirmation".into(),
        })
        .collect();
    assert_eq!(subjects, ["Tip 2", "Tip 1", "Tip 0", "confirmation"]);
    assert_eq!(all[3].status, DeliveryStatus::Sent);
    assert_eq!(all[0].status, DeliveryStatus::Pending);
    // A page, then the rest below its last id.
    let first = store.subscriber_deliveries(id, None, 2).await.unwrap();
    let rest = store
        .subscriber_deliveries(id, Some(first[1].id), 10)
        .await
        .unwrap();
    assert_eq!(first.len() + rest.len(), 4);
    assert_eq!(rest[0].id, all[2].id);
}

async fn listed_addresses_are_found_in_bulk(backend: Backend) {
    let store = store(backend).await;
    add(&store, "one@example.com", SubscriberStatus::Confirmed).await;
    add(&store, "two@example.com", SubscriberStatus::Pending).await;
    let mut asked: Vec<String> = (0..1200).map(|n| format!("n{n}@example.com")).collect();
    asked.push("two@example.com".into());
    asked.push("one@example.com".into());
    let listed = store.existing_emails(&asked).await.unwrap();
    assert_eq!(
        listed,
        HashSet::from(["one@example.com".to_owned(), "two@example.com".to_owned()])
    );
    assert!(store.existing_emails(&[]).await.unwrap().is_empty());
}

async fn an_operator_unsubscribe_is_logged_as_theirs(backend: Backend) {
    let store = store(backend).await;
    let id = add(&store, "leaving@example.com", SubscriberStatus::Confirmed).await;
    let by = "source=admin by=editor@example.org";
    let at = t0() + minutes(3);
    let outcome = store.unsubscribe_by_operator(id, by, at).await.unwrap();
    assert_eq!(outcome, UnsubscribeOutcome::Unsubscribed);
    let log = events(&store, id).await;
    let last = log.last().unwrap();
    assert_eq!(last.kind, ConsentKind::Unsubscribe);
    assert_eq!(last.detail.as_deref(), Some(by));
    assert_eq!((last.ip.as_deref(), last.occurred_at), (None, at));
    let again = store.unsubscribe_by_operator(id, by, at).await.unwrap();
    assert_eq!(again, UnsubscribeOutcome::AlreadyUnsubscribed);
    assert_eq!(events(&store, id).await.len(), log.len(), "logged once");
    let nobody = store.unsubscribe_by_operator(id + 9, by, at).await.unwrap();
    assert_eq!(nobody, UnsubscribeOutcome::Unknown);
}

async fn erasure_leaves_no_personal_data_and_one_anonymous_event(backend: Backend) {
    let store = store(backend).await;
    let address = "erase.me@example.com";
    let (ip, agent) = ("198.51.100.77", "EraseAgent/9.1");
    let mut request = signup(address, Some("Ernestine Ease"), t0());
    request.consent = consent(ip, agent);
    store.signup(request).await.unwrap();
    let id = store.subscriber_by_email(address).await.unwrap().unwrap().0;
    let confirmation = claim(&store, "w", t0(), 10).await.remove(0);
    let link = match confirmation.payload {
        tidings::domain::delivery::DeliveryPayload::Confirmation { confirmation_id } => {
            confirmation_id
        }
        _ => panic!("a confirmation"),
    };
    let reply = tidings::domain::delivery::DeliveryOutcome::Sent {
        id: confirmation.id,
        reply: format!("250 2.0.0 Ok: queued for <{address}>"),
        at: t0(),
    };
    store.record_outcomes("w", &[reply]).await.unwrap();
    store
        .confirm(link, consent(ip, agent), t0() + minutes(1))
        .await
        .unwrap();
    let stays = add(&store, "stays@example.com", SubscriberStatus::Confirmed).await;
    enqueue(&store, "Tip").await;
    let issue = broadcast(&store, "slot", t0() + minutes(2)).await;
    let before = store.issue_progress(issue.issue_id).await.unwrap();
    let events_before = events(&store, id).await.len();

    let at = t0() + minutes(5);
    let by = "source=admin by=editor@example.org";
    let outcome = store.erase_subscriber(id, by, at).await.unwrap();
    assert_eq!(outcome, EraseOutcome::Erased);
    for trace in [address, "Ernestine", ip, agent] {
        assert_eq!(
            mentions(&store.url, trace).await,
            Vec::<String>::new(),
            "{trace}"
        );
    }
    let record = store.subscriber_record(id).await.unwrap().unwrap();
    assert_eq!(record.email, "erased:".to_owned() + &id.to_string());
    assert_eq!(record.name, None);
    assert_eq!(record.status, SubscriberStatus::Unsubscribed);
    assert_eq!(record.erased_at, Some(at));
    let log = events(&store, id).await;
    assert_eq!(
        log.len(),
        events_before + 1,
        "the events stay, and one more"
    );
    let kinds: Vec<&str> = log.iter().map(|event| event.kind.as_str()).collect();
    assert_eq!(kinds, ["signup", "confirm", "erased"]);
    let erased = log.last().unwrap();
    assert_eq!(
        (
            erased.ip.as_deref(),
            erased.user_agent.as_deref(),
            erased.detail.as_deref()
        ),
        (None, None, Some(by))
    );
    assert_eq!(erased.occurred_at, at);
    // Its deliveries stay for the issue's counts; the one still pending
    // is never sent.
    let after = store.issue_progress(issue.issue_id).await.unwrap();
    assert_eq!(after.total(), before.total());
    assert_eq!((after.pending, after.skipped), (before.pending - 1, 1));
    let due = claim(&store, "w2", at, 100).await;
    assert!(due.iter().all(|delivery| delivery.subscriber_id == stays));
    // Left out of the list; a second erasure changes nothing; the address
    // signs up again as someone new.
    let listed = subscribers(&store).await;
    assert!(listed.iter().all(|subscriber| subscriber.id != id));
    let everyone = store
        .list_subscribers(SubscriberQuery {
            status: Some(SubscriberStatus::Unsubscribed),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(everyone.is_empty());
    assert_eq!(store.subscriber_email(id).await.unwrap(), None);
    let again = store.erase_subscriber(id, by, at).await.unwrap();
    assert_eq!(again, EraseOutcome::AlreadyErased);
    assert_eq!(events(&store, id).await.len(), log.len());
    assert_eq!(
        store.erase_subscriber(id + 100, by, at).await.unwrap(),
        EraseOutcome::Unknown
    );
    store.signup(signup(address, None, at)).await.unwrap();
    let (new_id, status) = store.subscriber_by_email(address).await.unwrap().unwrap();
    assert_ne!(new_id, id);
    assert_eq!(status, SubscriberStatus::Pending);
}

async fn the_consent_log_refuses_any_other_change(backend: Backend) {
    let store = store(backend).await;
    let id = add(&store, "kept@example.com", SubscriberStatus::Confirmed).await;
    let url = store.url.clone();
    // Through a connection of its own, as anyone with the database might.
    let attempts = [
        "UPDATE consent_events SET kind = 'confirm'".to_owned(),
        "UPDATE consent_events SET ip = '192.0.2.1'".to_owned(),
        format!(
            "UPDATE consent_events SET email = 'erased:{}', detail = 'forged'",
            id
        ),
        "DELETE FROM consent_events".to_owned(),
    ];
    for statement in attempts {
        assert!(execute(&url, &statement).await.is_err(), "{statement}");
    }
    assert_eq!(events(&store, id).await.len(), 1);
    let mut traces = mentions(&url, "kept@example.com").await;
    traces.sort();
    assert_eq!(traces, ["consent_events.email", "subscribers.email"]);
}

async fn execute(url: &str, statement: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    if url.starts_with("sqlite:") {
        let mut connection = sqlx::SqliteConnection::connect(url).await?;
        sqlx::query(statement).execute(&mut connection).await?;
    } else {
        let mut connection = sqlx::PgConnection::connect(url).await?;
        sqlx::query(statement).execute(&mut connection).await?;
    }
    Ok(())
}
