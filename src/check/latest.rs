//! The admin's view of `tidings check`: the last report, kept by the
//! daemon. A check takes seconds (an SMTP connection, DNS lookups that may
//! time out), so a page never waits for one: the first page that asks
//! starts it in the background and shows "checking" until it is done, and
//! a report older than an hour is refreshed the same way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Settings;
use crate::domain::deliverability::{Finding, Severity};

/// How long a report stands before a page view refreshes it.
const FRESH_FOR: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct CheckReport {
    pub finished_at: DateTime<Utc>,
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// What needs the operator's attention: warnings and errors.
    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|finding| finding.severity != Severity::Ok)
    }
}

#[derive(Default)]
struct State {
    report: Option<CheckReport>,
    running: bool,
}

#[derive(Default, Clone)]
pub struct LatestChecks {
    state: Arc<Mutex<State>>,
}

impl LatestChecks {
    /// The last report, if any, and whether a check is running. Starts one
    /// when there is none or it is stale (or `again` asks for one).
    pub fn get(&self, settings: &Arc<Settings>, again: bool) -> (Option<CheckReport>, bool) {
        let mut state = self.state.lock().expect("checks lock");
        let stale = state.report.as_ref().is_none_or(|report| {
            (Utc::now() - report.finished_at)
                .to_std()
                .is_ok_and(|age| age > FRESH_FOR)
        });
        if (stale || again) && !state.running {
            state.running = true;
            let (latest, settings) = (self.clone(), settings.clone());
            tokio::spawn(async move { latest.run(&settings).await });
        }
        (state.report.clone(), state.running)
    }

    async fn run(&self, settings: &Settings) {
        let mut findings = Vec::new();
        super::run(settings, None, &mut |finding| findings.push(finding)).await;
        let problems = findings
            .iter()
            .filter(|finding| finding.severity != Severity::Ok)
            .count();
        tracing::info!(problems, "configuration checked for the admin");
        let mut state = self.state.lock().expect("checks lock");
        state.running = false;
        state.report = Some(CheckReport {
            finished_at: Utc::now(),
            findings,
        });
    }

    /// Waits (up to `limit`) for the running check; for tests.
    pub async fn settled(&self, limit: Duration) -> Option<CheckReport> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            {
                let state = self.state.lock().expect("checks lock");
                if !state.running {
                    return state.report.clone();
                }
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
