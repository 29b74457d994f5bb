//! The test harness: a spawned app and its database (the SMTP server is in
//! `mail_server.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tidings::app::{AppOptions, Application};
use tidings::clock::{Clock, ShiftedClock};
use tidings::config::{self, DatabaseSettings, Settings};
use tidings::http::SharedState;
use tokio_util::sync::CancellationToken;

pub use crate::database::{Backend, TestDatabase};
pub use crate::mail_server::{free_port, MailServer, ReceivedMail, Reply};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

// ------------------------------------------------------------------------ app

/// Deliveries by status, as `/api/admin/stats` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Deliveries {
    pub pending: i64,
    pub sending: i64,
    pub sent: i64,
    pub failed: i64,
    pub skipped: i64,
}

impl Deliveries {
    pub fn total(&self) -> i64 {
        self.pending + self.sending + self.sent + self.failed + self.skipped
    }
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub mail: MailServer,
    pub clock: Arc<ShiftedClock>,
    pub state: SharedState,
    pub settings: Settings,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    database: Option<TestDatabase>,
}

pub struct Options {
    pub backend: Backend,
    pub seed: bool,
    pub mail: Option<MailServer>,
    /// An SMTP port with nothing listening (the server is "down").
    pub smtp_port: Option<u16>,
}

impl Options {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            seed: false,
            mail: None,
            smtp_port: None,
        }
    }
}

pub fn test_settings(database_url: &str, smtp_url: &str) -> Settings {
    let mut settings = config::defaults();
    settings.http.bind = "127.0.0.1:0".parse().unwrap();
    settings.database = DatabaseSettings::from_url(database_url, 5).unwrap();
    settings.smtp.url = Some(smtp_url.to_owned());
    settings.smtp.concurrency = 4;
    // Backoff in tests is short; the clock is pushed forward where needed.
    settings.smtp.retry_base = Duration::from_millis(200);
    settings.smtp.max_attempts = 4;
    settings.smtp.timeout = Duration::from_secs(5);
    settings.admin.token = Some(ADMIN_TOKEN.to_owned());
    settings.newsletter.postal_address = "1 Test Street, Testville".into();
    settings.templates.dir = "/nonexistent-templates".into();
    settings
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_with(Options::new(backend), |_| {}).await
}

