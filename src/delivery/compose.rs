//! Turns a claimed delivery into the bytes of one email: the right template,
//! the subscriber's name and links, and the list headers mail clients need.
//!
//! A confirmation email goes to someone who has not yet said yes, and the
//! name on the form may be a stranger's text (spam, a URL): it carries no
//! name at all, neither in the greeting nor in `To`. Issue emails go to
//! people who confirmed, and greet them by the name they gave.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use lettre::address::Envelope;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Body, MultiPart, SinglePart};
use lettre::{Address, Message};
use serde_json::json;

use super::headers::{EncodedSubject, Recipient};
use super::prepared::PreparedEmail;
use crate::config::NewsletterSettings;
use crate::domain::delivery::{ClaimedDelivery, DeliveryPayload};
use crate::domain::dkim::DkimSigner;
use crate::domain::issue::{IssueMeta, ScheduleMode};
use crate::domain::post::PostForRender;
use crate::domain::subscriber::SubscriberStatus;
use crate::links::{Links, CONFIRMATION_TTL_HOURS};
use crate::render::{markdown, EmailKind, RenderedEmail, Templates};
use crate::store::{SharedStore, StoreError};

mod preview;

/// Defines a header lettre has no type for; values are ASCII we build.
macro_rules! plain_header {
    ($type:ident, $name:literal) => {
        #[derive(Debug, Clone)]
        pub struct $type(pub String);

        impl Header for $type {
            fn name() -> HeaderName {
                HeaderName::new_from_ascii_str($name)
            }

            fn parse(text: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
                Ok(Self(text.to_owned()))
            }

            fn display(&self) -> HeaderValue {
                HeaderValue::new(Self::name(), self.0.clone())
            }
        }
    };
}

plain_header!(ListId, "List-Id");
plain_header!(ListUnsubscribe, "List-Unsubscribe");
plain_header!(ListUnsubscribePost, "List-Unsubscribe-Post");

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("post {0} no longer exists")]
    MissingPost(i64),
    #[error("issue {0} no longer exists")]
    MissingIssue(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("rendering failed")]
    Render(#[from] crate::render::RenderError),
    #[error("cannot build the message: {0}")]
    Message(String),
}

/// Renders one email for a reader's name and link.
type RenderFor<'a> = dyn Fn(Option<&str>, &str) -> Result<RenderedEmail, ComposeError> + 'a;

/// Which email a preparation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Prepared {
    Confirmation,
    Issue { post_id: i64, number: i64 },
    UnsubscribeLink,
}

/// Who an email is for, and its Message-ID's left part.
struct Addressed<'a> {
    email: &'a str,
    subscriber_id: i64,
    message_id: &'a str,
}

impl<'a> From<&'a ClaimedDelivery> for Addressed<'a> {
    fn from(delivery: &'a ClaimedDelivery) -> Self {
        Self {
            email: &delivery.email,
            subscriber_id: delivery.subscriber_id,
            message_id: &delivery.message_id,
        }
    }
}

/// What to do with a claimed delivery.
pub enum Composed {
    Email {
        envelope: Envelope,
        bytes: Vec<u8>,
    },
    /// Nothing to send any more, with the reason kept on the row.
    Skip(String),
}

/// A post rendered once per process, reused for every recipient.
struct RenderedPost {
    subject: String,
    html: String,
    text: String,
    preheader: String,
    ordinal: i64,
}

pub struct Composer {
    templates: Arc<Templates>,
    newsletter: NewsletterSettings,
    links: Links,
    store: SharedStore,
    list_id: String,
    posts: Mutex<HashMap<i64, Arc<RenderedPost>>>,
    issues: Mutex<HashMap<i64, IssueMeta>>,
    /// `None` where the templates do not splice.
    prepared: Mutex<HashMap<Prepared, Arc<Option<PreparedEmail>>>>,
    /// Signs each email as it is built, so what goes out (or into the
    /// outbox) is what was signed. `None`: unsigned.
    dkim: Option<DkimSigner>,
}

impl Composer {
    pub fn new(
        templates: Arc<Templates>,
        newsletter: NewsletterSettings,
        links: Links,
        store: SharedStore,
        dkim: Option<DkimSigner>,
    ) -> Self {
        let list_id = list_id(&newsletter);
        Self {
            templates,
            newsletter,
            links,
            store,
            list_id,
            posts: Mutex::default(),
            issues: Mutex::default(),
            prepared: Mutex::default(),
            dkim,
        }
    }

