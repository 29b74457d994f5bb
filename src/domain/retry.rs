//! Failed deliveries: what the SMTP server last said, and whether sending
//! again could help. "Retry failed" on an issue's page puts back in the
//! outbox only the failures [`retry_verdict`] calls worth it.

use serde::Serialize;

use super::subscriber::SubscriberStatus;

/// An RFC 3463 enhanced status code, `class.subject.detail` (`5.1.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedStatus {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl EnhancedStatus {
    /// `5.1.1` at the start of `text`, as servers put it before their words.
    fn at_start(text: &str) -> Option<Self> {
        let token = text.split_whitespace().next()?;
        let mut parts = token.split('.');
        let class: u8 = parts.next()?.parse().ok()?;
        let subject: u16 = parts.next()?.parse().ok()?;
        let detail: u16 = parts.next()?.parse().ok()?;
        let short = |part: &str| (1..=3).contains(&part.len());
        let well_formed = parts.next().is_none()
            && token
                .split('.')
                .all(|part| short(part) && part.bytes().all(|byte| byte.is_ascii_digit()));
        (well_formed && matches!(class, 2 | 4 | 5)).then_some(Self {
            class,
            subject,
            detail,
        })
    }
}

impl std::fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A delivery's `last_error` taken apart: the reply code, the enhanced
/// status, the server's own words, and whether the worker gave up after
/// retrying a temporary failure. Anything else (a timeout, a refusal made
/// before sending) is all `text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureReply {
    pub code: Option<u16>,
    pub enhanced: Option<EnhancedStatus>,
    pub text: String,
    /// `Some(attempts)` when temporary failures used up every attempt.
    pub gave_up_after: Option<u32>,
}

impl FailureReply {
    /// Reads what the delivery worker stores: `permanent error (550): 5.1.1
    /// No such user`, `gave up after 8 attempts: transient error (451): …`,
    /// or plain words.
    pub fn parse(last_error: &str) -> Self {
        let mut rest = last_error.trim();
        let mut gave_up_after = None;
        if let Some(after) = rest.strip_prefix("gave up after ") {
            if let Some((count, tail)) = after.split_once(" attempts") {
                if let Ok(count) = count.parse() {
                    gave_up_after = Some(count);
                    rest = tail.trim_start_matches(':').trim_start();
                }
            }
        }
        let mut code = None;
        for prefix in ["permanent error (", "transient error ("] {
            if let Some(after) = rest.strip_prefix(prefix) {
                if let Some((number, tail)) = after.split_once(')') {
                    if let Ok(number) = number.parse::<u16>() {
                        code = Some(number);
                        rest = tail.trim_start_matches(':').trim_start();
                    }
                }
            }
        }
        let enhanced = code.and_then(|_| EnhancedStatus::at_start(rest));
        if enhanced.is_some() {
            rest = rest
                .split_once(char::is_whitespace)
                .map_or("", |(_, words)| words.trim_start());
        }
        Self {
            code,
            enhanced,
            text: rest.to_owned(),
            gave_up_after,
        }
    }

    /// `550 5.1.1`, or `451 4.3.0`, or nothing when there was no reply.
    pub fn code_text(&self) -> Option<String> {
        let code = self.code?;
        Some(match self.enhanced {
            Some(enhanced) => format!("{code} {enhanced}"),
            None => code.to_string(),
        })
    }

    /// Whether sending again could get through: the failure was about the
    /// moment, the sending system or its policy, not about the address.
    ///
    /// - Temporary failures (4xx, dropped connections, timeouts) that used
    ///   up every attempt: yes, the server may be back.
    /// - 5.1.x, the address itself (no such mailbox, no such domain, bad
    ///   syntax): no; except 5.1.7 and 5.1.8, which are about our sender
    ///   address. 5.2.1, a mailbox disabled: no. The worker counted each
    ///   of these as a hard bounce already.
    /// - Policy and system errors (5.7.x spam or authentication rules,
    ///   5.3.x and 5.4.x mail system and routing, 5.5.x protocol, 5.6.x
    ///   content, 5.2.2 a full mailbox): yes, once fixed they pass.
    /// - A 5xx without an enhanced code: 550, 551 and 553 name the mailbox
    ///   (no); 554 "transaction failed" and the rest are system errors.
    /// - No reply at all (refused before sending): a system error, yes.
    pub fn worth_retrying(&self) -> bool {
        if self.gave_up_after.is_some() {
            return true;
        }
        match (self.enhanced, self.code) {
            (
                Some(EnhancedStatus {
                    class: 5,
                    subject,
                    detail,
                }),
                _,
            ) if subject != 0 => match subject {
                1 => matches!(detail, 7 | 8),
                2 => detail != 1,
                _ => true,
            },
            (_, Some(code)) => !matches!(code, 550 | 551 | 553),
            (_, None) => true,
        }
    }
}