pub async fn spawn_with(options: Options, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let (database, database_url) = TestDatabase::create(options.backend).await;
    let mail = options.mail.unwrap_or_else(MailServer::start);
    let smtp_port = options.smtp_port.unwrap_or(mail.port);
    let mut settings = test_settings(&database_url, &format!("smtp://127.0.0.1:{smtp_port}"));
    adjust(&mut settings);
    let clock = ShiftedClock::new();
    let app = Application::build(
        settings.clone(),
        AppOptions {
            clock: clock.clone(),
            run_scheduler: false,
            seed_first_series: options.seed,
        },
    )
    .await
    .expect("the app starts");
    let address = format!("http://{}", app.local_addr());
    let state = app.state();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    TestApp {
        address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        mail,
        clock,
        state,
        settings,
        shutdown,
        task: Some(task),
        database: Some(database),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// A link from an email (which uses the public base_url), aimed at this app.
    pub fn local(&self, link: &str) -> String {
        link.replace(&self.settings.newsletter.base_url, &self.address)
    }

    pub async fn subscribe_json(&self, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url("/subscribe"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn subscribe_form(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(self.url("/subscribe"))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Signs up `email`, opens the link in the email and presses the
    /// page's button, and returns that email.
    pub async fn subscribe_and_confirm(&self, email: &str) -> ReceivedMail {
        let before = self.mail.received_by(email).len();
        let response = self
            .subscribe_json(serde_json::json!({ "email": email }))
            .await;
        assert_eq!(response.status(), 202);
        let mails = self.mail.wait_for(email, before + 1).await;
        let confirmation = mails.last().unwrap().clone();
        let link = self.local(&confirmation.link("http://"));
        let page = self.client.get(&link).send().await.unwrap();
        assert_eq!(page.status(), 200, "the confirmation page opens");
        let response = self.confirm(&link).await;
        assert_eq!(response.status(), 200, "confirmation link works");
        confirmation
    }

    /// Presses the button on a confirmation link's page: a POST to the link.
    pub async fn confirm(&self, link: &str) -> reqwest::Response {
        self.client.post(link).send().await.unwrap()
    }

    /// Every subscriber as `GET /api/admin/subscribers` lists them, in id order.
    pub async fn subscribers(&self) -> Vec<Value> {
        let mut everyone = Vec::new();
        let mut path = "/api/admin/subscribers?limit=1000".to_owned();
        loop {
            let page: Value = self.admin_get(&path).await;
            everyone.extend(page["subscribers"].as_array().unwrap().iter().cloned());
            match page["next_after"].as_i64() {
                Some(after) => path = format!("/api/admin/subscribers?limit=1000&after={after}"),
                None => return everyone,
            }
        }
    }

    /// The admin API's record of `email`, if it is on the list.
    pub async fn subscriber(&self, email: &str) -> Option<Value> {
        self.subscribers()
            .await
            .into_iter()
            .find(|subscriber| subscriber["email"] == email)
    }

    /// The status the admin API shows for `email`: `None` when not listed.
    pub async fn status_of(&self, email: &str) -> Option<String> {
        self.subscriber(email)
            .await
            .map(|subscriber| subscriber["status"].as_str().unwrap().to_owned())
    }

    pub async fn subscriber_id(&self, email: &str) -> i64 {
        let subscriber = self.subscriber(email).await;
        subscriber.unwrap_or_else(|| panic!("{email} is not listed"))["id"]
            .as_i64()
            .unwrap()
    }

    /// The consent log of `email`, from `GET /api/admin/subscribers/{id}/consent`.
    pub async fn consent_log(&self, email: &str) -> Vec<Value> {
        let id = self.subscriber_id(email).await;
        let log: Value = self
            .admin_get(&format!("/api/admin/subscribers/{id}/consent"))
            .await;
        log["events"].as_array().unwrap().clone()
    }

    /// `GET /api/admin/stats`.
    pub async fn stats(&self) -> Value {
        self.admin_get("/api/admin/stats").await
    }

    /// The deliveries by status, as `/api/admin/stats` counts them.
    pub async fn deliveries(&self) -> Deliveries {
        let stats = self.stats().await;
        serde_json::from_value(stats["deliveries"].clone()).unwrap()
    }

    async fn admin_get(&self, path: &str) -> Value {
        let response = self.admin(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// `tidings_send_failures_total{kind="transient"}` from `/metrics`.
    pub async fn transient_failures(&self) -> u64 {
        let metrics = self
            .client
            .get(self.url("/metrics"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("tidings_send_failures_total{kind=\"transient\"} "))
            .unwrap_or_else(|| panic!("no transient failures in:\n{metrics}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Waits until `/metrics` counts at least `count` transient failures.
    pub async fn wait_for_transient_failures(&self, count: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = self.transient_failures().await;
            if seen >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited 20 s for {count} transient failures; saw {seen}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The unsubscribe link a subscriber finds in their email: sends them
    /// an issue and takes its `List-Unsubscribe` link, aimed at this app.
    /// Every confirmed subscriber gets that issue too.
    pub async fn unsubscribe_link(&self, email: &str) -> String {
        let before = self.mail.received_by(email).len();
        self.enqueue("Your weekly tip", "Something useful.").await;
        assert_eq!(self.send_now().await.status(), 202);
        let mail = self.mail.wait_for(email, before + 1).await.remove(before);
        let header = mail.header("List-Unsubscribe").unwrap();
        let link = header.trim_start_matches('<').trim_end_matches('>');
        assert!(link.contains("/unsubscribe?token="), "{link}");
        self.local(link)
    }

    /// Moves the app's clock to `when`; time keeps flowing from there.
    /// Only forward, as real time moves: a worker that read the clock just
    /// before a jump back would judge every new lease long expired.
    pub fn travel_to(&self, when: chrono::DateTime<chrono::Utc>) {
        let by = when - self.clock.now();
        assert!(by > chrono::Duration::zero(), "{when} is in the past");
        self.clock.advance(by);
    }

    /// Adds `count` confirmed subscribers `reader{n}@example.com` in bulk.
    pub async fn add_confirmed(&self, count: u64) {
        self.state
            .store()
            .bulk_insert_confirmed(count, "reader", "example.com", self.clock.now())
            .await
            .unwrap();
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN)
    }

    pub async fn enqueue(&self, subject: &str, body: &str) -> i64 {
        let response = self
            .admin(reqwest::Method::POST, "/api/admin/posts")
            .json(&serde_json::json!({ "subject": subject, "body_markdown": body }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let created: serde_json::Value = response.json().await.unwrap();
        created["id"].as_i64().unwrap()
    }

    pub async fn send_now(&self) -> reqwest::Response {
        self.admin(reqwest::Method::POST, "/api/admin/send-now")
            .send()
            .await
            .unwrap()
    }

    /// Waits until `/api/admin/stats` shows no delivery pending or in
    /// flight: every email the app will send for what exists now has been
    /// answered by the SMTP server. Counting emails after this is exact.
    pub async fn wait_until_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let deliveries = self.deliveries().await;
            if deliveries.pending + deliveries.sending == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "deliveries still unfinished: {deliveries:?}"
            );
            // Only a nudge, so the test does not wait for the worker's poll.
            self.state.newsletter.wake_worker();
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stops the app as SIGTERM would and waits for it to drain. The
    /// database lives until the returned guard is dropped.
    pub async fn stop(mut self) -> Option<TestDatabase> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        self.database.take()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
