//! Subscribers: addresses and names parsed once at the edge, so the rest
//! of the program only ever sees values that are known good; statuses; and
//! the rules for unsubscribing, bounces and records the operator adds.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use unicode_segmentation::UnicodeSegmentation;

/// RFC 5321 limits: 254 characters for a path, 64 for the local part.
const MAX_EMAIL_LENGTH: usize = 254;
const MAX_LOCAL_PART_LENGTH: usize = 64;
pub const MAX_NAME_GRAPHEMES: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("Please enter an email address.")]
    Empty,
    #[error("That email address is too long.")]
    TooLong,
    #[error("An email address cannot contain spaces or control characters.")]
    ForbiddenCharacter,
    #[error("That does not look like an email address: it needs one @ with a name before it and a domain after it.")]
    Shape,
    #[error("The part before the @ may only use plain letters, digits and . ! # $ % & ' * + / = ? ^ _ ` {{ | }} ~ -")]
    LocalPart,
    #[error("The domain after the @ is not valid, for example example.com.")]
    Domain,
}

impl EmailAddress {
    /// Parses what a person typed into a sendable, normalised address:
    /// trimmed and lowercased, with an internationalised domain in ASCII.
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed.len() > MAX_EMAIL_LENGTH * 4 {
            return Err(EmailError::TooLong);
        }
        if trimmed.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(EmailError::ForbiddenCharacter);
        }
        let (local, domain) = trimmed.rsplit_once('@').ok_or(EmailError::Shape)?;
        if local.is_empty() || domain.is_empty() || local.contains('@') {
            return Err(EmailError::Shape);
        }
        if local.len() > MAX_LOCAL_PART_LENGTH || !is_dot_atom(local) {
            return Err(if local.len() > MAX_LOCAL_PART_LENGTH {
                EmailError::TooLong
            } else {
                EmailError::LocalPart
            });
        }
        let domain = parse_domain(domain)?;
        let address = format!("{}@{}", local.to_lowercase(), domain);
        if address.len() > MAX_EMAIL_LENGTH {
            return Err(EmailError::TooLong);
        }
        // Belt and braces: whatever we accept, the mailer must accept too.
        lettre::Address::from_str(&address).map_err(|_| EmailError::Shape)?;
        Ok(Self(address))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c)
}

fn is_dot_atom(text: &str) -> bool {
    !text.is_empty()
        && text
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

fn parse_domain(domain: &str) -> Result<String, EmailError> {
    let ascii = idna::domain_to_ascii(domain).map_err(|_| EmailError::Domain)?;
    let labels: Vec<&str> = ascii.split('.').collect();
    // A newsletter mails people on the internet: the domain needs a dot.
    let valid_labels = labels.iter().all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    let top_level_ok = labels
        .last()
        .is_some_and(|tld| tld.chars().any(|c| c.is_ascii_alphabetic()));
    if labels.len() < 2 || !valid_labels || !top_level_ok || ascii.len() > 253 {
        return Err(EmailError::Domain);
    }
    Ok(ascii)
}

/// A display name as the subscriber typed it, safe for headers and pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SubscriberName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("Your name can be at most 100 characters long.")]
    TooLong,
    #[error("Your name cannot contain line breaks or control characters.")]
    ForbiddenCharacter,
}

