//! The README's journeys, with the real binary.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::dns::DnsServer;
use crate::harness::{free_port, wait_until, Install, Sink, ADMIN_TOKEN};

#[test]
fn on_defaults_emails_go_to_outbox_and_the_ten_tips_are_queued() {
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path());
    let mut daemon = install.serve(free_port());
    assert!(daemon.log_text().contains("tidings is running"));
    assert!(
        dir.path().join("tidings.db").exists(),
        "a SQLite file by default"
    );

    let page = daemon.client.get(daemon.url("/")).send().unwrap();
    assert_eq!(page.status(), 200);
    let response = daemon
        .client
        .post(daemon.url("/subscribe"))
        .form(&[("email", "first@example.com"), ("name", "First")])
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
    let outbox = dir.path().join("outbox");
    wait_until("an .eml file in outbox/", Duration::from_secs(10), || {
        std::fs::read_dir(&outbox)
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "eml"))
            })
            .unwrap_or(false)
    });

    let queue = install.ok(&["post", "list"]);
    assert_eq!(
        queue.lines().filter(|line| line.contains("queued")).count(),
        10,
        "{queue}"
    );
    assert!(queue.contains("Pitfall 1 of 10"));

    daemon.signal("TERM");
    assert!(
        daemon.wait_exit(Duration::from_secs(15)),
        "a clean exit on SIGTERM"
    );
}

#[test]
fn an_issue_reaches_smtp_sink_and_its_link_unsubscribes() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    let install = Install::new(dir.path())
        .set("TIDINGS_SMTP__URL", sink.url())
        .set("TIDINGS_ADMIN__TOKEN", ADMIN_TOKEN)
        .set(
            "TIDINGS_NEWSLETTER__POSTAL_ADDRESS",
            "PO Box 7, Springfield",
        );
    let daemon = install.serve(free_port());

    let response = daemon
        .client
        .post(daemon.url("/subscribe"))
        .json(&json!({ "email": "reader@example.com", "name": "Reader" }))
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
    let confirmation = sink.wait_for(1, Duration::from_secs(10)).remove(0);
    let confirm = daemon.local(&confirmation.link("http://127.0.0.1:8080/confirm?token="));
    // The link opens a page; its button POSTs to the same link.
    assert_eq!(daemon.client.get(&confirm).send().unwrap().status(), 200);
    assert_eq!(daemon.client.post(&confirm).send().unwrap().status(), 200);

    let response = daemon
        .admin(Method::POST, "/api/admin/posts")
        .json(&json!({ "subject": "Hello from curl", "body_markdown": "It **works**." }))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    // The new post goes after the ten seeded tips; move it to the front.
    let id = response.json::<Value>().unwrap()["id"].as_i64().unwrap();
    let moved = daemon
        .admin(Method::PATCH, &format!("/api/admin/posts/{id}"))
        .json(&json!({ "position": 1 }))
        .send()
        .unwrap();
    assert_eq!(moved.status(), 200);

    let summary = install.ok(&["send-now"]);
    assert!(summary.contains("1 sent, 0 failed, 0 skipped"), "{summary}");
    let messages = sink.wait_for(2, Duration::from_secs(10));
    let issue = messages
        .iter()
        // A plain ASCII subject goes out as typed, not as encoded-words.
        .find(|message| message.header("subject") == Some("Hello from curl"))
        .expect("the issue arrived");
    assert_eq!(issue.recipient, "reader@example.com");
    assert!(issue.header("message-id").unwrap().ends_with("@localhost>"));
    assert!(issue.header("date").is_some());
    assert!(issue.header("list-id").is_some());
    assert_eq!(
        issue.header("list-unsubscribe-post"),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(issue.body.contains("PO Box 7, Springfield"));
    let unsubscribe = issue.header("list-unsubscribe").unwrap();
    let link = daemon.local(unsubscribe.trim_start_matches('<').trim_end_matches('>'));
    let response = daemon
        .client
        .post(link)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let list = install.ok(&["subscriber", "list"]);
    assert!(list.contains("reader@example.com\tunsubscribed"), "{list}");
}

#[test]
fn subscribers_import_and_export_as_csv() {
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path());
    let csv = dir.path().join("people.csv");
    std::fs::write(
        &csv,
        "email,name,status\nana@example.com,Ana,confirmed\nbo@example.com,,unsubscribed\nnot-an-email,X,confirmed\n",
    )
    .unwrap();
    let output = install.run(&["subscriber", "import", csv.to_str().unwrap()]);
    assert!(!output.status.success(), "a bad row makes the import fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 4"), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        install.ok(&["subscriber", "export"]),
        "email,name,status\n",
        "a bad row means nothing is written"
    );
    install.ok(&[
        "subscriber",
        "import",
        "--skip-invalid",
        csv.to_str().unwrap(),
    ]);
    let export = install.ok(&["subscriber", "export"]);
    assert_eq!(
        export,
        "email,name,status\nana@example.com,Ana,confirmed\nbo@example.com,,unsubscribed\n"
    );
    install.ok(&[
        "subscriber",
        "add",
        "cy@example.com",
        "--name",
        "Cy",
        "--confirmed",
    ]);
    let added = install.run(&["subscriber", "add", "cy@example.com"]);
    assert!(!added.status.success());
    assert!(install
        .ok(&["subscriber", "list", "--status", "confirmed"])
        .contains("cy@example.com"));
}