/// Why a failed delivery stays failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepReason {
    Unsubscribed,
    Bounced,
    /// Erased, or otherwise no longer a confirmed subscriber.
    NotSubscribed,
    /// The server said the address itself is bad (5.1.x and the like).
    BadAddress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryVerdict {
    Retry,
    Keep(KeepReason),
}

/// Whether "retry failed" sends this failure again. Never to someone who
/// is not a confirmed subscriber now (`None`: no longer on the list),
/// whatever the server said; otherwise when the reply is worth retrying.
pub fn retry_verdict(last_error: &str, subscriber: Option<SubscriberStatus>) -> RetryVerdict {
    match subscriber {
        Some(SubscriberStatus::Confirmed) => {}
        Some(SubscriberStatus::Unsubscribed) => {
            return RetryVerdict::Keep(KeepReason::Unsubscribed)
        }
        Some(SubscriberStatus::Bounced) => return RetryVerdict::Keep(KeepReason::Bounced),
        Some(SubscriberStatus::Pending) | None => {
            return RetryVerdict::Keep(KeepReason::NotSubscribed)
        }
    }
    if FailureReply::parse(last_error).worth_retrying() {
        RetryVerdict::Retry
    } else {
        RetryVerdict::Keep(KeepReason::BadAddress)
    }
}

/// An issue's failures sorted by verdict: how many a retry sends again,
/// and how many it leaves alone, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetryPlan {
    pub retry: u64,
    pub unsubscribed: u64,
    pub bounced: u64,
    pub not_subscribed: u64,
    pub bad_address: u64,
}

impl RetryPlan {
    /// Counts `count` failures with this verdict.
    pub fn count(&mut self, verdict: RetryVerdict, count: u64) {
        let slot = match verdict {
            RetryVerdict::Retry => &mut self.retry,
            RetryVerdict::Keep(KeepReason::Unsubscribed) => &mut self.unsubscribed,
            RetryVerdict::Keep(KeepReason::Bounced) => &mut self.bounced,
            RetryVerdict::Keep(KeepReason::NotSubscribed) => &mut self.not_subscribed,
            RetryVerdict::Keep(KeepReason::BadAddress) => &mut self.bad_address,
        };
        *slot += count;
    }

    /// The failures that stay failed.
    pub fn kept(&self) -> u64 {
        self.unsubscribed + self.bounced + self.not_subscribed + self.bad_address
    }

