//! The store contract: what every backend of `tidings::store::Store` must
//! do, checked through the trait alone on SQLite and on PostgreSQL. No HTTP,
//! no SMTP, no worker: each test drives the store with the instants it
//! chooses, so nothing here sleeps or races a background task.

#[path = "../common/postgres.rs"]
mod postgres;

#[path = "../common/database.rs"]
mod database;

mod support;

mod admins;
mod basics;
mod consent;
mod deliveries;
mod instances;
mod issue_reports;
mod issues;
mod posts;
mod signup;
mod subscriber_admin;
mod subscribers;
