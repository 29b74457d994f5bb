//! The `tidings` command line. Each command is a thin layer over the lib.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::{AppOptions, Application, Services};
use crate::config::{self, Settings};
use crate::domain::deliverability::{Finding, Severity};
use crate::domain::post::parse_markdown_post;
use crate::domain::subscriber::{
    AddOutcome, EmailAddress, OperatorSource, SubscriberName, SubscriberQuery, SubscriberStatus,
};
use crate::newsletter::Newsletter;
use crate::subscriber_csv::{neutralise, ImportReader, ImportRow};

mod admin;

#[derive(Parser, Debug)]
#[command(
    name = "tidings",
    version,
    about = "A self-hosted weekly email newsletter daemon"
)]
pub struct Cli {
    /// A TOML file layered over the built-in defaults.
    #[arg(long, global = true, env = "TIDINGS_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: HTTP server, scheduler and delivery workers.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate config and templates, reach the database and SMTP server, and
    /// check what DNS says about the From domain (SPF, DMARC, DKIM).
    Check {
        /// Ask this name server (IP or IP:PORT) instead of the system's, to see
        /// what another view of DNS holds, e.g. a public resolver when this
        /// host's DNS is split-horizon.
        #[arg(long, value_name = "IP[:PORT]", value_parser = crate::check::parse_nameserver)]
        nameserver: Option<SocketAddr>,
    },
    /// Send the next queued post now and wait until it is delivered.
    SendNow,
    /// Manage the queue of posts.
    #[command(subcommand)]
    Post(PostCommand),
    /// Manage subscribers.
    #[command(subcommand)]
    Subscriber(SubscriberCommand),
    /// Manage who may log in to the admin web UI.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Copy everything from a SQLite database into an empty PostgreSQL one.
    MigrateData {
        /// The SQLite URL, e.g. sqlite://tidings.db
        #[arg(long)]
        from: String,
        /// The PostgreSQL URL, e.g. postgres://user@host/tidings
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PostCommand {
    /// Enqueue a post from a Markdown file.
    Add(PostAdd),
    /// Print the queue.
    List,
}

#[derive(Args, Debug)]
pub struct PostAdd {
    /// The subject; defaults to `subject:` in the file's front matter.
    #[arg(long)]
    pub subject: Option<String>,
    pub file: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum SubscriberCommand {
    /// Add one subscriber; without --confirmed they get a confirmation email.
    Add {
        email: String,
        #[arg(long)]
        name: Option<String>,
        /// Record them as confirmed (you hold their consent already).
        #[arg(long)]
        confirmed: bool,
    },
    /// Print subscribers.
    List {
        #[arg(long)]
        status: Option<SubscriberStatus>,
    },
    /// Import a CSV with columns email,name,status, one row a line. The
    /// whole file is checked first; if any row is bad, nothing is written.
    Import {
        file: PathBuf,
        /// Import the valid rows and list the bad lines instead of failing.
        #[arg(long)]
        skip_invalid: bool,
        /// Email pending rows (and rows without a status) a confirmation
        /// link; without this they wait as pending and nobody is emailed.
        #[arg(long)]
        send_confirmations: bool,
    },
    /// Write every subscriber as CSV (email,name,status) to stdout; cells a
    /// spreadsheet would run as a formula get a leading `'`.
    Export,
    /// Create COUNT confirmed test subscribers PREFIX<n>@DOMAIN in bulk,
    /// inside the database (for benchmarks and load tests).
    #[command(hide = true)]
    Generate {
        #[arg(long)]
        count: u64,
        #[arg(long, default_value = "reader")]
        prefix: String,
        #[arg(long, default_value = "example.com")]
        domain: String,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let default_level = if matches!(cli.command, Command::Serve) {
        "info"
    } else {
        "warn"
    };
    crate::telemetry::init(default_level);
    let settings = config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => serve(settings).await,
        Command::Migrate => {
            let services = Services::start(settings, crate::clock::system()).await?;
            println!(
                "migrations applied ({})",
                services.newsletter.store().backend()
            );
            Ok(())
        }
        Command::Check { nameserver } => check(settings, nameserver).await,
        Command::SendNow => send_now(settings).await,
        Command::Post(command) => post(settings, command).await,
        Command::Subscriber(command) => subscriber(settings, command).await,
        Command::Admin(command) => admin::run(settings, command).await,
        Command::MigrateData { from, to } => migrate_data(&settings, &from, &to).await,
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings, AppOptions::default()).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    app.run(shutdown).await
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("can listen for SIGTERM");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("stopping: finishing the sends in flight");
    shutdown.cancel();
}

async fn migrate_data(settings: &Settings, from: &str, to: &str) -> anyhow::Result<()> {
    let pool = settings.database.max_connections;
    let from = config::DatabaseSettings::from_url(from, pool).context("--from")?;
    let to = config::DatabaseSettings::from_url(to, pool).context("--to")?;
    let started = std::time::Instant::now();
    let report = crate::store::transfer::copy_sqlite_to_postgres(&from, &to).await?;
    for (table, rows) in &report {
        println!("{table:>15}: {rows} rows copied and verified");
    }
    println!(
        "done in {:.1} s; point database.url at the new database and start tidings",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Ok and warning lines go to stdout, error lines to stderr, each as it is
/// found; any error makes the exit non-zero.
async fn check(settings: Settings, nameserver: Option<SocketAddr>) -> anyhow::Result<()> {
    let (mut errors, mut warnings) = (0, 0);
    crate::check::run(
        &settings,
        nameserver,
        &mut |finding: Finding| match finding.severity {
            Severity::Ok => println!("{finding}"),
            Severity::Warning => {
                warnings += 1;
                println!("{finding}");
            }
            Severity::Error => {
                errors += 1;
                eprintln!("{finding}");
            }
        },
    )
    .await;
    if errors > 0 {
        bail!(
            "check failed: {}, {}",
            counted(errors, "error"),
            counted(warnings, "warning")
        );
    }
    Ok(())
}

fn counted(count: usize, what: &str) -> String {
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {what}{plural}")
}

async fn send_now(settings: Settings) -> anyhow::Result<()> {
    let services = Services::start(settings, crate::clock::system()).await?;
    let store = services.newsletter.store();
    let created = services.newsletter.send_now().await?;
    let subject = match created.post_id {
        Some(post_id) => store
            .get_post(post_id)
            .await?
            .map(|post| post.subject)
            .unwrap_or_default(),
        None => "each subscriber's next tip".into(),
    };
    eprintln!(
        "sending issue #{} ({subject}) to {} subscribers...",
        created.number, created.recipients
    );
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(services.worker().run(shutdown.clone()));
    let progress = loop {
        let counting = std::time::Instant::now();
        let progress = store.issue_progress(created.issue_id).await?;
        if progress.unfinished() == 0 {
            break progress;
        }
        // Counting a large issue takes a while: spend at most a third of
        // the time counting, so the count does not slow the send.
        let pause = Duration::from_millis(200).max(counting.elapsed() * 2);
        tokio::time::sleep(pause).await;
    };
    shutdown.cancel();
    let _ = worker.await;
    println!(
        "issue #{} ({subject}): {} sent, {} failed, {} skipped, of {} recipients",
        created.number, progress.sent, progress.failed, progress.skipped, created.recipients
    );
    Ok(())
}

async fn post(settings: Settings, command: PostCommand) -> anyhow::Result<()> {
    let services = Services::start(settings, crate::clock::system()).await?;
    match command {
        PostCommand::Add(add) => {
            let text = std::fs::read_to_string(&add.file)
                .with_context(|| format!("cannot read {}", add.file.display()))?;
            let post = parse_markdown_post(&text, add.subject.as_deref())
                .with_context(|| format!("{} is not a usable post", add.file.display()))?;
            let stored = services
                .newsletter
                .add_post(&post)
                .await
                .context("cannot queue the post")?;
            println!(
                "queued post {} at position {}: {}",
                stored.id, stored.position, stored.subject
            );
        }
        PostCommand::List => {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:>5} {:>8} {:<7} {:<20} subject",
                "id", "position", "status", "sent_at"
            )?;
            for post in services.newsletter.store().list_posts().await? {
                let sent_at = post
                    .sent_at
                    .map(|at| at.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_else(|| "-".into());
                writeln!(
                    out,
                    "{:>5} {:>8} {:<7} {:<20} {}",
                    post.id,
                    post.position,
                    post.status.as_str(),
                    sent_at,
                    post.subject
                )?;
            }
        }
    }
    Ok(())
}

async fn subscriber(settings: Settings, command: SubscriberCommand) -> anyhow::Result<()> {
    let services = Services::start(settings, crate::clock::system()).await?;
    let newsletter = &services.newsletter;
    let store = newsletter.store();
    match command {
        SubscriberCommand::Add {
            email,
            name,
            confirmed,
        } => {
            let status = if confirmed {
                SubscriberStatus::Confirmed
            } else {
                SubscriberStatus::Pending
            };
            let (address, name) = parse_subscriber(&email, name.as_deref())?;
            match newsletter
                .add_subscriber(address, name, status, OperatorSource::Cli)
                .await
                .with_context(|| format!("cannot add {email}"))?
            {
                AddOutcome::Added {
                    id,
                    confirmation_queued,
                } => {
                    let note = if confirmation_queued {
                        " (pending: a confirmation email is queued; the daemon sends it)"
                    } else {
                        ""
                    };
                    println!("added subscriber {id}: {email} as {status}{note}");
                }
                AddOutcome::AlreadyExists => bail!("{email} is already on the list"),
            }
        }
        SubscriberCommand::List { status } => {
            let mut out = std::io::stdout().lock();
            let mut after = None;
            loop {
                let page = store
                    .list_subscribers(SubscriberQuery {
                        status,
                        after,
                        limit: 1000,
                    })
                    .await?;
                for subscriber in &page {
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}",
                        subscriber.id,
                        subscriber.email,
                        subscriber.status,
                        subscriber.name.as_deref().unwrap_or("")
                    )?;
                }
                match page.last() {
                    Some(last) if page.len() == 1000 => after = Some(last.id),
                    _ => break,
                }
            }
        }
        SubscriberCommand::Import {
            file,
            skip_invalid,
            send_confirmations,
        } => import(newsletter, &file, skip_invalid, send_confirmations).await?,
        SubscriberCommand::Generate {
            count,
            prefix,
            domain,
        } => {
            let started = std::time::Instant::now();
            let added = store
                .bulk_insert_confirmed(count, &prefix, &domain, newsletter.now())
                .await?;
            println!(
                "generated {added} confirmed subscribers in {:.2} s",
                started.elapsed().as_secs_f64()
            );
        }
        SubscriberCommand::Export => {
            let mut writer = csv::Writer::from_writer(std::io::stdout().lock());
            writer.write_record(["email", "name", "status"])?;
            let mut after = None;
            loop {
                let page = store
                    .list_subscribers(SubscriberQuery {
                        status: None,
                        after,
                        limit: 1000,
                    })
                    .await?;
                for subscriber in &page {
                    let cells = [
                        neutralise(&subscriber.email),
                        neutralise(subscriber.name.as_deref().unwrap_or("")),
                        neutralise(subscriber.status.as_str()),
                    ];
                    writer.write_record(cells.iter().map(|cell| cell.as_bytes()))?;
                }
                match page.last() {
                    Some(last) if page.len() == 1000 => after = Some(last.id),
                    _ => break,
                }
            }
            writer.flush()?;
        }
    }
    Ok(())
}

fn parse_subscriber(
    email: &str,
    name: Option<&str>,
) -> anyhow::Result<(EmailAddress, Option<SubscriberName>)> {
    Ok((
        EmailAddress::parse(email).with_context(|| format!("`{email}`"))?,
        SubscriberName::parse_optional(name).with_context(|| format!("name of `{email}`"))?,
    ))
}

/// Rows an import writes per transaction: few enough that SQLite's
/// write-ahead log stays near its limit (an import of 20,000 in one
/// transaction each grew it to 91.5 MB), many enough that the commits do
/// not dominate. A crash keeps the batches committed before it.
const IMPORT_BATCH: usize = 1000;

#[derive(Default)]
struct ImportCounts {
    added: u64,
    existing: u64,
    queued: u64,
    skipped: u64,
}

/// Writes `batch` in one transaction and empties it.
async fn import_batch(
    newsletter: &Newsletter,
    file: &std::path::Path,
    batch: &mut Vec<ImportRow>,
    source: OperatorSource,
    counts: &mut ImportCounts,
) -> anyhow::Result<()> {
    let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
        return Ok(());
    };
    let lines = format!("{} lines {}-{}", file.display(), first.line, last.line);
    let outcomes = newsletter
        .import(batch, source)
        .await
        .with_context(|| format!("{lines}; the lines before them are imported"))?;
    for outcome in outcomes {
        match outcome {
            AddOutcome::Added {
                confirmation_queued,
                ..
            } => {
                counts.added += 1;
                counts.queued += u64::from(confirmation_queued);
            }
            AddOutcome::AlreadyExists => counts.existing += 1,
        }
    }
    batch.clear();
    Ok(())
}

/// Bad lines listed before an import gives up; the rest are counted.
const LISTED_ERRORS: usize = 20;

/// Checks the whole file, then imports it: nothing is written when a row is
/// bad, unless `skip_invalid`. Both passes stream the file.
async fn import(
    newsletter: &Newsletter,
    file: &std::path::Path,
    skip_invalid: bool,
    send_confirmations: bool,
) -> anyhow::Result<()> {
    let open = || -> anyhow::Result<ImportReader<std::io::BufReader<std::fs::File>>> {
        let input =
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        Ok(ImportReader::new(std::io::BufReader::new(input)))
    };
    let (mut valid, mut invalid) = (0u64, 0u64);
    let mut errors = Vec::new();
    for row in open()? {
        match row {
            Ok(_) => valid += 1,
            Err(error) => {
                invalid += 1;
                if errors.len() < LISTED_ERRORS {
                    errors.push(error);
                }
            }
        }
    }
    let verdict = if skip_invalid { "skipped" } else { "invalid" };
    for error in &errors {
        eprintln!("{}: {verdict}: {error}", file.display());
    }
    if invalid > errors.len() as u64 {
        eprintln!("… and {} more", invalid - errors.len() as u64);
    }
    if invalid > 0 && !skip_invalid {
        bail!(
            "{invalid} of {} rows in {} are invalid; nothing was imported (fix them, or pass \
             --skip-invalid to import the {valid} valid rows)",
            valid + invalid,
            file.display()
        );
    }
    let source = if send_confirmations {
        OperatorSource::Import
    } else {
        OperatorSource::ImportWithoutEmail
    };
    let mut counts = ImportCounts::default();
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    for row in open()? {
        // The file may have changed since the check: a bad row now is skipped.
        let Ok(row) = row else {
            counts.skipped += 1;
            continue;
        };
        batch.push(row);
        if batch.len() == IMPORT_BATCH {
            import_batch(newsletter, file, &mut batch, source, &mut counts).await?;
        }
    }
    import_batch(newsletter, file, &mut batch, source, &mut counts).await?;
    let ImportCounts {
        added,
        existing,
        queued,
        skipped,
    } = counts;
    let skipped = skipped.max(invalid);
    println!(
        "imported {}: {added} added, {existing} already present, {skipped} skipped, \
         {queued} confirmations queued",
        file.display()
    );
    Ok(())
}
