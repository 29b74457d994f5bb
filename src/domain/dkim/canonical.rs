//! The relaxed canonical forms of RFC 6376 (3.4.2 and 3.4.4), and the
//! folding of the signature's own long tags.

/// One header field as it stands: its name, and its value with any
/// continuation lines (but not the final CRLF).
pub(super) struct Field<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

/// The header block (each field ending in CRLF) and the body.
pub(super) fn split_message(message: &[u8]) -> (&[u8], &[u8]) {
    match message.windows(4).position(|window| window == b"\r\n\r\n") {
        Some(at) => (&message[..at + 2], &message[at + 4..]),
        None => (message, &[]),
    }
}

/// The fields of a header block. lettre writes headers in ASCII; a block
/// that is not UTF-8 has no fields, and its signature fails to verify.
pub(super) fn header_fields(block: &[u8]) -> Vec<Field<'_>> {
    let text = std::str::from_utf8(block).unwrap_or_default();
    let mut fields: Vec<Field> = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(offset) = text[at..].find("\r\n") {
        let end = at + offset;
        let continued = matches!(bytes.get(end + 2), Some(b' ' | b'\t'));
        if !continued {
            let line = &text[start..end];
            if let Some((name, value)) = line.split_once(':') {
                fields.push(Field { name, value });
            }
            start = end + 2;
        }
        at = end + 2;
    }
    fields
}

/// The last field of that name (RFC 6376, 5.4.2: a signer signs instances
/// from the bottom up).
pub(super) fn last_named<'a, 'b>(fields: &'b [Field<'a>], name: &str) -> Option<&'b Field<'a>> {
    fields
        .iter()
        .rev()
        .find(|field| field.name.trim().eq_ignore_ascii_case(name))
}

/// `name:value` CRLF with the name in lower case, the value unfolded, runs
/// of white space as one space, and none at either end.
pub(super) fn relaxed_header(name: &str, value: &str) -> String {
    let unfolded = value.replace("\r\n", "");
    let value = squeeze_white_space(unfolded.as_bytes());
    format!(
        "{}:{}\r\n",
        name.trim().to_ascii_lowercase(),
        String::from_utf8_lossy(value.trim_ascii())
    )
}

/// The relaxed body: white space at line ends gone, runs of it as one
/// space, no empty lines at the end, and a CRLF after the last line.
pub(super) fn relaxed_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut empty_lines = 0;
    for line in body.split_inclusive(|byte| *byte == b'\n') {
        let line = line.strip_suffix(b"\r\n").unwrap_or(line);
        let line = squeeze_white_space(line);
        let line = line.trim_ascii_end();
        if line.is_empty() {
            empty_lines += 1;
            continue;
        }
        for _ in 0..empty_lines {
            out.extend_from_slice(b"\r\n");
        }
        empty_lines = 0;
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Runs of spaces and tabs as one space.
fn squeeze_white_space(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut in_run = false;
    for &byte in line {
        if byte == b' ' || byte == b'\t' {
            if !in_run {
                out.push(b' ');
            }
            in_run = true;
        } else {
            in_run = false;
            out.push(byte);
        }
    }
    out
}

/// Names joined by `:`, folded after a colon before a line passes 78.
/// `column` is where the list starts on its line.
pub(super) fn fold_list(names: &[String], mut column: usize) -> String {
    let mut out = String::new();
    for (index, name) in names.iter().enumerate() {
        let last = index + 1 == names.len();
        let width = name.len() + if last { 1 } else { 0 } + 1;
        if index > 0 && column + width > 78 {
            out.push_str("\r\n\t");
            column = 1;
        }
        out.push_str(name);
        if !last {
            out.push(':');
        }
        column += width;
    }
    out
}

/// A signature's base64 on lines of 72 characters; the white space
/// between them is dropped by every verifier (RFC 6376, 3.5, b=).
pub(super) fn fold_base64(base64: &str) -> String {
    base64
        .as_bytes()
        .chunks(72)
        .map(|chunk| std::str::from_utf8(chunk).expect("base64 is ASCII"))
        .collect::<Vec<_>>()
        .join("\r\n\t")
}
