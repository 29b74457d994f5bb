//! Unsubscribing by address: for a reader whose link is broken or lost,
//! the page asks for their address and emails them their own link.

use super::subscriber::SubscriberStatus;

/// What asking for a link by address did. For logs and tests only: the
/// page answers the same whatever it is, so nobody can probe the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRequestOutcome {
    /// The reader's unsubscribe link is on its way.
    Sent { subscriber_id: i64 },
    /// Nobody on the list has the address, or nobody who could use it.
    NotSent,
}

/// Who is sent their link: someone who still gets (or may soon get) our
/// email. An unsubscribed reader has nothing to stop, and a bounced
/// address would not take the email.
pub fn sends_link(status: SubscriberStatus) -> bool {
    match status {
        SubscriberStatus::Pending | SubscriberStatus::Confirmed => true,
        SubscriberStatus::Unsubscribed | SubscriberStatus::Bounced => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_readers_who_still_get_email_are_sent_a_link() {
        assert!(sends_link(SubscriberStatus::Confirmed));
        assert!(sends_link(SubscriberStatus::Pending));
        assert!(!sends_link(SubscriberStatus::Unsubscribed));
        assert!(!sends_link(SubscriberStatus::Bounced));
    }
}
