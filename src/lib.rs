//! tidings: a self-hosted weekly email newsletter daemon.

pub mod admin_accounts;
pub mod app;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod health;
pub mod http;
pub mod links;
pub mod mailer;
pub mod metrics;
pub mod newsletter;
pub mod render;
pub mod schedule;
pub mod signups;
pub mod store;
pub mod subscriber_admin;
pub mod subscriber_csv;
pub mod supervisor;
pub mod telemetry;