    pub async fn compose(&self, delivery: &ClaimedDelivery) -> Result<Composed, ComposeError> {
        let composed = self.unsigned(delivery).await?;
        Ok(self.signed(composed).await)
    }

    async fn unsigned(&self, delivery: &ClaimedDelivery) -> Result<Composed, ComposeError> {
        match delivery.payload {
            DeliveryPayload::Confirmation { confirmation_id } => {
                if delivery.subscriber_status == SubscriberStatus::Confirmed {
                    return Ok(Composed::Skip(format!(
                        "subscriber is {} now",
                        delivery.subscriber_status
                    )));
                }
                self.confirmation(delivery, confirmation_id)
            }
            DeliveryPayload::Issue { issue_id, post_id } => {
                if delivery.subscriber_status != SubscriberStatus::Confirmed {
                    return Ok(Composed::Skip(format!(
                        "subscriber is {} now",
                        delivery.subscriber_status
                    )));
                }
                let post = self.post(post_id).await?;
                let issue = self.issue(issue_id).await?;
                let number = match issue.mode {
                    ScheduleMode::Broadcast => issue.number,
                    ScheduleMode::Sequence => post.ordinal,
                };
                self.issue_email(delivery, &post, post_id, number)
            }
        }
    }

    fn confirmation(
        &self,
        delivery: &ClaimedDelivery,
        confirmation_id: i64,
    ) -> Result<Composed, ComposeError> {
        // The subject is fixed text: nothing a stranger typed goes in it.
        let subject = format!(
            "Please confirm your subscription to {}",
            self.newsletter.name
        );
        let render = |_name: Option<&str>, confirm_url: &str| {
            self.templates
                .email(
                    EmailKind::Confirm,
                    json!({
                        "title": subject,
                        // Null, so an older override's `{{#if name}}` reads as no name.
                        "name": null,
                        "confirm_url": confirm_url,
                        "expires_hours": CONFIRMATION_TTL_HOURS,
                    }),
                )
                .map_err(ComposeError::from)
        };
        let body = self.body(
            Prepared::Confirmation,
            &render,
            None,
            &self.links.confirm_url(confirmation_id),
        )?;
        self.build(delivery.into(), None, &subject, body, false)
    }

    /// A reader's own unsubscribe link, which they asked for by address
    /// (the page for a broken link offers it). No name, like a
    /// confirmation: whoever asked may not be the reader.
    pub async fn unsubscribe_link(
        &self,
        email: &str,
        subscriber_id: i64,
    ) -> Result<Composed, ComposeError> {
        let composed = self.unsigned_unsubscribe_link(email, subscriber_id)?;
        Ok(self.signed(composed).await)
    }

    fn unsigned_unsubscribe_link(
        &self,
        email: &str,
        subscriber_id: i64,
    ) -> Result<Composed, ComposeError> {
        let subject = format!("Your link to unsubscribe from {}", self.newsletter.name);
        let render = |_name: Option<&str>, link_url: &str| {
            self.templates
                .email(
                    EmailKind::UnsubscribeLink,
                    json!({ "title": subject, "name": null, "link_url": link_url }),
                )
                .map_err(ComposeError::from)
        };
        let body = self.body(
            Prepared::UnsubscribeLink,
            &render,
            None,
            &self.links.unsubscribe_url(subscriber_id),
        )?;
        let message_id = uuid::Uuid::new_v4().to_string();
        let to = Addressed {
            email,
            subscriber_id,
            message_id: &message_id,
        };
        self.build(to, None, &subject, body, false)
    }

    fn issue_email(
        &self,
        delivery: &ClaimedDelivery,
        post: &RenderedPost,
        post_id: i64,
        number: i64,
    ) -> Result<Composed, ComposeError> {
        let render = |name: Option<&str>, unsubscribe_url: &str| {
            self.render_issue(post, number, name, unsubscribe_url)
        };
        let body = self.body(
            Prepared::Issue { post_id, number },
            &render,
            delivery.name.as_deref(),
            &self.links.unsubscribe_url(delivery.subscriber_id),
        )?;
        self.build(
            delivery.into(),
            delivery.name.clone(),
            &post.subject,
            body,
            true,
        )
    }

