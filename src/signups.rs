//! Group commit for signups. Each signup is a write transaction of several
//! statements; one at a time they topped out near a thousand a second,
//! whatever the machine, because every transaction pays for its own
//! statements, round trips and commit. Here one task takes every signup
//! that is waiting, writes them all in one transaction, and answers each.
//! Nobody waits for a batch to fill: a group is whatever arrived while the
//! previous one was being written, so a lone signup goes straight through.
//! A signup is answered only after its group commits.
//!
//! A signup waits at most [`SIGNUP_DEADLINE`]; then it is answered with an
//! error at once, never with a hang while the database is away. A signup
//! answered that way must not be emailed later, so each carries a ticket:
//! the caller withdraws it when giving up, and the writer takes it before
//! writing. Whichever comes first decides. A withdrawn signup is never
//! written; one the writer has taken is written to the end, and its caller
//! is told that it may still arrive.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use crate::domain::signup::{SignupOutcome, SignupRequest};
use crate::health::Health;
use crate::store::{SharedStore, StoreError};

/// Enough to take a burst in a few transactions, small enough that one
/// group's statements stay short.
const MAX_GROUP: usize = 256;

/// How long a signup waits for its write before it is answered with 503.
/// Well inside the HTTP timeout (30 s), and short enough that a person is
/// not left waiting through a database outage.
pub const SIGNUP_DEADLINE: Duration = Duration::from_secs(4);

/// Why a signup was not answered with an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignupError {
    /// Its time ran out before the writer took it: nothing was written.
    #[error("the database did not take the signup in time; nothing was stored")]
    NotTaken,
    /// Its time ran out while its group was being written.
    #[error("the signup was still being written when its time ran out")]
    StillWriting,
    /// The write failed; the writer has logged why.
    #[error("the signup could not be written")]
    Failed(WriteFailure),
    /// The writer has stopped (the daemon is stopping).
    #[error("the signup writer is not running")]
    NotRunning,
}

/// What a caller learns of a failed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteFailure {
    /// The database is away or cannot take writes (see `StoreError::is_outage`).
    pub outage: bool,
    pub may_have_written: bool,
}

impl SignupError {
    /// A passing condition (answer 503), rather than a bug (500).
    pub fn is_outage(&self) -> bool {
        match self {
            SignupError::NotTaken | SignupError::StillWriting | SignupError::NotRunning => true,
            SignupError::Failed(failure) => failure.outage,
        }
    }

    /// Whether the signup may be stored all the same, and its confirmation
    /// email sent.
    pub fn may_have_written(&self) -> bool {
        match self {
            SignupError::StillWriting => true,
            SignupError::Failed(failure) => failure.may_have_written,
            SignupError::NotTaken | SignupError::NotRunning => false,
        }
    }
}

/// Who gets a queued signup: the writer (taken) or nobody (withdrawn).
#[derive(Default)]
struct Ticket(AtomicU8);

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const WITHDRAWN: u8 = 2;

impl Ticket {
    fn take(&self) -> bool {
        self.settle(TAKEN)
    }

    fn withdraw(&self) -> bool {
        self.settle(WITHDRAWN)
    }

    fn settle(&self, to: u8) -> bool {
        self.0
            .compare_exchange(QUEUED, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// Withdraws the signup if its caller goes away before the answer (its
/// time ran out, or the client hung up).
struct WithdrawOnDrop(Arc<Ticket>);

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        self.0.withdraw();
    }
}

type Answer = Result<SignupOutcome, WriteFailure>;

struct Waiting {
    request: SignupRequest,
    answer: oneshot::Sender<Answer>,
    ticket: Arc<Ticket>,
}

/// Where signups queue for the writer.
#[derive(Clone)]
pub struct Signups {
    queue: mpsc::Sender<Waiting>,
    deadline: Duration,
}

/// The task that writes the queued signups. It is handed back rather than
/// spawned here, so that whoever runs the daemon can watch it: a dead
/// writer would leave every signup waiting.
pub struct SignupWriter {
    store: SharedStore,
    health: Arc<Health>,
    waiting: mpsc::Receiver<Waiting>,
    /// The last group failed for an outage: the next failure is not news.
    failing: bool,
}

impl Signups {
    /// The queue and its writer; nothing is written until the writer runs,
    /// and a signup fails at once if the writer is gone.
    pub fn new(store: SharedStore, health: Arc<Health>) -> (Self, SignupWriter) {
        let (queue, waiting) = mpsc::channel(MAX_GROUP * 4);
        let signups = Self {
            queue,
            deadline: SIGNUP_DEADLINE,
        };
        let writer = SignupWriter {
            store,
            health,
            waiting,
            failing: false,
        };
        (signups, writer)
    }

