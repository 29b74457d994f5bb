//! What people and files put in, seen from outside: a stranger's name,
//! hostile post content, control characters, CSV formulas and broken
//! imports, with the real binary and its outbox.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{free_port, wait_until, Install};

/// The raw bytes of every `.eml` in `dir`/outbox.
fn outbox(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir.join("outbox")) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|x| x == "eml"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect()
}

fn parse(raw: &[u8]) -> mail_parser::Message<'_> {
    mail_parser::MessageParser::default()
        .parse(raw)
        .expect("a parsable message")
}

/// Both decoded parts and the raw bytes, lowercased, for "never contains".
fn everything(raw: &[u8]) -> String {
    let message = parse(raw);
    format!(
        "{}\n{}\n{}",
        String::from_utf8_lossy(raw),
        message.body_text(0).unwrap_or_default(),
        message.body_html(0).unwrap_or_default()
    )
    .to_ascii_lowercase()
}

#[test]
fn a_strangers_name_never_reaches_the_confirmation_email() {
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path());
    let daemon = install.serve(free_port());
    let name = "WIN $1000 NOW at http://spam.example.com/claim";
    let response = daemon
        .client
        .post(daemon.url("/subscribe"))
        .form(&[("email", "victim@example.com"), ("name", name)])
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
    wait_until("the confirmation email", Duration::from_secs(10), || {
        outbox(dir.path()).len() == 1
    });
    let raw = &outbox(dir.path())[0];
    let all = everything(raw);
    for forbidden in [
        "win $1000",
        "spam.example.com",
        "claim",
        "win_=241000",
        "spam=2eexample",
    ] {
        assert!(!all.contains(forbidden), "{forbidden} in\n{all}");
    }
    let message = parse(raw);
    let to = message.to().unwrap().first().unwrap();
    assert_eq!(to.address.as_deref(), Some("victim@example.com"));
    assert_eq!(to.name, None, "no display name in a confirmation's To");
    assert!(message.body_text(0).unwrap().contains("Hi,"));
}

#[test]
fn a_hostile_post_arrives_sanitised_with_its_subject_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path());
    install.ok(&[
        "subscriber",
        "add",
        "dot@example.com",
        "--name",
        ".",
        "--confirmed",
    ]);
    let subject = "=?utf-8?q?=0D=0ABcc:evil@example.com?=";
    let post = dir.path().join("post.md");
    std::fs::write(
        &post,
        format!(
            "---\nsubject: \"{subject}\"\n---\n\nHello <script>alert('stolen')</script> reader.\n\n\
             <iframe src=\"https://evil.example/\"></iframe>\n\n\
             [Click me](javascript:alert(1)) and [a real link](https://example.org/ok).\n\n\
             <a href=\"javascript:alert(2)\" onclick=\"alert(3)\">raw</a>\n"
        ),
    )
    .unwrap();
    install.ok(&["post", "add", post.to_str().unwrap()]);
    assert!(install.ok(&["send-now"]).contains("1 sent"));

    let mails = outbox(dir.path());
    assert_eq!(mails.len(), 1);
    let raw = &mails[0];
    let message = parse(raw);
    assert_eq!(message.subject(), Some(subject), "the subject is text");
    assert!(message.bcc().is_none());
    let head = String::from_utf8_lossy(raw);
    let head = head.split("\r\n\r\n").next().unwrap();
    assert!(!head.to_ascii_lowercase().contains("\nbcc:"), "{head}");
    assert!(
        head.contains("\r\nTo: dot@example.com\r\n"),
        "no `.` name: {head}"
    );
    let all = everything(raw);
    for forbidden in [
        "<script",
        "alert('stolen')",
        "<iframe",
        "javascript:",
        "onclick",
    ] {
        assert!(!all.contains(forbidden), "{forbidden} in\n{all}");
    }
    let html = message.body_html(0).unwrap();
    assert!(html.contains("href=\"https://example.org/ok\""), "{html}");
    assert!(html.contains("Click me"), "the link text stays: {html}");
}

