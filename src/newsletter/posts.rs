//! The post editor's part of the service: moving a post up or down the
//! queue, previews of saved and unsaved posts, and test emails.

use super::{Newsletter, NewsletterError, NewsletterResult};
use crate::delivery::compose::{ComposeError, Composed};
use crate::domain::editor::{place_after_move, Direction, Draft, MoveRefused, TestEmailOutcome};
use crate::domain::masked::masked_address;
use crate::domain::post::{PostChanges, PostEdit, PostStatus};
use crate::domain::subscriber::EmailAddress;
use crate::mailer::SendResult;
use crate::render::RenderedEmail;

/// What asking to move a post one place did.
#[derive(Debug)]
pub enum MoveOutcome {
    /// The post is now at this 1-based place in the queue.
    Moved {
        place: i64,
    },
    Refused(MoveRefused),
    NotFound,
    AlreadySent,
}

fn compose_error(post_id: i64, error: ComposeError) -> NewsletterError {
    match error {
        ComposeError::MissingPost(_) => NewsletterError::NoSuchPost(post_id),
        ComposeError::Store(error) => NewsletterError::Store(error),
        error => NewsletterError::Render(error),
    }
}

impl Newsletter {
    /// Moves a queued post one place towards the front or the back.
    pub async fn move_post(
        &self,
        post_id: i64,
        direction: Direction,
    ) -> NewsletterResult<MoveOutcome> {
        let posts = self.store.list_post_listings().await?;
        match posts.iter().find(|post| post.id == post_id) {
            None => return Ok(MoveOutcome::NotFound),
            Some(post) if post.status == PostStatus::Sent => return Ok(MoveOutcome::AlreadySent),
            Some(_) => {}
        }
        let queue: Vec<i64> = posts
            .iter()
            .filter(|post| post.status == PostStatus::Queued)
            .map(|post| post.id)
            .collect();
        let place = match place_after_move(&queue, post_id, direction) {
            Ok(place) => place,
            Err(refused) => return Ok(MoveOutcome::Refused(refused)),
        };
        let changes = PostChanges {
            position: Some(place),
            ..Default::default()
        };
        // The store re-reads the queue under its lock: a move made by
        // someone else meanwhile is kept, and this post lands at `place`.
        Ok(match self.store.update_post(post_id, changes).await? {
            PostEdit::Updated(_) => MoveOutcome::Moved { place },
            PostEdit::AlreadySent => MoveOutcome::AlreadySent,
            PostEdit::NotFound | PostEdit::Deleted => MoveOutcome::NotFound,
        })
    }

    /// Both parts of a saved post's email, as a subscriber would get them.
    pub async fn saved_preview(&self, post_id: i64) -> NewsletterResult<RenderedEmail> {
        self.composer
            .saved_preview(post_id)
            .await
            .map_err(|error| compose_error(post_id, error))
    }

    /// Both parts of the email the editor's form would make. `post_id` is
    /// the post being edited, whose place in the series numbers it; a new
    /// one would join the end.
    pub async fn draft_preview(
        &self,
        draft: &Draft,
        post_id: Option<i64>,
    ) -> NewsletterResult<RenderedEmail> {
        let saved = match post_id {
            Some(id) => self.store.post_for_render(id).await?,
            None => None,
        };
        let ordinal = match saved {
            Some(saved) => saved.ordinal,
            None => {
                let counts = self.store.post_counts().await?;
                counts.queued + counts.sent + 1
            }
        };
        self.composer
            .draft_preview(draft, ordinal)
            .map_err(NewsletterError::Render)
    }

    /// Sends a saved post to one address at once, straight to the mailer
    /// (not through the outbox: it is wanted now, or not at all), as an
    /// issue would carry it, with "[Test]" before its subject. Its
    /// unsubscribe links name nobody (see `delivery::compose::preview`).
    pub async fn send_test(
        &self,
        post_id: i64,
        to: &EmailAddress,
    ) -> NewsletterResult<TestEmailOutcome> {
        let composed = self
            .composer
            .test_email(post_id, to)
            .await
            .map_err(|error| compose_error(post_id, error))?;
        let (envelope, bytes) = match composed {
            Composed::Email { envelope, bytes } => (envelope, bytes),
            Composed::Skip(reason) => return Ok(TestEmailOutcome::Refused { reply: reason }),
        };
        let stem = format!("test-{post_id}-{}", uuid::Uuid::new_v4());
        let outcome = match self.mailer.send(&envelope, &bytes, &stem).await {
            SendResult::Accepted { reply } => TestEmailOutcome::Sent { reply },
            SendResult::Permanent(reply) | SendResult::Transient(reply) => {
                TestEmailOutcome::Refused { reply }
            }
            SendResult::Unreachable(reason) => TestEmailOutcome::Unreachable { reason },
        };
        let to = masked_address(to.as_str());
        match &outcome {
            TestEmailOutcome::Sent { .. } => tracing::info!(post_id, %to, "sent a test email"),
            failed => tracing::warn!(post_id, %to, outcome = ?failed, "a test email was not sent"),
        }
        Ok(outcome)
    }
}
