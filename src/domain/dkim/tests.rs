use super::*;
use ring::signature::{UnparsedPublicKey, ED25519, RSA_PKCS1_2048_8192_SHA256};

/// Test-only keys, made with openssl; the `.dns` files hold the public
/// halves as openssl prints them (`pkey -pubout`), for comparison.
macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("../../../tests/fixtures/dkim/", $name))
    };
}

fn key(pem: &[u8]) -> DkimKey {
    DkimKey::from_pem(pem).expect("a usable key")
}

#[test]
fn rsa_keys_in_pkcs1_and_pkcs8_publish_openssls_public_key() {
    let expected = std::str::from_utf8(fixture!("rsa2048.dns")).unwrap();
    for pem in [
        &fixture!("rsa2048-pkcs1.pem")[..],
        &fixture!("rsa2048-pkcs8.pem")[..],
    ] {
        let key = key(pem);
        assert_eq!(key.dns_record(), expected);
        assert_eq!(key.describe(), "rsa-2048");
    }
}

#[test]
fn an_ed25519_key_publishes_its_raw_public_key() {
    let key = key(fixture!("ed25519.pem"));
    let expected = std::str::from_utf8(fixture!("ed25519.dns")).unwrap();
    assert_eq!(key.dns_record(), expected);
    assert_eq!(format!("{key:?}"), "DkimKey(ed25519)");
}

#[test]
fn unusable_keys_are_refused_without_quoting_them() {
    for (pem, reason) in [
        (&fixture!("rsa1024-pkcs1.pem")[..], "2048"),
        (&fixture!("p256-sec1.pem")[..], "RSA or Ed25519"),
        (&fixture!("ed25519-encrypted.pem")[..], "unencrypted"),
        (
            &fixture!("rsa2048.dns")[..],
            "no unencrypted PEM private key",
        ),
        (
            b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
            "neither",
        ),
    ] {
        let error = DkimKey::from_pem(pem).expect_err(reason);
        assert!(error.contains(reason), "`{error}` should say {reason}");
        let text = String::from_utf8_lossy(pem);
        for line in text.lines().filter(|line| line.len() > 8) {
            assert!(!error.contains(line), "`{error}` quotes the file");
        }
    }
}

#[test]
fn relaxed_canonical_forms_follow_rfc_6376s_example() {
    // RFC 6376, 3.4.5.
    let message = b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n";
    let (headers, body) = canonical::split_message(message);
    let fields = canonical::header_fields(headers);
    let relaxed: String = fields
        .iter()
        .map(|field| canonical::relaxed_header(field.name, field.value))
        .collect();
    assert_eq!(relaxed, "a:X\r\nb:Y Z\r\n");
    assert_eq!(canonical::relaxed_body(body), b" C\r\nD E\r\n");
    assert_eq!(canonical::relaxed_body(b""), b"");
    assert_eq!(canonical::relaxed_body(b"\r\n\r\n"), b"");
    assert_eq!(canonical::relaxed_body(b"end"), b"end\r\n");
}

fn sample_message() -> Vec<u8> {
    [
        "From: News <news@example.org>",
        "To: =?utf-8?q?Zo=C3=AB?= <reader@example.com>",
        "Subject: =?utf-8?q?A_rather_long_subject_that_lettre_folds_onto?=",
        " =?utf-8?q?a_second_line?=",
        "Date: Fri, 04 Dec 2026 09:00:00 +0000",
        "Message-ID: <abc@example.org>",
        "List-Id: \"News\" <news.example.org>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "X-Other: not signed",
        "",
        "Hello  there, \t",
        "",
        "",
    ]
    .join("\r\n")
    .into_bytes()
}

/// The signature's tags, unfolded, by name.
fn tags(signed: &[u8]) -> std::collections::HashMap<String, String> {
    let text = std::str::from_utf8(signed).unwrap();
    let header = text.split("\r\n").take_while(|line| !line.is_empty());
    let mut unfolded = String::new();
    for line in header {
        if line.starts_with([' ', '\t']) || unfolded.is_empty() {
            unfolded.push_str(line);
        } else {
            break;
        }
    }
    let value = unfolded.strip_prefix("DKIM-Signature:").unwrap();
    value
        .split(';')
        .map(|tag| {
            let (name, value) = tag.split_once('=').unwrap();
            let value: String = value.split_whitespace().collect();
            (name.trim().to_owned(), value)
        })
        .collect()
}

#[test]
fn a_signature_covers_the_headers_there_are_and_verifies() {
    let now = UNIX_EPOCH + std::time::Duration::from_secs(1_796_374_800);
    let message = sample_message();
    for pem in [
        &fixture!("rsa2048-pkcs1.pem")[..],
        &fixture!("ed25519.pem")[..],
    ] {
        let signer = DkimSigner::new("example.org".into(), "news2026".into(), key(pem));
        let signed = signer.sign(&message, now);
        assert!(signed.ends_with(&message));
        let header_len = signed.len() - message.len();
        let header = std::str::from_utf8(&signed[..header_len]).unwrap();
        for line in header.split("\r\n") {
            assert!(line.len() <= 78, "{line}");
        }
        let tags = tags(&signed);
        assert_eq!(tags["d"], "example.org");
        assert_eq!(tags["s"], "news2026");
        assert_eq!(tags["c"], "relaxed/relaxed");
        assert_eq!(tags["t"], "1796374800");
        assert_eq!(
            tags["h"],
            "from:to:subject:date:message-id:mime-version:content-type:list-id"
        );
        // What a verifier hashes: the signed headers, then this header
        // with b= empty, in relaxed form.
        let fields = canonical::header_fields(canonical::split_message(&signed).0);
        let mut data = String::new();
        for name in tags["h"].split(':') {
            let field = canonical::last_named(&fields, name).unwrap();
            data.push_str(&canonical::relaxed_header(field.name, field.value));
        }
        let own = canonical::last_named(&fields, "DKIM-Signature").unwrap();
        // b= is the last tag, on a line of its own.
        let without_b = &own.value[..own.value.find("\tb=").unwrap() + 3];
        data.push_str(canonical::relaxed_header(own.name, without_b).trim_end_matches("\r\n"));
        let signature = BASE64.decode(&tags["b"]).unwrap();
        let public_key: Vec<u8> = match &signer.key().0 {
            Pair::Rsa(pair) => pair.public().as_ref().to_vec(),
            Pair::Ed25519(pair) => pair.public_key().as_ref().to_vec(),
        };
        let verified = match &signer.key().0 {
            Pair::Rsa(_) => UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public_key)
                .verify(data.as_bytes(), &signature),
            Pair::Ed25519(_) => UnparsedPublicKey::new(&ED25519, &public_key)
                .verify(&Sha256::digest(data.as_bytes()), &signature),
        };
        assert!(verified.is_ok(), "{}", signer.key().describe());
        let body_hash = BASE64.encode(Sha256::digest(b"Hello there,\r\n"));
        assert_eq!(tags["bh"], body_hash);
    }
}

#[test]
fn the_record_lives_under_the_selector() {
    let signer = DkimSigner::new(
        "example.org".into(),
        "news2026".into(),
        key(fixture!("ed25519.pem")),
    );
    assert_eq!(signer.dns_name(), "news2026._domainkey.example.org");
    assert!(signer.dns_record().starts_with("v=DKIM1; k=ed25519; p="));
}
