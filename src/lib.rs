//! Coffer's HTTP shell: a Blnk-compatible API over the actor-based ledger core
//! (`coffer_actors`).
//!
//! # Layout
//! - [`configuration`]: layered settings (defaults, `blnk.json`/TOML file, `BLNK_*`/`COFFER_*`).
//! - [`startup`]: [`startup::Application`], the seam shared by `main` and the tests.
//! - [`routes`]: one module per resource; handlers parse, call the core once, map the reply.
//! - [`http`]: errors in Blnk's shape (one exhaustive table), JSON shapes, bodies, queries.
//! - [`telemetry`]: the tracing subscriber and OTLP trace export.
//! - [`shutdown`]: graceful stop on SIGTERM/SIGINT; [`backup`]: `GET /backup`'s dumps.
//! - [`account_numbers`]: the HTTP client of the account-number service.
//! - [`sinks`]: the event sinks this deployment has (their routes and dispatchers);
//!   [`event_payloads`]: the events' `data` objects.
//! - [`tls`]: the optional rustls listener (`server.ssl_cert_path` / `server.ssl_key_path`).
//! - [`bench`]: `coffer bench`, the load generator and its report.
//! - [`worker_health`]: `coffer workers`' `/health` (the outbox backlog) and `/health/live`.
//! - [`events_cli`]: `coffer events dead|redrive|stats`.
#![forbid(unsafe_code)]

pub mod account_numbers;
pub mod backup;
pub mod bench;
pub mod configuration;
pub mod event_payloads;
pub mod events_cli;
pub mod http;
pub mod routes;
pub mod shutdown;
pub mod sinks;
pub mod startup;
pub mod telemetry;
pub mod tls;
pub mod worker_health;
