//! `Application`: the one seam `main` and the integration tests share. It opens the store and
//! the queue, starts the ledger's actors (and the queue workers where configured), and binds
//! the HTTP listener.

use crate::account_numbers::AccountNumberClient;
use crate::configuration::Settings;
use crate::http::auth::{self, Gate};
use crate::http::error::ApiError;
use crate::http::rate_limit::{self, ClientLimits};
use crate::http::request_metrics::RequestMetrics;
use crate::http::security_headers;
use crate::http::AppState;
use crate::routes;
use actix::{Actor, Addr, Arbiter};
use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::ResponseError;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use coffer_actors::access::{Access, AccessSettings};
use coffer_actors::domain::pii::Tokenizer;
use coffer_actors::events::dispatcher::Dispatcher;
use coffer_actors::ledger::committer::CommitterSettings;
use coffer_actors::ledger::registry::RegistrySettings;
use coffer_actors::ledger::snapshotter::SnapshotSettings;
use coffer_actors::ledger::{Ledger, LedgerSettings};
use coffer_actors::queue::memory::MemoryQueue;
use coffer_actors::queue::redis::{RedisQueue, RedisSettings};
use coffer_actors::queue::sweep::{RecoverySweep, SweepSettings};
use coffer_actors::queue::worker::{QueueWorker, WorkerSettings};
use coffer_actors::queue::TransactionQueue;
use coffer_actors::shutdown::Shutdown;
use coffer_actors::store::{PoolSettings, Store};
use futures_util::FutureExt;
use std::net::TcpListener;
use std::sync::Arc;
use tracing::Instrument;

/// The queue workers and the recovery sweep; they stop when this is dropped.
pub struct Workers {
    arbiter: Arbiter,
    shutdown: Shutdown,
    _workers: Vec<Addr<QueueWorker>>,
    _sweep: Addr<RecoverySweep>,
    /// Deliver the outbox's events, one per configured sink.
    _dispatchers: Vec<Addr<Dispatcher>>,
    /// Runs the search reindex (search enabled).
    _search_reindex: Option<Addr<coffer_actors::events::search::reindex::ReindexWorker>>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.arbiter.stop();
    }
}

impl Workers {
    pub fn start(ledger: &Ledger, settings: &Settings) -> Self {
        let process_id = uuid::Uuid::new_v4().to_string();
        let worker_settings = WorkerSettings {
            workers: settings.queue_workers,
            receive_batch_max: settings.receive_batch_max,
            receive_wait_ms: 200,
            claim_idle_ms: settings.claim_idle_ms,
            error_backoff_ms: 500,
            shutdown: Shutdown::default(),
        };
        let shutdown = worker_settings.shutdown.clone();
        let (arbiter, workers) =
            QueueWorker::start_pool(ledger.clone(), &process_id, worker_settings);
        let sweep_settings = SweepSettings {
            interval_ms: settings.recovery_interval_ms,
            due_check_ms: settings.due_check_ms,
            // The in-process queue is empty after a restart: everything unfinished is due.
            first_age_ms: if settings.is_embedded_queue() {
                0
            } else {
                settings.recovery_age_ms
            },
            age_ms: settings.recovery_age_ms,
            batch_max: 10_000,
        };
        let sweep_ledger = ledger.clone();
        let sweep = RecoverySweep::start_in_arbiter(&arbiter.handle(), move |_| {
            RecoverySweep::new(sweep_ledger, sweep_settings)
        });
        let dispatchers =
            crate::sinks::start_dispatchers(settings, &arbiter.handle(), ledger.store());
        let search_reindex =
            crate::sinks::start_search_reindex(settings, &arbiter.handle(), ledger.store());
        Self {
            arbiter,
            shutdown,
            _workers: workers,
            _sweep: sweep,
            _dispatchers: dispatchers,
            _search_reindex: search_reindex,
        }
    }

    /// Stops taking queue entries, waits (at most `timeout`) for each worker to commit and
    /// acknowledge the batch in hand, then stops the workers and the sweep.
    pub async fn stop(self, timeout: std::time::Duration) {
        self.shutdown.request();
        if !self.shutdown.stopped(timeout).await {
            tracing::warn!("queue workers still busy at the shutdown deadline");
        }
    }
}

/// Full batches that may wait for a committer before submissions are refused as overloaded.
const PENDING_BATCHES_MAX: usize = 16;

