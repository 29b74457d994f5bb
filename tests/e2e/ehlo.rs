//! The name tidings gives in EHLO: `smtp.helo_name`, or by default the
//! host's name when it is fully qualified, else the From domain; never a
//! bare host name, which spam filters score.

use std::process::Command;
use std::time::Duration;

use crate::harness::{Install, Sink};

/// Sends one confirmation email through smtp-sink and returns the EHLO
/// name it saw.
fn ehlo_seen(extra: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    let mut install = Install::new(dir.path())
        .set("TIDINGS_SMTP__URL", sink.url())
        .set("TIDINGS_NEWSLETTER__FROM", "Tips <tips@news.example.org>");
    for (key, value) in extra {
        install = install.set(key, *value);
    }
    install.ok(&["subscriber", "add", "reader@example.com"]);
    let _daemon = install.serve(crate::harness::free_port());
    let messages = sink.wait_for(1, Duration::from_secs(30));
    messages[0].helo.clone()
}

#[test]
fn the_default_ehlo_name_is_the_fqdn_or_the_from_domain() {
    let host = Command::new("hostname").output().unwrap();
    let host = String::from_utf8(host.stdout)
        .unwrap()
        .trim()
        .to_lowercase();
    let expected = if host.contains('.') {
        host
    } else {
        "news.example.org".to_owned()
    };
    assert_eq!(ehlo_seen(&[]), expected);
}

#[test]
fn smtp_helo_name_sets_the_ehlo_name() {
    assert_eq!(
        ehlo_seen(&[("TIDINGS_SMTP__HELO_NAME", "Mail.Example.net")]),
        "mail.example.net"
    );
}

#[test]
fn a_bare_host_name_as_helo_name_stops_tidings_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path()).set("TIDINGS_SMTP__HELO_NAME", "vm");
    let output = install.run(&["check"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("smtp.helo_name"), "{stderr}");
    assert!(stderr.contains("fully qualified"), "{stderr}");
}
