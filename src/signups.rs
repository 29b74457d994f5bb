//! Group commit for signups. Each signup is a write transaction of several
//! statements; one at a time they topped out near a thousand a second,
//! whatever the machine, because every transaction pays for its own
//! statements, round trips and commit. Here one task takes every signup
//! that is waiting, writes them all in one transaction, and answers each.
//! Nobody waits for a batch to fill: a group is whatever arrived while the
//! previous one was being written, so a lone signup goes straight through.
//! A signup is answered only after its group commits.

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::domain::signup::{SignupOutcome, SignupRequest};
use crate::store::{SharedStore, StoreError, StoreResult};

/// Enough to take a burst in a few transactions, small enough that one
/// group's statements stay short.
const MAX_GROUP: usize = 256;

type Waiting = (SignupRequest, oneshot::Sender<StoreResult<SignupOutcome>>);

/// Where signups queue for the writer.
#[derive(Clone)]
pub struct Signups {
    queue: mpsc::Sender<Waiting>,
}

/// The task that writes the queued signups. It is handed back rather than
/// spawned here, so that whoever runs the daemon can watch it: a dead
/// writer would leave every signup waiting.
pub struct SignupWriter {
    store: SharedStore,
    waiting: mpsc::Receiver<Waiting>,
}

impl Signups {
    /// The queue and its writer; nothing is written until the writer runs,
    /// and a signup fails at once if the writer is gone.
    pub fn new(store: SharedStore) -> (Self, SignupWriter) {
        let (queue, waiting) = mpsc::channel(MAX_GROUP * 4);
        (Self { queue }, SignupWriter { store, waiting })
    }

    pub async fn sign_up(&self, request: SignupRequest) -> StoreResult<SignupOutcome> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send((request, answer))
            .await
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::NotRunning("the signup writer")
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

    async fn write(&self, group: &mut Vec<Waiting>) {
        let (requests, answers): (Vec<_>, Vec<_>) = group.drain(..).unzip();
        match self.store.signup_group(&requests).await {
            Ok(outcomes) => {
                for (answer, outcome) in answers.into_iter().zip(outcomes) {
                    let _ = answer.send(Ok(outcome));
                }
            }
            Err(error) if requests.len() == 1 => {
                if let Some(answer) = answers.into_iter().next() {
                    let _ = answer.send(Err(error));
                }
            }
            // One bad signup must not fail the others: each goes again alone.
            Err(error) => {
                tracing::warn!(
                    error = ?anyhow::Error::from(error),
                    signups = requests.len(),
                    "a group of signups failed; writing them one by one"
                );
                for (request, answer) in requests.into_iter().zip(answers) {
                    let _ = answer.send(self.store.signup(request).await);
                }
            }
        }
    }
}
