//! Headers that carry text someone typed: the subject and the reader's
//! name. Both are written so that nothing in them can read as another
//! header or as syntax: the subject as typed when it is printable ASCII
//! that cannot read as an encoded-word, else as RFC 2047 encoded-words (a
//! subject holding a literal `=?utf-8?q?=0D=0ABcc:…?=` then arrives as
//! exactly that text), the name as atoms, a quoted string, encoded-words,
//! or not at all.

use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::Address;

use crate::domain::subscriber::{display_name, DisplayName};

/// Characters an encoded-word may carry as they are, even in a phrase
/// (RFC 2047 section 5 (3)); everything else is `=XX`.
fn is_plain_q(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'!' | b'*' | b'+' | b'-' | b'/')
}

/// The longest an encoded-word may be (RFC 2047 section 2).
const MAX_WORD: usize = 75;
const PREFIX: &str = "=?utf-8?q?";
const SUFFIX: &str = "?=";

/// `text` as Q encoded-words, each whole characters and at most 75
/// long, folded onto lines of their own.
pub fn encoded_words(text: &str) -> String {
    let room = MAX_WORD - PREFIX.len() - SUFFIX.len();
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        let mut bytes = [0u8; 4];
        let mut piece = String::new();
        for byte in c.encode_utf8(&mut bytes).bytes() {
            match byte {
                b' ' => piece.push('_'),
                byte if is_plain_q(byte) => piece.push(char::from(byte)),
                byte => piece.push_str(&format!("={byte:02X}")),
            }
        }
        if current.len() + piece.len() > room {
            words.push(std::mem::take(&mut current));
        }
        current.push_str(&piece);
    }
    if !current.is_empty() || words.is_empty() {
        words.push(current);
    }
    words
        .iter()
        .map(|word| format!("{PREFIX}{word}{SUFFIX}"))
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// Header lines are kept to this length where the text allows (RFC 5322).
const LINE: usize = 78;

/// `text` as it is, folded at spaces, when that is safe and readable:
/// printable ASCII only (so no line break can start another header), no
/// `=?` (which a reader could decode as an encoded-word), no space at
/// either end or twice in a row (lost or left alone on a folded line),
/// and no word too long for a line. Filters score a plain ASCII subject
/// sent encoded (rspamd's SUBJ_EXCESS_QP), so only the rest is encoded.
fn plain_subject(text: &str) -> Option<String> {
    let printable = text.bytes().all(|byte| (b' '..=b'~').contains(&byte));
    if !printable
        || text.is_empty()
        || text.contains("=?")
        || text.contains("  ")
        || text.starts_with(' ')
        || text.ends_with(' ')
    {
        return None;
    }
    let mut folded = String::new();
    let mut line = "Subject: ".len();
    for (index, word) in text.split(' ').enumerate() {
        if 1 + word.len() > LINE - "Subject: ".len() {
            return None;
        }
        if index > 0 {
            if line + 1 + word.len() > LINE {
                folded.push_str("\r\n");
                line = 0;
            }
            folded.push(' ');
            line += 1;
        }
        folded.push_str(word);
        line += word.len();
    }
    Some(folded)
}

/// `Subject`: as typed where that is safe, else encoded-words.
#[derive(Debug, Clone)]
pub struct EncodedSubject(pub String);

impl Header for EncodedSubject {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Subject")
    }

    fn parse(text: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(text.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        // Pre-encoded is safe here: the value is printable ASCII and
        // folding whitespace only, whatever the subject holds.
        let encoded = plain_subject(&self.0).unwrap_or_else(|| encoded_words(&self.0));
        HeaderValue::dangerous_new_pre_encoded(Self::name(), self.0.clone(), encoded)
    }
}

/// `To`: one reader, with their name only where it can be a display name.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub name: Option<String>,
    pub address: Address,
}