impl SubscriberName {
    /// An empty or blank name is no name at all.
    pub fn parse_optional(input: Option<&str>) -> Result<Option<Self>, NameError> {
        let Some(text) = input.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        if text.graphemes(true).count() > MAX_NAME_GRAPHEMES {
            return Err(NameError::TooLong);
        }
        if text.chars().any(char::is_control) {
            return Err(NameError::ForbiddenCharacter);
        }
        Ok(Some(Self(text.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How a subscriber's name may stand before their address in `To`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayName<'a> {
    /// Words of plain atom characters, written as they are.
    Atoms(&'a str),
    /// Printable ASCII that needs a quoted string (`"` and `\` escaped).
    Quoted(&'a str),
    /// Anything else, written as RFC 2047 encoded-words.
    Encoded(&'a str),
}

/// The display name for `name`, or `None` when it should be left out: a
/// name with no letter or digit (`.`, `--`, spaces) says nothing, and some
/// parsers choke on `To: . <…>`.
pub fn display_name(name: &str) -> Option<DisplayName<'_>> {
    let name = name.trim();
    if !name.chars().any(char::is_alphanumeric) || name.chars().any(char::is_control) {
        return None;
    }
    let atoms = name
        .split(' ')
        .all(|word| !word.is_empty() && word.chars().all(is_atext));
    Some(if atoms {
        DisplayName::Atoms(name)
    } else if name.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        DisplayName::Quoted(name)
    } else {
        DisplayName::Encoded(name)
    })
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SubscriberStatus {
    Pending,
    Confirmed,
    Unsubscribed,
    Bounced,
}

impl SubscriberStatus {
    pub const ALL: [SubscriberStatus; 4] = [
        SubscriberStatus::Pending,
        SubscriberStatus::Confirmed,
        SubscriberStatus::Unsubscribed,
        SubscriberStatus::Bounced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SubscriberStatus::Pending => "pending",
            SubscriberStatus::Confirmed => "confirmed",
            SubscriberStatus::Unsubscribed => "unsubscribed",
            SubscriberStatus::Bounced => "bounced",
        }
    }
}

impl FromStr for SubscriberStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == text.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                format!("`{text}` is not a status (pending, confirmed, unsubscribed, bounced)")
            })
    }
}

impl fmt::Display for SubscriberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A subscriber as the admin API and the CLI show one.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Subscriber {
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
    pub status: SubscriberStatus,
    pub created_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SubscriberCounts {
    pub pending: i64,
    pub confirmed: i64,
    pub unsubscribed: i64,
    pub bounced: i64,
}

impl SubscriberCounts {
    pub fn add(&mut self, status: SubscriberStatus, count: i64) {
        match status {
            SubscriberStatus::Pending => self.pending += count,
            SubscriberStatus::Confirmed => self.confirmed += count,
            SubscriberStatus::Unsubscribed => self.unsubscribed += count,
            SubscriberStatus::Bounced => self.bounced += count,
        }
    }
}

/// One page of the subscriber list.
#[derive(Debug, Clone, Default)]
pub struct SubscriberQuery {
    pub status: Option<SubscriberStatus>,
    /// Keyset cursor: only ids greater than this.
    pub after: Option<i64>,
    pub limit: u32,
}

/// Where a record the operator added came from, kept in the consent log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorSource {
    Cli,
    /// The admin web UI's form.
    Admin,
    /// A CSV import run with `--send-confirmations`.
    Import,
    /// A CSV import: pending rows wait, with no email, since a list of
    /// addresses is not a list of people who asked for one.
    ImportWithoutEmail,
}

impl OperatorSource {
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorSource::Cli => "cli",
            OperatorSource::Admin => "admin",
            OperatorSource::Import | OperatorSource::ImportWithoutEmail => "import",
        }
    }
}

/// A subscriber added by the operator (CLI add, CSV import).
#[derive(Debug, Clone)]
pub struct OperatorSubscriber {
    pub email: EmailAddress,
    pub name: Option<SubscriberName>,
    pub status: SubscriberStatus,
    pub source: OperatorSource,
    pub now: DateTime<Utc>,
    pub confirmation_ttl: chrono::Duration,
}

impl OperatorSubscriber {
    /// A pending record is asked to confirm, as a signup would be, unless
    /// it came from an import whose operator did not ask for that.
    pub fn needs_confirmation(&self) -> bool {
        self.status == SubscriberStatus::Pending
            && self.source != OperatorSource::ImportWithoutEmail
    }

    pub fn confirmed_at(&self) -> Option<DateTime<Utc>> {
        (self.status == SubscriberStatus::Confirmed).then_some(self.now)
    }

    pub fn unsubscribed_at(&self) -> Option<DateTime<Utc>> {
        (self.status == SubscriberStatus::Unsubscribed).then_some(self.now)
    }

