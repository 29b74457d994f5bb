//! End-to-end tests: the built `tidings` binary, driven from outside over
//! HTTP and its CLI, sending to Postfix's `smtp-sink`.

#[path = "../common/pages.rs"]
mod pages;
#[path = "../common/ports.rs"]
mod ports;
#[path = "../common/postgres.rs"]
mod postgres;

mod cluster;
mod dns;
mod harness;

mod api_surface;
mod bulk_import;
mod check;
mod cli;
mod consent;
mod cut_off;
mod dkim;
mod edge;
mod ehlo;
mod faults;
mod fleet;
mod full_disk;
mod input;
mod outages;
mod outcomes;
mod recovery;
mod small_disk;
mod smtp_outages;
mod spam_score;
mod unrecorded;