/// Opens the store, the queue and the ledger core. `runs_workers`: this process runs the
/// queue workers (it then also takes the daily snapshot pass, unless configured otherwise).
pub async fn build_ledger(settings: &Settings, runs_workers: bool) -> anyhow::Result<Ledger> {
    let url = match &settings.database_url {
        Some(url) => url.clone(),
        None => {
            std::fs::create_dir_all(&settings.data_dir)
                .with_context(|| format!("creating {}", settings.data_dir.display()))?;
            settings.sqlite_url()
        }
    };
    let pool = PoolSettings {
        connections_max: settings.db_connections_max,
        tcp_nodelay_relay: settings.db_tcp_nodelay_relay,
        ..PoolSettings::default()
    };
    let mut store = Store::connect(&url, &pool, settings.auto_migrate)
        .await
        .context("opening the database")?;
    // Events are written only for the sinks configured (none: nothing is written).
    store.write_events(crate::sinks::event_writer(settings));
    store.watch_hooks(settings.hooks_refresh_ms).await;
    let queue: Arc<dyn TransactionQueue> = match &settings.redis_url {
        Some(url) => Arc::new(
            RedisQueue::connect(RedisSettings {
                url: url.clone(),
                key_prefix: settings.redis_key_prefix.clone(),
                shard_count: settings.queue_shards,
                pool_size_max: settings.redis_pool_size_max,
                connect_timeout_ms: 5_000,
            })
            .await
            .context("connecting to Redis")?,
        ),
        None => Arc::new(MemoryQueue::new(
            settings.queue_shards,
            settings.queue_capacity,
        )),
    };
    let ledger_settings = LedgerSettings {
        committer: CommitterSettings {
            batch_size_max: settings.batch_size_max,
            flush_window_ms: settings.flush_window_ms,
            mailbox_capacity: settings.batch_size_max * 2,
            commits_in_flight_max: if store.has_one_connection() {
                1
            } else {
                settings.commits_in_flight_max
            },
            large_commits_in_flight_max: if store.has_one_connection() {
                1
            } else {
                settings.large_commits_in_flight_max
            },
            pending_items_max: settings.batch_size_max * PENDING_BATCHES_MAX,
            rows_first_items_min: settings.rows_first_items_min,
        },
        registry: RegistrySettings {
            arbiters: settings.balance_arbiters,
            actors_max: settings.balance_actors_max,
            mailbox_capacity: settings.balance_mailbox_capacity,
            idle_ms: settings.balance_idle_ms,
        },
        snapshots: SnapshotSettings {
            interval_ms: settings.snapshot_interval_ms,
            every: settings.snapshot_every_transactions,
            tick_budget_ms: settings.snapshot_tick_budget_ms,
            daily_full_pass: settings.snapshot_daily_full_pass.unwrap_or(runs_workers),
            ..SnapshotSettings::default()
        },
    };
    Ok(Ledger::start(store, queue, ledger_settings))
}

pub struct Application {
    port: u16,
    server: Server,
    ledger: Ledger,
    _workers: Option<Workers>,
    shutdown_timeout: std::time::Duration,
}

