//! An email rendered and encoded once, with holes for what differs from
//! one reader to the next: the name, and the one link that is theirs alone
//! (the unsubscribe link of an issue, the confirmation link of a signup).
//!
//! Rendering the issue template through Handlebars and quoted-printable
//! encoding both parts for every recipient took most of a send's CPU (the
//! profile in docs/performance.md). Here the template is
//! rendered once per issue with marker values for the reader's name and
//! link, the output is cut at the markers, and each static piece
//! is encoded once. A reader's parts are those pieces with their own values,
//! escaped and encoded, spliced in. Quoted-printable allows a soft line break
//! anywhere, so pieces encoded apart and joined by one decode to exactly
//! the text Handlebars would have rendered for that reader.
//!
//! A custom template might do something with a value that splicing cannot
//! reproduce (a helper that changes case, say). So every preparation is
//! checked against a full render for a probe reader; when the two differ,
//! the caller renders every email in full instead.

use handlebars::html_escape;

const NAME_MARKER: &str = "\u{E000}tidings:name\u{E001}";
const LINK_MARKER: &str = "\u{E000}tidings:link\u{E001}";

/// Probe values with characters that need escaping in HTML.
const PROBE_NAME: &str = "Probe O'Reilly & <Sons> \"Ltd\"";
const PROBE_LINK: &str = "https://probe.invalid/unsubscribe?token=pr0be&x=1";

/// One under the usual 76, so the `=` of a soft break appended at the end
/// of a piece still fits on its line.
const LINE_LIMIT: usize = 75;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Name,
    Link,
}

#[derive(Debug)]
enum Piece {
    /// Quoted-printable text, ending in a line break (hard or soft).
    Encoded(Vec<u8>),
    Slot(Slot),
}

/// One body part: encoded static text and slots.
#[derive(Debug)]
struct PreparedPart {
    pieces: Vec<Piece>,
    /// HTML-escape slot values, as Handlebars does in the HTML part.
    escape: bool,
}

/// The two parts of an email, for readers with or without a name.
#[derive(Debug)]
pub struct PreparedEmail {
    named: (PreparedPart, PreparedPart),
    anonymous: (PreparedPart, PreparedPart),
}

/// The rendered `(text, html)` of an email for a reader's name and link.
pub type RenderParts<'a, E> = dyn Fn(Option<&str>, &str) -> Result<(String, String), E> + 'a;

impl PreparedEmail {
    /// Renders with markers and checks the result against full renders for
    /// a probe reader. `Ok(None)`: the templates do not splice cleanly.
    pub fn prepare<E>(render: &RenderParts<'_, E>) -> Result<Option<Self>, E> {
        let named = prepare_variant(render, Some(PROBE_NAME))?;
        let anonymous = prepare_variant(render, None)?;
        Ok(named
            .zip(anonymous)
            .map(|(named, anonymous)| Self { named, anonymous }))
    }

    /// The `(text, html)` parts, quoted-printable encoded, for one reader.
    pub fn encode(&self, name: Option<&str>, link: &str) -> (Vec<u8>, Vec<u8>) {
        // An empty name is falsy to Handlebars' `#if`, as no name is.
        let name = name.filter(|name| !name.is_empty());
        let (text, html) = match name {
            Some(_) => &self.named,
            None => &self.anonymous,
        };
        let values = Values {
            name: name.unwrap_or_default(),
            link,
        };
        (text.encode(&values), html.encode(&values))
    }
}

struct Values<'a> {
    name: &'a str,
    link: &'a str,
}

impl Values<'_> {
    fn get(&self, slot: Slot) -> &str {
        match slot {
            Slot::Name => self.name,
            Slot::Link => self.link,
        }
    }
}

