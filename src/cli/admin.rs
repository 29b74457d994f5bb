//! `tidings admin`: the people who may log in to the admin web UI.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::admin_accounts::AdminAccounts;
use crate::app::Services;
use crate::config::Settings;
use crate::domain::admin::{AdminPassword, SetAdminOutcome, MIN_PASSWORD_CHARS};
use crate::domain::subscriber::EmailAddress;

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create an account, or reset the password of an existing one (which
    /// also logs it out everywhere). The password (at least 12 characters)
    /// is read from standard input, one line, when that is not a terminal,
    /// and asked for otherwise.
    Add { email: String },
    /// Print each account's email and when it was created.
    List,
    /// Remove an account and end its sessions.
    Remove { email: String },
}

pub async fn run(settings: Settings, command: AdminCommand) -> anyhow::Result<()> {
    let services = Services::start(settings, crate::clock::system()).await?;
    let accounts = AdminAccounts::new(services.newsletter.store().clone(), crate::clock::system());
    match command {
        AdminCommand::Add { email } => {
            let address = parse_email(&email)?;
            let password = read_password(&address)?;
            let password = AdminPassword::parse(&password)?;
            match accounts.set(address.clone(), password).await? {
                SetAdminOutcome::Created { .. } => println!("added admin {address}"),
                SetAdminOutcome::PasswordReset { .. } => {
                    println!("reset the password of admin {address}; their sessions have ended")
                }
            }
        }
        AdminCommand::List => {
            let mut out = std::io::stdout().lock();
            for admin in accounts.list().await? {
                writeln!(
                    out,
                    "{}\t{}",
                    admin.email,
                    admin.created_at.format("%Y-%m-%d %H:%M:%S UTC")
                )?;
            }
        }
        AdminCommand::Remove { email } => {
            let address = parse_email(&email)?;
            accounts.remove(&address).await?;
            println!("removed admin {address}");
        }
    }
    Ok(())
}

fn parse_email(email: &str) -> anyhow::Result<EmailAddress> {
    EmailAddress::parse(email).with_context(|| format!("`{email}`"))
}

/// One line from standard input when a script pipes it; a prompt, typed
/// twice with echo off, at a terminal.
fn read_password(address: &EmailAddress) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let password = line.strip_suffix('\n').unwrap_or(&line);
        return Ok(password.strip_suffix('\r').unwrap_or(password).to_owned());
    }
    let first = rpassword::prompt_password(format!(
        "Password for {address} (at least {MIN_PASSWORD_CHARS} characters): "
    ))
    .context("cannot read the password")?;
    let second =
        rpassword::prompt_password("The same again: ").context("cannot read the password")?;
    if first != second {
        bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}
