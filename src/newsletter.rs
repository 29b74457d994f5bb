//! The service layer: what the newsletter does, whichever door a request
//! comes through. HTTP handlers and CLI commands both call [`Newsletter`],
//! so each step (sign up, confirm, unsubscribe, add a post, send now) is
//! written once, and the delivery worker is woken in one place: whoever
//! queues email here never has to remember to wake it.
//!
//! Parsing raw input stays at the edges (they know how to answer a bad
//! form); rate limits and honeypots are HTTP's. Errors are one
//! [`NewsletterError`]: the HTTP edge turns it into a response, the CLI
//! adds context.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::delivery::compose::{ComposeError, Composed, Composer};
use crate::delivery::{new_owner, DeliveryWorker, Wake, WorkerSettings};
use crate::domain::consent::ConsentContext;
use crate::domain::issue::{CreateIssueOutcome, IssueCreated, NewIssue, NextSend, ScheduleMode};
use crate::domain::post::{NewPost, Post};
use crate::domain::retry::RetryPlan;
use crate::domain::signup::{ConfirmLink, ConfirmOutcome, SignupOutcome, SignupRequest};
use crate::domain::subscriber::{
    AddOutcome, EmailAddress, OperatorSource, OperatorSubscriber, SubscriberName, SubscriberStatus,
    UnsubscribeOutcome,
};
use crate::domain::unsubscribe_link::{sends_link, LinkRequestOutcome};
use crate::health::{Health, LowDisk};
use crate::links::{self, Links};
use crate::mailer::Mailer;
use crate::metrics::Metrics;
use crate::signups::{SignupError, SignupWriter, Signups};
use crate::store::{SharedStore, StoreError};
use crate::subscriber_csv::ImportRow;

mod posts;

pub use posts::MoveOutcome;

async fn send_unsubscribe_link(
    composer: &Composer,
    mailer: &Mailer,
    address: &str,
    subscriber_id: i64,
) {
    let (envelope, bytes) = match composer.unsubscribe_link(address, subscriber_id).await {
        Ok(Composed::Email { envelope, bytes }) => (envelope, bytes),
        Ok(Composed::Skip(reason)) => {
            tracing::warn!(subscriber_id, %reason, "no unsubscribe link sent");
            return;
        }
        Err(error) => {
            tracing::error!(subscriber_id, error = ?anyhow::Error::from(error), "cannot compose an unsubscribe link");
            return;
        }
    };
    let stem = format!("unsubscribe-link-{}", uuid::Uuid::new_v4());
    match mailer.send(&envelope, &bytes, &stem).await {
        crate::mailer::SendResult::Accepted { .. } => {
            tracing::info!(subscriber_id, "emailed an unsubscribe link")
        }
        failed => {
            tracing::warn!(subscriber_id, result = ?failed, "an unsubscribe link was not sent")
        }
    }
}

/// The least time a signup takes to be answered, from when the service
/// takes it. A new address costs the store more than one already on the
/// list (a subscriber, a consent event, a confirmation and its email,
/// against a lookup), so without it the answer's timing told a stranger
/// whether an address was subscribed (docs/performance.md, "Enumeration").
/// Every signup is answered at this mark instead; the store's work fits
/// well inside it on an idle daemon, and under load every signup in a
/// group is answered at the group's commit anyway. It costs no throughput:
/// the writer does not wait, only each request's own answer does.
pub const SIGNUP_ANSWER_FLOOR: std::time::Duration = std::time::Duration::from_millis(5);

/// Up to this much more than the floor, drawn afresh for each answer. On
/// SQLite, answers to new addresses still came 0.05-0.1 ms after those to
/// listed ones, for a reason not yet found, and one sample guessed right
/// 55-58 % of the time; spread over a few milliseconds the shift tells a
/// single sample nothing (docs/performance.md, "Enumeration").
pub const SIGNUP_ANSWER_JITTER: std::time::Duration = std::time::Duration::from_millis(3);

/// When an answer to a request taken now is due: the floor and a jitter.
pub fn signup_answer_at() -> tokio::time::Instant {
    use rand::Rng;
    let jitter = rand::thread_rng().gen_range(std::time::Duration::ZERO..=SIGNUP_ANSWER_JITTER);
    tokio::time::Instant::now() + SIGNUP_ANSWER_FLOOR + jitter
}