fn prepare_variant<E>(
    render: &RenderParts<'_, E>,
    probe_name: Option<&str>,
) -> Result<Option<(PreparedPart, PreparedPart)>, E> {
    let (text, html) = render(probe_name.map(|_| NAME_MARKER), LINK_MARKER)?;
    let (expected_text, expected_html) = render(probe_name, PROBE_LINK)?;
    let probe = Values {
        name: probe_name.unwrap_or_default(),
        link: PROBE_LINK,
    };
    let text = PreparedPart::check(&text, false, &probe, &expected_text);
    let html = PreparedPart::check(&html, true, &probe, &expected_html);
    Ok(text.zip(html))
}

impl PreparedPart {
    /// Cuts `rendered` at the markers; `None` unless splicing the probe
    /// values gives exactly `expected`.
    fn check(rendered: &str, escape: bool, probe: &Values, expected: &str) -> Option<Self> {
        let raw = split(&crlf(rendered));
        let spliced: String = raw
            .iter()
            .map(|piece| match piece {
                RawPiece::Text(text) => text.clone(),
                RawPiece::Slot(slot) => escaped(probe.get(*slot), escape),
            })
            .collect();
        if spliced != crlf(expected) {
            return None;
        }
        let pieces = raw
            .into_iter()
            .filter_map(|piece| match piece {
                RawPiece::Text(text) => {
                    let mut encoded = Vec::new();
                    encode_piece(&text, &mut encoded);
                    (!encoded.is_empty()).then_some(Piece::Encoded(encoded))
                }
                RawPiece::Slot(slot) => Some(Piece::Slot(slot)),
            })
            .collect();
        Some(Self { pieces, escape })
    }

    fn encode(&self, values: &Values) -> Vec<u8> {
        let static_len: usize = self
            .pieces
            .iter()
            .map(|piece| match piece {
                Piece::Encoded(bytes) => bytes.len(),
                Piece::Slot(_) => 0,
            })
            .sum();
        let mut out = Vec::with_capacity(static_len + 512);
        for piece in &self.pieces {
            match piece {
                Piece::Encoded(bytes) => out.extend_from_slice(bytes),
                Piece::Slot(slot) => {
                    encode_piece(&escaped(values.get(*slot), self.escape), &mut out)
                }
            }
        }
        out
    }
}

enum RawPiece {
    Text(String),
    Slot(Slot),
}

fn split(mut rest: &str) -> Vec<RawPiece> {
    let mut pieces = Vec::new();
    loop {
        let next = [(NAME_MARKER, Slot::Name), (LINK_MARKER, Slot::Link)]
            .into_iter()
            .filter_map(|(marker, slot)| rest.find(marker).map(|at| (at, marker, slot)))
            .min_by_key(|(at, _, _)| *at);
        let Some((at, marker, slot)) = next else {
            if !rest.is_empty() {
                pieces.push(RawPiece::Text(rest.to_owned()));
            }
            return pieces;
        };
        if at > 0 {
            pieces.push(RawPiece::Text(rest[..at].to_owned()));
        }
        pieces.push(RawPiece::Slot(slot));
        rest = &rest[at + marker.len()..];
    }
}

fn escaped(value: &str, escape: bool) -> String {
    if escape {
        html_escape(value)
    } else {
        value.to_owned()
    }
}

/// Every line break as CRLF, as on the wire (and as lettre does for a
/// `String` body).
fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// Appends `text` quoted-printable encoded, ending on a line break: a soft
/// one (`=` CRLF, which decodes to nothing) unless the text ended a line.
fn encode_piece(text: &str, out: &mut Vec<u8>) {
    if text.is_empty() {
        return;
    }
    let encoded = quoted_printable(text, LINE_LIMIT);
    out.extend_from_slice(encoded.as_bytes());
    if !encoded.ends_with("\r\n") {
        out.extend_from_slice(b"=\r\n");
    }
}

