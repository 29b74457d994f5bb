//! `tidings check` as a deliverability self-check: the built binary against
//! smtp-sink and a DNS server on loopback that holds the test's zone.

use std::path::Path;

use crate::dkim::generate_key;
use crate::dns::{DnsServer, Zone};
use crate::harness::{Install, Sink};

pub const FROM_DOMAIN: &str = "news.example.org";
const DKIM_NAME: &str = "s2026._domainkey.news.example.org";

/// Signs with a new RSA-2048 key in `dir` as selector `s2026`; returns the
/// install and the key's TXT record as openssl derives it.
fn signing(install: Install, dir: &Path) -> (Install, String) {
    let (key, record) = generate_key(dir, "rsa");
    let install = install
        .set("TIDINGS_SMTP__DKIM__DOMAIN", FROM_DOMAIN)
        .set("TIDINGS_SMTP__DKIM__SELECTOR", "s2026")
        .set(
            "TIDINGS_SMTP__DKIM__PRIVATE_KEY_FILE",
            key.to_str().unwrap(),
        );
    (install, record)
}

/// `record` as zone files publish a long one: strings of at most 255 bytes.
fn in_strings(record: &str) -> Vec<&str> {
    record
        .as_bytes()
        .chunks(255)
        .map(|chunk| std::str::from_utf8(chunk).unwrap())
        .collect()
}

/// A sender set up as the README asks: a From address at a real domain, an
/// https base URL and a fully qualified EHLO name.
pub fn deliverable(install: Install) -> Install {
    install
        .set(
            "TIDINGS_NEWSLETTER__FROM",
            format!("Tips <tips@{FROM_DOMAIN}>"),
        )
        .set("TIDINGS_NEWSLETTER__BASE_URL", "https://news.example.org")
        .set("TIDINGS_SMTP__HELO_NAME", "mail.example.org")
}

/// SPF and DMARC as a careful sender publishes them, among other records.
pub fn good_zone() -> Zone {
    Zone::default()
        .txt(FROM_DOMAIN, &["google-site-verification=0123456789"])
        .txt(FROM_DOMAIN, &["v=spf1 ip4:192.0.2.7 -all"])
        .txt(
            "_dmarc.news.example.org",
            &["v=DMARC1; p=reject; rua=mailto:dmarc@example.org"],
        )
}

/// A deliverable sender's install, sending through a new smtp-sink.
fn sender() -> (tempfile::TempDir, Sink, Install) {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    let install = deliverable(Install::new(dir.path())).set("TIDINGS_SMTP__URL", sink.url());
    (dir, sink, install)
}

