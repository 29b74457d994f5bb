//! `tidings check` as a deliverability self-check: the built binary against
//! smtp-sink and a DNS server on loopback that holds the test's zone.

use std::process::Output;

use crate::dns::{DnsServer, Zone};
use crate::harness::{Install, Sink};

pub const FROM_DOMAIN: &str = "news.example.org";

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

fn check(install: &Install, dns: &DnsServer) -> Output {
    install.run(&["check", "--nameserver", &dns.arg()])
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn check_passes_a_sender_with_spf_and_dmarc() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    let dns = DnsServer::start(good_zone());
    let install = deliverable(Install::new(dir.path())).set("TIDINGS_SMTP__URL", sink.url());
    let output = check(&install, &dns);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        lines(&output.stdout),
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
        ]
    );
    assert_eq!(lines(&output.stderr), Vec::<String>::new());
}

#[test]
fn check_fails_a_domain_without_spf_or_dmarc() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    let dns = DnsServer::start(Zone::default().txt(FROM_DOMAIN, &["hello"]));
    let install = deliverable(Install::new(dir.path())).set("TIDINGS_SMTP__URL", sink.url());
    let output = check(&install, &dns);
    assert!(!output.status.success());
    let stdout = lines(&output.stdout);
    assert!(
        stdout.contains(&"ok: database (sqlite)".to_owned()),
        "{stdout:?}"
    );
    let stderr = lines(&output.stderr);
    assert_eq!(stderr.len(), 3, "{stderr:?}");
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
    assert_eq!(stderr[2], "error: check failed: 2 errors, 0 warnings");
}

/// A record published as several strings is read joined; a subdomain takes
/// its parent's DMARC policy; p=none passes with a warning.
#[test]
fn check_warns_of_dmarc_p_none_found_at_the_parent_domain() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    let zone = Zone::default()
        .txt(
            FROM_DOMAIN,
            &["v=spf1 ip4:192.0.2.7", " include:_spf.example.net -all"],
        )
        .txt("_dmarc.example.org", &["v=DMARC1; p=none"]);
    let dns = DnsServer::start(zone);
    let install = deliverable(Install::new(dir.path())).set("TIDINGS_SMTP__URL", sink.url());
    let output = check(&install, &dns);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = lines(&output.stdout);
    assert!(
        stdout.contains(
            &"ok: SPF record for news.example.org: v=spf1 ip4:192.0.2.7 include:_spf.example.net -all"
                .to_owned()
        ),
        "{stdout:?}"
    );
    let warning = stdout.last().unwrap();
    assert!(
        warning.starts_with(
            "warning: the DMARC record for news.example.org (at _dmarc.example.org) says \
             p=none: Gmail and Yahoo accept it, but it protects nothing"
        ),
        "{stdout:?}"
    );
}

#[test]
fn check_reports_a_failing_dns_server_as_such_not_as_a_missing_record() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    let dns = DnsServer::start(good_zone().servfail(FROM_DOMAIN));
    let install = deliverable(Install::new(dir.path())).set("TIDINGS_SMTP__URL", sink.url());
    let output = check(&install, &dns);
    assert!(!output.status.success());
    let stderr = lines(&output.stderr);
    assert_eq!(
        stderr[0],
        "error: the SPF record for news.example.org could not be looked up: the DNS server \
         answered SERVFAIL"
    );
    let stdout = lines(&output.stdout);
    assert!(
        stdout
            .iter()
            .any(|line| line.starts_with("ok: DMARC record")),
        "{stdout:?}"
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
    let output = check(&install, &dns);
    assert!(!output.status.success());
    let stdout = lines(&output.stdout);
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
    let stderr = lines(&output.stderr);
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
