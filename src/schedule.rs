//! The scheduler: turns cron slots into issues. A slot is identified by its
//! local wall-clock time in the configured zone, so the repeated hour of a
//! DST fall-back is one slot, and creating its issue is idempotent.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio_util::sync::CancellationToken;

use crate::config::ScheduleSettings;
use crate::domain::issue::{CreateIssueOutcome, NewIssue};
use crate::newsletter::{Newsletter, NewsletterResult};

/// Longest nap between looks at the clock, so clock changes are noticed.
const MAX_NAP: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickOutcome {
    /// No slot has come due since the last tick.
    Idle,
    Created {
        slot_key: String,
        issue_id: i64,
        recipients: u64,
    },
    /// Another tick, restart or instance already handled this slot.
    AlreadyDone { slot_key: String },
    /// The queue is empty or nobody is due a post.
    NothingToSend { slot_key: String },
    /// The slot is older than `schedule.catch_up`.
    TooLate { slot_key: String },
}

/// `2026-11-01T01:30:00 America/New_York`: the slot's identity.
pub fn slot_key(slot: &DateTime<Tz>) -> String {
    format!(
        "{} {}",
        slot.naive_local().format("%Y-%m-%dT%H:%M:%S"),
        slot.timezone().name()
    )
}

/// The latest slot at or before `now`.
pub fn latest_slot(settings: &ScheduleSettings, now: DateTime<Utc>) -> Option<DateTime<Tz>> {
    let local = now.with_timezone(&settings.timezone);
    if settings.cron.includes(local) {
        return Some(local);
    }
    // Walking back from inside a repeated DST hour, the cron crate offers
    // the later of the two instants first, which may still be ahead of us.
    settings
        .cron
        .after(&local)
        .rev()
        .take(3)
        .find(|slot| *slot <= local)
}

pub fn next_slot(settings: &ScheduleSettings, now: DateTime<Utc>) -> Option<DateTime<Tz>> {
    settings
        .cron
        .after(&now.with_timezone(&settings.timezone))
        .next()
}

/// Issues are created through the newsletter service, which wakes the
/// delivery worker for them.
pub struct Scheduler {
    newsletter: Arc<Newsletter>,
    settings: ScheduleSettings,
    last_slot: std::sync::Mutex<Option<DateTime<Utc>>>,
}

impl Scheduler {
    pub fn new(newsletter: Arc<Newsletter>, settings: ScheduleSettings) -> Self {
        Self {
            newsletter,
            settings,
            last_slot: std::sync::Mutex::new(None),
        }
    }

    pub fn next_send_at(&self) -> Option<DateTime<Utc>> {
        next_slot(&self.settings, self.newsletter.now()).map(|slot| slot.with_timezone(&Utc))
    }

    /// Handles the latest due slot, if it is new to this process.
    pub async fn tick(&self, now: DateTime<Utc>) -> NewsletterResult<TickOutcome> {
        let Some(slot) = latest_slot(&self.settings, now) else {
            return Ok(TickOutcome::Idle);
        };
        let slot_utc = slot.with_timezone(&Utc);
        if *self.last_slot.lock().expect("slot lock") == Some(slot_utc) {
            return Ok(TickOutcome::Idle);
        }
        let outcome = self.handle_slot(&slot, now).await?;
        *self.last_slot.lock().expect("slot lock") = Some(slot_utc);
        Ok(outcome)
    }

