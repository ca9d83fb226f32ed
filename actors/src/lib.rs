//! The ledger core of Coffer: domain rules, balance actors, the group-committing writer,
//! storage and the transaction queue. No HTTP here.
//!
//! # Layout
//! - [`domain`]: pure types and rules (exact amounts, precision, overdraft floors, the
//!   batch guard, transaction rows); unit- and property-tested, no I/O.
//! - [`entity`]: sea-orm entities and the exact [`entity::Money`] column type.
//! - [`store`]: every database query; PostgreSQL and SQLite (and the `TCP_NODELAY` relay
//!   PostgreSQL connections pass through).
//! - [`ledger`]: the actors: one supervised actor per live balance, the committer that
//!   group-commits validated transfers, and the [`ledger::Ledger`] handle the HTTP shell calls.
//! - [`queue`]: the transaction queue (Redis Streams or in-process), its workers and the
//!   recovery sweep.
//! - [`access`]: callers and their permissions: the master key, API keys (issued, listed,
//!   revoked, verified and cached).
//! - [`accounts`]: opening accounts (a balance, a name and a number, the number possibly from
//!   the configured account-number service).
//! - [`error`]: [`LedgerError`], in precedence order.
//! - [`events`]: the transactional outbox of events and the dispatcher that delivers them
//!   to a sink (the webhook, implemented by the HTTP shell).
//! - [`metrics`], [`telemetry`], [`shutdown`]: Prometheus metrics, trace-context hooks for
//!   the queue, and the graceful stop of the workers.
#![forbid(unsafe_code)]

pub mod access;
pub mod accounts;
pub mod domain;
pub mod entity;
pub mod error;
pub mod events;
pub mod ledger;
pub mod metrics;
pub mod queue;
pub mod shutdown;
pub mod store;
pub mod telemetry;

pub use error::LedgerError;