#[test]
fn control_characters_are_refused_by_the_cli_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path());
    let post = dir.path().join("nul.md");
    std::fs::write(
        &post,
        "---\nsubject: \"Fine\"\n---\n\nA NUL \0 in the body.\n",
    )
    .unwrap();
    let output = install.run(&["post", "add", post.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("control character"), "{stderr}");
    let output = install.run(&[
        "subscriber",
        "add",
        "ana@example.com",
        "--name",
        "Ana\u{1b}[2J",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("control characters"), "{stderr}");
    assert_eq!(install.ok(&["subscriber", "export"]), "email,name,status\n");
}

#[test]
fn subscriber_export_neutralises_formulas_and_imports_back_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path());
    let names = [
        (
            "link@example.com",
            "=HYPERLINK(\"http://evil.example\",\"x\")",
        ),
        ("sum@example.com", "@SUM(A1:A9)"),
        ("plus@example.com", "+1 555 0100"),
        ("minus@example.com", "-2+3"),
        ("plain@example.com", "Ana"),
    ];
    for (email, name) in names {
        let name = format!("--name={name}");
        install.ok(&["subscriber", "add", email, &name, "--confirmed"]);
    }
    install.ok(&[
        "subscriber",
        "add",
        "--confirmed",
        "--",
        "-dash@example.com",
    ]);
    let export = install.ok(&["subscriber", "export"]);
    let mut cells = Vec::new();
    for record in csv::Reader::from_reader(export.as_bytes()).records() {
        cells.extend(record.unwrap().iter().map(str::to_owned));
    }
    for cell in &cells {
        assert!(
            !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
            "{cell:?} in\n{export}"
        );
    }
    assert!(cells.contains(&"'=HYPERLINK(\"http://evil.example\",\"x\")".to_owned()));
    assert!(cells.contains(&"'@SUM(A1:A9)".to_owned()));
    assert!(cells.contains(&"'-dash@example.com".to_owned()));
    assert!(cells.contains(&"Ana".to_owned()));

    // The export imports into a fresh install as it was.
    let other = tempfile::tempdir().unwrap();
    let copy = Install::new(other.path());
    let file = other.path().join("export.csv");
    std::fs::write(&file, &export).unwrap();
    copy.ok(&["subscriber", "import", file.to_str().unwrap()]);
    assert_eq!(copy.ok(&["subscriber", "export"]), export);
    let list = copy.ok(&["subscriber", "list"]);
    assert!(
        list.contains("=HYPERLINK(\"http://evil.example\",\"x\")"),
        "{list}"
    );
    assert!(list.contains("-dash@example.com\tconfirmed"), "{list}");
}

#[test]
fn a_malformed_import_writes_nothing_names_its_lines_and_emails_nobody_unasked() {
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path());
    let mut text = String::from("email,name,status\n");
    for line in 2..=30 {
        text.push_str(&match line {
            7 => "bob@,Bob,confirmed\n".to_owned(),
            12 => "carol@example.com,Carol,maybe\n".to_owned(),
            15 => "\n".to_owned(),
            // An unclosed quote: it must not swallow the lines after it.
            20 => "dave@example.com,\"Dave\n".to_owned(),
            _ => format!("reader{line}@example.com,Reader {line}\n"),
        });
    }
    let csv = dir.path().join("list.csv");
    std::fs::write(&csv, &text).unwrap();
    let output = install.run(&["subscriber", "import", csv.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 7: not an email address: \"bob@\""),
        "{stderr}"
    );
    assert!(stderr.contains("line 12: "), "{stderr}");
    assert!(stderr.contains("line 20: unclosed quote"), "{stderr}");
    assert!(!stderr.contains("line 21"), "{stderr}");
    assert!(stderr.contains("3 of 28 rows"), "{stderr}");
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    assert_eq!(
        install.ok(&["subscriber", "export"]),
        "email,name,status\n",
        "nothing written"
    );

    // The unclosed quote spoils its own line only: every valid row, before
    // and after it, is imported, the skipped lines are named, and nobody
    // is emailed.
    let output = install.run(&[
        "subscriber",
        "import",
        "--skip-invalid",
        csv.to_str().unwrap(),
    ]);
    assert!(output.status.success());
    let (imported, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    for line in [7, 12, 20] {
        assert!(
            stderr.contains(&format!("skipped: line {line}: ")),
            "{stderr}"
        );
    }
    assert!(imported.contains("25 added"), "{imported}");
    assert!(imported.contains("3 skipped"), "{imported}");
    assert!(imported.contains("0 confirmations queued"), "{imported}");
    let list = install.ok(&["subscriber", "list", "--status", "pending"]);
    assert_eq!(
        list.lines().count(),
        25,
        "lines 2-30 less 7, 12, 15 and 20:\n{list}"
    );
    for reader in [
        "reader19@example.com",
        "reader21@example.com",
        "reader30@example.com",
    ] {
        assert!(list.contains(reader), "{reader} missing:\n{list}");
    }
    assert!(!list.contains("dave@example.com"), "{list}");

    // Only when asked does an import send confirmations.
    let more = dir.path().join("more.csv");
    std::fs::write(
        &more,
        "ask@example.com,Ask\nsure@example.com,Sure,confirmed\n",
    )
    .unwrap();
    let imported = install.ok(&[
        "subscriber",
        "import",
        "--send-confirmations",
        more.to_str().unwrap(),
    ]);
    assert!(imported.contains("2 added"), "{imported}");
    assert!(imported.contains("1 confirmations queued"), "{imported}");
    let _daemon = install.serve(free_port());
    wait_until("one confirmation email", Duration::from_secs(10), || {
        !outbox(dir.path()).is_empty()
    });
    let mails = outbox(dir.path());
    assert_eq!(mails.len(), 1);
    let message = parse(&mails[0]);
    assert_eq!(
        message.to().unwrap().first().unwrap().address.as_deref(),
        Some("ask@example.com")
    );
}