    /// The same queue with another deadline (tests).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    pub async fn sign_up(&self, request: SignupRequest) -> Result<SignupOutcome, SignupError> {
        let deadline = Instant::now() + self.deadline;
        let (answer, answered) = oneshot::channel();
        let ticket = Arc::new(Ticket::default());
        let _withdraw = WithdrawOnDrop(ticket.clone());
        let waiting = Waiting {
            request,
            answer,
            ticket: ticket.clone(),
        };
        match timeout_at(deadline, self.queue.send(waiting)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(SignupError::NotRunning),
            // The queue stayed full: the writer is stuck on the database.
            Err(_) => return Err(SignupError::NotTaken),
        }
        match timeout_at(deadline, answered).await {
            Ok(Ok(answer)) => answer.map_err(SignupError::Failed),
            // The writer dropped it: it stopped, perhaps in the middle of it.
            Ok(Err(_)) if ticket.withdraw() => Err(SignupError::NotRunning),
            Ok(Err(_)) => Err(SignupError::StillWriting),
            Err(_) if ticket.withdraw() => Err(SignupError::NotTaken),
            Err(_) => Err(SignupError::StillWriting),
        }
    }
}

impl SignupWriter {
    /// Writes groups until `stop`; then takes no more signups, writes those
    /// already queued, and returns. Stop it after the HTTP server has
    /// finished its requests, since they may still be signing people up.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        let mut closed = false;
        loop {
            let received = tokio::select! {
                received = self.waiting.recv_many(&mut group, MAX_GROUP) => received,
                () = stop.cancelled(), if !closed => {
                    self.waiting.close();
                    closed = true;
                    continue;
                }
            };
            if received == 0 {
                return;
            }
            self.write(&mut group).await;
        }
    }

    async fn write(&mut self, group: &mut Vec<Waiting>) {
        // A signup whose caller has given up was answered with an error (or
        // nobody is listening): it is dropped unwritten.
        let (requests, answers): (Vec<_>, Vec<_>) = group
            .drain(..)
            .filter(|waiting| waiting.ticket.take())
            .map(|waiting| (waiting.request, waiting.answer))
            .unzip();
        if requests.is_empty() {
            return;
        }
        let written = self.store.signup_group(&requests).await;
        self.health.record_write(&written);
        let error = match written {
            Ok(outcomes) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("signups are written again");
                }
                for (answer, outcome) in answers.into_iter().zip(outcomes) {
                    let _ = answer.send(Ok(outcome));
                }
                return;
            }
            Err(error) => error,
        };
        if error.is_outage() || requests.len() == 1 {
            let failure = self.failed(error, requests.len());
            for answer in answers {
                let _ = answer.send(Err(failure));
            }
            return;
        }
        // One bad signup must not fail the others: each goes again alone.
        tracing::warn!(
            error = ?anyhow::Error::from(error),
            signups = requests.len(),
            "a group of signups failed; writing them one by one"
        );
        for (request, answer) in requests.into_iter().zip(answers) {
            if answer.is_closed() {
                continue;
            }
            let written = self.store.signup(request).await;
            self.health.record_write(&written);
            let _ = answer.send(written.map_err(|error| self.failed(error, 1)));
        }
    }

    /// Logs a failed write (an outage once, until writes succeed again)
    /// and says what its callers may know of it.
    fn failed(&mut self, error: StoreError, signups: usize) -> WriteFailure {
        let failure = WriteFailure {
            outage: error.is_outage(),
            may_have_written: error.may_have_written(),
        };
        let error = anyhow::Error::from(error);
        match failure.outage {
            true if std::mem::replace(&mut self.failing, true) => {
                tracing::debug!(error = ?error, signups, "signups still cannot be written")
            }
            true => tracing::warn!(
                error = ?error,
                signups,
                "signups cannot be written: the database is away or full; \
                 they are answered with 503 until it is back"
            ),
            false => tracing::error!(error = ?error, signups, "a signup failed"),
        }
        failure
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;
    use crate::config::DatabaseSettings;
    use crate::domain::consent::ConsentContext;
    use crate::domain::subscriber::{EmailAddress, SubscriberQuery};

    const PATIENCE: Duration = Duration::from_secs(10);

    fn request(email: &str) -> SignupRequest {
        SignupRequest {
            email: EmailAddress::parse(email).unwrap(),
            name: None,
            consent: ConsentContext::default(),
            now: chrono::Utc::now(),
            confirmation_ttl: chrono::Duration::hours(72),
            resend_window: chrono::Duration::minutes(10),
        }
    }

    async fn sqlite(dir: &tempfile::TempDir) -> (SharedStore, String) {
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::connect(&DatabaseSettings::from_url(&url, 2).unwrap())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        (store, url)
    }

    async fn listed(store: &SharedStore, email: &str) -> bool {
        let query = SubscriberQuery {
            status: None,
            after: None,
            limit: 100,
        };
        let everyone = store.list_subscribers(query).await.unwrap();
        everyone.iter().any(|subscriber| subscriber.email == email)
    }

    fn queue(store: &SharedStore) -> (Signups, SignupWriter) {
        Signups::new(store.clone(), Arc::new(Health::with_disk_guard(None)))
    }

    #[tokio::test]
    async fn a_signup_whose_time_ran_out_in_the_queue_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = sqlite(&dir).await;
        let (signups, writer) = queue(&store);
        // No writer runs yet: the signup waits in the queue, and gives up.
        let hasty = signups.clone().with_deadline(Duration::from_millis(50));
        let answer = hasty.sign_up(request("early@example.com")).await;
        assert_eq!(answer, Err(SignupError::NotTaken));
        assert!(!answer.unwrap_err().may_have_written());
        let stop = CancellationToken::new();
        let running = tokio::spawn(writer.run(stop.clone()));
        let patient = signups.with_deadline(PATIENCE);
        patient.sign_up(request("later@example.com")).await.unwrap();
        // The writer takes signups in order: the early one came first.
        assert!(listed(&store, "later@example.com").await);
        assert!(
            !listed(&store, "early@example.com").await,
            "it was told nothing was stored"
        );
        stop.cancel();
        running.await.unwrap();
    }

    #[tokio::test]
    async fn a_signup_being_written_when_its_time_runs_out_is_written_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (store, url) = sqlite(&dir).await;
        // Another connection holds SQLite's write lock: the writer's
        // transaction waits for it (the busy timeout) once it has begun.
        let mut blocker = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut blocker)
            .await
            .unwrap();
        let (signups, writer) = queue(&store);
        let stop = CancellationToken::new();
        let running = tokio::spawn(writer.run(stop.clone()));
        let hasty = signups.clone().with_deadline(Duration::from_millis(300));
        let answer = hasty.sign_up(request("slow@example.com")).await;
        assert_eq!(answer, Err(SignupError::StillWriting));
        assert!(answer.unwrap_err().may_have_written());
        sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();
        // Answered after the slow one's group, which was written after all:
        // "it may still arrive" was true.
        let patient = signups.with_deadline(PATIENCE);
        patient.sign_up(request("next@example.com")).await.unwrap();
        assert!(listed(&store, "slow@example.com").await);
        stop.cancel();
        running.await.unwrap();
    }
}
