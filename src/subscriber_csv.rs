//! The subscriber list as CSV (`email,name,status`): the rows an import
//! reads, with file line numbers for every complaint, and the cells an
//! export writes, neutralised so a spreadsheet never runs one as a formula.
//!
//! Export follows OWASP's advice on CSV injection: a cell that begins with
//! `=`, `+`, `-`, `@`, a tab or a carriage return gets a `'` in front.
//! Import undoes exactly that: a cell that begins with `'` followed by one
//! of those characters loses the `'`, so an export imports as it was.

use std::borrow::Cow;
use std::io::BufRead;

use crate::domain::subscriber::{EmailAddress, SubscriberName, SubscriberStatus};

/// What makes a spreadsheet read a cell as a formula.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A cell safe to open in a spreadsheet.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(FORMULA_STARTS) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// A cell as it was before [`neutralise`].
pub fn unneutralise(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(FORMULA_STARTS) => rest,
        _ => cell,
    }
}

/// One valid row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    /// The file line the row starts on (1-based).
    pub line: u64,
    pub email: EmailAddress,
    pub name: Option<SubscriberName>,
    /// `None` when the row gives none: pending, with no email unless asked.
    pub status: Option<SubscriberStatus>,
}

/// One row that cannot be imported, by the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct RowError {
    pub line: u64,
    pub message: String,
}

/// Reads rows one at a time, never the whole file: a header line
/// (`email,…`) and blank lines are skipped.
///
/// Each row is one line. No name or address holds a line break, so a
/// quote left open at the end of its line is an error for that line alone,
/// and reading starts again on the next: an unclosed quote cannot swallow
/// the rows after it.
pub struct ImportReader<R: BufRead> {
    input: R,
    buffer: Vec<u8>,
    /// The number of the line last read (1-based).
    line: u64,
    /// No row seen yet: the next may be a header, or start with a BOM.
    first: bool,
    done: bool,
}

impl<R: BufRead> ImportReader<R> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            buffer: Vec::new(),
            line: 0,
            first: true,
            done: false,
        }
    }

    fn row(&mut self, fields: &[Vec<u8>]) -> Result<Option<ImportRow>, RowError> {
        let line = self.line;
        let fail = |message: String| RowError { line, message };
        let mut cells = Vec::with_capacity(3);
        for field in fields {
            let text = std::str::from_utf8(field)
                .map_err(|_| fail("not UTF-8 text; save the file as UTF-8".into()))?;
            if text.contains('\r') {
                return Err(fail("a field holds a carriage return".into()));
            }
            cells.push(text.trim());
        }
        if self.first {
            if let Some(first) = cells.first_mut() {
                *first = first.trim_start_matches('\u{feff}');
            }
        }
        if cells.iter().all(|cell| cell.is_empty()) {
            return Ok(None);
        }
        if std::mem::replace(&mut self.first, false) && cells[0].eq_ignore_ascii_case("email") {
            return Ok(None);
        }
        if cells.len() > 3 {
            return Err(fail(format!(
                "{} columns; expected email,name,status",
                cells.len()
            )));
        }
        let cell = |index: usize| unneutralise(cells.get(index).copied().unwrap_or_default());
        let email = EmailAddress::parse(cell(0))
            .map_err(|error| fail(format!("not an email address: {:?} ({error})", cell(0))))?;
        let name = SubscriberName::parse_optional(Some(cell(1)))
            .map_err(|error| fail(format!("name {:?}: {error}", cell(1))))?;
        let status = match cell(2) {
            "" => None,
            text => Some(text.parse::<SubscriberStatus>().map_err(fail)?),
        };
        Ok(Some(ImportRow {
            line,
            email,
            name,
            status,
        }))
    }
}

/// A quote that was still open at the end of the line.
struct UnclosedQuote;