    async fn handle_slot(
        &self,
        slot: &DateTime<Tz>,
        now: DateTime<Utc>,
    ) -> NewsletterResult<TickOutcome> {
        let slot_key = slot_key(slot);
        let slot_utc = slot.with_timezone(&Utc);
        let late_by = (now - slot_utc).to_std().unwrap_or_default();
        if late_by > self.settings.catch_up {
            // report_missed_slots has said so at start; this is routine.
            tracing::debug!(slot = %slot_key, late_by = ?late_by, "latest slot is older than schedule.catch_up");
            return Ok(TickOutcome::TooLate { slot_key });
        }
        let outcome = self
            .newsletter
            .start_issue(NewIssue {
                slot_key: slot_key.clone(),
                slot_at: Some(slot_utc),
                mode: self.settings.mode,
                now,
            })
            .await?;
        Ok(match outcome {
            CreateIssueOutcome::Created(created) => {
                tracing::info!(slot = %slot_key, issue = created.issue_id, post = ?created.post_id,
                    recipients = created.recipients, "issue created");
                TickOutcome::Created {
                    slot_key,
                    issue_id: created.issue_id,
                    recipients: created.recipients,
                }
            }
            CreateIssueOutcome::SlotTaken => TickOutcome::AlreadyDone { slot_key },
            CreateIssueOutcome::NothingToSend => {
                tracing::warn!(slot = %slot_key, "nothing to send at this slot: the queue is empty or nobody is confirmed");
                TickOutcome::NothingToSend { slot_key }
            }
        })
    }

    /// Logs the slots missed while the daemon was down that are too old to send.
    pub async fn report_missed_slots(&self) -> NewsletterResult<()> {
        let now = self.newsletter.now();
        let Some(since) = self.newsletter.store().latest_scheduled_slot().await? else {
            return Ok(());
        };
        let window_start =
            now - chrono::Duration::from_std(self.settings.catch_up).unwrap_or_default();
        let missed: Vec<String> = self
            .settings
            .cron
            .after(&since.with_timezone(&self.settings.timezone))
            .take_while(|slot| slot.with_timezone(&Utc) < window_start)
            .take(100)
            .map(|slot| slot_key(&slot))
            .collect();
        if !missed.is_empty() {
            tracing::warn!(count = missed.len(), first = %missed[0], last = %missed[missed.len() - 1],
                "slots missed while the daemon was down are skipped (older than schedule.catch_up)");
        }
        Ok(())
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        if let Err(error) = self.report_missed_slots().await {
            tracing::error!(error = ?anyhow::Error::from(error), "could not check for missed slots");
        }
        while !shutdown.is_cancelled() {
            let now = self.newsletter.now();
            if let Err(error) = self.tick(now).await {
                tracing::error!(error = ?anyhow::Error::from(error), "scheduler tick failed; will retry");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            let nap = self
                .next_send_at()
                .and_then(|next| (next - self.newsletter.now()).to_std().ok())
                .unwrap_or(MAX_NAP)
                .min(MAX_NAP);
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn settings(cron: &str, tz: &str) -> ScheduleSettings {
        ScheduleSettings {
            cron: cron::Schedule::from_str(cron).unwrap(),
            timezone: tz.parse().unwrap(),
            mode: crate::config::ScheduleMode::Broadcast,
            catch_up: Duration::from_secs(6 * 3600),
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_repeated_hour_of_a_fall_back_is_one_slot() {
        let settings = settings("0 30 1 * * Sun", "America/New_York");
        // 01:30 EDT is 05:30 UTC; 01:30 EST is 06:30 UTC on 2026-11-01.
        let first = latest_slot(&settings, utc("2026-11-01T05:45:00Z")).unwrap();
        let second = latest_slot(&settings, utc("2026-11-01T06:45:00Z")).unwrap();
        assert_ne!(first.with_timezone(&Utc), second.with_timezone(&Utc));
        assert_eq!(slot_key(&first), slot_key(&second));
        assert_eq!(slot_key(&first), "2026-11-01T01:30:00 America/New_York");
    }

    #[test]
    fn slots_are_evaluated_in_the_configured_zone() {
        let settings = settings("0 0 9 * * Mon", "Europe/Berlin");
        let next = next_slot(&settings, utc("2026-11-22T12:00:00Z")).unwrap();
        // Monday 23 November 2026, 09:00 CET is 08:00 UTC.
        assert_eq!(next.with_timezone(&Utc), utc("2026-11-23T08:00:00Z"));
        let latest = latest_slot(&settings, utc("2026-11-23T08:00:00Z")).unwrap();
        assert_eq!(latest.with_timezone(&Utc), utc("2026-11-23T08:00:00Z"));
    }
}
