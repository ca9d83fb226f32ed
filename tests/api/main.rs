//! Coffer's integration tests: the real server, real PostgreSQL and Redis (or the embedded
//! SQLite default), over HTTP.

mod helpers;

mod balances;
mod concurrency;
mod database;
mod errors_and_limits;
mod hardening;
mod health_and_ledgers;
mod lifecycle;
mod observability;
mod processes;
mod property;
mod transactions;
