//! The built daemon's HTTP surface from outside: the security headers on
//! every page, and JSON errors under /api, including a 413.

use reqwest::blocking::Response;
use serde_json::Value;

use crate::harness::{free_port, Install, ADMIN_TOKEN};
use crate::pages::{assert_page_headers, header};

fn assert_json_error(response: Response, status: u16, what: &str) {
    assert_eq!(response.status(), status, "{what}");
    assert!(
        header(response.headers(), "content-type").starts_with("application/json"),
        "{what}"
    );
    let body: Value = response.json().unwrap();
    assert!(
        body["error"].as_str().is_some_and(|text| !text.is_empty()),
        "{what}: {body}"
    );
}

#[test]
fn pages_carry_security_headers_and_api_errors_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let install = Install::new(dir.path()).set("TIDINGS_ADMIN__TOKEN", ADMIN_TOKEN);
    let daemon = install.serve(free_port());
    let client = &daemon.client;

    let get = |path: &str| client.get(daemon.url(path)).send().unwrap();
    assert_page_headers(get("/").headers(), "signup page", false);
    let subscribed = client
        .post(daemon.url("/subscribe"))
        .form(&[("email", "headers@example.com")])
        .send()
        .unwrap();
    assert_eq!(subscribed.status(), 202);
    assert_page_headers(subscribed.headers(), "check your inbox", false);
    assert_page_headers(
        get("/confirm?token=unknown").headers(),
        "confirm page",
        true,
    );
    let head = client
        .head(daemon.url("/confirm?token=unknown"))
        .send()
        .unwrap();
    assert_page_headers(head.headers(), "HEAD confirm", true);
    let post = client
        .post(daemon.url("/confirm?token=unknown"))
        .send()
        .unwrap();
    assert!(post.status().is_client_error());
    assert_page_headers(post.headers(), "POST confirm", true);
    assert_page_headers(
        get("/unsubscribe?token=unknown").headers(),
        "unsubscribe page",
        true,
    );
    let one_click = client
        .post(daemon.url("/unsubscribe?token=unknown"))
        .form(&[("List-Unsubscribe", "One-Click")])
        .send()
        .unwrap();
    assert_page_headers(one_click.headers(), "one-click unsubscribe", true);
    let missing = get("/no-such-page");
    assert_eq!(missing.status(), 404);
    assert_page_headers(missing.headers(), "404 page", false);

    assert_json_error(get("/api/no-such-route"), 404, "unknown API route");
    // A client of its own: the server closes the connection after a 413.
    let lone = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let large = lone
        .post(daemon.url("/api/admin/posts"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"subject":"Big","body_markdown":"{}"}}"#,
            "x".repeat(2 * 1024 * 1024)
        ))
        .send()
        .unwrap();
    assert_json_error(large, 413, "body too large");
    let bad_path = client
        .get(daemon.url("/api/admin/posts/abc"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .unwrap();
    assert_json_error(bad_path, 400, "bad path parameter");

    let document: Value = get("/api/openapi.json").json().unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    assert!(document["paths"]["/api/admin/posts"]["post"].is_object());
}
