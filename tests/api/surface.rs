//! The HTTP surface as a client meets it: JSON errors under /api, pages
//! elsewhere, security headers, and the OpenAPI document.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::admin_ui::log_in;
use crate::helpers::{spawn_app, spawn_with, Backend, Options, TestApp, ADMIN_TOKEN};
use crate::on_both_backends;
use crate::pages::{assert_page_headers, header};

on_both_backends!(
    every_api_rejection_is_json_with_its_status,
    an_unknown_route_outside_the_api_gets_a_page,
    json_signups_get_json_and_form_signups_pages_for_every_rejection,
    every_html_page_sends_the_security_headers,
    the_preview_is_sandboxed,
    a_hostile_post_previews_without_script_in_the_api_and_the_admin_ui,
    the_openapi_document_describes_every_route_the_router_has,
);

/// Over the 1 MiB request-body limit.
fn too_large() -> String {
    "x".repeat(2 * 1024 * 1024)
}

/// A client of its own for an oversized body: the server answers 413 and
/// closes the connection, which must not be handed to the next request.
fn lone_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn json_error(response: Response, status: u16, what: &str) -> String {
    assert_eq!(response.status(), status, "{what}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{what}: {content_type}"
    );
    let body: Value = response.json().await.unwrap();
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {body}"));
    assert!(!message.is_empty(), "{what}");
    message.to_owned()
}

async fn every_api_rejection_is_json_with_its_status(backend: Backend) {
    let app = spawn_app(backend).await;
    let get = |path: &str| app.admin(Method::GET, path).send();

    let message = json_error(get("/api/admin/posts/abc").await.unwrap(), 400, "bad path").await;
    assert!(
        message.contains("abc") || message.contains("parse"),
        "{message}"
    );
    for query in ["?limit=-1", "?after=x", "?limit=99999999999"] {
        let response = get(&format!("/api/admin/subscribers{query}"))
            .await
            .unwrap();
        json_error(response, 400, query).await;
    }
    json_error(
        get("/api/nothing-here").await.unwrap(),
        404,
        "unknown API route",
    )
    .await;
    json_error(get("/api").await.unwrap(), 404, "/api itself").await;
    // Without a token, an unknown admin route says no more than 404.
    let unknown = app.client.get(app.url("/api/admin/secrets")).send().await;
    json_error(unknown.unwrap(), 404, "unknown admin route").await;

    let wrong_method = app
        .admin(Method::PUT, "/api/admin/stats")
        .send()
        .await
        .unwrap();
    let allow = wrong_method.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET"), "{allow}");
    let message = json_error(wrong_method, 405, "wrong method").await;
    assert!(message.contains("PUT"), "{message}");

    let large = lone_client()
        .post(app.url("/api/admin/posts"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"subject":"Big","body_markdown":"{}"}}"#,
            too_large()
        ))
        .send()
        .await
        .unwrap();
    json_error(large, 413, "body too large").await;
    let plain = app
        .admin(Method::POST, "/api/admin/posts")
        .header("content-type", "text/plain")
        .body(r#"{"subject":"S","body_markdown":"B"}"#)
        .send()
        .await
        .unwrap();
    json_error(plain, 415, "not JSON").await;
    let malformed = app
        .admin(Method::PATCH, "/api/admin/posts/1")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    json_error(malformed, 422, "malformed JSON").await;
}

