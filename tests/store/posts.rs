//! The post queue: new posts at the end, edits, moves, deletes, and sent
//! posts that no longer change.

use tidings::domain::issue::{CreateIssueOutcome, ScheduleMode};
use tidings::domain::post::{first_series, PostChanges, PostCounts, PostEdit, PostStatus};
use tidings::domain::subscriber::SubscriberStatus;

use crate::on_both_backends;
use crate::support::{
    add, broadcast, enqueue, issue, minutes, new_post, store, t0, Backend, TestStore,
};

on_both_backends!(
    new_posts_join_the_end_of_the_queue,
    a_queued_post_can_be_edited_field_by_field,
    a_moved_post_lands_at_its_place_clamped_to_the_queue,
    a_move_places_a_post_among_the_unsent_ones,
    a_deleted_post_leaves_the_queue,
    a_sent_post_refuses_edits_and_deletes,
    the_first_series_is_seeded_only_into_an_empty_queue,
    listings_follow_the_queue_and_name_each_sent_posts_issue,
);

async fn subjects(store: &TestStore) -> Vec<String> {
    store
        .list_posts()
        .await
        .unwrap()
        .into_iter()
        .map(|post| post.subject)
        .collect()
}

fn place(position: i64) -> PostChanges {
    PostChanges {
        position: Some(position),
        ..Default::default()
    }
}

async fn move_to(store: &TestStore, id: i64, position: i64) {
    let edit = store.update_post(id, place(position)).await.unwrap();
    assert!(matches!(edit, PostEdit::Updated(_)), "{edit:?}");
}

async fn new_posts_join_the_end_of_the_queue(backend: Backend) {
    let store = store(backend).await;
    assert!(store.list_posts().await.unwrap().is_empty());
    assert_eq!(store.post_counts().await.unwrap(), PostCounts::default());
    let mut ids = Vec::new();
    for (n, subject) in ["First", "Second", "Third"].into_iter().enumerate() {
        let post = store
            .insert_post(
                &new_post(subject, &format!("Body {n}\n")),
                t0() + minutes(n as i64),
            )
            .await
            .unwrap();
        assert_eq!(post.subject, subject);
        assert_eq!(post.body_markdown, format!("Body {n}\n"));
        assert_eq!(post.position, n as i64 + 1);
        assert_eq!(post.status, PostStatus::Queued);
        assert_eq!(post.created_at, t0() + minutes(n as i64));
        assert_eq!(post.sent_at, None);
        ids.push(post.id);
    }
    assert_eq!(subjects(&store).await, ["First", "Second", "Third"]);
    let second = store.get_post(ids[1]).await.unwrap().unwrap();
    assert_eq!(second.subject, "Second");
    assert_eq!(second.position, 2);
    assert!(store.get_post(ids[2] + 100).await.unwrap().is_none());
    assert_eq!(
        store.post_counts().await.unwrap(),
        PostCounts { queued: 3, sent: 0 }
    );
}

async fn a_queued_post_can_be_edited_field_by_field(backend: Backend) {
    let store = store(backend).await;
    let id = enqueue(&store, "Draft").await;
    let subject_only = PostChanges {
        subject: Some(tidings::domain::post::PostSubject::parse("Final").unwrap()),
        ..Default::default()
    };
    let PostEdit::Updated(post) = store.update_post(id, subject_only).await.unwrap() else {
        panic!("a queued post can change");
    };
    assert_eq!(post.subject, "Final");
    assert_eq!(post.body_markdown, "Draft: the body.", "the body is kept");
    assert_eq!(post.position, 1);
    let body_only = PostChanges {
        body_markdown: Some(tidings::domain::post::PostBody::parse("New *words*.").unwrap()),
        ..Default::default()
    };
    let PostEdit::Updated(post) = store.update_post(id, body_only).await.unwrap() else {
        panic!("a queued post can change");
    };
    assert_eq!(post.subject, "Final", "the subject is kept");
    assert_eq!(post.body_markdown, "New *words*.");
    let stored = store.get_post(id).await.unwrap().unwrap();
    assert_eq!(
        (stored.subject.as_str(), stored.body_markdown.as_str()),
        ("Final", "New *words*.")
    );
    assert!(matches!(
        store
            .update_post(id + 1, PostChanges::default())
            .await
            .unwrap(),
        PostEdit::NotFound
    ));
}

