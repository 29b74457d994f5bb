//! Wiring: builds every part from the settings, checks what can be checked
//! at start, and runs the HTTP server, scheduler and delivery worker until
//! told to stop.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::Settings;
use crate::delivery::compose::Composer;
use crate::delivery::{DeliveryWorker, WorkerSettings};
use crate::domain::post;
use crate::http::{self, AppState, SharedState};
use crate::links::Links;
use crate::mailer::Mailer;
use crate::metrics::Metrics;
use crate::newsletter::Newsletter;
use crate::render::Templates;
use crate::schedule::Scheduler;
use crate::signups::SignupWriter;
use crate::store;

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
        let mailer =
            Mailer::from_settings(&settings.smtp).context("cannot set up sending (smtp.url)")?;
        let templates = Arc::new(templates);
        let links = Links::new(settings.newsletter.base_url.clone(), token_key);
        let composer = Arc::new(Composer::new(
            templates.clone(),
            settings.newsletter.clone(),
            links.clone(),
            store.clone(),
        ));
        let (newsletter, signup_writer) = Newsletter::new(store, clock, links, composer, &settings);
        Ok(Self {
            settings: Arc::new(settings),
            newsletter: Arc::new(newsletter),
            templates,
            mailer: Arc::new(mailer),
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

/// A database URL fit for a log line: no password.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("****"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

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
}

impl Application {
    pub async fn build(settings: Settings, options: AppOptions) -> anyhow::Result<Self> {
        let bind = settings.http.bind;
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
        let worker = services.worker();
        let Services {
            settings,
            newsletter,
            templates,
            mailer,
            metrics,
            signup_writer,
        } = services;
        let state = Arc::new(AppState {
            scheduler: Arc::new(Scheduler::new(
                newsletter.clone(),
                settings.schedule.clone(),
            )),
            newsletter,
            signup_limiter: http::signup_limiter(settings.http.subscribe_per_ip_per_hour),
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

    /// Serves until `shutdown`, then drains the sends in flight.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let settings = &self.state.settings;
        tracing::info!(
            url = %settings.newsletter.base_url,
            listening = %self.local_addr(),
            backend = %self.state.newsletter.store().backend(),
            database = %redact(&settings.database.url),
            emails = %self.mailer.describe(),
            mode = settings.schedule.mode.as_str(),
            next_send_at = ?self.state.scheduler.next_send_at(),
            timezone = %settings.schedule.timezone,
            "tidings is running"
        );
        tokio::spawn(self.signup_writer.run(CancellationToken::new()));
        let worker = tokio::spawn(self.worker.run(shutdown.clone()));
        let scheduler = self
            .options
            .run_scheduler
            .then(|| tokio::spawn(self.state.scheduler.clone().run(shutdown.clone())));
        let app = http::router(self.state.clone());
        axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("the HTTP server failed")?;
        if let Some(scheduler) = scheduler {
            let _ = scheduler.await;
        }
        let _ = worker.await;
        Ok(())
    }
}
