//! Double opt-in: a signup asks for a confirmation email, and following the
//! emailed link confirms. The rules here decide what each step does; the
//! stores carry them out.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

use super::consent::ConsentContext;
use super::subscriber::{EmailAddress, SubscriberName, SubscriberStatus};

#[derive(Debug, Clone)]
pub struct SignupRequest {
    pub email: EmailAddress,
    pub name: Option<SubscriberName>,
    pub consent: ConsentContext,
    pub now: DateTime<Utc>,
    /// How long the confirmation link stays valid.
    pub confirmation_ttl: Duration,
    /// At most one confirmation email per address within this window.
    pub resend_window: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignupOutcome {
    /// A confirmation email is in the outbox.
    ConfirmationQueued { subscriber_id: i64 },
    /// Already confirmed: nothing to send.
    AlreadyConfirmed,
    /// A confirmation went out within the window: not another one.
    RecentlySent,
}

/// An address already on the list, as a signup for it finds it.
#[derive(Debug, Clone)]
pub struct ExistingSignup {
    pub id: i64,
    pub status: SubscriberStatus,
    pub last_confirmation_sent_at: Option<DateTime<Utc>>,
}

/// What a signup for an address already on the list does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignupStep {
    /// Answer with this, and change nothing.
    Answer(SignupOutcome),
    /// Log the signup and queue another confirmation email. `rename`: store
    /// the request's name too.
    SendConfirmation { rename: bool },
}

/// A confirmed address gets no email, and no address gets a second one
/// within the resend window. Anyone else (pending, unsubscribed, bounced)
/// gets a fresh link; their status changes only when they follow it, so a
/// stranger cannot undo an unsubscribe or a bounce by signing up. A pending
/// subscriber's name is taken from the latest signup.
pub fn signup_existing(existing: &ExistingSignup, request: &SignupRequest) -> SignupStep {
    if existing.status == SubscriberStatus::Confirmed {
        return SignupStep::Answer(SignupOutcome::AlreadyConfirmed);
    }
    if existing
        .last_confirmation_sent_at
        .is_some_and(|sent| sent > request.now - request.resend_window)
    {
        return SignupStep::Answer(SignupOutcome::RecentlySent);
    }
    SignupStep::SendConfirmation {
        rename: existing.status == SubscriberStatus::Pending && request.name.is_some(),
    }
}

/// For a signup group: the new subscriber's id for the first request for
/// each newly inserted address, `None` for the rest. A second request for
/// the same address in the group then finds the subscriber the first one
/// made, as it would have alone.
pub fn first_of_each_new_address(
    requests: &[SignupRequest],
    mut new_ids: HashMap<String, i64>,
) -> Vec<Option<i64>> {
    requests
        .iter()
        .map(|request| new_ids.remove(request.email.as_str()))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    Confirmed { subscriber_id: i64 },
    Unknown,
    Expired,
    AlreadyUsed,
}

/// A confirmation request as the link's owner finds it.
#[derive(Debug, Clone)]
pub struct PendingConfirmation {
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// What following a confirmation link does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmStep {
    Answer(ConfirmOutcome),
    /// Mark the link used; `confirm_subscriber`: also make the subscriber
    /// confirmed (resetting their bounces) and log their consent.
    Confirm {
        confirm_subscriber: bool,
    },
}

