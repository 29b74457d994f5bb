//! The admin web UI over HTTP: sessions, CSRF and each page's actions,
//! checked in the database. (`browser.rs` drives the same pages in Chromium.)

pub mod browser;
mod browser_issues;
mod browser_posts;
mod browser_subscribers;
mod dashboard;
mod issues;
mod post_preview;
mod posts;
mod screenshots;
mod session;
mod subscriber_import;
mod subscribers;

use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::{Method, Response};
use tidings::domain::admin::AdminPassword;
use tidings::domain::subscriber::EmailAddress;

use crate::helpers::TestApp;

pub const ADMIN_EMAIL: &str = "editor@example.org";
pub const ADMIN_PASSWORD: &str = "a long enough password";

/// Every admin page a session may open (pages with an id are checked by
/// their own tests).
pub const PAGES: &[&str] = &[
    "/admin",
    "/admin/settings",
    "/admin/posts",
    "/admin/posts/new",
    "/admin/issues",
    // Subscribers (a subscriber's page and the erase page: subscribers.rs).
    "/admin/subscribers",
    "/admin/subscribers?q=a&status=confirmed",
    "/admin/subscribers/import",
];

/// Creates the account `tidings admin add` would.
pub async fn add_admin(app: &TestApp, email: &str, password: &str) {
    app.state
        .admin_accounts
        .set(
            EmailAddress::parse(email).unwrap(),
            AdminPassword::parse(password).unwrap(),
        )
        .await
        .unwrap();
}

/// The value a `Set-Cookie` of the response gives `name`.
pub fn set_cookie<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|line| line.starts_with(&format!("{name}=")))
}

/// The hidden `csrf` field of a page's first form.
pub fn csrf_field(html: &str) -> String {
    let start = html
        .find("name=\"csrf\" value=\"")
        .expect("the page has a CSRF field")
        + "name=\"csrf\" value=\"".len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

/// Logs in through the login form, as a browser would.
pub async fn log_in(app: &TestApp) -> AdminClient {
    add_admin(app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    log_in_as(app, ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .expect("the login is accepted")
}

pub async fn log_in_as(app: &TestApp, email: &str, password: &str) -> Option<AdminClient> {
    let response = login_attempt(app, email, password).await;
    let cookie = set_cookie(&response, "tidings_admin")?;
    assert_eq!(response.status(), 303);
    let session = cookie.split(';').next().unwrap().to_owned();
    let mut admin = AdminClient {
        address: app.address.clone(),
        client: app.client.clone(),
        cookie: session,
        csrf: String::new(),
    };
    let dashboard = admin.get("/admin").await;
    assert_eq!(dashboard.status(), 200);
    let html = dashboard.text().await.unwrap();
    admin.csrf = csrf_field(&html);
    Some(admin)
}

/// A fresh login page's proof: its cookie (`tidings_login=…`, for the
/// `Cookie` header) and the hidden field that must repeat it.
pub async fn login_form(app: &TestApp) -> (String, String) {
    let form = app
        .client
        .get(app.url("/admin/login"))
        .send()
        .await
        .unwrap();
    let cookie = set_cookie(&form, "tidings_login")
        .expect("the login page sets its proof cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    (cookie, csrf_field(&form.text().await.unwrap()))
}

/// One login form submission, from a fresh login page.
pub async fn login_attempt(app: &TestApp, email: &str, password: &str) -> Response {
    let (cookie, csrf) = login_form(app).await;
    app.client
        .post(app.url("/admin/login"))
        .header(COOKIE, cookie)
        .header(ORIGIN, &app.address)
        .form(&[
            ("email", email),
            ("password", password),
            ("csrf", &csrf),
            ("next", "/admin"),
        ])
        .send()
        .await
        .unwrap()
}

/// A logged-in browser, without the browser: the session cookie, and the
/// CSRF proof and `Origin` its forms would send.
#[derive(Clone)]
pub struct AdminClient {
    pub address: String,
    pub client: reqwest::Client,
    /// `tidings_admin=…`
    pub cookie: String,
    pub csrf: String,
}

impl AdminClient {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// A request with the session cookie and nothing else.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header(COOKIE, &self.cookie)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.unwrap()
    }

    /// A page's HTML; panics unless it answers 200.
    pub async fn page(&self, path: &str) -> String {
        let response = self.get(path).await;
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// A form posted from one of our pages: Origin and CSRF proof included.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        let mut fields = fields.to_vec();
        fields.push(("csrf", &self.csrf));
        self.request(Method::POST, path)
            .header(ORIGIN, &self.address)
            .form(&fields)
            .send()
            .await
            .unwrap()
    }

    /// The same form without the CSRF proof.
    pub async fn post_form_without_proof(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        self.request(Method::POST, path)
            .header(ORIGIN, &self.address)
            .form(fields)
            .send()
            .await
            .unwrap()
    }

    /// The same form, proof included, posted from another site's page.
    pub async fn post_form_from_elsewhere(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        let mut fields = fields.to_vec();
        fields.push(("csrf", &self.csrf));
        self.request(Method::POST, path)
            .header(ORIGIN, "https://attacker.example")
            .form(&fields)
            .send()
            .await
            .unwrap()
    }

    /// Where a redirect points.
    pub fn location(response: &Response) -> String {
        response
            .headers()
            .get(LOCATION)
            .expect("a redirect")
            .to_str()
            .unwrap()
            .to_owned()
    }
}

/// Asserts that a form is refused both without the proof and from another
/// origin, with 403 each time; the caller then checks nothing changed.
pub async fn assert_csrf_protected(admin: &AdminClient, path: &str, fields: &[(&str, &str)]) {
    let response = admin.post_form_without_proof(path, fields).await;
    assert_eq!(response.status(), 403, "{path} without the CSRF proof");
    let response = admin.post_form_from_elsewhere(path, fields).await;
    assert_eq!(response.status(), 403, "{path} from another origin");
    let response = admin
        .request(Method::POST, path)
        .form(&[fields, &[("csrf", admin.csrf.as_str())]].concat())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "{path} with no Origin or Referer");
}