    /// Both parts for one reader: spliced into the email prepared for
    /// everyone, or rendered in full where the templates do not splice.
    fn body(
        &self,
        key: Prepared,
        render: &RenderFor<'_>,
        name: Option<&str>,
        link: &str,
    ) -> Result<MultiPart, ComposeError> {
        Ok(match &*self.prepared(key, render)? {
            Some(prepared) => {
                let (text, html) = prepared.encode(name, link);
                MultiPart::alternative()
                    .singlepart(encoded_part(ContentType::TEXT_PLAIN, text))
                    .singlepart(encoded_part(ContentType::TEXT_HTML, html))
            }
            None => {
                let rendered = render(name, link)?;
                MultiPart::alternative_plain_html(rendered.text, rendered.html)
            }
        })
    }

    fn prepared(
        &self,
        key: Prepared,
        render: &RenderFor<'_>,
    ) -> Result<Arc<Option<PreparedEmail>>, ComposeError> {
        if let Some(prepared) = self.prepared.lock().expect("prepared cache").get(&key) {
            return Ok(prepared.clone());
        }
        let parts = |name: Option<&str>, link: &str| {
            render(name, link).map(|rendered| (rendered.text, rendered.html))
        };
        let prepared = Arc::new(PreparedEmail::prepare(&parts)?);
        if prepared.is_none() {
            tracing::warn!(
                email = ?key,
                "the templates change the name or link in a way that cannot be spliced; \
                 each of these emails is rendered in full (slower)"
            );
        }
        self.prepared
            .lock()
            .expect("prepared cache")
            .insert(key, prepared.clone());
        Ok(prepared)
    }

    fn render_issue(
        &self,
        post: &RenderedPost,
        number: i64,
        name: Option<&str>,
        unsubscribe_url: &str,
    ) -> Result<RenderedEmail, ComposeError> {
        Ok(self.templates.email(
            EmailKind::Issue,
            json!({
                "title": post.subject,
                "subject": post.subject,
                "issue_number": number,
                "name": name,
                "body_html": post.html,
                "body_text": post.text,
                "unsubscribe_url": unsubscribe_url,
                "preheader": post.preheader,
            }),
        )?)
    }

    fn build(
        &self,
        to: Addressed<'_>,
        name: Option<String>,
        subject: &str,
        body: MultiPart,
        list_headers: bool,
    ) -> Result<Composed, ComposeError> {
        let address: Address = match to.email.parse() {
            Ok(address) => address,
            Err(error) => return Ok(Composed::Skip(format!("unsendable address: {error}"))),
        };
        // Given, lettre would otherwise parse it back out of the From and
        // To headers it has just been handed, for every email.
        let envelope = Envelope::new(
            Some(self.newsletter.from.email.clone()),
            vec![address.clone()],
        )
        .map_err(|error| ComposeError::Message(error.to_string()))?;
        let now = SystemTime::now();
        let mut builder = Message::builder()
            .envelope(envelope)
            .from(self.newsletter.from.clone())
            .header(Recipient { name, address })
            .header(EncodedSubject(subject.to_owned()))
            .date(now)
            .message_id(Some(format!(
                "<{}@{}>",
                to.message_id,
                self.newsletter.from_domain()
            )))
            .header(ListId(self.list_id.clone()));
        if list_headers {
            builder = builder
                .header(ListUnsubscribe(format!(
                    "<{}>",
                    self.links.unsubscribe_url(to.subscriber_id)
                )))
                .header(ListUnsubscribePost("List-Unsubscribe=One-Click".into()));
        }
        let message = builder
            .multipart(body)
            .map_err(|error| ComposeError::Message(error.to_string()))?;
        Ok(Composed::Email {
            envelope: message.envelope().clone(),
            bytes: message.formatted(),
        })
    }