#[test]
fn bad_config_stops_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value, named) in [
        ("TIDINGS_SCHEDULE__CRON", "every monday", "schedule.cron"),
        (
            "TIDINGS_SCHEDULE__TIMEZONE",
            "Mars/Base",
            "schedule.timezone",
        ),
        ("TIDINGS_DATABASE__URL", "mysql://db", "database.url"),
        ("TIDINGS_SMTP__CONCURRENCY", "many", "concurrency"),
    ] {
        let install = Install::new(dir.path()).set(key, value);
        let output = install.run(&["serve"]);
        assert!(!output.status.success(), "{key}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{key}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    let config = dir.path().join("tidings.toml");
    std::fs::write(&config, "[smtp]\nretry_base = \"whenever\"\n").unwrap();
    let output = Install::new(dir.path()).run(&["--config", config.to_str().unwrap(), "check"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("smtp.retry_base"));
}

#[test]
fn a_broken_template_stops_the_daemon_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    std::fs::write(
        dir.path().join("templates/issue.html.hbs"),
        "{{#if subject}}never closed",
    )
    .unwrap();
    let output = Install::new(dir.path()).run(&["serve"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("issue.html"), "{stderr}");
}

#[test]
fn check_names_an_unreachable_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path()).set(
        "TIDINGS_SMTP__URL",
        format!("smtp://127.0.0.1:{}", free_port()),
    );
    let output = install.run(&["check"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("smtp"), "{stderr}");
    // Reachable, and the From domain's SPF and DMARC are in order.
    let sink = Sink::start(&[]);
    let dns = DnsServer::start(crate::check::good_zone());
    let install =
        crate::check::deliverable(Install::new(dir.path())).set("TIDINGS_SMTP__URL", sink.url());
    let stdout = install.ok(&["check", "--nameserver", &dns.arg()]);
    assert!(stdout.contains("ok: database (sqlite)"), "{stdout}");
    assert!(stdout.contains("ok: email via SMTP server"), "{stdout}");
}

#[test]
fn send_now_with_nothing_to_send_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path());
    let output = install.run(&["send-now"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing to send"));
}

/// `tidings admin add EMAIL` with the password piped in, as a script would.
fn admin_add(install: &Install, email: &str, stdin: &str) -> std::process::Output {
    install.run_with_input(&["admin", "add", email], stdin)
}

/// A failed command: non-zero, and one line on stderr that says `what`.
fn fails_with(output: &std::process::Output, what: &str) {
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(what), "{stderr}");
}

#[test]
fn admin_accounts_are_added_listed_reset_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path());

    let added = admin_add(&install, "Owner@Example.com", "correct horse battery\n");
    assert!(added.status.success(), "{added:?}");
    assert!(String::from_utf8_lossy(&added.stdout).contains("added admin owner@example.com"));
    let stored = crate::harness::sqlite_text(
        &dir.path().join("tidings.db"),
        "SELECT password_hash FROM admin_users",
    );
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert!(!stored.contains("correct horse"));

    let listed = install.ok(&["admin", "list"]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.starts_with("owner@example.com\t20"), "{listed}");

    let reset = admin_add(&install, "owner@example.com", "a new passphrase\r\n");
    assert!(reset.status.success(), "{reset:?}");
    assert!(String::from_utf8_lossy(&reset.stdout).contains("reset the password"));
    assert_eq!(install.ok(&["admin", "list"]).lines().count(), 1);

    install.ok(&["admin", "remove", "owner@example.com"]);
    assert_eq!(install.ok(&["admin", "list"]), "");
}

#[test]
fn admin_commands_refuse_bad_input_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path());
    fails_with(
        &admin_add(&install, "owner@example.com", "too short\n"),
        "at least 12 characters",
    );
    fails_with(&admin_add(&install, "owner@example.com", ""), "empty");
    fails_with(
        &admin_add(&install, "not an address", "correct horse battery\n"),
        "not an address",
    );
    fails_with(
        &install.run(&["admin", "remove", "nobody@example.com"]),
        "no admin account for nobody@example.com",
    );
    assert_eq!(install.ok(&["admin", "list"]), "", "nothing was written");
}
