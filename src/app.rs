//! Wiring: builds every part from the settings, checks what can be checked
//! at start, and runs the HTTP server, scheduler and delivery worker until
//! told to stop.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::{Backend, Settings};
use crate::delivery::compose::Composer;
use crate::delivery::{DeliveryWorker, WorkerSettings};
use crate::domain::post;
use crate::health::Health;
use crate::http::{self, AppState, SharedState};
use crate::links::Links;
use crate::mailer::Mailer;
use crate::metrics::Metrics;
use crate::newsletter::Newsletter;
use crate::render::Templates;
use crate::schedule::Scheduler;
use crate::signups::SignupWriter;
use crate::store::{self, DatabaseLock};
use crate::supervisor::Supervisor;

/// Everything but the HTTP listener: what the CLI commands share with `serve`.
pub struct Services {
    pub settings: Arc<Settings>,
    pub newsletter: Arc<Newsletter>,
    pub templates: Arc<Templates>,
    pub mailer: Arc<Mailer>,
    pub metrics: Arc<Metrics>,
    /// Only `serve` runs it: the other commands take no signups.
    pub signup_writer: SignupWriter,
}

impl Services {
    /// Checks templates, opens and migrates the database, and prepares the mailer.
    pub async fn start(settings: Settings, clock: SharedClock) -> anyhow::Result<Self> {
        let templates = Templates::load(&settings.templates.dir, &settings.newsletter)
            .context("templates are broken (see templates.dir)")?;
        let health = Arc::new(Health::new(&settings.database));
        let store = store::connect(&settings.database).await.with_context(|| {
            format!(
                "cannot open the database (database.url = {})",
                redact(&settings.database.url)
            )
        })?;
        store
            .migrate()
            .await
            .context("cannot migrate the database")?;
        let token_key = store
            .token_key()
            .await
            .context("cannot read the token key")?;
        let mailer = Mailer::from_settings(&settings.smtp, settings.newsletter.from_domain())
            .context("cannot set up sending (smtp.url)")?;
        let templates = Arc::new(templates);
        let links = Links::new(settings.newsletter.base_url.clone(), token_key);
        let composer = Arc::new(Composer::new(
            templates.clone(),
            settings.newsletter.clone(),
            links.clone(),
            store.clone(),
            settings.smtp.dkim.clone(),
        ));
        let mailer = Arc::new(mailer);
        let (newsletter, signup_writer) = Newsletter::new(
            store,
            clock,
            links,
            composer,
            mailer.clone(),
            &settings,
            health,
        );
        Ok(Self {
            settings: Arc::new(settings),
            newsletter: Arc::new(newsletter),
            templates,
            mailer,
            metrics: Arc::new(Metrics::default()),
            signup_writer,
        })
    }

    pub fn worker(&self) -> Arc<DeliveryWorker> {
        self.newsletter.delivery_worker(
            self.mailer.clone(),
            WorkerSettings::from_smtp(&self.settings.smtp),
            self.metrics.clone(),
        )
    }
}

pub use crate::config::redact;

#[derive(Clone)]
pub struct AppOptions {
    pub clock: SharedClock,
    /// Off in tests that drive the scheduler by hand.
    pub run_scheduler: bool,
    /// Seed the first series when the post table is empty.
    pub seed_first_series: bool,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            clock: crate::clock::system(),
            run_scheduler: true,
            seed_first_series: true,
        }
    }
}

pub struct Application {
    listener: TcpListener,
    state: SharedState,
    worker: Arc<DeliveryWorker>,
    signup_writer: SignupWriter,
    mailer: Arc<Mailer>,
    options: AppOptions,
    /// Held until the daemon ends: one `serve` per SQLite file.
    _lock: Option<DatabaseLock>,
}

