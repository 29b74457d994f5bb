//! The post queue on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{begin, count_by_status, millis, SqliteStore, Tx};
use crate::domain::post::{
    self, NewPost, Post, PostChanges, PostCounts, PostEdit, PostForRender, PostSubject,
};
use crate::store::rows::{self, Millis, PostRow, POST_COLUMNS};
use crate::store::{PostStore, StoreError, StoreResult};

type Row = PostRow<Millis>;

/// Rewrites the positions of unsent posts so `moved` sits at `place`
/// (1-based among unsent posts), after every sent post.
async fn reorder_queue(tx: &mut Tx<'_>, moved: i64, place: i64) -> StoreResult<()> {
    let after_sent: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM posts WHERE status = 'sent'")
            .fetch_one(&mut **tx)
            .await?;
    let others: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM posts WHERE status = 'queued' AND id != ? ORDER BY position, id",
    )
    .bind(moved)
    .fetch_all(&mut **tx)
    .await?;
    let queued = post::queue_with_move(others, moved, place);
    for (offset, id) in queued.iter().enumerate() {
        sqlx::query("UPDATE posts SET position = ? WHERE id = ?")
            .bind(after_sent + offset as i64 + 1)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn fetch_post(tx: &mut Tx<'_>, post_id: i64) -> StoreResult<Option<Post>> {
    let row: Option<Row> =
        sqlx::query_as(&format!("SELECT {POST_COLUMNS} FROM posts WHERE id = ?"))
            .bind(post_id)
            .fetch_optional(&mut **tx)
            .await?;
    row.map(Post::try_from).transpose()
}

#[async_trait]
impl PostStore for SqliteStore {
    async fn seed_posts_if_empty(
        &self,
        posts: &[NewPost],
        now: DateTime<Utc>,
    ) -> StoreResult<usize> {
        let mut writer = self.lock().await;
        let mut tx = begin(&mut writer).await?;
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM posts")
            .fetch_one(&mut *tx)
            .await?;
        if existing > 0 {
            return Ok(0);
        }
        for (index, post) in posts.iter().enumerate() {
            sqlx::query(
                "INSERT INTO posts (subject, body_markdown, position, status, created_at) \
                 VALUES (?, ?, ?, 'queued', ?)",
            )
            .bind(post.subject.as_str())
            .bind(&post.body_markdown)
            .bind(index as i64 + 1)
            .bind(millis(now))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(posts.len())
    }

    async fn insert_post(&self, post: &NewPost, now: DateTime<Utc>) -> StoreResult<Post> {
        let mut writer = self.lock().await;
        let mut tx = begin(&mut writer).await?;
        let row: Row = sqlx::query_as(&format!(
            "INSERT INTO posts (subject, body_markdown, position, status, created_at) \
             SELECT ?, ?, COALESCE(MAX(position), 0) + 1, 'queued', ? FROM posts \
             RETURNING {POST_COLUMNS}"
        ))
        .bind(post.subject.as_str())
        .bind(&post.body_markdown)
        .bind(millis(now))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Post::try_from(row)
    }

    async fn list_posts(&self) -> StoreResult<Vec<Post>> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {POST_COLUMNS} FROM posts ORDER BY position, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Post::try_from).collect()
    }

    async fn get_post(&self, post_id: i64) -> StoreResult<Option<Post>> {
        let row: Option<Row> =
            sqlx::query_as(&format!("SELECT {POST_COLUMNS} FROM posts WHERE id = ?"))
                .bind(post_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(Post::try_from).transpose()
    }

    async fn post_for_render(&self, post_id: i64) -> StoreResult<Option<PostForRender>> {
        let Some(post) = self.get_post(post_id).await? else {
            return Ok(None);
        };
        let ordinal: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM posts WHERE position < ?1 OR (position = ?1 AND id <= ?2)",
        )
        .bind(post.position)
        .bind(post.id)
        .fetch_one(&self.pool)
        .await?;
        Ok(Some(PostForRender { post, ordinal }))
    }

    async fn update_post(&self, post_id: i64, changes: PostChanges) -> StoreResult<PostEdit> {
        let mut writer = self.lock().await;
        let mut tx = begin(&mut writer).await?;
        if let Err(answer) = post::check_editable(fetch_post(&mut tx, post_id).await?.as_ref()) {
            return Ok(answer);
        }
        sqlx::query(
            "UPDATE posts SET subject = COALESCE(?, subject), body_markdown = COALESCE(?, body_markdown) \
             WHERE id = ?",
        )
        .bind(changes.subject.as_ref().map(PostSubject::as_str))
        .bind(changes.body_markdown.as_deref())
        .bind(post_id)
        .execute(&mut *tx)
        .await?;
        if let Some(place) = changes.position {
            reorder_queue(&mut tx, post_id, place).await?;
        }
        let updated = fetch_post(&mut tx, post_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("post vanished during update".into()))?;
        tx.commit().await?;
        Ok(PostEdit::Updated(updated))
    }

    async fn delete_post(&self, post_id: i64) -> StoreResult<PostEdit> {
        let mut writer = self.lock().await;
        let mut tx = begin(&mut writer).await?;
        if let Err(answer) = post::check_editable(fetch_post(&mut tx, post_id).await?.as_ref()) {
            return Ok(answer);
        }
        sqlx::query("DELETE FROM posts WHERE id = ?")
            .bind(post_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(PostEdit::Deleted)
    }

    async fn post_counts(&self) -> StoreResult<PostCounts> {
        let sql = "SELECT status, COUNT(*) AS count FROM posts GROUP BY status";
        rows::post_counts(count_by_status(&self.pool, sql, None).await?)
    }
}