/// What `tidings check` printed, line by line, and whether it exited 0.
struct Checked {
    passed: bool,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

fn check(install: &Install, dns: &DnsServer) -> Checked {
    let output = install.run(&["check", "--nameserver", &dns.arg()]);
    let lines = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    Checked {
        passed: output.status.success(),
        stdout: lines(&output.stdout),
        stderr: lines(&output.stderr),
    }
}

#[test]
fn check_passes_a_sender_with_spf_dmarc_and_dkim() {
    let (dir, sink, install) = sender();
    let (install, record) = signing(install, dir.path());
    let dns = DnsServer::start(good_zone().txt(DKIM_NAME, &in_strings(&record)));
    let Checked {
        passed,
        stdout,
        stderr,
    } = check(&install, &dns);
    assert!(passed, "{:?}", stderr);
    assert_eq!(
        stdout,
        [
            "ok: config".to_owned(),
            "ok: templates".to_owned(),
            "ok: database (sqlite)".to_owned(),
            format!("ok: email via SMTP server {}", sink.url()),
            "ok: EHLO name mail.example.org".to_owned(),
            "ok: links point to https://news.example.org".to_owned(),
            "ok: SPF record for news.example.org: v=spf1 ip4:192.0.2.7 -all".to_owned(),
            "ok: DMARC record for news.example.org: v=DMARC1; p=reject; \
             rua=mailto:dmarc@example.org"
                .to_owned(),
            "ok: DKIM key at s2026._domainkey.news.example.org matches \
             smtp.dkim.private_key_file"
                .to_owned(),
        ]
    );
    assert_eq!(stderr, Vec::<String>::new());
}

/// The key in DNS is another RSA key, as after a rotation half done.
#[test]
fn check_fails_a_dkim_record_of_another_key() {
    let (dir, _sink, install) = sender();
    let (install, record) = signing(install, dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    let (_, other) = generate_key(other_dir.path(), "rsa");
    let dns = DnsServer::start(good_zone().txt(DKIM_NAME, &in_strings(&other)));
    let Checked { passed, stderr, .. } = check(&install, &dns);
    assert!(!passed);
    assert_eq!(
        stderr,
        [
            format!(
                "error: the DKIM key at s2026._domainkey.news.example.org does not match \
                 smtp.dkim.private_key_file, so every signature fails; publish this TXT record \
                 at s2026._domainkey.news.example.org: {record}"
            ),
            "error: check failed: 1 error, 0 warnings".to_owned(),
        ]
    );
}

#[test]
fn check_fails_a_domain_without_spf_dmarc_or_dkim_records() {
    let (dir, _sink, install) = sender();
    let dns = DnsServer::start(Zone::default().txt(FROM_DOMAIN, &["hello"]));
    let (install, record) = signing(install, dir.path());
    let Checked {
        passed,
        stdout,
        stderr,
    } = check(&install, &dns);
    assert!(!passed);
    assert!(
        stdout.contains(&"ok: database (sqlite)".to_owned()),
        "{stdout:?}"
    );
    assert_eq!(stderr.len(), 4, "{stderr:?}");
    assert!(
        stderr[0].starts_with("error: no SPF record for news.example.org (a TXT record"),
        "{stderr:?}"
    );
    assert!(
        stderr[1].starts_with(
            "error: no DMARC record for news.example.org (a TXT record at _dmarc.news.example.org"
        ),
        "{stderr:?}"
    );
    assert_eq!(
        stderr[2],
        format!(
            "error: no DKIM key in DNS at s2026._domainkey.news.example.org; publish this TXT \
             record at s2026._domainkey.news.example.org: {record}"
        )
    );
    assert_eq!(stderr[3], "error: check failed: 3 errors, 0 warnings");
}

/// A record published as several strings is read joined; a subdomain takes
/// its parent's DMARC policy; p=none passes with a warning.
#[test]
fn check_warns_of_dmarc_p_none_found_at_the_parent_domain() {
    let (_dir, _sink, install) = sender();
    let zone = Zone::default()
        .txt(
            FROM_DOMAIN,
            &["v=spf1 ip4:192.0.2.7", " include:_spf.example.net -all"],
        )
        .txt("_dmarc.example.org", &["v=DMARC1; p=none"]);
    let dns = DnsServer::start(zone);
    let Checked {
        passed,
        stdout,
        stderr,
    } = check(&install, &dns);
    assert!(passed, "{:?}", stderr);
    assert!(
        stdout.contains(
            &"ok: SPF record for news.example.org: v=spf1 ip4:192.0.2.7 include:_spf.example.net -all"
                .to_owned()
        ),
        "{stdout:?}"
    );
    assert!(
        stdout.iter().any(|warning| warning.starts_with(
            "warning: the DMARC record for news.example.org (at _dmarc.example.org) says \
             p=none: Gmail and Yahoo accept it, but it protects nothing"
        )),
        "{stdout:?}"
    );
    assert_eq!(
        stdout.last().unwrap(),
        "warning: DKIM signing is off (smtp.dkim.domain, selector and private_key_file): \
         Gmail and Yahoo require DKIM of bulk senders"
    );
}

#[test]
fn check_reports_a_failing_dns_server_as_such_not_as_a_missing_record() {
    let (_dir, _sink, install) = sender();
    let dns = DnsServer::start(good_zone().servfail(FROM_DOMAIN));
    let Checked {
        passed,
        stdout,
        stderr,
    } = check(&install, &dns);
    assert!(!passed);
    assert_eq!(
        stderr[0],
        "error: the SPF record for news.example.org could not be looked up: the DNS server \
         answered SERVFAIL"
    );
    assert!(
        stdout
            .iter()
            .any(|line| line.starts_with("ok: DMARC record")),
        "{stdout:?}"
    );
}

#[test]
fn check_reports_a_dns_server_that_never_answers_as_timed_out() {
    let (_dir, _sink, install) = sender();
    let dns = DnsServer::start(good_zone().silent(FROM_DOMAIN));
    // Waits out the resolver's own timeout and retries: about 15 s.
    let Checked { passed, stderr, .. } = check(&install, &dns);
    assert!(!passed);
    assert_eq!(
        stderr[0],
        "error: the SPF record for news.example.org could not be looked up: no answer from \
         the DNS server (timed out)"
    );
}

/// Nothing about these needs DNS: a From at localhost cannot have records,
/// so none is looked up.
#[test]
fn check_fails_a_localhost_sender_and_warns_of_http_links_and_a_bare_ehlo_name() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    let dns = DnsServer::start(good_zone());
    let install = Install::new(dir.path())
        .set("TIDINGS_NEWSLETTER__FROM", "Tips <tips@localhost>")
        .set("TIDINGS_NEWSLETTER__BASE_URL", "http://news.example.org")
        // The older way to name us in EHLO, which no check guarded.
        .set("TIDINGS_SMTP__URL", format!("{}/vm", sink.url()));
    let Checked {
        passed,
        stdout,
        stderr,
    } = check(&install, &dns);
    assert!(!passed);
    assert!(
        stdout.contains(&format!("ok: email via SMTP server {}/vm", sink.url())),
        "{stdout:?}"
    );
    let warnings: Vec<&String> = stdout
        .iter()
        .filter(|line| line.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 2, "{stdout:?}");
    assert!(
        warnings[0]
            .starts_with("warning: the EHLO name is `vm`, not a fully qualified domain name"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].starts_with(
            "warning: newsletter.base_url is http://news.example.org: links in emails and the \
             one-click List-Unsubscribe URL should be https://"
        ),
        "{warnings:?}"
    );
    assert_eq!(
        stderr,
        [
            "error: newsletter.from is at `localhost`: nobody can publish SPF, DKIM or DMARC \
             for it, so mailbox providers reject or junk the mail; use an address at a domain \
             you control",
            "error: check failed: 1 error, 2 warnings",
        ]
    );
}
