//! Consent, from outside: a mail scanner that opens the emailed link gives
//! none, a stranger cannot rename someone by signing them up again, and a
//! signup's answer does not tell whether an address is on the list.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{free_port, Daemon, Install, Sink, ADMIN_TOKEN};

fn install(dir: &std::path::Path, sink: &Sink) -> Install {
    Install::new(dir)
        .set("TIDINGS_SMTP__URL", sink.url())
        .set("TIDINGS_ADMIN__TOKEN", ADMIN_TOKEN)
        .set("TIDINGS_HTTP__SUBSCRIBE_PER_IP_PER_HOUR", "0")
}

fn subscribe(daemon: &Daemon, body: Value) {
    let response = daemon
        .client
        .post(daemon.url("/subscribe"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
}

/// The admin API's record of `email`.
fn record(daemon: &Daemon, email: &str) -> Value {
    let page: Value = daemon
        .admin(Method::GET, "/api/admin/subscribers?limit=1000")
        .send()
        .unwrap()
        .json()
        .unwrap();
    page["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|subscriber| subscriber["email"] == email)
        .unwrap_or_else(|| panic!("{email} is not listed: {page}"))
        .clone()
}

fn consent_log(daemon: &Daemon, email: &str) -> Vec<Value> {
    let id = record(daemon, email)["id"].as_i64().unwrap();
    let log: Value = daemon
        .admin(Method::GET, &format!("/api/admin/subscribers/{id}/consent"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    log["events"].as_array().unwrap().clone()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event["kind"].as_str().unwrap())
        .collect()
}

#[test]
fn a_mail_scanner_opening_the_link_gives_no_consent() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    let daemon = install(dir.path(), &sink).serve(free_port());
    subscribe(&daemon, json!({ "email": "ada@example.com" }));
    let mail = sink.wait_for(1, Duration::from_secs(10)).remove(0);
    let link = daemon.local(&mail.link("http://127.0.0.1:8080/confirm?token="));

    // What Defender, Barracuda or Mimecast do with every link in a message.
    for _ in 0..3 {
        let page = daemon
            .client
            .get(&link)
            .header("user-agent", "LinkScanner/1.0")
            .send()
            .unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().unwrap().contains("method=\"post\""));
        let head = daemon
            .client
            .head(&link)
            .header("user-agent", "LinkScanner/1.0")
            .send()
            .unwrap();
        assert_eq!(head.status(), 200);
    }
    assert_eq!(record(&daemon, "ada@example.com")["status"], "pending");
    assert_eq!(kinds(&consent_log(&daemon, "ada@example.com")), ["signup"]);

    // The person presses the button.
    let confirmed = daemon
        .client
        .post(&link)
        .header("user-agent", "AdasBrowser/1.0")
        .send()
        .unwrap();
    assert_eq!(confirmed.status(), 200);
    assert!(confirmed.text().unwrap().contains("You're subscribed"));
    assert_eq!(record(&daemon, "ada@example.com")["status"], "confirmed");
    let events = consent_log(&daemon, "ada@example.com");
    assert_eq!(kinds(&events), ["signup", "confirm"]);
    assert_eq!(events[1]["user_agent"], "AdasBrowser/1.0");
    assert_eq!(events[1]["ip"], "127.0.0.1");

    // Pressed again: the same page, and no second consent.
    let again = daemon.client.post(&link).send().unwrap();
    assert_eq!(again.status(), 200);
    assert!(again.text().unwrap().contains("You're subscribed"));
    assert_eq!(
        kinds(&consent_log(&daemon, "ada@example.com")),
        ["signup", "confirm"]
    );
}

#[test]
fn a_stranger_cannot_rename_a_pending_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    // No resend window, so the stranger's signup sends a fresh link too.
    let daemon = install(dir.path(), &sink)
        .set("TIDINGS_HTTP__CONFIRMATION_WINDOW", "0s")
        .serve(free_port());
    subscribe(
        &daemon,
        json!({ "email": "ada@example.com", "name": "Ada" }),
    );
    sink.wait_for(1, Duration::from_secs(10));
    subscribe(
        &daemon,
        json!({ "email": "ada@example.com", "name": "Claim your prize at spam.example" }),
    );
    let mails = sink.wait_for(2, Duration::from_secs(10));
    assert_eq!(record(&daemon, "ada@example.com")["name"], "Ada");

    // Either link is hers; she follows one and presses the button.
    let link = daemon.local(&mails[1].link("http://127.0.0.1:8080/confirm?token="));
    assert_eq!(daemon.client.post(&link).send().unwrap().status(), 200);
    let ada = record(&daemon, "ada@example.com");
    assert_eq!(ada["status"], "confirmed");
    assert_eq!(ada["name"], "Ada", "the name from the first signup stands");
}

/// Status, headers but `Date`, and body.
fn answer(response: reqwest::blocking::Response) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let status = response.status().as_u16();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    (status, headers, response.bytes().unwrap().to_vec())
}

#[test]
fn a_new_and_an_existing_address_get_identical_answers() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&[]);
    let install = install(dir.path(), &sink);
    install.ok(&["subscriber", "add", "member@example.com", "--confirmed"]);
    let daemon = install.serve(free_port());
    let json_signup = |email: &str| {
        answer(
            daemon
                .client
                .post(daemon.url("/subscribe"))
                .json(&json!({ "email": email, "name": "Sam" }))
                .send()
                .unwrap(),
        )
    };
    let form_signup = |email: &str| {
        answer(
            daemon
                .client
                .post(daemon.url("/subscribe"))
                .form(&[("email", email), ("name", "Sam")])
                .send()
                .unwrap(),
        )
    };
    let new = json_signup("newcomer@example.com");
    assert_eq!(new.0, 202);
    assert_eq!(json_signup("member@example.com"), new, "JSON");
    let new = form_signup("another@example.com");
    assert_eq!(new.0, 202);
    assert_eq!(form_signup("member@example.com"), new, "form");
    // The member got no email; each newcomer got one.
    let mails = sink.wait_for(2, Duration::from_secs(10));
    assert!(mails
        .iter()
        .all(|mail| mail.recipient != "member@example.com"));
}