impl Application {
    /// Builds everything and binds `host:port` (port 0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let runs_workers = settings.start_workers || settings.is_embedded_queue();
        let ledger = build_ledger(&settings, runs_workers).await?;
        let workers = runs_workers.then(|| Workers::start(&ledger, &settings));
        let tokenizer = settings
            .tokenization_secret
            .as_ref()
            .map(|secret| {
                use secrecy::ExposeSecret;
                Tokenizer::new(secret.expose_secret().as_bytes()).map(Arc::new)
            })
            .transpose()
            .context("tokenization_secret")?;
        let (numbers_enabled, numbers) = (
            settings.account_number_generation,
            settings.account_number_service.clone(),
        );
        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("binding {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();
        let operations = web::Data::new(routes::observability::Operations::for_api(
            ledger.clone(),
            &settings,
        ));
        let request_metrics = ledger.metrics().clone();
        let access = {
            use secrecy::ExposeSecret;
            Access::start(
                ledger.store().clone(),
                settings
                    .secret_key
                    .as_ref()
                    .map(|k| k.expose_secret().to_owned()),
                AccessSettings {
                    cache_ttl_ms: settings.api_key_cache_ttl_ms,
                    ..AccessSettings::default()
                },
            )
        };
        let gate = web::Data::new(Gate {
            access: access.clone(),
            secure: settings.secure,
            body_bytes_max: settings.body_bytes_max,
        });
        let client_limits = Arc::new(ClientLimits::new(
            settings.rate_limit(),
            settings.trusted_proxies.clone(),
        ));
        client_limits.start_cleanup(std::time::Duration::from_secs(
            settings.rate_limit_cleanup_interval_secs,
        ));
        let client_limits = web::Data::from(client_limits);
        let state = AppState {
            ledger: ledger.clone(),
            access,
            body_bytes_max: settings.body_bytes_max,
            health_timeout_ms: settings.health_timeout_ms,
            tokenizer,
            allow_private_hook_urls: settings.allow_private_hook_urls,
        };
        let search_config = crate::sinks::search_config(&settings);
        let search_store = ledger.store().clone();
        let server = HttpServer::new(move || {
            // Outermost last: headers on every answer, then the rate limit (before any work),
            // the request span, the metrics, and authorization nearest the routes.
            App::new()
                .wrap(from_fn(auth::authorize))
                .wrap(RequestMetrics::new(request_metrics.clone()))
                .wrap_fn(|request, service| {
                    // One span per request: every log line and actor span beneath it is tied
                    // to the method and route that caused it.
                    // The route is recorded once the request is routed (its resource names it):
                    // before that, naming it would mean matching the path a second time.
                    let span = tracing::info_span!(
                        "http",
                        method = %request.method(),
                        route = tracing::field::Empty,
                    );
                    crate::telemetry::adopt_request_context(&span, request.headers());
                    if crate::http::has_encoded_nul(request.uri()) {
                        let refused = ApiError::BadQuery("NUL characters are not allowed".into());
                        let response = request.into_response(refused.error_response());
                        return futures_util::future::Either::Left(futures_util::future::ok(
                            response,
                        ));
                    }
                    let routed = span.clone();
                    futures_util::future::Either::Right(
                        actix_web::dev::Service::call(service, request)
                            .instrument(span)
                            .map(move |result| {
                                if let Ok(response) = &result {
                                    if let Some(route) = crate::http::route_pattern::route_pattern(
                                        response.request(),
                                    ) {
                                        routed.record("route", route);
                                    }
                                }
                                result
                            }),
                    )
                })
                .wrap(from_fn(rate_limit::limit))
                .wrap(from_fn(security_headers::add))
                .app_data(gate.clone())
                .app_data(client_limits.clone())
                .app_data(web::Data::new(state.clone()))
                // One client per HTTP worker: an `awc` client belongs to its thread.
                .app_data(web::Data::new(AccountNumberClient::new(
                    numbers_enabled,
                    &numbers,
                )))
                .app_data(operations.clone())
                // One Typesense client per HTTP worker too.
                .app_data(web::Data::new(
                    coffer_actors::events::search::api::SearchApi::new(
                        search_config.as_ref(),
                        search_store.clone(),
                    ),
                ))
                .app_data(web::PathConfig::default().error_handler(|error, _| {
                    ApiError::BadQuery(format!("bad path: {error}")).into()
                }))
                .configure(routes::configure)
                .default_service(web::to(routes::system::not_found))
        })
        .workers(settings.http_workers)
        .shutdown_signal(crate::shutdown::signal())
        .shutdown_timeout(settings.shutdown_timeout_ms.div_ceil(1000));
        let tls = crate::tls::server_config(&settings)?;
        let server = match tls.clone() {
            Some(config) => server.listen_rustls_0_23(listener, config)?,
            None => server.listen(listener)?,
        }
        .run();
        tracing::info!(
            port,
            embedded = settings.database_url.is_none(),
            tls = tls.is_some(),
            "coffer listening"
        );
        Ok(Self {
            port,
            server,
            ledger,
            _workers: workers,
            shutdown_timeout: std::time::Duration::from_millis(settings.shutdown_timeout_ms),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self {
            server,
            _workers,
            ledger,
            shutdown_timeout,
            ..
        } = self;
        // Graceful on SIGTERM/SIGINT: see `crate::shutdown`.
        let result = server.await;
        if let Some(workers) = _workers {
            workers.stop(shutdown_timeout).await;
        }
        crate::shutdown::drain_committer(&ledger, shutdown_timeout).await;
        drop(ledger);
        tracing::info!("coffer stopped");
        result
    }
}

/// `coffer workers`: the queue workers and a `/health` endpoint on the monitoring port.
pub async fn run_workers(settings: Settings) -> anyhow::Result<()> {
    let ledger = build_ledger(&settings, true).await?;
    let workers = Workers::start(&ledger, &settings);
    let operations = web::Data::new(routes::observability::Operations::for_worker(
        ledger.clone(),
        &settings,
    ));
    let health = web::Data::new(crate::worker_health::WorkerHealth::new(
        ledger.clone(),
        &settings,
    ));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(operations.clone())
            .app_data(health.clone())
            .route("/metrics", web::get().to(routes::observability::metrics))
            .route("/health", web::get().to(crate::worker_health::health))
            .route("/health/live", web::get().to(crate::worker_health::live))
    })
    .workers(1)
    .shutdown_signal(crate::shutdown::signal())
    .bind((settings.host.as_str(), settings.monitoring_port))?;
    let port = server
        .addrs()
        .first()
        .map_or(settings.monitoring_port, |a| a.port());
    let server = server.run();
    tracing::info!(port, "coffer workers running");
    server.await?;
    // Graceful on SIGTERM/SIGINT: see `crate::shutdown`.
    let timeout = std::time::Duration::from_millis(settings.shutdown_timeout_ms);
    workers.stop(timeout).await;
    crate::shutdown::drain_committer(&ledger, timeout).await;
    tracing::info!("coffer workers stopped");
    Ok(())
}