/// A link works once, until it expires. Following it confirms anyone not
/// confirmed yet, whatever they were before.
pub fn confirm(
    confirmation: &PendingConfirmation,
    status: SubscriberStatus,
    now: DateTime<Utc>,
) -> ConfirmStep {
    if confirmation.used_at.is_some() {
        return ConfirmStep::Answer(ConfirmOutcome::AlreadyUsed);
    }
    if confirmation.expires_at <= now {
        return ConfirmStep::Answer(ConfirmOutcome::Expired);
    }
    ConfirmStep::Confirm {
        confirm_subscriber: status != SubscriberStatus::Confirmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: Option<&str>, now: DateTime<Utc>) -> SignupRequest {
        SignupRequest {
            email: EmailAddress::parse("ada@example.com").unwrap(),
            name: SubscriberName::parse_optional(name).unwrap(),
            consent: ConsentContext::default(),
            now,
            confirmation_ttl: Duration::hours(72),
            resend_window: Duration::minutes(10),
        }
    }

    fn existing(status: SubscriberStatus, sent_minutes_ago: Option<i64>) -> ExistingSignup {
        let now = DateTime::<Utc>::default();
        ExistingSignup {
            id: 7,
            status,
            last_confirmation_sent_at: sent_minutes_ago.map(|m| now - Duration::minutes(m)),
        }
    }

    #[test]
    fn a_confirmed_address_gets_no_email() {
        let now = DateTime::default();
        let step = signup_existing(
            &existing(SubscriberStatus::Confirmed, None),
            &request(None, now),
        );
        assert_eq!(step, SignupStep::Answer(SignupOutcome::AlreadyConfirmed));
    }

    #[test]
    fn one_email_per_address_within_the_resend_window() {
        let now = DateTime::default();
        for status in [
            SubscriberStatus::Pending,
            SubscriberStatus::Unsubscribed,
            SubscriberStatus::Bounced,
        ] {
            let step = signup_existing(&existing(status, Some(9)), &request(None, now));
            assert_eq!(step, SignupStep::Answer(SignupOutcome::RecentlySent));
            let step = signup_existing(&existing(status, Some(10)), &request(None, now));
            assert!(matches!(step, SignupStep::SendConfirmation { .. }));
        }
    }

    #[test]
    fn only_a_pending_subscribers_name_follows_the_latest_signup() {
        let now = DateTime::default();
        let named = request(Some("Ada"), now);
        let rename = |status| signup_existing(&existing(status, None), &named);
        assert_eq!(
            rename(SubscriberStatus::Pending),
            SignupStep::SendConfirmation { rename: true }
        );
        for status in [SubscriberStatus::Unsubscribed, SubscriberStatus::Bounced] {
            assert_eq!(
                rename(status),
                SignupStep::SendConfirmation { rename: false }
            );
        }
        let unnamed = signup_existing(
            &existing(SubscriberStatus::Pending, None),
            &request(None, now),
        );
        assert_eq!(unnamed, SignupStep::SendConfirmation { rename: false });
    }

    #[test]
    fn a_group_gives_each_new_address_to_its_first_request() {
        let now = DateTime::default();
        let requests = vec![request(None, now), request(Some("Ada"), now)];
        let ids = HashMap::from([("ada@example.com".to_owned(), 42)]);
        assert_eq!(
            first_of_each_new_address(&requests, ids),
            vec![Some(42), None]
        );
    }

    #[test]
    fn a_link_works_once_until_it_expires() {
        let now = DateTime::<Utc>::default();
        let fresh = PendingConfirmation {
            expires_at: now + Duration::hours(1),
            used_at: None,
        };
        assert_eq!(
            confirm(&fresh, SubscriberStatus::Pending, now),
            ConfirmStep::Confirm {
                confirm_subscriber: true
            }
        );
        assert_eq!(
            confirm(&fresh, SubscriberStatus::Confirmed, now),
            ConfirmStep::Confirm {
                confirm_subscriber: false
            }
        );
        let used = PendingConfirmation {
            used_at: Some(now),
            ..fresh.clone()
        };
        assert_eq!(
            confirm(&used, SubscriberStatus::Pending, now),
            ConfirmStep::Answer(ConfirmOutcome::AlreadyUsed)
        );
        let expired = PendingConfirmation {
            expires_at: now,
            used_at: None,
        };
        assert_eq!(
            confirm(&expired, SubscriberStatus::Pending, now),
            ConfirmStep::Answer(ConfirmOutcome::Expired)
        );
    }
}
