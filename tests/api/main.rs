//! Integration tests: each spawns the app on a random port with its own
//! database (a SQLite file or a fresh PostgreSQL database) and a real SMTP
//! server running in the test process.

#[path = "../common/browser.rs"]
mod browser;
#[path = "../common/pages.rs"]
mod pages;
#[path = "../common/ports.rs"]
mod ports;
#[path = "../common/postgres.rs"]
mod postgres;

#[path = "../common/database.rs"]
mod database;

mod helpers;
mod mail_server;

mod admin;
mod admin_ui;
mod delivery;
mod email_html;
mod health;
mod layout;
mod reader_pages;
mod schedule;
mod subscriptions;
mod surface;
mod unsubscribe;
