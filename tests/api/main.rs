//! Coffer's integration tests: the real server, real PostgreSQL and Redis (or the embedded
//! SQLite default), over HTTP.

mod helpers;

mod access;
mod accounts;
mod alerts;
mod balances;
mod concurrency;
mod database;
mod errors_and_limits;
mod events;
mod hardening;
mod health_and_ledgers;
mod history;
mod hooks;
mod identities;
mod lifecycle;
mod metadata;
mod monitors;
mod observability;
mod openapi;
mod outbox_breaker;
mod outbox_processes;
mod processes;
mod property;
mod receiver;
mod search;
mod tokenization;
mod transactions;