    pub fn add(&mut self, other: RetryPlan) {
        self.retry += other.retry;
        self.unsubscribed += other.unsubscribed;
        self.bounced += other.bounced;
        self.not_subscribed += other.not_subscribed;
        self.bad_address += other.bad_address;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIRMED: Option<SubscriberStatus> = Some(SubscriberStatus::Confirmed);

    fn worth(last_error: &str) -> bool {
        FailureReply::parse(last_error).worth_retrying()
    }

    #[test]
    fn a_permanent_reply_is_taken_apart() {
        let reply = FailureReply::parse("permanent error (550): 5.1.1 No such user");
        assert_eq!(reply.code, Some(550));
        assert_eq!(
            reply.enhanced.map(|code| code.to_string()),
            Some("5.1.1".into())
        );
        assert_eq!(reply.text, "No such user");
        assert_eq!(reply.gave_up_after, None);
        assert_eq!(reply.code_text().as_deref(), Some("550 5.1.1"));
    }

    #[test]
    fn a_temporary_failure_given_up_is_taken_apart() {
        let reply = FailureReply::parse(
            "gave up after 8 attempts: transient error (451): 4.3.0 Try again later",
        );
        assert_eq!(reply.gave_up_after, Some(8));
        assert_eq!(reply.code_text().as_deref(), Some("451 4.3.0"));
        assert_eq!(reply.text, "Try again later");
        let timeout = FailureReply::parse("gave up after 4 attempts: no answer within 5s");
        assert_eq!((timeout.gave_up_after, timeout.code), (Some(4), None));
        assert_eq!(timeout.text, "no answer within 5s");
    }

    #[test]
    fn words_without_a_code_stay_words() {
        for text in [
            "the message is not ASCII and the server does not offer 8BITMIME",
            "subscriber is unsubscribed now",
            "permanent error (abc): 5.1.1 odd",
            "",
        ] {
            let reply = FailureReply::parse(text);
            assert_eq!((reply.code, reply.enhanced), (None, None), "{text}");
            assert_eq!(reply.text, text.trim());
            assert_eq!(reply.code_text(), None);
        }
        // A number that only looks like a status code is part of the words.
        let reply = FailureReply::parse("permanent error (554): 5.7 rejected");
        assert_eq!((reply.code, reply.enhanced), (Some(554), None));
        assert_eq!(reply.text, "5.7 rejected");
    }

    #[test]
    fn temporary_failures_that_ran_out_of_attempts_are_worth_retrying() {
        assert!(worth(
            "gave up after 8 attempts: transient error (451): 4.3.0 Try again later"
        ));
        assert!(worth(
            "gave up after 8 attempts: transient error (421): 4.4.2 Closing connection"
        ));
        assert!(worth(
            "gave up after 8 attempts: no answer within 30s after the message"
        ));
        assert!(worth(
            "gave up after 8 attempts: network error: connection reset"
        ));
    }

    #[test]
    fn policy_and_system_errors_are_worth_retrying() {
        for error in [
            "permanent error (550): 5.7.1 Message rejected as spam",
            "permanent error (554): 5.7.26 Unauthenticated email is not accepted",
            "permanent error (552): 5.3.4 Message too big for system",
            "permanent error (554): 5.4.6 Routing loop detected",
            "permanent error (554): 5.5.0 Transaction failed",
            "permanent error (552): 5.2.2 Mailbox full",
            "permanent error (550): 5.1.8 Bad sender's system address",
            "permanent error (554): Transaction failed, try again later",
            "permanent error (552): Requested mail action aborted",
            "the message is not ASCII and the server does not offer 8BITMIME",
        ] {
            assert!(worth(error), "{error}");
        }
    }

    #[test]
    fn a_bad_address_is_not_worth_retrying() {
        for error in [
            "permanent error (550): 5.1.1 No such user",
            "permanent error (550): 5.1.2 Bad destination system",
            "permanent error (553): 5.1.3 Bad destination mailbox address syntax",
            "permanent error (550): 5.1.10 Null MX",
            "permanent error (550): 5.2.1 Mailbox disabled",
            "permanent error (550): Mailbox unavailable",
            "permanent error (551): User not local",
        ] {
            assert!(!worth(error), "{error}");
        }
        // 5.0.0 says nothing; the reply code decides.
        assert!(!worth("permanent error (550): 5.0.0 Unknown user"));
        assert!(worth("permanent error (554): 5.0.0 Rejected"));
    }

    #[test]
    fn nobody_who_left_is_sent_to_again() {
        let policy = "permanent error (550): 5.7.1 Message rejected as spam";
        assert_eq!(retry_verdict(policy, CONFIRMED), RetryVerdict::Retry);
        assert_eq!(
            retry_verdict(policy, Some(SubscriberStatus::Unsubscribed)),
            RetryVerdict::Keep(KeepReason::Unsubscribed)
        );
        assert_eq!(
            retry_verdict(policy, Some(SubscriberStatus::Bounced)),
            RetryVerdict::Keep(KeepReason::Bounced)
        );
        assert_eq!(
            retry_verdict(policy, None),
            RetryVerdict::Keep(KeepReason::NotSubscribed)
        );
        assert_eq!(
            retry_verdict(policy, Some(SubscriberStatus::Pending)),
            RetryVerdict::Keep(KeepReason::NotSubscribed)
        );
        assert_eq!(
            retry_verdict("permanent error (550): 5.1.1 No such user", CONFIRMED),
            RetryVerdict::Keep(KeepReason::BadAddress)
        );
    }

    #[test]
    fn a_plan_counts_each_verdict() {
        let mut plan = RetryPlan::default();
        plan.count(RetryVerdict::Retry, 2);
        plan.count(RetryVerdict::Keep(KeepReason::Unsubscribed), 1);
        plan.count(RetryVerdict::Keep(KeepReason::BadAddress), 1);
        assert_eq!((plan.retry, plan.kept()), (2, 2));
        let mut total = RetryPlan::default();
        total.add(plan);
        total.add(plan);
        assert_eq!((total.retry, total.unsubscribed, total.kept()), (4, 2, 4));
    }
}