async fn an_unknown_route_outside_the_api_gets_a_page(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .client
        .get(app.url("/no-such-page"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(page.contains("Page not found"), "{page}");
    let wrong_method = app.client.delete(app.url("/")).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert!(wrong_method.text().await.unwrap().contains("<html"));
}

async fn json_signups_get_json_and_form_signups_pages_for_every_rejection(backend: Backend) {
    let app = spawn_with(Options::new(backend), |settings| {
        // The invalid address below counts; the unreadable bodies do not.
        settings.http.subscribe_per_ip_per_hour = 2;
    })
    .await;
    let post = || app.client.post(app.url("/subscribe"));

    // Refused while still sending, the client reads the 413 every time
    // rather than a reset connection.
    for _ in 0..3 {
        let large = lone_client()
            .post(app.url("/subscribe"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"email":"{}@example.com"}}"#, too_large()))
            .send()
            .await
            .unwrap();
        json_error(large, 413, "JSON body too large").await;
    }
    let unreadable = post()
        .header("content-type", "application/json")
        .body("{\"email\":")
        .send()
        .await
        .unwrap();
    json_error(unreadable, 422, "unreadable JSON").await;
    let invalid = app
        .subscribe_json(json!({ "email": "not an address" }))
        .await;
    json_error(invalid, 422, "invalid address").await;
    let first = app
        .subscribe_json(json!({ "email": "one@example.com" }))
        .await;
    assert_eq!(first.status(), 202);
    let limited = app
        .subscribe_json(json!({ "email": "two@example.com" }))
        .await;
    json_error(limited, 429, "over the limit").await;

    let large_form = lone_client()
        .post(app.url("/subscribe"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("email={}", too_large()))
        .send()
        .await
        .unwrap();
    assert_eq!(large_form.status(), 413);
    assert!(large_form.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(large_form.text().await.unwrap().contains("too large"));
    let limited_form = app.subscribe_form(&[("email", "three@example.com")]).await;
    assert_eq!(limited_form.status(), 429);
    assert!(limited_form.text().await.unwrap().contains("<html"));
}

async fn every_html_page_sends_the_security_headers(backend: Backend) {
    let app = spawn_app(backend).await;
    let get = |path: &str| app.client.get(app.url(path)).send();
    let post = |path: &str| app.client.post(app.url(path)).send();

    assert_page_headers(get("/").await.unwrap().headers(), "signup page", false);
    let subscribed = app.subscribe_form(&[("email", "pages@example.com")]).await;
    assert_eq!(subscribed.status(), 202);
    assert_page_headers(subscribed.headers(), "check your inbox", false);
    let invalid = app.subscribe_form(&[("email", "nope")]).await;
    assert_eq!(invalid.status(), 422);
    assert_page_headers(invalid.headers(), "signup error", false);
    assert_page_headers(
        get("/elsewhere").await.unwrap().headers(),
        "404 page",
        false,
    );

    // The pages behind emailed links, good and bad tokens alike.
    let mail = app.mail.wait_for("pages@example.com", 1).await.remove(0);
    let confirm = app.local(&mail.link("http://"));
    let path = confirm.trim_start_matches(&app.address).to_owned();
    assert_page_headers(get(&path).await.unwrap().headers(), "GET /confirm", true);
    let head = app.client.head(app.url(&path)).send().await.unwrap();
    assert_page_headers(head.headers(), "HEAD /confirm", true);
    assert_page_headers(post(&path).await.unwrap().headers(), "POST /confirm", true);
    assert_page_headers(
        get("/confirm?token=bad").await.unwrap().headers(),
        "bad confirm",
        true,
    );
    let unsubscribe = app.unsubscribe_link("pages@example.com").await;
    let path = unsubscribe.trim_start_matches(&app.address).to_owned();
    assert_page_headers(
        get(&path).await.unwrap().headers(),
        "GET /unsubscribe",
        true,
    );
    assert_page_headers(
        post(&path).await.unwrap().headers(),
        "POST /unsubscribe",
        true,
    );
    let bad = get("/unsubscribe?token=bad").await.unwrap();
    assert_eq!(bad.status(), 404);
    assert_page_headers(bad.headers(), "bad unsubscribe", true);

    // JSON answers get the two headers that make sense everywhere.
    let health = get("/healthz").await.unwrap();
    assert_eq!(
        header(health.headers(), "x-content-type-options"),
        "nosniff"
    );
    assert_eq!(header(health.headers(), "referrer-policy"), "no-referrer");
}

async fn the_preview_is_sandboxed(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = app.enqueue("Preview me", "Some *text*.").await;
    let response = app
        .admin(Method::GET, &format!("/api/admin/posts/{id}/preview"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(header(response.headers(), "content-type").starts_with("text/html"));
    let policy = header(response.headers(), "content-security-policy");
    assert!(policy.contains("sandbox"), "{policy}");
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(!policy.contains("script-src"), "{policy}");
    assert_eq!(
        header(response.headers(), "x-content-type-options"),
        "nosniff"
    );
}

async fn a_hostile_post_previews_without_script_in_the_api_and_the_admin_ui(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = "Hello <script>alert(1)</script> reader.\n\n\
                <img src=\"https://example.org/x.png\" onerror=\"alert(2)\">\n\n\
                [x](javascript:alert(3)) and [a real link](https://example.org/ok).\n\n\
                <a href=\"javascript:alert(4)\" onclick=\"alert(5)\">raw</a>\n";
    let id = app.enqueue("Hostile", body).await;
    let api = app
        .admin(Method::GET, &format!("/api/admin/posts/{id}/preview"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
    let api = api.text().await.unwrap();
    let admin = log_in(&app).await;
    let ui = admin.page(&format!("/admin/preview/{id}")).await;
    let text = admin.page(&format!("/admin/preview/{id}/text")).await;
    for (which, html) in [("API", &api), ("admin UI", &ui), ("plain text", &text)] {
        let lower = html.to_ascii_lowercase();
        for forbidden in ["<script", "onerror", "onclick", "javascript:", "alert("] {
            assert!(
                !lower.contains(forbidden),
                "{which}: {forbidden} in\n{html}"
            );
        }
        assert!(html.contains("reader."), "{which}: the text stays:\n{html}");
    }
    for html in [&api, &ui] {
        assert!(html.contains("href=\"https://example.org/ok\""), "{html}");
    }
}

/// Each (path, method) the router serves, read from its debug form, which
/// lists every path and, per path, which methods have a handler.
fn router_operations(app: &TestApp) -> BTreeSet<(String, String)> {
    let router = format!("{:?}", tidings::http::router(app.state.clone()));
    let routes = router
        .split("fallback_router")
        .next()
        .expect("a path router");
    let paths: BTreeMap<String, String> = routes
        .split("RouteId(")
        .skip(1)
        .filter_map(|piece| {
            let (id, rest) = piece.split_once(')')?;
            let path = rest.strip_prefix(": \"")?.split('"').next()?;
            Some((id.to_owned(), path.to_owned()))
        })
        .collect();
    assert!(paths.len() > 5, "paths found in the router: {router}");
    let mut operations = BTreeSet::new();
    for piece in routes.split("RouteId(").skip(1) {
        let Some((id, rest)) = piece.split_once(')') else {
            continue;
        };
        let Some(methods) = rest.strip_prefix(": MethodRouter(MethodRouter { ") else {
            continue;
        };
        let methods = methods.split("fallback:").next().unwrap();
        for field in methods.split(", ") {
            let Some((method, endpoint)) = field.split_once(": ") else {
                continue;
            };
            if endpoint.trim() != "None" {
                operations.insert((paths[id].clone(), method.trim().to_owned()));
            }
        }
    }
    operations
}

async fn the_openapi_document_describes_every_route_the_router_has(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(header(response.headers(), "content-type").starts_with("application/json"));
    let document: Value = response.json().await.unwrap();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3."),
        "an OpenAPI 3 document"
    );
    let bearer = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http");
    assert_eq!(bearer["scheme"], "bearer");

    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            documented.insert((path.clone(), method.clone()));
            let guarded = path.starts_with("/api/admin/") || path == "/metrics";
            let security = &operation["security"];
            assert_eq!(
                security
                    .as_array()
                    .is_some_and(|list| list.iter().any(|s| s.get("bearer").is_some())),
                guarded,
                "{method} {path}: bearer security {security}"
            );
            let responses = operation["responses"].as_object().unwrap();
            assert!(responses.contains_key("503"), "{method} {path}: busy");
            if guarded {
                for status in ["401", "429"] {
                    assert!(responses.contains_key(status), "{method} {path}: {status}");
                }
            }
        }
    }
    // GET routes answer HEAD too; the document names HEAD where it matters.
    // The admin web UI's pages are for a browser with a session cookie, not
    // for scripts: they are not in the API document (tests/api/admin_ui
    // covers each of them).
    let (web_ui, served): (BTreeSet<_>, BTreeSet<_>) = router_operations(&app)
        .into_iter()
        .partition(|(path, _)| path == "/admin" || path.starts_with("/admin/"));
    assert!(web_ui.contains(&("/admin/login".to_owned(), "post".to_owned())));
    for (path, method) in &served {
        assert!(
            documented.contains(&(path.clone(), method.clone())),
            "{method} {path} is served but not documented"
        );
    }
    for (path, method) in &documented {
        let answered = served.contains(&(path.clone(), method.clone()))
            || (method == "head" && served.contains(&(path.clone(), "get".to_owned())));
        assert!(answered, "{method} {path} is documented but not served");
    }

    // The admin routes in the document really need the token.
    let stats = app
        .client
        .get(app.url("/api/admin/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 401);
    let with_token = app
        .client
        .get(app.url("/api/admin/stats"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), 200);
}
