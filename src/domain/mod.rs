//! The newsletter's vocabulary and its rules, as plain types and pure
//! functions: no I/O, no SQL. The stores, the delivery worker, HTTP and the
//! CLI all speak these types, and each rule lives here once, with its tests.

pub mod admin;
pub mod consent;
pub mod deliverability;
pub mod delivery;
pub mod dkim;
pub mod editor;
pub mod erasure;
pub mod growth;
pub mod helo;
pub mod instance;
pub mod issue;
pub mod masked;
pub mod post;
pub mod retry;
pub mod signup;
pub mod subscriber;
pub mod subscriber_record;
pub mod subscriber_search;
pub mod unsubscribe_link;
