//! The subscriber list as CSV (`email,name,status`): the rows an import
//! reads, with file line numbers for every complaint, and the cells an
//! export writes, neutralised so a spreadsheet never runs one as a formula.
//!
//! Export follows OWASP's advice on CSV injection: a cell that begins with
//! `=`, `+`, `-`, `@`, a tab or a carriage return gets a `'` in front.
//! Import undoes exactly that: a cell that begins with `'` followed by one
//! of those characters loses the `'`, so an export imports as it was.

use std::borrow::Cow;
use std::io::Read;

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
pub struct ImportReader<R: Read> {
    csv: csv::Reader<std::io::Chain<R, &'static [u8]>>,
    record: csv::ByteRecord,
    first: bool,
}

impl<R: Read> ImportReader<R> {
    pub fn new(input: R) -> Self {
        // Every record then ends in a `\n` the reader has consumed, so the
        // line it starts on is the reader's line less the record's own
        // line breaks (csv's record position is taken before any blank
        // lines it skips, so it can point above the record). A `\r` before
        // the `\n` is trimmed off with the rest of the field's whitespace.
        let csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_reader(input.chain(&b"\n"[..]));
        Self {
            csv,
            record: csv::ByteRecord::new(),
            first: true,
        }
    }

    fn row(&self, line: u64) -> Result<Option<ImportRow>, RowError> {
        let fail = |message: String| RowError { line, message };
        let mut cells = Vec::with_capacity(3);
        let last = self.record.len().saturating_sub(1);
        for (index, field) in self.record.iter().enumerate() {
            let field = match field.strip_suffix(b"\r") {
                Some(field) if index == last => field,
                _ => field,
            };
            let text = std::str::from_utf8(field)
                .map_err(|_| fail("not UTF-8 text; save the file as UTF-8".into()))?;
            // A name or an address never holds a line break; a field that
            // does is most likely an unclosed quote swallowing lines.
            if text.contains(['\n', '\r']) {
                return Err(fail(
                    "a field runs over a line break (an unclosed quote?)".into(),
                ));
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
        if self.first && cells[0].eq_ignore_ascii_case("email") {
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

impl<R: Read> Iterator for ImportReader<R> {
    type Item = Result<ImportRow, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let read = self.csv.read_byte_record(&mut self.record);
            let inner_breaks = self
                .record
                .iter()
                .map(|field| memchr::memchr_iter(b'\n', field).count() as u64)
                .sum::<u64>();
            let line = self
                .csv
                .position()
                .line()
                .saturating_sub(inner_breaks + 1)
                // An unclosed quote runs to the end with no `\n` after it;
                // the record's own position (before skipped blanks) is then right.
                .max(self.record.position().map_or(1, csv::Position::line));
            match read {
                Ok(false) => return None,
                Err(error) => {
                    let line = error.position().map_or(line, csv::Position::line);
                    self.first = false;
                    return Some(Err(RowError {
                        line,
                        message: format!("unreadable: {error}"),
                    }));
                }
                Ok(true) => {}
            }
            let row = self.row(line);
            self.first = false;
            match row {
                Ok(None) => continue,
                Ok(Some(row)) => return Some(Ok(row)),
                Err(error) => return Some(Err(error)),
            }
        }
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
        let rows = read("a@example.com,\"A\"\r\n\r\nb@example.com,\"B\nB\"\r\nc@example.com,C\r\n");
        assert_eq!(lines_of(&rows), [(1, true), (3, false), (5, true)]);
        assert_eq!(
            rows[0].as_ref().unwrap().name.as_ref().unwrap().as_str(),
            "A"
        );
        let rows = read("x@example.com\n\n\nz@example.com");
        assert_eq!(lines_of(&rows), [(1, true), (4, true)]);
    }

    #[test]
    fn an_unclosed_quote_is_an_error_at_its_line_not_a_swallowed_file() {
        let rows = read("ana@example.com,Ana\nbo@example.com,\"Bo\ncy@example.com,Cy\n");
        assert_eq!(lines_of(&rows), [(1, true), (2, false)]);
        assert!(rows[1]
            .as_ref()
            .unwrap_err()
            .message
            .contains("unclosed quote"));
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
