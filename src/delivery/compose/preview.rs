//! What the admin sees before anyone gets a post: the preview of a saved
//! post, the preview of the editor's unsaved form, and a test email to one
//! address. All three are rendered by [`Composer::preview_email`], so they
//! cannot drift apart, and each is the issue email a subscriber gets, with
//! two differences that keep it from being anyone's: it greets a made-up
//! "Reader", and its unsubscribe links (in the footer and in
//! `List-Unsubscribe`) name subscriber 0. Neither backend ever numbers a
//! subscriber 0 (both count from 1), so following those links, or a mail
//! client's one-click unsubscribe, unsubscribes nobody: the page says the
//! link names no one on the list.

use lettre::message::MultiPart;

use super::{render_parts, render_post, Addressed, ComposeError, Composed, Composer, RenderedPost};
use crate::domain::editor::{test_subject, Draft};
use crate::domain::subscriber::EmailAddress;
use crate::render::RenderedEmail;

/// The subscriber id in a preview's and a test email's links: nobody's.
pub const NOBODY: i64 = 0;
/// Who a preview greets, to show where a reader's name goes.
const PREVIEW_NAME: &str = "Reader";

impl Composer {
    /// The issue HTML exactly as a subscriber sees it, for the admin preview.
    pub async fn preview(&self, post_id: i64) -> Result<String, ComposeError> {
        Ok(self.saved_preview(post_id).await?.html)
    }

    /// Both parts of a saved post's email. Rendered afresh and not cached:
    /// a queued post may still change, and another instance's cache would
    /// not hear of it.
    pub async fn saved_preview(&self, post_id: i64) -> Result<RenderedEmail, ComposeError> {
        let post = self.fresh_post(post_id).await?;
        self.preview_email(&post)
    }

    /// Both parts of the email the editor's form would make, saved or not;
    /// `ordinal` is the post's place in the series (its issue number).
    pub fn draft_preview(
        &self,
        draft: &Draft,
        ordinal: i64,
    ) -> Result<RenderedEmail, ComposeError> {
        let post = render_parts(draft.subject.clone(), &draft.body_markdown, ordinal);
        self.preview_email(&post)
    }

    /// A saved post as one email to `to`, as an issue would carry it (both
    /// parts, the same headers, signed when DKIM is on), with a subject
    /// that says it is a test.
    pub async fn test_email(
        &self,
        post_id: i64,
        to: &EmailAddress,
    ) -> Result<Composed, ComposeError> {
        let post = self.fresh_post(post_id).await?;
        let rendered = self.preview_email(&post)?;
        let message_id = uuid::Uuid::new_v4().to_string();
        let addressed = Addressed {
            email: to.as_str(),
            subscriber_id: NOBODY,
            message_id: &message_id,
        };
        let composed = self.build(
            addressed,
            None,
            &test_subject(&post.subject),
            MultiPart::alternative_plain_html(rendered.text, rendered.html),
            true,
        )?;
        Ok(self.signed(composed).await)
    }

    async fn fresh_post(&self, post_id: i64) -> Result<RenderedPost, ComposeError> {
        let found = self
            .store
            .post_for_render(post_id)
            .await?
            .ok_or(ComposeError::MissingPost(post_id))?;
        Ok(render_post(found))
    }

    fn preview_email(&self, post: &RenderedPost) -> Result<RenderedEmail, ComposeError> {
        self.render_issue(
            post,
            post.ordinal,
            Some(PREVIEW_NAME),
            &self.links.unsubscribe_url(NOBODY),
        )
    }
}