async fn a_moved_post_lands_at_its_place_clamped_to_the_queue(backend: Backend) {
    let store = store(backend).await;
    let a = enqueue(&store, "A").await;
    let _b = enqueue(&store, "B").await;
    let c = enqueue(&store, "C").await;
    let d = enqueue(&store, "D").await;

    move_to(&store, d, 1).await;
    assert_eq!(subjects(&store).await, ["D", "A", "B", "C"]);
    move_to(&store, d, 3).await;
    assert_eq!(subjects(&store).await, ["A", "B", "D", "C"]);
    move_to(&store, a, 99).await;
    assert_eq!(subjects(&store).await, ["B", "D", "C", "A"], "past the end");
    move_to(&store, c, 0).await;
    assert_eq!(
        subjects(&store).await,
        ["C", "B", "D", "A"],
        "before the start"
    );
    move_to(&store, c, 1).await;
    assert_eq!(subjects(&store).await, ["C", "B", "D", "A"], "where it is");

    // Positions stay 1..n: a new post goes last, after every move.
    let positions: Vec<i64> = store
        .list_posts()
        .await
        .unwrap()
        .iter()
        .map(|post| post.position)
        .collect();
    assert_eq!(positions, [1, 2, 3, 4]);
    enqueue(&store, "E").await;
    assert_eq!(subjects(&store).await, ["C", "B", "D", "A", "E"]);
    let PostEdit::Updated(moved) = store.update_post(a, place(2)).await.unwrap() else {
        panic!("a queued post moves");
    };
    assert_eq!(moved.position, 2, "the answer has the new place");
}

/// Places count among the posts not sent yet: place 1 is the next to go.
async fn a_move_places_a_post_among_the_unsent_ones(backend: Backend) {
    let store = store(backend).await;
    add(&store, "reader@example.com", SubscriberStatus::Confirmed).await;
    enqueue(&store, "Sent one").await;
    enqueue(&store, "Sent two").await;
    enqueue(&store, "Next").await;
    let last = enqueue(&store, "Urgent").await;
    broadcast(&store, "week-1", t0()).await;
    broadcast(&store, "week-2", t0()).await;

    move_to(&store, last, 1).await;
    assert_eq!(
        subjects(&store).await,
        ["Sent one", "Sent two", "Urgent", "Next"]
    );
    let created = broadcast(&store, "week-3", t0()).await;
    assert_eq!(created.post_id, Some(last), "the moved post goes next");
}

async fn a_deleted_post_leaves_the_queue(backend: Backend) {
    let store = store(backend).await;
    let keep = enqueue(&store, "Keep").await;
    let drop = enqueue(&store, "Drop").await;
    enqueue(&store, "Also keep").await;
    assert!(matches!(
        store.delete_post(drop).await.unwrap(),
        PostEdit::Deleted
    ));
    assert!(store.get_post(drop).await.unwrap().is_none());
    assert_eq!(subjects(&store).await, ["Keep", "Also keep"]);
    assert!(matches!(
        store.delete_post(drop).await.unwrap(),
        PostEdit::NotFound
    ));
    assert!(matches!(
        store.update_post(drop, place(1)).await.unwrap(),
        PostEdit::NotFound
    ));
    assert!(store.get_post(keep).await.unwrap().is_some());
    assert_eq!(store.post_counts().await.unwrap().queued, 2);
}

async fn a_sent_post_refuses_edits_and_deletes(backend: Backend) {
    let store = store(backend).await;
    add(&store, "reader@example.com", SubscriberStatus::Confirmed).await;
    let id = enqueue(&store, "Going out").await;
    let waiting = enqueue(&store, "Waiting").await;
    let sent_at = t0() + minutes(30);
    broadcast(&store, "week-1", sent_at).await;

    let post = store.get_post(id).await.unwrap().unwrap();
    assert_eq!(post.status, PostStatus::Sent);
    assert_eq!(post.sent_at, Some(sent_at));
    let edits = [
        PostChanges {
            subject: Some(tidings::domain::post::PostSubject::parse("Too late").unwrap()),
            ..Default::default()
        },
        PostChanges {
            body_markdown: Some(
                tidings::domain::post::PostBody::parse("Rewritten history").unwrap(),
            ),
            ..Default::default()
        },
        place(2),
    ];
    for changes in edits {
        let answer = store.update_post(id, changes).await.unwrap();
        assert!(matches!(answer, PostEdit::AlreadySent), "{answer:?}");
    }
    assert!(matches!(
        store.delete_post(id).await.unwrap(),
        PostEdit::AlreadySent
    ));
    let after = store.get_post(id).await.unwrap().unwrap();
    assert_eq!(after.subject, "Going out");
    assert_eq!(after.body_markdown, "Going out: the body.");
    assert_eq!(after.position, post.position);
    assert_eq!(
        store.post_counts().await.unwrap(),
        PostCounts { queued: 1, sent: 1 }
    );
    // What has not gone out yet still can change.
    assert!(matches!(
        store.delete_post(waiting).await.unwrap(),
        PostEdit::Deleted
    ));
}