impl Application {
    pub async fn build(settings: Settings, options: AppOptions) -> anyhow::Result<Self> {
        let bind = settings.http.bind;
        // First of all: a second daemon on the same SQLite file stops here.
        let mut lock = match settings.database.backend {
            Backend::Sqlite => DatabaseLock::acquire(&settings.database.url)?,
            Backend::Postgres => None,
        };
        let services = Services::start(settings, options.clock.clone()).await?;
        if options.seed_first_series {
            let seeded = services
                .newsletter
                .store()
                .seed_posts_if_empty(&post::first_series(), services.newsletter.now())
                .await
                .context("cannot seed the first series")?;
            if seeded > 0 {
                tracing::info!(posts = seeded, "queued the first series of tips");
            }
        }
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen on {bind} (http.bind)"))?;
        let pages = http::StaticPages::render(&services.templates)
            .context("templates are broken (see templates.dir)")?;
        crate::render::admin::AdminTemplates::load().context("the admin templates are broken")?;
        let worker = services.worker();
        if let Some(lock) = &mut lock {
            take_over_from_predecessor(lock, &services, &worker.owner).await?;
        }
        let Services {
            settings,
            newsletter,
            templates,
            mailer,
            metrics,
            signup_writer,
        } = services;
        let admin_accounts = crate::admin_accounts::AdminAccounts::new(
            newsletter.store().clone(),
            options.clock.clone(),
        );
        let state = Arc::new(AppState {
            scheduler: Arc::new(Scheduler::new(
                newsletter.clone(),
                settings.schedule.clone(),
            )),
            newsletter,
            signup_limiter: http::signup_limiter(settings.http.subscribe_per_ip_per_hour),
            link_request_limits: http::LinkRequestLimits::new(&settings.http),
            auth_failures: http::AuthThrottle::new(settings.http.failed_auth_per_ip_per_minute),
            body_budget: http::BodyBudget::new(
                settings.http.max_body_bytes_in_flight,
                settings.http.body_read_timeout,
            ),
            admin_accounts,
            admin_ui: http::admin_ui::AdminUiState::default(),
            settings,
            templates,
            metrics,
            pages,
        });
        Ok(Self {
            listener,
            state,
            worker,
            signup_writer,
            mailer,
            options,
            _lock: lock,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    /// Serves until `shutdown`, then drains the sends in flight and returns
    /// `Ok`. If the worker, the scheduler or the signup writer dies first,
    /// it stops the rest the same way and returns an error naming it.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let settings = &self.state.settings;
        tracing::info!(
            url = %settings.newsletter.base_url,
            listening = %self.local_addr(),
            backend = %self.state.newsletter.store().backend(),
            database = %redact(&settings.database.url),
            emails = %self.mailer.describe(),
            dkim = %settings.smtp.dkim.as_ref().map_or("off".to_owned(), |signer| signer.describe()),
            mode = settings.schedule.mode.as_str(),
            next_send_at = ?self.state.scheduler.next_send_at(),
            timezone = %settings.schedule.timezone,
            "tidings is running"
        );
        // Cancelled by the caller's shutdown, or by us when a task dies.
        let stop = shutdown.child_token();
        // Requests still being answered may be signing people up, so the
        // writer stops only once the server has finished them.
        let writer_stop = CancellationToken::new();
        let mut tasks = Supervisor::reporting_to(self.state.newsletter.health().clone());
        tasks.spawn("the delivery worker", &stop, self.worker.run(stop.clone()));
        if self.options.run_scheduler {
            tasks.spawn(
                "the scheduler",
                &stop,
                self.state.scheduler.clone().run(stop.clone()),
            );
        }
        tasks.spawn(
            "the signup writer",
            &writer_stop,
            self.signup_writer.run(writer_stop.clone()),
        );

        let app = http::router(self.state.clone());
        let limits = http::server::ServerLimits::from_settings(settings);
        let server = http::server::serve(self.listener, app, limits, stop.clone());
        let mut server = std::pin::pin!(server);
        let mut failure = None;
        let served = tokio::select! {
            served = &mut server => served,
            died = tasks.first_failure() => {
                tracing::error!(error = %died, "stopping: a part of the daemon died");
                failure = Some(anyhow::Error::from(died));
                stop.cancel();
                server.await
            }
        };
        // The server ends early only on an error; the rest stop with it.
        stop.cancel();
        if let Err(error) = served.context("the HTTP server failed") {
            tracing::error!(error = ?error, "stopping: the HTTP server failed");
            failure.get_or_insert(error);
        }
        writer_stop.cancel();
        for died in tasks.join_all().await {
            tracing::error!(error = %died, "a part of the daemon died while stopping");
            failure.get_or_insert(died.into());
        }
        failure.map_or(Ok(()), Err)
    }
}

/// Holding the SQLite lock, the daemon knows that the `serve` that held it
/// before is dead: its claims go back to `pending` now, not when its
/// heartbeat is stale. Then the lock file names this daemon instead.
///
/// A `send-now` takes no lock, so its claims are left to the heartbeat
/// check, even when its heartbeat is a few seconds old: a live one (after a
/// slow write, a pause) still sends what it claimed until its heartbeat is
/// 6 s old, and taking those claims sooner than 10 s would send them twice.
async fn take_over_from_predecessor(
    lock: &mut DatabaseLock,
    services: &Services,
    owner: &str,
) -> anyhow::Result<()> {
    if let Some(predecessor) = lock.predecessor() {
        let count = services
            .newsletter
            .store()
            .take_over(predecessor)
            .await
            .context("cannot take back the claims of the daemon that ran before")?;
        if count > 0 {
            tracing::warn!(
                count,
                from = predecessor,
                "took back the claims of the daemon that ran before on this file"
            );
        }
    }
    lock.record_holder(owner)
        .with_context(|| format!("cannot write {}", lock.path().display()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::DatabaseSettings;

    /// Long enough for a slow machine; the tests wait on events, not on this.
    const PATIENCE: Duration = Duration::from_secs(30);

    /// A daemon on a SQLite file, writing emails to an outbox folder.
    async fn daemon(dir: &tempfile::TempDir) -> Application {
        let mut settings = crate::config::defaults();
        settings.http.bind = "127.0.0.1:0".parse().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tidings.db").display());
        settings.database = DatabaseSettings::from_url(&url, 2).unwrap();
        settings.smtp.url = None;
        settings.smtp.outbox_dir = dir.path().join("outbox");
        settings.templates.dir = "/nonexistent-templates".into();
        let options = AppOptions {
            clock: crate::clock::system(),
            run_scheduler: false,
            seed_first_series: false,
        };
        Application::build(settings, options).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_signal_stops_the_daemon_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let app = daemon(&dir).await;
        let address = app.local_addr();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(app.run(shutdown.clone()));
        // Every part at work first: a signup goes through the writer, and
        // the worker writes its confirmation to the outbox.
        let answer = reqwest::Client::new()
            .post(format!("http://{address}/subscribe"))
            .json(&serde_json::json!({ "email": "reader@example.com" }))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 202);
        let outbox = dir.path().join("outbox");
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::fs::read_dir(&outbox).map_or(0, |files| files.count()) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no confirmation email"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        tokio::time::timeout(PATIENCE, running)
            .await
            .expect("the daemon stops when told")
            .unwrap()
            .expect("a requested stop is a clean exit");
    }
}