#[derive(Debug, thiserror::Error)]
pub enum NewsletterError {
    #[error(
        "nothing to send: the queue has no post for anyone, or there are no confirmed subscribers"
    )]
    NothingToSend,
    #[error("there is no post {0}")]
    NoSuchPost(i64),
    #[error("cannot render the post")]
    Render(#[source] ComposeError),
    /// Signups wait for room: see `database.min_free_space`.
    #[error("free space on the database's filesystem is below database.min_free_space")]
    DiskNearlyFull(LowDisk),
    #[error("there is no admin account for {0}")]
    NoSuchAdmin(String),
    #[error("cannot hash the password: {0}")]
    PasswordHash(String),
    #[error(transparent)]
    Signup(#[from] SignupError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl NewsletterError {
    /// A passing condition (the database away or full), to be answered
    /// with 503 and Retry-After rather than 500.
    pub fn is_outage(&self) -> bool {
        match self {
            NewsletterError::DiskNearlyFull(_) => true,
            NewsletterError::Signup(error) => error.is_outage(),
            NewsletterError::Store(error) => error.is_outage(),
            NewsletterError::NothingToSend
            | NewsletterError::NoSuchPost(_)
            | NewsletterError::NoSuchAdmin(_)
            | NewsletterError::PasswordHash(_)
            | NewsletterError::Render(_) => false,
        }
    }
}

pub type NewsletterResult<T> = Result<T, NewsletterError>;

pub struct Newsletter {
    store: SharedStore,
    clock: SharedClock,
    links: Links,
    composer: Arc<Composer>,
    /// For the emails sent outside the outbox (see `email_unsubscribe_link`).
    mailer: Arc<Mailer>,
    signups: Signups,
    health: Arc<Health>,
    wake: Wake,
    mode: ScheduleMode,
    /// At most one confirmation email per address within this window.
    resend_window: chrono::Duration,
}

impl Newsletter {
    /// The service, and the signup writer it signs people up through: run
    /// the writer (and watch it) wherever signups are taken.
    pub fn new(
        store: SharedStore,
        clock: SharedClock,
        links: Links,
        composer: Arc<Composer>,
        mailer: Arc<Mailer>,
        settings: &Settings,
        health: Arc<Health>,
    ) -> (Self, SignupWriter) {
        let (signups, writer) = Signups::new(store.clone(), health.clone());
        let newsletter = Self {
            store,
            clock,
            links,
            composer,
            mailer,
            signups,
            health,
            wake: Wake::default(),
            mode: settings.schedule.mode,
            resend_window: chrono::Duration::from_std(settings.http.confirmation_window)
                .unwrap_or_default(),
        };
        (newsletter, writer)
    }

    /// For what has no rule beyond the query itself: lists, counts, health.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// What `/healthz` reports, and what the signup path consults.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    pub fn links(&self) -> &Links {
        &self.links
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// A signup through the public form. The outcome is for logs and tests:
    /// the edge must answer the same whatever it is, so nobody can probe
    /// the list. That includes when it answers: see [`signup_answer_at`].
    pub async fn sign_up(
        &self,
        email: EmailAddress,
        name: Option<SubscriberName>,
        consent: ConsentContext,
    ) -> NewsletterResult<SignupOutcome> {
        let answer_at = signup_answer_at();
        // Nothing is written below the guard, so nothing can fail halfway.
        if let Some(low) = self.health.disk_nearly_full() {
            return Err(NewsletterError::DiskNearlyFull(low));
        }
        let outcome = self
            .signups
            .sign_up(SignupRequest {
                email,
                name,
                consent,
                now: self.clock.now(),
                confirmation_ttl: links::confirmation_ttl(),
                resend_window: self.resend_window,
            })
            .await?;
        tokio::time::sleep_until(answer_at).await;
        // The worker starts on the email a moment after this answer has
        // gone out: composing and sending it beside the answer slowed the
        // answers for new addresses alone.
        if let SignupOutcome::ConfirmationQueued { .. } = outcome {
            let wake = self.wake.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                wake.ring();
            });
        }
        Ok(outcome)
    }

    /// What opening a confirmation link shows; changes nothing, because
    /// mail scanners open every link. A token we did not issue is `Unknown`.
    pub async fn confirmation_link(&self, token: Option<&str>) -> NewsletterResult<ConfirmLink> {
        let Some(confirmation_id) = self.links.confirmation_id(token) else {
            return Ok(ConfirmLink::Closed(ConfirmOutcome::Unknown));
        };
        Ok(self
            .store
            .confirmation_link(confirmation_id, self.clock.now())
            .await?)
    }

    /// Presses a confirmation link's button: confirms, and records the
    /// consent of whoever pressed it. A token we did not issue is `Unknown`.
    pub async fn confirm(
        &self,
        token: Option<&str>,
        consent: ConsentContext,
    ) -> NewsletterResult<ConfirmOutcome> {
        let Some(confirmation_id) = self.links.confirmation_id(token) else {
            return Ok(ConfirmOutcome::Unknown);
        };
        Ok(self
            .store
            .confirm(confirmation_id, consent, self.clock.now())
            .await?)
    }

    /// The address an unsubscribe link would remove, for the page that
    /// shows the button; `None` when it names nobody on the list. Changes
    /// nothing.
    pub async fn unsubscribe_link_address(
        &self,
        token: Option<&str>,
    ) -> NewsletterResult<Option<String>> {
        match self.links.subscriber_id(token) {
            Some(subscriber_id) => Ok(self.store.subscriber_email(subscriber_id).await?),
            None => Ok(None),
        }
    }

    /// Emails a reader who asked by address their unsubscribe link, when
    /// the address is on the list and still gets email (see
    /// [`sends_link`]). Answered at [`signup_answer_at`] whatever the
    /// outcome, with the email composed and sent after the answer, so its
    /// timing tells nobody whether the address is listed.
    ///
    /// The link is the reader's ordinary one, the same as in every issue's
    /// footer and `List-Unsubscribe`: it only leads to a page with a
    /// button, it reaches nobody but the address's owner, and an
    /// unsubscribe link is not a secret from that owner. So no new token
    /// is needed, and nothing is stored. The email goes straight to the
    /// mailer, not through the outbox: it is a courtesy asked for at this
    /// moment, and one that fails is asked for again, not retried for days.
    pub async fn email_unsubscribe_link(
        &self,
        email: &EmailAddress,
    ) -> NewsletterResult<LinkRequestOutcome> {
        let answer_at = signup_answer_at();
        let found = self.store.subscriber_by_email(email.as_str()).await?;
        tokio::time::sleep_until(answer_at).await;
        let Some((subscriber_id, _)) = found.filter(|(_, status)| sends_link(*status)) else {
            return Ok(LinkRequestOutcome::NotSent);
        };
        let composer = self.composer.clone();
        let mailer = self.mailer.clone();
        let address = email.as_str().to_owned();
        tokio::spawn(async move {
            send_unsubscribe_link(&composer, &mailer, &address, subscriber_id).await;
        });
        Ok(LinkRequestOutcome::Sent { subscriber_id })
    }

    /// Follows an unsubscribe link; a token we did not issue is `Unknown`.
    pub async fn unsubscribe(
        &self,
        token: Option<&str>,
        consent: ConsentContext,
    ) -> NewsletterResult<UnsubscribeOutcome> {
        let Some(subscriber_id) = self.links.subscriber_id(token) else {
            return Ok(UnsubscribeOutcome::Unknown);
        };
        Ok(self
            .store
            .unsubscribe(subscriber_id, consent, self.clock.now())
            .await?)
    }

    /// An operator adds someone (CLI `subscriber add`, `import`). A pending
    /// one gets a confirmation email, like a signup.
    pub async fn add_subscriber(
        &self,
        email: EmailAddress,
        name: Option<SubscriberName>,
        status: SubscriberStatus,
        source: OperatorSource,
    ) -> NewsletterResult<AddOutcome> {
        let outcome = self
            .store
            .add_subscriber(OperatorSubscriber {
                email,
                name,
                status,
                source,
                now: self.clock.now(),
                confirmation_ttl: links::confirmation_ttl(),
            })
            .await?;
        if let AddOutcome::Added {
            confirmation_queued: true,
            ..
        } = outcome
        {
            self.wake.ring();
        }
        Ok(outcome)
    }

    /// A batch of an import's rows, in one transaction: each is added as
    /// `add_subscriber` would, and a row without a status is pending.
    pub async fn import(
        &self,
        rows: &[ImportRow],
        source: OperatorSource,
    ) -> NewsletterResult<Vec<AddOutcome>> {
        let now = self.clock.now();
        let records: Vec<OperatorSubscriber> = rows
            .iter()
            .map(|row| OperatorSubscriber {
                email: row.email.clone(),
                name: row.name.clone(),
                status: row.status.unwrap_or(SubscriberStatus::Pending),
                source,
                now,
                confirmation_ttl: links::confirmation_ttl(),
            })
            .collect();
        let outcomes = self.store.add_subscribers(&records).await?;
        let queued = outcomes.iter().any(|outcome| {
            matches!(
                outcome,
                AddOutcome::Added {
                    confirmation_queued: true,
                    ..
                }
            )
        });
        if queued {
            self.wake.ring();
        }
        Ok(outcomes)
    }

    /// Puts a post at the end of the queue.
    pub async fn add_post(&self, post: &NewPost) -> NewsletterResult<Post> {
        Ok(self.store.insert_post(post, self.clock.now()).await?)
    }

    /// The post's HTML exactly as a subscriber would see it.
    pub async fn preview(&self, post_id: i64) -> NewsletterResult<String> {
        Ok(self.saved_preview(post_id).await?.html)
    }

    /// Sends the next queued post now, as a schedule tick would.
    pub async fn send_now(&self) -> NewsletterResult<IssueCreated> {
        match self
            .start_issue(NewIssue::manual(self.mode, self.clock.now()))
            .await?
        {
            CreateIssueOutcome::Created(created) => Ok(created),
            // A manual key is fresh, so `SlotTaken` cannot happen; if it
            // did, there would be nothing for this call to send either.
            CreateIssueOutcome::NothingToSend | CreateIssueOutcome::SlotTaken => {
                Err(NewsletterError::NothingToSend)
            }
        }
    }

    /// [`Self::send_now`] as a confirmation page asks for it, under that
    /// page's `key`: the same confirmation submitted twice (a double click)
    /// answers with the issue the first made and sends nothing more.
    /// Returns the issue's id.
    pub async fn send_now_once(&self, key: uuid::Uuid) -> NewsletterResult<i64> {
        let issue = NewIssue::manual_once(self.mode, self.clock.now(), key);
        let slot_key = issue.slot_key.clone();
        match self.start_issue(issue).await? {
            CreateIssueOutcome::Created(created) => Ok(created.issue_id),
            CreateIssueOutcome::SlotTaken => self
                .store
                .issue_for_slot(&slot_key)
                .await?
                .ok_or(NewsletterError::NothingToSend),
            CreateIssueOutcome::NothingToSend => Err(NewsletterError::NothingToSend),
        }
    }

    /// What a send-now would send, for its confirmation page.
    pub async fn next_send(&self) -> NewsletterResult<NextSend> {
        Ok(self.store.next_send().await?)
    }

    pub fn mode(&self) -> ScheduleMode {
        self.mode
    }

    /// What "retry failed" would do to the issue's failures now.
    pub async fn retry_plan(&self, issue_id: i64) -> NewsletterResult<RetryPlan> {
        Ok(self.store.retry_plan(issue_id).await?)
    }

    /// Puts the issue's failures worth retrying back in the outbox (see
    /// `domain::retry`), and wakes the worker for them. Safe to repeat: a
    /// failure put back is no longer failed.
    pub async fn retry_failed(&self, issue_id: i64) -> NewsletterResult<RetryPlan> {
        let plan = self
            .store
            .retry_failures(issue_id, self.clock.now())
            .await?;
        if plan.retry > 0 {
            self.wake.ring();
        }
        Ok(plan)
    }

    /// Creates an issue with its deliveries (idempotent per slot) and wakes
    /// the worker when there is something to send. The scheduler's way in.
    pub async fn start_issue(&self, issue: NewIssue) -> NewsletterResult<CreateIssueOutcome> {
        let outcome = self.store.create_issue(issue).await?;
        if let CreateIssueOutcome::Created(_) = outcome {
            self.wake.ring();
        }
        Ok(outcome)
    }

    /// Tells the worker to look for due email now rather than at its next
    /// poll, for work that became due without passing through here (a
    /// retry whose time came because a test moved the clock on).
    pub fn wake_worker(&self) {
        self.wake.ring();
    }

    /// A delivery worker for this newsletter, woken by it.
    pub fn delivery_worker(
        &self,
        mailer: Arc<Mailer>,
        settings: WorkerSettings,
        metrics: Arc<Metrics>,
    ) -> Arc<DeliveryWorker> {
        Arc::new(DeliveryWorker {
            store: self.store.clone(),
            mailer,
            composer: self.composer.clone(),
            settings,
            clock: self.clock.clone(),
            wake: self.wake.clone(),
            metrics,
            owner: new_owner(),
            breaker: Default::default(),
            liveness: Default::default(),
            health: self.health.clone(),
        })
    }
}
