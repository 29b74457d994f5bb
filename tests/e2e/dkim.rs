//! DKIM signatures as a receiving server checks them: the emails smtp-sink
//! received are verified by dkimpy (Python, an independent verifier) with
//! the public key as openssl prints it, and a copy changed in the body
//! after signing must fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{free_port, Install, Sink};

const DOMAIN: &str = "news.example.org";
const SELECTOR: &str = "tidings2026";

/// Every header the signature must cover, where the email carries it.
const SIGNED: [&str; 10] = [
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
];

/// The venv's Python with dkimpy, as .ci/run installs it.
fn dkimpy() -> Option<PathBuf> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dkimpy/bin/python");
    let found = Command::new(&python)
        .args(["-c", "import dkim, nacl"])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found || std::env::var_os("CI").is_none(),
        "dkimpy is missing from target/dkimpy: .ci/run installs it"
    );
    found.then_some(python)
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A new private key in `dir`, and its TXT record as openssl derives it:
/// the whole SubjectPublicKeyInfo for RSA, the raw 32 bytes for Ed25519.
pub fn generate_key(dir: &Path, kind: &str) -> (PathBuf, String) {
    use base64::Engine;
    let path = dir.join(format!("dkim-{kind}.pem"));
    let path_text = path.to_str().unwrap();
    match kind {
        "rsa" => openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            path_text,
        ]),
        _ => openssl(&["genpkey", "-algorithm", "ed25519", "-out", path_text]),
    };
    let public = openssl(&["pkey", "-in", path_text, "-pubout", "-outform", "DER"]);
    let key = match kind {
        "rsa" => &public[..],
        _ => &public[public.len() - 32..],
    };
    let record = format!(
        "v=DKIM1; k={kind}; p={}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    (path, record)
}

/// The client's message in an smtp-sink dump: from our first header on.
fn message_in(dump: &str) -> &str {
    let start = dump
        .find("\nDKIM-Signature: ")
        .unwrap_or_else(|| panic!("no DKIM-Signature in:\n{dump}"));
    &dump[start + 1..]
}

#[derive(serde::Deserialize)]
struct Verdict {
    verified: bool,
    tampered_verified: bool,
    h: String,
    a: String,
    asked: Vec<String>,
}

fn verify(python: &Path, message: &Path, record: &str) -> Verdict {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/scripts/dkim_verify.py");
    let output = Command::new(python)
        .arg(script)
        .arg(message)
        .arg(record)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "dkim_verify.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A confirmation and an issue, signed with a new key of `kind`, checked
/// by dkimpy.
fn signed_emails_verify(kind: &str, algorithm: &str) {
    let Some(python) = dkimpy() else {
        println!(
            "skipped: dkimpy is not installed (python3 -m venv target/dkimpy && \
             target/dkimpy/bin/pip install dkimpy pynacl)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (key_file, record) = generate_key(dir.path(), kind);
    let sink = Sink::start(&[]);
    let install = Install::new(dir.path())
        .set("TIDINGS_SMTP__URL", sink.url())
        .set("TIDINGS_NEWSLETTER__FROM", "Tips <tips@news.example.org>")
        .set("TIDINGS_NEWSLETTER__BASE_URL", "https://news.example.org")
        .set("TIDINGS_SMTP__DKIM__DOMAIN", DOMAIN)
        .set("TIDINGS_SMTP__DKIM__SELECTOR", SELECTOR)
        .set(
            "TIDINGS_SMTP__DKIM__PRIVATE_KEY_FILE",
            key_file.to_str().unwrap(),
        )
        .set("TIDINGS_ADMIN__TOKEN", crate::harness::ADMIN_TOKEN);
    install.ok(&["subscriber", "add", "new.reader@example.com"]);
    install.ok(&["subscriber", "add", "reader@example.com", "--confirmed"]);
    install.queue_post(
        "Zoë's guide to the handshake — and what comes after",
        "# Before you sign\n\nWrite down who decides what.  Trailing space here \n\n\
         A link: <https://news.example.org/guide?utm_source=tidings&utm_medium=email>\n",
    );
    let daemon = install.serve(free_port());
    daemon.send_now();
    sink.wait_for(2, Duration::from_secs(30));
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(sink.dir.path()).unwrap() {
        let dump = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let message = message_in(&dump);
        let is_issue = message.contains("\nList-Unsubscribe-Post: ");
        let file = dir.path().join(format!("received-{}.eml", kinds.len()));
        std::fs::write(&file, message).unwrap();
        let verdict = verify(&python, &file, &record);
        let which = if is_issue { "issue" } else { "confirmation" };
        assert!(verdict.verified, "the {which} email does not verify");
        assert_eq!(verdict.a, algorithm);
        assert_eq!(
            verdict.asked,
            [format!("{SELECTOR}._domainkey.{DOMAIN}.")],
            "the key is looked up under the selector"
        );
        assert!(
            !verdict.tampered_verified,
            "the {which} email still verifies with its body changed"
        );
        // The confirmation has no List-Unsubscribe pair: it goes to
        // someone who has not subscribed yet.
        let expected: Vec<&str> = SIGNED
            .iter()
            .copied()
            .filter(|name| is_issue || !name.starts_with("list-unsubscribe"))
            .collect();
        assert_eq!(verdict.h, expected.join(":"), "the {which} email's h=");
        kinds.push(which);
    }
    kinds.sort();
    assert_eq!(kinds, ["confirmation", "issue"]);
}

#[test]
fn dkimpy_verifies_emails_signed_with_an_rsa_2048_key() {
    signed_emails_verify("rsa", "rsa-sha256");
}

#[test]
fn dkimpy_verifies_emails_signed_with_an_ed25519_key() {
    signed_emails_verify("ed25519", "ed25519-sha256");
}

#[test]
fn a_dkim_key_that_cannot_be_read_stops_tidings_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path())
        .set("TIDINGS_SMTP__DKIM__DOMAIN", DOMAIN)
        .set("TIDINGS_SMTP__DKIM__SELECTOR", SELECTOR)
        .set("TIDINGS_SMTP__DKIM__PRIVATE_KEY_FILE", "missing.pem");
    let output = install.run_within(&["serve"], Duration::from_secs(30));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("smtp.dkim.private_key_file"), "{stderr}");
    assert!(stderr.contains("missing.pem"), "{stderr}");
}
