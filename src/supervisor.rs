//! Watches the daemon's long-lived tasks (the delivery worker, the
//! scheduler, the signup writer). Each is meant to run until it is told to
//! stop; one that panics, or returns before then, leaves the daemon
//! answering requests it can no longer carry out. So its end is reported,
//! named, and the daemon exits non-zero for a service manager to restart.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::health::Health;

#[derive(Debug, thiserror::Error)]
pub enum TaskFailure {
    #[error("{task} panicked: {message}")]
    Panicked { task: &'static str, message: String },
    #[error("{task} stopped on its own while the daemon was running")]
    Ended { task: &'static str },
}

#[derive(Default)]
pub struct Supervisor {
    tasks: JoinSet<Result<(), TaskFailure>>,
    /// Told at once when a task fails, so `/healthz` answers 503 while the
    /// daemon stops.
    health: Option<Arc<Health>>,
}

impl Supervisor {
    pub fn reporting_to(health: Arc<Health>) -> Self {
        Self {
            tasks: JoinSet::new(),
            health: Some(health),
        }
    }

    /// Spawns `task`, named for the logs (`"the delivery worker"`). Its end
    /// is expected only once `stop` is cancelled; a panic never is.
    pub fn spawn<F>(&mut self, task: &'static str, stop: &CancellationToken, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = stop.clone();
        let health = self.health.clone();
        self.tasks.spawn(async move {
            let ended = match AssertUnwindSafe(future).catch_unwind().await {
                Ok(()) if stop.is_cancelled() => Ok(()),
                Ok(()) => Err(TaskFailure::Ended { task }),
                Err(panic) => Err(TaskFailure::Panicked {
                    task,
                    message: panic_message(panic.as_ref()),
                }),
            };
            if let (Err(_), Some(health)) = (&ended, health) {
                health.task_stopped(task);
            }
            ended
        });
    }

    /// The first task to fail. While none has, it waits (for ever, once
    /// they have all ended well): it is meant for a `select!`.
    pub async fn first_failure(&mut self) -> TaskFailure {
        while let Some(ended) = self.tasks.join_next().await {
            if let Err(failure) = flatten(ended) {
                return failure;
            }
        }
        std::future::pending().await
    }

    /// Waits for every task still running; returns how those that failed did.
    pub async fn join_all(mut self) -> Vec<TaskFailure> {
        let mut failures = Vec::new();
        while let Some(ended) = self.tasks.join_next().await {
            if let Err(failure) = flatten(ended) {
                failures.push(failure);
            }
        }
        failures
    }
}

/// Our tasks catch their own panics, so a join error is an abort, which
/// nothing here does; reported all the same rather than lost.
fn flatten(
    joined: Result<Result<(), TaskFailure>, tokio::task::JoinError>,
) -> Result<(), TaskFailure> {
    joined.unwrap_or_else(|error| {
        Err(TaskFailure::Panicked {
            task: "a supervised task",
            message: error.to_string(),
        })
    })
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const PATIENCE: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_task_that_returns_before_the_stop_is_named() {
        let stop = CancellationToken::new();
        let mut tasks = Supervisor::default();
        tasks.spawn("the steady one", &stop, stop.clone().cancelled_owned());
        tasks.spawn("the signup writer", &stop, async {});
        let failure = tokio::time::timeout(PATIENCE, tasks.first_failure())
            .await
            .unwrap();
        assert_eq!(
            failure.to_string(),
            "the signup writer stopped on its own while the daemon was running"
        );
    }

    #[tokio::test]
    async fn a_task_that_panics_is_named_with_its_message() {
        let stop = CancellationToken::new();
        let mut tasks = Supervisor::default();
        tasks.spawn("the steady one", &stop, stop.clone().cancelled_owned());
        let message = String::from("lost the database");
        tasks.spawn("the delivery worker", &stop, async move {
            panic!("{message}");
        });
        let failure = tokio::time::timeout(PATIENCE, tasks.first_failure())
            .await
            .unwrap();
        assert_eq!(
            failure.to_string(),
            "the delivery worker panicked: lost the database"
        );
    }

    #[tokio::test]
    async fn a_failed_task_makes_the_health_check_fail_before_the_daemon_stops() {
        let health = Arc::new(Health::with_disk_guard(None));
        let stop = CancellationToken::new();
        let mut tasks = Supervisor::reporting_to(health.clone());
        tasks.spawn("the scheduler", &stop, async {});
        tokio::time::timeout(PATIENCE, tasks.first_failure())
            .await
            .unwrap();
        // No store is asked: a stopped task is known without one.
        let problem = health.stopped_task();
        assert_eq!(problem, Some("the scheduler"));
    }

    #[tokio::test]
    async fn tasks_that_end_when_told_to_are_no_failure() {
        let stop = CancellationToken::new();
        let mut tasks = Supervisor::default();
        for task in ["the scheduler", "the delivery worker"] {
            tasks.spawn(task, &stop, stop.clone().cancelled_owned());
        }
        stop.cancel();
        let failures = tokio::time::timeout(PATIENCE, tasks.join_all())
            .await
            .unwrap();
        assert!(failures.is_empty(), "{failures:?}");
    }

    #[tokio::test]
    async fn a_panic_while_stopping_is_still_a_failure() {
        let stop = CancellationToken::new();
        let mut tasks = Supervisor::default();
        let told = stop.clone();
        tasks.spawn("the delivery worker", &stop, async move {
            told.cancelled().await;
            panic!("could not hand the claims back");
        });
        stop.cancel();
        let failures = tokio::time::timeout(PATIENCE, tasks.join_all())
            .await
            .unwrap();
        assert_eq!(failures.len(), 1);
        assert!(matches!(
            failures[0],
            TaskFailure::Panicked {
                task: "the delivery worker",
                ..
            }
        ));
    }
}
