//! The consent log: an append-only record of who agreed to what, when and
//! from where.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

/// Who gave consent, and from where: recorded with every consent event.
#[derive(Debug, Clone, Default)]
pub struct ConsentContext {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Serialised by hand as `as_str`; the schema names the same strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ConsentKind {
    /// Asked to subscribe (the first half of double opt-in).
    Signup,
    /// Followed their confirmation link.
    Confirm,
    Unsubscribe,
    /// Added by the operator (CLI, import), with the source in the detail.
    OperatorAdd,
    /// Too many hard bounces: no longer mailed.
    Bounced,
    /// The operator erased the subscriber's personal data (GDPR art. 17);
    /// the log keeps the events, with nothing that names the person.
    Erased,
}

impl ConsentKind {
    pub const ALL: [ConsentKind; 6] = [
        ConsentKind::Signup,
        ConsentKind::Confirm,
        ConsentKind::Unsubscribe,
        ConsentKind::OperatorAdd,
        ConsentKind::Bounced,
        ConsentKind::Erased,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConsentKind::Signup => "signup",
            ConsentKind::Confirm => "confirm",
            ConsentKind::Unsubscribe => "unsubscribe",
            ConsentKind::OperatorAdd => "operator_add",
            ConsentKind::Bounced => "bounced",
            ConsentKind::Erased => "erased",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

impl fmt::Display for ConsentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ConsentKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One entry of the consent log.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConsentEvent {
    pub kind: ConsentKind,
    pub occurred_at: DateTime<Utc>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_serialise_as_their_names() {
        for kind in ConsentKind::ALL {
            assert_eq!(ConsentKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ConsentKind::parse("maybe"), None);
        assert_eq!(
            serde_json::to_string(&ConsentKind::OperatorAdd).unwrap(),
            "\"operator_add\""
        );
    }
}