    /// The consent log's detail for the addition.
    pub fn consent_detail(&self) -> String {
        format!("source={} status={}", self.source.as_str(), self.status)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddOutcome {
    Added { id: i64, confirmation_queued: bool },
    AlreadyExists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsubscribeOutcome {
    Unsubscribed,
    AlreadyUnsubscribed,
    Unknown,
}

/// Anyone not unsubscribed yet can leave, bounced and pending included; a
/// second request changes nothing.
pub fn unsubscribe(status: SubscriberStatus) -> UnsubscribeOutcome {
    if status == SubscriberStatus::Unsubscribed {
        UnsubscribeOutcome::AlreadyUnsubscribed
    } else {
        UnsubscribeOutcome::Unsubscribed
    }
}

/// After this many hard bounces a subscriber is `bounced`.
pub const HARD_BOUNCE_LIMIT: i64 = 3;

/// A subscriber's record after one more hard bounce (a 5xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterHardBounce {
    pub bounce_count: i64,
    pub status: SubscriberStatus,
    /// The consent log's detail when this bounce made them `bounced`.
    pub consent_detail: Option<String>,
}

/// The [`HARD_BOUNCE_LIMIT`]th hard bounce stops mail to a subscriber who
/// was still receiving it (confirmed or pending); an unsubscribed one stays
/// unsubscribed. `bounce_count` is the count before this bounce.
pub fn after_hard_bounce(
    status: SubscriberStatus,
    bounce_count: i64,
    error: &str,
) -> AfterHardBounce {
    let bounce_count = bounce_count + 1;
    let stops_mail = bounce_count >= HARD_BOUNCE_LIMIT
        && matches!(
            status,
            SubscriberStatus::Confirmed | SubscriberStatus::Pending
        );
    AfterHardBounce {
        bounce_count,
        status: if stops_mail {
            SubscriberStatus::Bounced
        } else {
            status
        },
        consent_detail: (stops_mail && bounce_count == HARD_BOUNCE_LIMIT)
            .then(|| format!("after {bounce_count} hard bounces; last: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalises_ordinary_addresses() {
        let email = EmailAddress::parse("  Ada.Lovelace+news@Example.ORG ").unwrap();
        assert_eq!(email.as_str(), "ada.lovelace+news@example.org");
        assert_eq!(email.domain(), "example.org");
    }

    #[test]
    fn converts_unicode_domains_to_ascii() {
        let email = EmailAddress::parse("anna@bücher.de").unwrap();
        assert_eq!(email.as_str(), "anna@xn--bcher-kva.de");
    }

    #[test]
    fn rejects_hostile_and_malformed_input() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_domain = format!("a@{}.com", "b".repeat(250));
        let huge = "x".repeat(100_000);
        for input in [
            "",
            "   ",
            "plainaddress",
            "@example.com",
            "ada@",
            "ada@@example.com",
            "ada@example",
            "ada@.example.com",
            "ada@example..com",
            "ada@-example.com",
            "ada lovelace@example.com",
            "ada@example.com\r\nBcc: victim@example.com",
            "ada@example.com\nX-Injected: 1",
            "ada\u{0}@example.com",
            "\"quoted\"@example.com",
            "ada..l@example.com",
            ".ada@example.com",
            "аda@example.com", // Cyrillic а
            "ada@[127.0.0.1]",
            "ada@123.456",
            "Ada <ada@example.com>",
            long_local.as_str(),
            long_domain.as_str(),
            huge.as_str(),
        ] {
            assert!(EmailAddress::parse(input).is_err(), "accepted {input:?}");
        }
    }

    #[test]
    fn names_are_optional_bounded_and_single_line() {
        assert_eq!(SubscriberName::parse_optional(None), Ok(None));
        assert_eq!(SubscriberName::parse_optional(Some("   ")), Ok(None));
        let name = SubscriberName::parse_optional(Some(" Zoë 👩‍👩‍👧 "))
            .unwrap()
            .unwrap();
        assert_eq!(name.as_str(), "Zoë 👩‍👩‍👧");
        // 100 family emoji are 100 graphemes though many more code points.
        assert!(SubscriberName::parse_optional(Some(&"👩‍👩‍👧".repeat(100))).is_ok());
        assert_eq!(
            SubscriberName::parse_optional(Some(&"a".repeat(101))),
            Err(NameError::TooLong)
        );
        assert_eq!(
            SubscriberName::parse_optional(Some("Eve\r\nBcc: x@example.com")),
            Err(NameError::ForbiddenCharacter)
        );
    }

    #[test]
    fn names_that_say_nothing_are_left_out_of_to_and_the_rest_are_quoted_or_encoded() {
        for nothing in [".", "...", " - ", "\"\"", "<>", "@", "", "   ", "\u{200b}"] {
            assert_eq!(display_name(nothing), None, "{nothing:?}");
        }
        assert_eq!(display_name("Ana"), Some(DisplayName::Atoms("Ana")));
        assert_eq!(
            display_name(" Ada Lovelace "),
            Some(DisplayName::Atoms("Ada Lovelace"))
        );
        for quoted in [
            "J. R. Hartley",
            "Eve <eve@example.com>",
            "A \"B\" \\ C",
            "x,y",
            "Ada  L",
        ] {
            assert_eq!(display_name(quoted), Some(DisplayName::Quoted(quoted)));
        }
        assert_eq!(display_name("Zoë"), Some(DisplayName::Encoded("Zoë")));
    }

    #[test]
    fn statuses_round_trip() {
        for status in SubscriberStatus::ALL {
            assert_eq!(status.as_str().parse::<SubscriberStatus>(), Ok(status));
        }
        assert!("gone".parse::<SubscriberStatus>().is_err());
    }

    #[test]
    fn the_third_hard_bounce_stops_mail_and_is_logged_once() {
        let first = after_hard_bounce(SubscriberStatus::Confirmed, 0, "550 no");
        assert_eq!(first.bounce_count, 1);
        assert_eq!(first.status, SubscriberStatus::Confirmed);
        assert_eq!(first.consent_detail, None);
        let third = after_hard_bounce(SubscriberStatus::Confirmed, 2, "550 no such user");
        assert_eq!(third.status, SubscriberStatus::Bounced);
        assert_eq!(
            third.consent_detail.as_deref(),
            Some("after 3 hard bounces; last: 550 no such user")
        );
        let fourth = after_hard_bounce(SubscriberStatus::Bounced, 3, "550 no");
        assert_eq!(fourth.status, SubscriberStatus::Bounced);
        assert_eq!(fourth.consent_detail, None, "logged once, at the third");
        let pending = after_hard_bounce(SubscriberStatus::Pending, 2, "550 no");
        assert_eq!(pending.status, SubscriberStatus::Bounced);
    }

    #[test]
    fn an_unsubscribed_subscriber_stays_unsubscribed_whatever_bounces() {
        let after = after_hard_bounce(SubscriberStatus::Unsubscribed, 5, "550 no");
        assert_eq!(after.bounce_count, 6);
        assert_eq!(after.status, SubscriberStatus::Unsubscribed);
        assert_eq!(after.consent_detail, None);
    }

    #[test]
    fn unsubscribing_twice_changes_nothing_the_second_time() {
        assert_eq!(
            unsubscribe(SubscriberStatus::Unsubscribed),
            UnsubscribeOutcome::AlreadyUnsubscribed
        );
        for status in [
            SubscriberStatus::Pending,
            SubscriberStatus::Confirmed,
            SubscriberStatus::Bounced,
        ] {
            assert_eq!(unsubscribe(status), UnsubscribeOutcome::Unsubscribed);
        }
    }

    #[test]
    fn operator_records_are_stamped_by_their_status() {
        let record = |status| OperatorSubscriber {
            email: EmailAddress::parse("ada@example.com").unwrap(),
            name: None,
            status,
            source: OperatorSource::Import,
            now: DateTime::default(),
            confirmation_ttl: chrono::Duration::hours(72),
        };
        let pending = record(SubscriberStatus::Pending);
        assert!(pending.needs_confirmation());
        assert_eq!(pending.confirmed_at(), None);
        let confirmed = record(SubscriberStatus::Confirmed);
        assert!(!confirmed.needs_confirmation());
        assert_eq!(confirmed.confirmed_at(), Some(DateTime::default()));
        assert_eq!(confirmed.consent_detail(), "source=import status=confirmed");
        let quiet = OperatorSubscriber {
            source: OperatorSource::ImportWithoutEmail,
            ..record(SubscriberStatus::Pending)
        };
        assert!(!quiet.needs_confirmation(), "an import asks nobody unasked");
        assert_eq!(quiet.consent_detail(), "source=import status=pending");
        let gone = record(SubscriberStatus::Unsubscribed);
        assert_eq!(gone.unsubscribed_at(), Some(DateTime::default()));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

        /// Whatever is typed: no panic, and what is accepted is safe in a
        /// header and parses again to itself.
        #[test]
        fn email_parse_accepts_only_header_safe_addresses_and_is_idempotent(
            input in "\\PC{0,60}|[a-zA-Z0-9.+_ <>\"\\r\\n\\t\u{0}-]{1,20}@[a-zA-Zü0-9.\\- ]{1,20}|[A-Za-z0-9+_]{1,10}(\\.[a-z0-9]{1,5})?@[a-zA-Zü0-9]{1,10}\\.[a-zA-Z]{2,5}"
        ) {
            if let Ok(email) = EmailAddress::parse(&input) {
                let text = email.as_str();
                proptest::prop_assert!(
                    !text.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>'),
                    "{:?}", text
                );
                proptest::prop_assert_eq!(EmailAddress::parse(text), Ok(email.clone()));
            }
        }
    }
}
