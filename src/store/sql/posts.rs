//! The post queue, on either backend. Every edit first takes the dialect's
//! queue lock, if it has one, and refuses a post that has been sent.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Type};

use super::{Dialect, SqlBackend};
use crate::domain::post::{
    self, NewPost, Post, PostChanges, PostCounts, PostEdit, PostForRender, PostListing, PostSubject,
};
use crate::store::rows::{self, PostListingRow, PostRow, StatusCount, POST_COLUMNS};
use crate::store::{PostStore, StoreError, StoreResult};

/// Runs the dialect's queue lock, where it has one.
async fn lock_queue<DB: Dialect>(connection: &mut DB::Connection) -> StoreResult<()>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    if let Some(lock) = DB::LOCK_POST_QUEUE {
        sqlx::query(lock).execute(&mut *connection).await?;
    }
    Ok(())
}

/// A post about to be edited, locked where the dialect locks rows.
async fn post_for_update<DB: Dialect>(
    connection: &mut DB::Connection,
    post_id: i64,
) -> StoreResult<Option<Post>>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> PostRow<DB::Time>: FromRow<'r, DB::Row>,
{
    let row: Option<PostRow<DB::Time>> = sqlx::query_as(&format!(
        "SELECT {POST_COLUMNS} FROM posts WHERE id = $1{}",
        DB::FOR_UPDATE
    ))
    .bind(post_id)
    .fetch_optional(&mut *connection)
    .await?;
    row.map(Post::try_from).transpose()
}

