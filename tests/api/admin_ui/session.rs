//! Logging in and out, the session cookie, throttled guessing, and the
//! CSRF and Origin checks every form goes through.

use reqwest::header::{COOKIE, ORIGIN};

use super::{
    add_admin, assert_csrf_protected, log_in, log_in_as, login_attempt, login_form, set_cookie,
    AdminClient, ADMIN_EMAIL, ADMIN_PASSWORD, PAGES,
};
use crate::helpers::{spawn_app, spawn_with, Backend, Options};
use crate::on_both_backends;

on_both_backends!(
    a_login_opens_every_page_and_a_logout_ends_the_session,
    pages_without_a_session_go_to_the_login_and_come_back_after_it,
    a_wrong_password_and_an_unknown_address_get_the_same_answer,
    failed_logins_are_throttled_per_account_and_per_ip,
    the_login_form_refuses_a_post_from_another_site,
    logging_out_needs_the_csrf_proof,
);

async fn a_login_opens_every_page_and_a_logout_ends_the_session(backend: Backend) {
    let app = spawn_app(backend).await;
    add_admin(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let response = login_attempt(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(response.status(), 303);
    assert_eq!(AdminClient::location(&response), "/admin");
    let cookie = set_cookie(&response, "tidings_admin").unwrap();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/admin"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "an http base_url gets no Secure"
    );
    let admin = log_in_as(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await.unwrap();
    for page in PAGES {
        let html = admin.page(page).await;
        assert!(
            html.contains(ADMIN_EMAIL) || html.contains("Log out"),
            "{page}"
        );
        let response = admin.get(page).await;
        assert_eq!(response.headers()["cache-control"], "no-store", "{page}");
        let policy = response.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert_eq!(
            response.headers()["referrer-policy"],
            "same-origin",
            "{page}"
        );
    }
    let response = admin.post_form("/admin/logout", &[]).await;
    assert_eq!(response.status(), 303);
    assert_eq!(AdminClient::location(&response), "/admin/login");
    assert!(set_cookie(&response, "tidings_admin")
        .unwrap()
        .contains("Max-Age=0"));
    // The old cookie no longer opens anything, even if a browser kept it.
    let response = admin.get("/admin").await;
    assert_eq!(response.status(), 303);
}

async fn pages_without_a_session_go_to_the_login_and_come_back_after_it(backend: Backend) {
    let app = spawn_app(backend).await;
    for page in PAGES {
        let response = app.client.get(app.url(page)).send().await.unwrap();
        assert_eq!(response.status(), 303, "{page}");
        let location = AdminClient::location(&response);
        assert!(location.starts_with("/admin/login?next="), "{location}");
    }
    // A forged cookie is no session.
    let response = app
        .client
        .get(app.url("/admin"))
        .header(COOKIE, "tidings_admin=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    // An action without a session is refused and changes nothing.
    let response = app
        .client
        .post(app.url("/admin/logout"))
        .header(ORIGIN, &app.address)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // The login page carries the way back in its form.
    let page = app
        .client
        .get(app.url("/admin/login?next=%2Fadmin%2Fsettings"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("name=\"next\" value=\"/admin/settings\""),
        "{page}"
    );
    let elsewhere = app
        .client
        .get(app.url("/admin/login?next=https%3A%2F%2Fevil.example"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(elsewhere.contains("name=\"next\" value=\"/admin\""));
}

async fn a_wrong_password_and_an_unknown_address_get_the_same_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    add_admin(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let wrong = login_attempt(&app, ADMIN_EMAIL, "not the password at all").await;
    let unknown = login_attempt(&app, "nobody@example.org", ADMIN_PASSWORD).await;
    for response in [wrong, unknown] {
        assert_eq!(response.status(), 422);
        assert!(set_cookie(&response, "tidings_admin").is_none());
        let html = response.text().await.unwrap();
        assert!(
            html.contains("do not match an account"),
            "the same words for both: {html}"
        );
    }
}

async fn failed_logins_are_throttled_per_account_and_per_ip(backend: Backend) {
    // Each attempt names its client through a trusted proxy.
    let app = spawn_with(Options::new(backend), |settings| {
        settings.http.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    add_admin(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let attempt = |client: String, email: &'static str, password: &'static str| {
        let app = &app;
        async move {
            let (proof, csrf) = login_form(app).await;
            app.client
                .post(app.url("/admin/login"))
                .header(COOKIE, proof)
                .header(ORIGIN, &app.address)
                .header("x-forwarded-for", client)
                .form(&[("email", email), ("password", password), ("csrf", &csrf)])
                .send()
                .await
                .unwrap()
        }
    };
    // Per account: five wrong guesses from five addresses, then even the
    // right password from a sixth is refused for now.
    for client in 1..=5 {
        let response = attempt(
            format!("203.0.113.{client}"),
            ADMIN_EMAIL,
            "wrong password!!",
        )
        .await;
        assert_eq!(response.status(), 422, "guess {client}");
    }
    let response = attempt("203.0.113.6".into(), ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    assert!(set_cookie(&response, "tidings_admin").is_none());
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("Too many failed logins"));
    // Per IP: ten wrong guesses at ten accounts from one address, then
    // that address is refused, while another still logs in.
    for guess in 0..10 {
        let email: &'static str = Box::leak(format!("guess{guess}@example.org").into_boxed_str());
        let response = attempt("198.51.100.7".into(), email, "wrong password!!").await;
        assert_eq!(response.status(), 422, "guess {guess}");
    }
    let response = attempt(
        "198.51.100.7".into(),
        "someone@example.org",
        "wrong password!!",
    )
    .await;
    assert_eq!(response.status(), 429);
    add_admin(&app, "second@example.org", ADMIN_PASSWORD).await;
    let response = attempt("198.51.100.8".into(), "second@example.org", ADMIN_PASSWORD).await;
    assert_eq!(response.status(), 303);
}

async fn the_login_form_refuses_a_post_from_another_site(backend: Backend) {
    let app = spawn_app(backend).await;
    add_admin(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (proof, csrf) = login_form(&app).await;
    let fields = [("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)];
    let cases = [
        (
            Some("https://attacker.example"),
            Some(proof.as_str()),
            csrf.as_str(),
        ),
        (Some(app.address.as_str()), None, csrf.as_str()),
        (
            Some(app.address.as_str()),
            Some(proof.as_str()),
            "another value",
        ),
        (None, Some(proof.as_str()), csrf.as_str()),
    ];
    for (origin, cookie, field) in cases {
        let mut request = app.client.post(app.url("/admin/login"));
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        let response = request
            .form(&[fields.as_slice(), &[("csrf", field)]].concat())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{origin:?} {cookie:?} {field}");
        assert!(set_cookie(&response, "tidings_admin").is_none());
    }
}

async fn logging_out_needs_the_csrf_proof(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = log_in(&app).await;
    assert_csrf_protected(&admin, "/admin/logout", &[]).await;
    // Still logged in.
    assert_eq!(admin.get("/admin").await.status(), 200);
}

#[tokio::test]
async fn the_cookie_is_secure_when_base_url_is_https() {
    let app = spawn_with(Options::new(Backend::Sqlite), |settings| {
        settings.newsletter.base_url = "https://news.example.org".into();
    })
    .await;
    add_admin(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let response = login_attempt(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(response.status(), 303);
    let cookie = set_cookie(&response, "tidings_admin").unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
}