async fn the_first_series_is_seeded_only_into_an_empty_queue(backend: Backend) {
    let store = store(backend).await;
    let series = first_series();
    assert_eq!(store.seed_posts_if_empty(&series, t0()).await.unwrap(), 10);
    assert_eq!(store.seed_posts_if_empty(&series, t0()).await.unwrap(), 0);
    let posts = store.list_posts().await.unwrap();
    assert_eq!(posts.len(), 10);
    for (n, post) in posts.iter().enumerate() {
        assert_eq!(post.subject, series[n].subject.as_str());
        assert_eq!(post.position, n as i64 + 1);
    }
    // Each renders with its rank in the series, which follows moves.
    let tenth = posts[9].id;
    let render = store.post_for_render(tenth).await.unwrap().unwrap();
    assert_eq!(render.ordinal, 10);
    move_to(&store, tenth, 1).await;
    let render = store.post_for_render(tenth).await.unwrap().unwrap();
    assert_eq!(render.ordinal, 1);
    assert_eq!(render.post.id, tenth);
    assert_eq!(
        store
            .post_for_render(posts[0].id)
            .await
            .unwrap()
            .unwrap()
            .ordinal,
        2
    );
    assert!(store.post_for_render(tenth + 100).await.unwrap().is_none());

    // An install that has its own posts gets no tips.
    let other = crate::support::store(backend).await;
    enqueue(&other, "Mine").await;
    assert_eq!(other.seed_posts_if_empty(&series, t0()).await.unwrap(), 0);
    assert_eq!(subjects(&other).await, ["Mine"]);
}

async fn listings_follow_the_queue_and_name_each_sent_posts_issue(backend: Backend) {
    let store = store(backend).await;
    add(&store, "reader@example.com", SubscriberStatus::Confirmed).await;
    let first = enqueue(&store, "First").await;
    let second = enqueue(&store, "Second").await;
    let third = enqueue(&store, "Third").await;
    let fourth = enqueue(&store, "Fourth").await;
    move_to(&store, fourth, 3).await;
    let week_1 = broadcast(&store, "week-1", t0() + minutes(5)).await;
    // Sequence mode names no post on the issue: the reader gets the next
    // one they have not had, which is marked sent at the issue's instant.
    let sequence = issue("week-2", ScheduleMode::Sequence, t0() + minutes(10));
    let CreateIssueOutcome::Created(week_2) = store.create_issue(sequence).await.unwrap() else {
        panic!("a sequence issue");
    };
    // A broadcast after it names its own post, the next in the queue.
    let week_3 = broadcast(&store, "week-3", t0() + minutes(15)).await;

    let listings = store.list_post_listings().await.unwrap();
    let seen: Vec<_> = listings
        .iter()
        .map(|post| (post.id, post.subject.as_str(), post.status, post.issue_id))
        .collect();
    assert_eq!(
        seen,
        [
            (first, "First", PostStatus::Sent, Some(week_1.issue_id)),
            (second, "Second", PostStatus::Sent, Some(week_2.issue_id)),
            (fourth, "Fourth", PostStatus::Sent, Some(week_3.issue_id)),
            (third, "Third", PostStatus::Queued, None),
        ]
    );
    assert_eq!(listings[0].sent_at, Some(t0() + minutes(5)));
    assert_eq!(listings[1].sent_at, Some(t0() + minutes(10)));
    assert_eq!(listings[3].sent_at, None);
    assert_eq!(listings[3].position, 4);
}