#[async_trait]
impl<B: SqlBackend> PostStore for B
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'r> i64: Decode<'r, B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<&'q str>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> <B::Db as Dialect>::Time: Encode<'q, B::Db> + Type<B::Db>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
    for<'r> PostRow<<B::Db as Dialect>::Time>: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> PostListingRow<<B::Db as Dialect>::Time>: FromRow<'r, <B::Db as Database>::Row>,
    for<'r> StatusCount: FromRow<'r, <B::Db as Database>::Row>,
{
    async fn seed_posts_if_empty(
        &self,
        posts: &[NewPost],
        now: DateTime<Utc>,
    ) -> StoreResult<usize> {
        let mut tx = self.write().await?;
        lock_queue::<B::Db>(&mut tx).await?;
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM posts")
            .fetch_one(&mut *tx)
            .await?;
        if existing > 0 {
            B::commit(tx).await?;
            return Ok(0);
        }
        for (position, post) in (1_i64..).zip(posts) {
            sqlx::query(
                "INSERT INTO posts (subject, body_markdown, position, status, created_at) \
                 VALUES ($1, $2, $3, 'queued', $4)",
            )
            .bind(post.subject.as_str())
            .bind(post.body_markdown.as_str())
            .bind(position)
            .bind(<B::Db as Dialect>::Time::from(now))
            .execute(&mut *tx)
            .await?;
        }
        B::commit(tx).await?;
        Ok(posts.len())
    }

    async fn insert_post(&self, post: &NewPost, now: DateTime<Utc>) -> StoreResult<Post> {
        let mut tx = self.write().await?;
        lock_queue::<B::Db>(&mut tx).await?;
        let row: PostRow<<B::Db as Dialect>::Time> = sqlx::query_as(&format!(
            "INSERT INTO posts (subject, body_markdown, position, status, created_at) \
             SELECT $1, $2, COALESCE(MAX(position), 0) + 1, 'queued', $3 FROM posts \
             RETURNING {POST_COLUMNS}"
        ))
        .bind(post.subject.as_str())
        .bind(post.body_markdown.as_str())
        .bind(<B::Db as Dialect>::Time::from(now))
        .fetch_one(&mut *tx)
        .await?;
        B::commit(tx).await?;
        Post::try_from(row)
    }

    async fn list_posts(&self) -> StoreResult<Vec<Post>> {
        let rows: Vec<PostRow<<B::Db as Dialect>::Time>> = sqlx::query_as(&format!(
            "SELECT {POST_COLUMNS} FROM posts ORDER BY position, id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(Post::try_from).collect()
    }

    async fn list_post_listings(&self) -> StoreResult<Vec<PostListing>> {
        // Each sent post's issue is one look-up in issues_by_post (0007):
        // the broadcast that names it, else the sequence issue made at the
        // instant it was first sent, which wrote that instant as its sent_at.
        let rows: Vec<PostListingRow<<B::Db as Dialect>::Time>> = sqlx::query_as(
            "SELECT p.id, p.subject, p.position, p.status, p.sent_at, \
             CASE WHEN p.status = 'sent' THEN COALESCE( \
             (SELECT MIN(i.id) FROM issues i WHERE i.post_id = p.id), \
             (SELECT MIN(i.id) FROM issues i WHERE i.post_id IS NULL AND i.created_at = p.sent_at) \
             ) END AS issue_id \
             FROM posts p ORDER BY p.position, p.id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(PostListing::try_from).collect()
    }

    async fn get_post(&self, post_id: i64) -> StoreResult<Option<Post>> {
        let row: Option<PostRow<<B::Db as Dialect>::Time>> =
            sqlx::query_as(&format!("SELECT {POST_COLUMNS} FROM posts WHERE id = $1"))
                .bind(post_id)
                .fetch_optional(self.pool())
                .await?;
        row.map(Post::try_from).transpose()
    }

    async fn post_for_render(&self, post_id: i64) -> StoreResult<Option<PostForRender>> {
        let Some(post) = self.get_post(post_id).await? else {
            return Ok(None);
        };
        let ordinal: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM posts WHERE position < $1 OR (position = $1 AND id <= $2)",
        )
        .bind(post.position)
        .bind(post.id)
        .fetch_one(self.pool())
        .await?;
        Ok(Some(PostForRender { post, ordinal }))
    }

    async fn update_post(&self, post_id: i64, changes: PostChanges) -> StoreResult<PostEdit> {
        let mut tx = self.write().await?;
        lock_queue::<B::Db>(&mut tx).await?;
        let found = post_for_update::<B::Db>(&mut tx, post_id).await?;
        if let Err(answer) = post::check_editable(found.as_ref()) {
            B::commit(tx).await?;
            return Ok(answer);
        }
        sqlx::query(
            "UPDATE posts SET subject = COALESCE($1, subject), \
             body_markdown = COALESCE($2, body_markdown) WHERE id = $3",
        )
        .bind(changes.subject.as_ref().map(PostSubject::as_str))
        .bind(changes.body_markdown.as_deref())
        .bind(post_id)
        .execute(&mut *tx)
        .await?;
        if let Some(place) = changes.position {
            // Sent posts keep their places; the queue follows them.
            let after_sent: i64 = sqlx::query_scalar(
                "SELECT COALESCE(MAX(position), 0) FROM posts WHERE status = 'sent'",
            )
            .fetch_one(&mut *tx)
            .await?;
            let others: Vec<i64> = sqlx::query_scalar(&format!(
                "SELECT id FROM posts WHERE status = 'queued' AND id <> $1 ORDER BY position, id{}",
                <B::Db as Dialect>::FOR_UPDATE
            ))
            .bind(post_id)
            .fetch_all(&mut *tx)
            .await?;
            for (position, id) in
                (after_sent + 1..).zip(post::queue_with_move(others, post_id, place))
            {
                sqlx::query("UPDATE posts SET position = $1 WHERE id = $2")
                    .bind(position)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let updated = post_for_update::<B::Db>(&mut tx, post_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("post vanished during update".into()))?;
        B::commit(tx).await?;
        Ok(PostEdit::Updated(updated))
    }

    async fn delete_post(&self, post_id: i64) -> StoreResult<PostEdit> {
        let mut tx = self.write().await?;
        lock_queue::<B::Db>(&mut tx).await?;
        let found = post_for_update::<B::Db>(&mut tx, post_id).await?;
        let answer = match post::check_editable(found.as_ref()) {
            Err(answer) => answer,
            Ok(()) => {
                sqlx::query("DELETE FROM posts WHERE id = $1")
                    .bind(post_id)
                    .execute(&mut *tx)
                    .await?;
                PostEdit::Deleted
            }
        };
        B::commit(tx).await?;
        Ok(answer)
    }

    async fn post_counts(&self) -> StoreResult<PostCounts> {
        let counts: Vec<StatusCount> =
            sqlx::query_as("SELECT status, COUNT(*) AS count FROM posts GROUP BY status")
                .fetch_all(self.pool())
                .await?;
        rows::post_counts(counts)
    }
}
