//! What a spam filter makes of our emails: SpamAssassin (local tests only,
//! no network) scores the confirmation email and an issue email, each as
//! a receiving server would see it after our relay handed it over with a
//! proper EHLO name. Every point scored would be the project's fault.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{free_port, wait_until, Install, ADMIN_TOKEN};

/// The relay's hop, as the receiving server records it now; the address
/// is an ordinary public one, so no rule fires on the hop itself.
fn relay_hop() -> String {
    format!(
        "Received: from news.example.org (news.example.org [93.184.216.34])\r\n\
         \tby mx.example.net (Postfix) with ESMTPS id 4QZ1; {}\r\n",
        chrono::Utc::now().to_rfc2822()
    )
}

/// SpamAssassin's score and the rules that fired.
fn spam_score(message: &[u8]) -> (f64, String) {
    let mut child = Command::new("spamassassin")
        .args(["-L", "-t"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spamassassin runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(relay_hop().as_bytes()).unwrap();
    stdin.write_all(message).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let score = report
        .lines()
        .find_map(|line| line.strip_prefix("X-Spam-Status: "))
        .and_then(|status| status.split("score=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("no score in:\n{report}"));
    let details = report
        .split("Content analysis details:")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (score, details)
}

fn spamassassin_installed() -> bool {
    let found = Command::new("spamassassin")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found || std::env::var_os("CI").is_none(),
        "spamassassin is missing: .ci/run installs it"
    );
    found
}

fn emails_in(outbox: &Path) -> Vec<Vec<u8>> {
    std::fs::read_dir(outbox)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| std::fs::read(entry.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn spamassassin_scores_the_confirmation_and_an_issue_below_one() {
    if !spamassassin_installed() {
        println!("skipped: spamassassin is not installed (apt-get install spamassassin)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path())
        .set(
            "TIDINGS_NEWSLETTER__FROM",
            "Partnership Pitfalls <tips@news.example.org>",
        )
        .set("TIDINGS_NEWSLETTER__BASE_URL", "https://news.example.org")
        .set(
            "TIDINGS_NEWSLETTER__POSTAL_ADDRESS",
            "1 Harbour Street, Portsmouth PO1 2AB",
        )
        .set("TIDINGS_ADMIN__TOKEN", ADMIN_TOKEN);
    install.ok(&["subscriber", "add", "new.reader@example.com"]);
    install.ok(&["subscriber", "add", "reader@example.com", "--confirmed"]);
    // The first of the ten built-in tips, as the schedule would send it.
    let daemon = install.serve(free_port());
    daemon.send_now();
    let outbox = dir.path().join("outbox");
    wait_until("both emails in the outbox", Duration::from_secs(30), || {
        emails_in(&outbox).len() == 2
    });
    for email in emails_in(&outbox) {
        let text = String::from_utf8_lossy(&email);
        let kind = if text.contains("List-Unsubscribe-Post") {
            "issue"
        } else {
            "confirmation"
        };
        let (score, details) = spam_score(&email);
        println!("{kind}: SpamAssassin {score}");
        assert!(score < 1.0, "the {kind} email scores {score}:{details}");
        // Whatever fires must cost nothing: every rule here would be ours.
        let costly: Vec<&str> = details
            .lines()
            .filter(|line| {
                line.split_whitespace()
                    .next()
                    .and_then(|points| points.parse::<f64>().ok())
                    .is_some_and(|points| points > 0.0)
            })
            .collect();
        assert!(costly.is_empty(), "the {kind} email: {costly:?}");
    }
}
