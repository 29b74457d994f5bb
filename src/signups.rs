//! Group commit for signups. Each signup is a write transaction of several
//! statements; one at a time they topped out near a thousand a second,
//! whatever the machine, because every transaction pays for its own
//! statements, round trips and commit. Here one task takes every signup
//! that is waiting, writes them all in one transaction, and answers each.
//! Nobody waits for a batch to fill: a group is whatever arrived while the
//! previous one was being written, so a lone signup goes straight through.
//! A signup is answered only after its group commits.

use tokio::sync::{mpsc, oneshot};

use crate::domain::signup::{SignupOutcome, SignupRequest};
use crate::store::{SharedStore, StoreError, StoreResult};

/// Enough to take a burst in a few transactions, small enough that one
/// group's statements stay short.
const MAX_GROUP: usize = 256;

type Waiting = (SignupRequest, oneshot::Sender<StoreResult<SignupOutcome>>);

#[derive(Clone)]
pub struct Signups {
    queue: mpsc::Sender<Waiting>,
}

impl Signups {
    /// Starts the writer task; it ends when every handle is dropped.
    pub fn start(store: SharedStore) -> Self {
        let (queue, waiting) = mpsc::channel(MAX_GROUP * 4);
        tokio::spawn(write_groups(store, waiting));
        Self { queue }
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

async fn write_groups(store: SharedStore, mut waiting: mpsc::Receiver<Waiting>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while waiting.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (requests, answers): (Vec<_>, Vec<_>) = group.drain(..).unzip();
        match store.signup_group(&requests).await {
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
                    let _ = answer.send(store.signup(request).await);
                }
            }
        }
    }
}
