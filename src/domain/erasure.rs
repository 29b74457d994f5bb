//! Erasing a subscriber (GDPR art. 17, on request): what goes, what stays,
//! and what the consent log keeps to show that it happened.
//!
//! What goes: the address, the name, and the IP and user agent of every
//! consent event, plus any text that may quote the address (a bounce's
//! SMTP reply in the log's detail, a delivery's error and reply). What
//! stays: the record's id, status and dates, its deliveries (an issue's
//! counts stay right) and its consent events by kind and time, so the log
//! still shows when consent was given and withdrawn, no longer by whom.
//!
//! The address is replaced by [`placeholder`], which is unique (the column
//! is) and is no address at all (it has no `@`): nothing can mail it, no
//! signup can match it, and the same address signs up again as new. No
//! hash of the address is kept: an address is easy to guess, so its hash
//! would still name the person to anyone holding a list of addresses.

use super::consent::ConsentKind;

/// What stands in the address column of an erased subscriber and of its
/// consent events. The database's consent-log trigger allows exactly this.
pub fn placeholder(subscriber_id: i64) -> String {
    format!("erased:{subscriber_id}")
}

/// The consent log's detail for an event done by an operator in the admin.
pub fn by_admin(admin_email: &str) -> String {
    format!("source=admin by={admin_email}")
}

/// The detail an event keeps through an erasure: only one the program
/// wrote from its own words (an operator's add, unsubscribe or erasure);
/// a bounce's detail quotes the receiving server, which may name the
/// address, so it goes.
pub fn kept_detail(kind: ConsentKind, detail: Option<&str>) -> Option<&str> {
    match kind {
        ConsentKind::OperatorAdd | ConsentKind::Unsubscribe | ConsentKind::Erased => detail,
        ConsentKind::Signup | ConsentKind::Confirm | ConsentKind::Bounced => None,
    }
}

/// The subscriber as an erasure finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Nobody,
    Erased,
    Present,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EraseOutcome {
    Erased,
    /// Erased before: nothing changes, and no second event is logged.
    AlreadyErased,
    Unknown,
}

/// Whether to erase: once, and only someone who is there.
pub fn erase(found: Found) -> Option<EraseOutcome> {
    match found {
        Found::Nobody => Some(EraseOutcome::Unknown),
        Found::Erased => Some(EraseOutcome::AlreadyErased),
        Found::Present => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::subscriber::EmailAddress;

    #[test]
    fn the_placeholder_is_unique_per_record_and_never_an_address() {
        assert_eq!(placeholder(42), "erased:42");
        assert_ne!(placeholder(1), placeholder(11));
        assert!(EmailAddress::parse(&placeholder(7)).is_err());
        assert!(!placeholder(7).contains('@'));
    }

    #[test]
    fn only_details_in_our_own_words_survive() {
        let by = by_admin("editor@example.org");
        assert_eq!(by, "source=admin by=editor@example.org");
        for kind in [
            ConsentKind::OperatorAdd,
            ConsentKind::Unsubscribe,
            ConsentKind::Erased,
        ] {
            assert_eq!(kind_detail(kind, &by), Some(by.as_str()), "{kind}");
        }
        let bounce = "after 3 hard bounces; last: 550 <ada@example.com>: no such user";
        assert_eq!(kind_detail(ConsentKind::Bounced, bounce), None);
        assert_eq!(kind_detail(ConsentKind::Signup, "x"), None);
        assert_eq!(kind_detail(ConsentKind::Confirm, "x"), None);
    }

    fn kind_detail(kind: ConsentKind, detail: &str) -> Option<&str> {
        kept_detail(kind, Some(detail))
    }

    #[test]
    fn a_subscriber_is_erased_once() {
        assert_eq!(erase(Found::Present), None);
        assert_eq!(erase(Found::Erased), Some(EraseOutcome::AlreadyErased));
        assert_eq!(erase(Found::Nobody), Some(EraseOutcome::Unknown));
    }
}
