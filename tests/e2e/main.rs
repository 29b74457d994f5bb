//! End-to-end tests: the built `tidings` binary, driven from outside over
//! HTTP and its CLI, sending to Postfix's `smtp-sink`.

#[path = "../common/postgres.rs"]
mod postgres;

mod harness;

mod api_surface;
mod cli;
mod consent;
mod edge;
mod faults;
mod fleet;
mod input;
mod outcomes;
mod recovery;