impl Recipient {
    fn encoded(&self) -> String {
        let phrase = match self.name.as_deref().and_then(display_name) {
            None => return self.address.to_string(),
            Some(DisplayName::Atoms(name)) => name.to_owned(),
            Some(DisplayName::Quoted(name)) => {
                format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
            }
            Some(DisplayName::Encoded(name)) => encoded_words(name),
        };
        // Fold before the address rather than run past a line's 78.
        let last_line = phrase.rsplit("\r\n").next().unwrap_or_default();
        let separator = if "To: ".len()
            + last_line.len()
            + AsRef::<str>::as_ref(&self.address).len()
            + 3
            > 78
        {
            "\r\n "
        } else {
            " "
        };
        format!("{phrase}{separator}<{}>", self.address)
    }
}

impl Header for Recipient {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("To")
    }

    fn parse(text: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let mailbox: Mailbox = text.parse()?;
        Ok(Self {
            name: mailbox.name,
            address: mailbox.email,
        })
    }

    fn display(&self) -> HeaderValue {
        // Pre-encoded is safe: names are parsed free of control characters
        // and `display_name` admits only what is written safely above.
        let raw = match &self.name {
            Some(name) => format!("{name} <{}>", self.address),
            None => self.address.to_string(),
        };
        HeaderValue::dangerous_new_pre_encoded(Self::name(), raw, self.encoded())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address() -> Address {
        "reader@example.com".parse().unwrap()
    }

    fn to(name: Option<&str>) -> String {
        Recipient {
            name: name.map(str::to_owned),
            address: address(),
        }
        .encoded()
    }

    #[test]
    fn subjects_are_encoded_words_of_whole_characters() {
        assert_eq!(encoded_words("Moving day"), "=?utf-8?q?Moving_day?=");
        assert_eq!(
            encoded_words("=?utf-8?q?=0D=0ABcc:x@y.z?="),
            "=?utf-8?q?=3D=3Futf-8=3Fq=3F=3D0D=3D0ABcc=3Ax=40y=2Ez=3F=3D?="
        );
        assert_eq!(encoded_words(""), "=?utf-8?q??=");
        let long = encoded_words(&"Zoë, ".repeat(40));
        for word in long.split("\r\n ") {
            assert!(word.len() <= MAX_WORD, "{word}");
            assert!(word.starts_with(PREFIX) && word.ends_with(SUFFIX));
            assert!(word.is_ascii() && !word.contains(' '));
        }
    }

    #[test]
    fn plain_ascii_subjects_go_as_typed_and_fold_at_spaces() {
        assert_eq!(plain_subject("Moving day").as_deref(), Some("Moving day"));
        let long =
            "Tip 3: agree who decides what, before the first partner meeting goes sideways on you";
        let folded = plain_subject(long).unwrap();
        assert_eq!(folded.replace("\r\n", ""), long, "unfolds to the subject");
        let mut lines = folded.split("\r\n");
        assert!("Subject: ".len() + lines.next().unwrap().len() <= LINE);
        assert!(lines.all(|line| line.starts_with(' ') && line.len() <= LINE));
        for encoded in [
            "Zoë says hi",
            "=?utf-8?q?=0D=0ABcc:x@y.z?=",
            "tab\there",
            "two  spaces",
            " leading",
            "",
            &"x".repeat(80),
        ] {
            assert_eq!(plain_subject(encoded), None, "{encoded:?}");
        }
    }

    #[test]
    fn names_are_atoms_quoted_encoded_or_left_out() {
        assert_eq!(to(None), "reader@example.com");
        assert_eq!(to(Some(".")), "reader@example.com");
        assert_eq!(to(Some(" !! ")), "reader@example.com");
        assert_eq!(to(Some("Ana")), "Ana <reader@example.com>");
        assert_eq!(to(Some("J. R.")), "\"J. R.\" <reader@example.com>");
        assert_eq!(
            to(Some("Eve \"the\" \\ <x@evil.example>")),
            "\"Eve \\\"the\\\" \\\\ <x@evil.example>\" <reader@example.com>"
        );
        assert_eq!(to(Some("Zoë")), "=?utf-8?q?Zo=C3=AB?= <reader@example.com>");
    }
}
