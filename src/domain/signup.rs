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
    /// Log the signup and queue another confirmation email; the record
    /// itself stays as it is.
    SendConfirmation,
}

/// A confirmed address gets no email, and no address gets a second one
/// within the resend window. Anyone else (pending, unsubscribed, bounced)
/// gets a fresh link; their status changes only when they follow it, so a
/// stranger cannot undo an unsubscribe or a bounce by signing up. Nothing
/// else of the record changes either, the name included: whoever typed
/// this signup may not be the person, and only the person's own link
/// proves it is them.
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
    SignupStep::SendConfirmation
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
    /// The button confirmed them just now (or, for a second link of someone
    /// already confirmed, found them confirmed).
    Confirmed {
        subscriber_id: i64,
    },
    /// The link was used before and they are still confirmed: pressing the
    /// button again shows the same "you're subscribed" page.
    AlreadyConfirmed {
        subscriber_id: i64,
    },
    Unknown,
    Expired,
    /// The link was used (or retired by an unsubscribe) and the person is
    /// no longer confirmed: unsubscribed since, or bounced.
    NoLongerSubscribed,
}

/// A confirmation request as the link's owner finds it.
#[derive(Debug, Clone)]
pub struct PendingConfirmation {
    pub subscriber_id: i64,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// What pressing a confirmation link's button does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmStep {
    Answer(ConfirmOutcome),
    /// Mark the link used; `confirm_subscriber`: also make the subscriber
    /// confirmed (resetting their bounces) and log their consent.
    Confirm {
        confirm_subscriber: bool,
    },
}

/// A link works until it expires; pressing it confirms anyone not confirmed
/// yet, whatever they were before. Pressed again it changes nothing and
/// answers as before, even past its expiry, since a person who clicks twice
/// expects the same page. But a used link of someone who is no longer
/// confirmed does not claim they are subscribed: an unsubscribe retires
/// every link, and telling them "you're subscribed" would be false (and
/// the link must not undo the unsubscribe). They are told to sign up again.
pub fn confirm(
    confirmation: &PendingConfirmation,
    status: SubscriberStatus,
    now: DateTime<Utc>,
) -> ConfirmStep {
    if confirmation.used_at.is_some() {
        return ConfirmStep::Answer(if status == SubscriberStatus::Confirmed {
            ConfirmOutcome::AlreadyConfirmed {
                subscriber_id: confirmation.subscriber_id,
            }
        } else {
            ConfirmOutcome::NoLongerSubscribed
        });
    }
    if confirmation.expires_at <= now {
        return ConfirmStep::Answer(ConfirmOutcome::Expired);
    }
    ConfirmStep::Confirm {
        confirm_subscriber: status != SubscriberStatus::Confirmed,
    }
}

/// What the page behind a confirmation link shows when it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmLink {
    /// One button, which POSTs: pressing it confirms, or shows again that
    /// they are subscribed.
    Open,
    /// The answer pressing it would give, shown at once (no button).
    Closed(ConfirmOutcome),
}

/// Opening a link changes nothing, since mail scanners open every link in
/// an email: this says what the page shows, by the same rule as [`confirm`].
pub fn open_link(
    confirmation: &PendingConfirmation,
    status: SubscriberStatus,
    now: DateTime<Utc>,
) -> ConfirmLink {
    match confirm(confirmation, status, now) {
        ConfirmStep::Confirm { .. }
        | ConfirmStep::Answer(ConfirmOutcome::AlreadyConfirmed { .. }) => ConfirmLink::Open,
        ConfirmStep::Answer(outcome) => ConfirmLink::Closed(outcome),
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
            assert_eq!(step, SignupStep::SendConfirmation);
        }
    }

    #[test]
    fn a_signup_never_renames_anyone() {
        let now = DateTime::default();
        let named = request(Some("Mallory"), now);
        for status in [
            SubscriberStatus::Pending,
            SubscriberStatus::Unsubscribed,
            SubscriberStatus::Bounced,
        ] {
            // The only step that writes queues an email and logs the
            // signup; there is no step that touches the record.
            assert_eq!(
                signup_existing(&existing(status, None), &named),
                SignupStep::SendConfirmation
            );
        }
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
    fn a_link_confirms_until_it_expires_and_then_answers_the_same() {
        let now = DateTime::<Utc>::default();
        let fresh = PendingConfirmation {
            subscriber_id: 7,
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
        // Pressed again, even after it would have expired: the same page.
        for later in [now, now + Duration::days(30)] {
            assert_eq!(
                confirm(&used, SubscriberStatus::Confirmed, later),
                ConfirmStep::Answer(ConfirmOutcome::AlreadyConfirmed { subscriber_id: 7 })
            );
        }
        for status in [
            SubscriberStatus::Unsubscribed,
            SubscriberStatus::Bounced,
            SubscriberStatus::Pending,
        ] {
            assert_eq!(
                confirm(&used, status, now),
                ConfirmStep::Answer(ConfirmOutcome::NoLongerSubscribed),
                "{status}"
            );
        }
        let expired = PendingConfirmation {
            expires_at: now,
            ..fresh.clone()
        };
        assert_eq!(
            confirm(&expired, SubscriberStatus::Pending, now),
            ConfirmStep::Answer(ConfirmOutcome::Expired)
        );
    }

    #[test]
    fn opening_a_link_shows_what_its_button_would_do() {
        let now = DateTime::<Utc>::default();
        let fresh = PendingConfirmation {
            subscriber_id: 7,
            expires_at: now + Duration::hours(1),
            used_at: None,
        };
        assert_eq!(
            open_link(&fresh, SubscriberStatus::Pending, now),
            ConfirmLink::Open
        );
        let used = PendingConfirmation {
            used_at: Some(now),
            ..fresh.clone()
        };
        assert_eq!(
            open_link(&used, SubscriberStatus::Confirmed, now),
            ConfirmLink::Open
        );
        assert_eq!(
            open_link(&used, SubscriberStatus::Unsubscribed, now),
            ConfirmLink::Closed(ConfirmOutcome::NoLongerSubscribed)
        );
        assert_eq!(
            open_link(&fresh, SubscriberStatus::Pending, now + Duration::hours(1)),
            ConfirmLink::Closed(ConfirmOutcome::Expired)
        );
    }
}