/// Quoted-printable (RFC 2045, 6.7) of CRLF-separated lines, each encoded
/// line at most `limit` characters. Soft breaks fall between whole
/// characters only: a break inside a UTF-8 sequence (`Caf=C3=` / `=A9`) is
/// valid, but strict decoders reject it.
fn quoted_printable(text: &str, limit: usize) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    let mut lines = text.split("\r\n").peekable();
    let mut piece = String::new();
    while let Some(line) = lines.next() {
        let mut column = 0;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            let last = chars.peek().is_none();
            piece.clear();
            let plain = c == ' ' || c == '\t' || (c.is_ascii_graphic() && c != '=');
            // White space at the end of a line must be encoded.
            if plain && !(last && (c == ' ' || c == '\t')) {
                piece.push(c);
            } else {
                for byte in c.encode_utf8(&mut [0; 4]).bytes() {
                    let _ = write!(piece, "={byte:02X}");
                }
            }
            // Leave room for the `=` of a soft break unless the line ends here.
            let room = if last { limit } else { limit - 1 };
            if column > 0 && column + piece.len() > room {
                out.push_str("=\r\n");
                column = 0;
            }
            out.push_str(&piece);
            column += piece.len();
        }
        if lines.peek().is_some() {
            out.push_str("\r\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Robust: this crate's strict decoder rejects some valid input (a
    /// spliced HTML part that Python's quopri decodes as expected).
    fn decode(bytes: &[u8]) -> String {
        let decoded = quoted_printable::decode(bytes, quoted_printable::ParseMode::Robust).unwrap();
        String::from_utf8(decoded).unwrap()
    }

    #[test]
    fn soft_breaks_fall_between_whole_characters() {
        let text = "Café, naïve résumé — Zoë's 🎉 party = fun \t\r\nend \r\n".repeat(9);
        let encoded = quoted_printable(&text, LINE_LIMIT);
        assert_eq!(decode(encoded.as_bytes()), text);
        for line in encoded.split("\r\n") {
            assert!(line.len() <= LINE_LIMIT, "{line}");
            assert!(!line.ends_with(' ') && !line.ends_with('\t'), "{line:?}");
            // Each encoded line decodes to whole characters on its own.
            let piece = line.strip_suffix('=').unwrap_or(line);
            let bytes =
                quoted_printable::decode(piece, quoted_printable::ParseMode::Strict).unwrap();
            assert!(
                String::from_utf8(bytes).is_ok(),
                "split inside a character: {line}"
            );
        }
    }

    /// A stand-in for the issue templates: the name only when there is one,
    /// the link in both parts, long lines and non-ASCII text.
    fn render(name: Option<&str>, url: &str) -> Result<(String, String), ()> {
        let long = "Ünïcödé and a rather long line of text, ".repeat(6);
        let greeting = name.map(|name| format!("Hi {name},\n")).unwrap_or_default();
        let text = format!("{greeting}{long}\n\nUnsubscribe: {url}\n");
        let html_greeting = name
            .map(|name| format!("<p>Hi {},</p>\n", html_escape(name)))
            .unwrap_or_default();
        let html = format!(
            "{html_greeting}<p>{long}</p>\n<a href=\"{}\">Unsubscribe</a>",
            html_escape(url)
        );
        Ok((text, html))
    }

    #[test]
    fn spliced_parts_decode_to_the_full_render() {
        let prepared = PreparedEmail::prepare(&render).unwrap().expect("splices");
        for name in [Some("Zoë <Admin> & \"Co\""), None] {
            let url = "https://news.example.com/unsubscribe?token=abc&x=1";
            let (text, html) = prepared.encode(name, url);
            let (expected_text, expected_html) = render(name, url).unwrap();
            assert_eq!(decode(&text), crlf(&expected_text));
            assert_eq!(decode(&html), crlf(&expected_html));
            for line in text
                .split(|b| *b == b'\n')
                .chain(html.split(|b| *b == b'\n'))
            {
                assert!(line.len() <= 77, "line of {} bytes with CR", line.len());
                assert!(line.is_ascii());
            }
        }
    }

    #[test]
    fn a_template_that_changes_the_values_is_not_spliced() {
        let shouting = |name: Option<&str>, url: &str| -> Result<(String, String), ()> {
            let (text, html) = render(name, url)?;
            Ok((text.to_uppercase(), html))
        };
        assert!(PreparedEmail::prepare(&shouting).unwrap().is_none());
    }
}