    /// Signed per reader, as To and List-Unsubscribe are theirs; a retry is
    /// composed afresh, with a new Date, and so signed again. An RSA-2048
    /// signature is most of a millisecond of CPU: it runs on the blocking
    /// pool, so the runtime's threads stay free to answer HTTP meanwhile.
    async fn signed(&self, composed: Composed) -> Composed {
        match (composed, &self.dkim) {
            (Composed::Email { envelope, bytes }, Some(signer)) => {
                let signer = signer.clone();
                let bytes =
                    tokio::task::spawn_blocking(move || signer.sign(&bytes, SystemTime::now()))
                        .await
                        .expect("signing never panics");
                Composed::Email { envelope, bytes }
            }
            (composed, _) => composed,
        }
    }

    async fn post(&self, post_id: i64) -> Result<Arc<RenderedPost>, ComposeError> {
        if let Some(post) = self.posts.lock().expect("post cache").get(&post_id) {
            return Ok(post.clone());
        }
        let found = self
            .store
            .post_for_render(post_id)
            .await?
            .ok_or(ComposeError::MissingPost(post_id))?;
        let rendered = Arc::new(render_post(found));
        self.posts
            .lock()
            .expect("post cache")
            .insert(post_id, rendered.clone());
        Ok(rendered)
    }

    async fn issue(&self, issue_id: i64) -> Result<IssueMeta, ComposeError> {
        if let Some(meta) = self.issues.lock().expect("issue cache").get(&issue_id) {
            return Ok(*meta);
        }
        let meta = self
            .store
            .issue_meta(issue_id)
            .await?
            .ok_or(ComposeError::MissingIssue(issue_id))?;
        self.issues
            .lock()
            .expect("issue cache")
            .insert(issue_id, meta);
        Ok(meta)
    }
}

/// A body part already quoted-printable encoded.
fn encoded_part(content_type: ContentType, encoded: Vec<u8>) -> SinglePart {
    SinglePart::builder()
        .header(content_type)
        .body(Body::dangerous_pre_encoded(
            encoded,
            ContentTransferEncoding::QuotedPrintable,
        ))
}

/// Markdown to email HTML and text, once per post.
fn render_post(found: PostForRender) -> RenderedPost {
    render_parts(found.post.subject, &found.post.body_markdown, found.ordinal)
}

/// A subject and Markdown body as every issue email shows them.
fn render_parts(subject: String, body_markdown: &str, ordinal: i64) -> RenderedPost {
    RenderedPost {
        html: markdown::to_email_html(body_markdown),
        preheader: preheader(&markdown::to_prose(body_markdown)),
        text: markdown::to_plain_text(body_markdown),
        subject,
        ordinal,
    }
}

/// The first sentence or so, shown by mail clients next to the subject:
/// at most 140 characters, ending on a whole word.
fn preheader(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let Some((cut, next)) = flat.char_indices().nth(140) else {
        return flat;
    };
    let head = &flat[..cut];
    let head = match head.rfind(' ') {
        Some(space) if next != ' ' => &head[..space],
        _ => head,
    };
    format!("{}…", head.trim_end())
}

/// `<slug.domain>` with the newsletter's name as the phrase (RFC 2919).
fn list_id(newsletter: &NewsletterSettings) -> String {
    let slug: String = newsletter
        .name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let slug = slug
        .split('-')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let slug = if slug.is_empty() {
        "newsletter".into()
    } else {
        slug
    };
    let phrase: String = newsletter
        .name
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '"' && *c != '\\')
        .collect();
    format!(
        "\"{}\" <{slug}.{}>",
        phrase.trim(),
        newsletter.from_domain()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_id_is_a_slug_under_the_sender_domain() {
        let newsletter = crate::config::defaults().newsletter;
        assert_eq!(
            list_id(&newsletter),
            "\"Partnership Pitfalls Weekly\" <partnership-pitfalls-weekly.localhost>"
        );
    }

    #[test]
    fn preheader_is_short_and_flat() {
        let text = "Line one\n\nline two ".repeat(40);
        let short = preheader(&text);
        assert!(short.chars().count() <= 141);
        assert!(!short.contains('\n'));
    }

    #[test]
    fn preheader_ends_on_a_whole_word() {
        let flat = "Partnerships founder when nobody writes down who decides what ".repeat(5);
        for start in 0..12 {
            let text = &flat[start..];
            let short = preheader(text);
            let head = short.strip_suffix('…').expect("cut short");
            assert!(text.starts_with(head), "{short}");
            assert_eq!(
                text.as_bytes()[head.len()],
                b' ',
                "cut inside a word: {short}"
            );
        }
    }
}