/// The fields of one line, as RFC 4180 quotes them: a field that starts
/// with `"` runs to the next lone `"` (`""` is a quote inside it), and what
/// follows that, up to the comma, is kept as it stands.
fn fields(line: &[u8]) -> Result<Vec<Vec<u8>>, UnclosedQuote> {
    let mut fields = Vec::new();
    let mut bytes = line.iter().copied().peekable();
    loop {
        let mut field = Vec::new();
        if bytes.next_if_eq(&b'"').is_some() {
            loop {
                match bytes.next() {
                    None => return Err(UnclosedQuote),
                    Some(b'"') if bytes.next_if_eq(&b'"').is_some() => field.push(b'"'),
                    Some(b'"') => break,
                    Some(byte) => field.push(byte),
                }
            }
        }
        let mut comma = false;
        for byte in bytes.by_ref() {
            if byte == b',' {
                comma = true;
                break;
            }
            field.push(byte);
        }
        fields.push(field);
        if !comma {
            return Ok(fields);
        }
    }
}

impl<R: BufRead> Iterator for ImportReader<R> {
    type Item = Result<ImportRow, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.buffer.clear();
            match self.input.read_until(b'\n', &mut self.buffer) {
                Ok(0) => return None,
                Ok(_) => self.line += 1,
                Err(error) => {
                    self.done = true;
                    return Some(Err(RowError {
                        line: self.line + 1,
                        message: format!("unreadable: {error}"),
                    }));
                }
            }
            let line = self.buffer.strip_suffix(b"\n").unwrap_or(&self.buffer);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let row = match fields(line) {
                Ok(fields) => self.row(&fields),
                Err(UnclosedQuote) => Err(RowError {
                    line: self.line,
                    message: "unclosed quote (a field ends on its own line); \
                              the next line is read as a row of its own"
                        .into(),
                }),
            };
            match row {
                Ok(None) => continue,
                Ok(Some(row)) => return Some(Ok(row)),
                Err(error) => {
                    self.first = false;
                    return Some(Err(error));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read(text: &str) -> Vec<Result<ImportRow, RowError>> {
        ImportReader::new(text.as_bytes()).collect()
    }

    fn lines_of(rows: &[Result<ImportRow, RowError>]) -> Vec<(u64, bool)> {
        rows.iter()
            .map(|row| match row {
                Ok(row) => (row.line, true),
                Err(error) => (error.line, false),
            })
            .collect()
    }

    #[test]
    fn rows_carry_their_file_line_and_a_missing_status_is_none() {
        let rows = read(
            "email,name,status\nana@example.com,Ana,confirmed\n\n\"bo@example.com\",\"Bo, Jr.\"\ncy@example.com\n",
        );
        assert_eq!(lines_of(&rows), [(2, true), (4, true), (5, true)]);
        let bo = rows[1].as_ref().unwrap();
        assert_eq!(bo.name.as_ref().unwrap().as_str(), "Bo, Jr.");
        assert_eq!(bo.status, None);
        assert_eq!(
            rows[0].as_ref().unwrap().status,
            Some(SubscriberStatus::Confirmed)
        );
    }

    #[test]
    fn bad_rows_are_reported_at_their_line_and_reading_goes_on() {
        let rows = read(
            "ana@example.com\nbob@\ncy@example.com,Cy,maybe\nd@example.com,a,b,c\nok@example.com\n",
        );
        assert_eq!(
            lines_of(&rows),
            [(1, true), (2, false), (3, false), (4, false), (5, true)]
        );
        let error = rows[1].as_ref().unwrap_err().to_string();
        assert!(
            error.starts_with("line 2: not an email address: \"bob@\""),
            "{error}"
        );
    }

    #[test]
    fn crlf_files_and_quoted_line_breaks_keep_the_count() {
        // A quoted line break is two bad lines: rows are one line each.
        let rows = read("a@example.com,\"A\"\r\n\r\nb@example.com,\"B\nB\"\r\nc@example.com,C\r\n");
        assert_eq!(
            lines_of(&rows),
            [(1, true), (3, false), (4, false), (5, true)]
        );
        assert_eq!(
            rows[0].as_ref().unwrap().name.as_ref().unwrap().as_str(),
            "A"
        );
        let rows = read("x@example.com\n\n\nz@example.com");
        assert_eq!(lines_of(&rows), [(1, true), (4, true)]);
    }

    #[test]
    fn an_unclosed_quote_spoils_its_own_line_and_reading_resumes_on_the_next() {
        let rows = read(
            "ana@example.com,Ana\nbo@example.com,\"Bo\ncy@example.com,Cy\r\n\
             dee@example.com,\"Dee, Jr.\r\ned@example.com,\"Ed \"\"Q\"\"\",confirmed\n\
             fay@example.com,\"Fay",
        );
        assert_eq!(
            lines_of(&rows),
            [
                (1, true),
                (2, false),
                (3, true),
                (4, false),
                (5, true),
                (6, false)
            ]
        );
        let error = rows[1].as_ref().unwrap_err().to_string();
        assert!(error.starts_with("line 2: unclosed quote"), "{error}");
        let ed = rows[4].as_ref().unwrap();
        assert_eq!(ed.name.as_ref().unwrap().as_str(), "Ed \"Q\"");
        assert_eq!(ed.status, Some(SubscriberStatus::Confirmed));
        // A comma inside quotes is text, and a header after a bad first
        // line is a row like any other.
        let rows = read("\"x,\nemail,name\n\"g@example.com\",\"Gee, G\"\n");
        assert_eq!(lines_of(&rows), [(1, false), (2, false), (3, true)]);
        let gee = rows[2].as_ref().unwrap();
        assert_eq!(gee.name.as_ref().unwrap().as_str(), "Gee, G");
    }

    #[test]
    fn formulas_are_neutralised_and_an_export_imports_as_it_was() {
        for cell in [
            "=HYPERLINK(\"http://x\")",
            "+1",
            "-2",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ] {
            let safe = neutralise(cell);
            assert_eq!(safe, format!("'{cell}"));
            assert_eq!(unneutralise(&safe), cell);
        }
        for cell in ["Ana", "'quoted'", "", "a=b"] {
            assert_eq!(neutralise(cell), cell);
            assert_eq!(unneutralise(cell), cell);
        }
        let rows = read("'-ana@example.com,'=cmd,confirmed\n");
        let row = rows[0].as_ref().unwrap();
        assert_eq!(row.email.as_str(), "-ana@example.com");
        assert_eq!(row.name.as_ref().unwrap().as_str(), "=cmd");
    }

    /// A line of a generated file: valid or not, with or without quotes.
    fn line() -> impl Strategy<Value = (String, bool)> {
        prop_oneof![
            "[a-z]{1,8}@[a-z]{1,8}\\.(com|org)".prop_map(|email| (email, true)),
            "[a-z]{1,8}@[a-z]{1,8}\\.com,[A-Za-z ]{0,10},(confirmed|pending)"
                .prop_map(|row| (row, true)),
            "[a-z]{1,8}@[a-z]{1,8}\\.com,\"[A-Za-z, ]{0,10}\"".prop_map(|row| (row, true)),
            "[a-z]{0,8}@?,[a-z]{0,5}".prop_map(|row| (row, false)),
            "[a-z]{1,8}@[a-z]{1,8}\\.com,x,nope".prop_map(|row| (row, false)),
            // An unclosed quote: bad, and only its own line.
            "[a-z]{1,8}@[a-z]{1,8}\\.com,\"[A-Za-z, ]{0,10}".prop_map(|row| (row, false)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn any_bytes_read_without_panicking_and_accepted_rows_are_valid(
            bytes in proptest::collection::vec(any::<u8>(), 0..400)
        ) {
            for row in ImportReader::new(bytes.as_slice()).flatten() {
                prop_assert_eq!(EmailAddress::parse(row.email.as_str()), Ok(row.email.clone()));
                prop_assert!(row.line >= 1);
            }
        }

        #[test]
        fn line_numbers_point_at_the_right_line(
            lines in proptest::collection::vec(line(), 1..30),
            blank_after in proptest::collection::vec(any::<bool>(), 30),
        ) {
            let mut text = String::new();
            let mut expected = Vec::new();
            let mut number = 0u64;
            for ((row, valid), blank) in lines.iter().zip(&blank_after) {
                number += 1;
                text.push_str(row);
                text.push('\n');
                // `[a-z]{0,8}@?,…` may come out as a lone `,`: a blank row.
                if !row.split(',').all(str::is_empty) {
                    expected.push((number, *valid));
                }
                if *blank {
                    number += 1;
                    text.push('\n');
                }
            }
            let rows = read(&text);
            prop_assert_eq!(lines_of(&rows), expected, "{}", text);
        }
    }
}
