//! Layered settings: defaults, then a config file (Blnk's `blnk.json` keys, plus Coffer's own
//! `coffer` section; JSON or TOML), then environment variables (`BLNK_*` as Blnk names them,
//! `COFFER_*` for Coffer's keys). Unknown keys in the file are warned about.

use anyhow::Context;
pub use secrecy::SecretString;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Settings {
    /// PostgreSQL URL; `None` means the embedded SQLite file under `data_dir`.
    pub database_url: Option<String>,
    /// Redis URL; `None` means the in-process queue.
    pub redis_url: Option<String>,
    pub host: String,
    pub port: u16,
    pub monitoring_port: u16,
    pub http_workers: usize,
    pub body_bytes_max: usize,
    pub data_dir: PathBuf,
    pub auto_migrate: bool,
    /// Run the queue workers inside `coffer start` (always so with the in-process queue).
    pub start_workers: bool,
    pub queue_shards: u32,
    pub queue_workers: u32,
    pub queue_capacity: usize,
    pub redis_key_prefix: String,
    pub redis_pool_size_max: u32,
    pub db_connections_max: u32,
    /// Carry PostgreSQL connections through the `TCP_NODELAY` relay (sqlx 0.9.0 sets none).
    pub db_tcp_nodelay_relay: bool,
    pub batch_size_max: usize,
    pub flush_window_ms: u64,
    /// Group commits a committer writes at once on PostgreSQL (SQLite takes one at a time).
    pub commits_in_flight_max: usize,
    /// Group commits at once when the next batch is large (at least `rows_first_items_min`
    /// items): its row insert waits for no other batch, so one more overlaps it.
    pub large_commits_in_flight_max: usize,
    /// Batches of at least this many items insert their rows before locking their balances
    /// on PostgreSQL (see `store::commit::WriteOrder`).
    pub rows_first_items_min: usize,
    pub balance_actors_max: usize,
    pub balance_idle_ms: u64,
    pub balance_mailbox_capacity: usize,
    pub balance_arbiters: usize,
    pub receive_batch_max: usize,
    pub claim_idle_ms: u64,
    pub recovery_age_ms: u64,
    pub recovery_interval_ms: u64,
    /// How often due scheduled transactions and inflight expiries are looked for.
    pub due_check_ms: u64,
    pub health_timeout_ms: u64,
    /// OTLP/HTTP collector for trace export (Blnk's `monitoring_dsn`); see `telemetry`.
    pub monitoring_dsn: Option<String>,
    /// Which spans are exported (an `EnvFilter`), when trace export is on.
    pub trace_filter: String,
    /// `Authorization: Bearer <token>` required by `GET /metrics` when set.
    pub metrics_bearer_token: Option<String>,
    /// Blnk's secure mode: every route but `/`, `/health`, `/metrics` and `/openapi.json`
    /// requires `X-Blnk-Key` (the master key or an API key); see `http::auth`.
    pub secure: bool,
    /// The master key (`server.secret_key`): may do everything. Never logged.
    pub secret_key: Option<SecretString>,
    /// Blnk's `rate_limit.requests_per_second` and `burst`, per client IP; `None` for both
    /// (Blnk's defaults, 5,000,000 and 10,000,000, are as good as off): no limiter at all.
    pub rate_limit_per_second: Option<u32>,
    pub rate_limit_burst: Option<u32>,
    /// How often the limiter forgets clients it has not seen for a while.
    pub rate_limit_cleanup_interval_secs: u64,
    /// Proxies whose `X-Forwarded-For` names the client (IPs or CIDR blocks); from anyone
    /// else the header is ignored and the peer address is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// A PEM certificate chain and private key: both set, the API listens with TLS (rustls)
    /// instead of plain HTTP. The supported production setup ends TLS at the ingress.
    pub tls_cert_path: Option<PathBuf>,
    pub tls_key_path: Option<PathBuf>,
    /// How long a verified API key is trusted without checking its hash again.
    pub api_key_cache_ttl_ms: u64,
    /// Where `GET /backup` writes (`<backup_dir>/YYYY-MM-DD/<db>-HHMMSS.sql`).
    pub backup_dir: PathBuf,
    /// The `pg_dump` program used by `GET /backup` on PostgreSQL.
    pub pg_dump: String,
    /// On SIGTERM/SIGINT: how long in-flight requests and queue batches may take to finish.
    pub shutdown_timeout_ms: u64,
    /// The key of PII tokenization (exactly 32 bytes; `None`: tokenization is off). Read from
    /// the file or `BLNK_TOKENIZATION_SECRET`, never logged.
    pub tokenization_secret: Option<SecretString>,
    /// `account_number_generation.enable_auto_generation`.
    pub account_number_generation: bool,
    /// `account_number_generation.http_service`: where numbers come from.
    pub account_number_service: AccountNumberService,
    /// How often the snapshotter looks for balances due a snapshot.
    pub snapshot_interval_ms: u64,
    /// Transactions between two snapshots of a balance.
    pub snapshot_every_transactions: usize,
    /// The snapshotter's work per tick (it yields the rest to the next tick).
    pub snapshot_tick_budget_ms: u64,
    /// Run the daily snapshot pass over every balance (default: where queue workers run).
    pub snapshot_daily_full_pass: Option<bool>,
    /// Blnk's global webhook (`notification.webhook.url`). Unset: no events are written at
    /// all (the outbox stays empty and the write path does no extra work).
    pub webhook_url: Option<String>,
    /// `notification.webhook.headers`: static headers sent with every delivery (may hold
    /// credentials: never logged).
    pub webhook_headers: Vec<(String, SecretString)>,
    /// Timeout of one webhook call.
    pub webhook_timeout_ms: u64,
    /// `notification.webhook.events` (an extension; Blnk's issue #172): only these event
    /// names go to the webhook. Empty: every event.
    pub webhook_events: Vec<String>,
    /// Webhook deliveries in flight at once (events of one entity still go one by one).
    pub webhook_concurrency: usize,
    /// The event dispatcher's limits (`coffer.outbox_*`).
    pub outbox: coffer_actors::events::dispatcher::DispatcherSettings,
    /// How often the balances that have monitors are reloaded from the database (monitors
    /// written by other processes are evaluated from then on).
    pub monitors_refresh_ms: u64,
    /// The per-destination circuit breaker of the HTTP sinks (`coffer.outbox_breaker_*`).
    pub outbox_breaker: coffer_actors::events::delivery::BreakerSettings,
    /// The workers' `/health` answers 503 when the oldest pending event is older than this;
    /// 0: the age is not checked.
    pub outbox_health_lag_ms: u64,
    /// … or when more events than this are dead; `None`: not checked.
    pub outbox_health_dead_max: Option<u64>,
    /// `coffer.allow_private_hook_urls`: transaction hooks may call private, loopback and
    /// link-local addresses (tests, a trusted network). Off: refused at create, update and
    /// every delivery.
    pub allow_private_hook_urls: bool,
    /// How often each process re-reads the transaction hooks (changes made through other
    /// replicas reach its write path within this).
    pub hooks_refresh_ms: u64,
    /// Calls in flight at once per transaction hook.
    pub hooks_concurrency: usize,
    /// Blnk's `typesense.dns`: the Typesense server of the search index. Unset or empty:
    /// search is disabled (no search events are written, the search API says so).
    pub typesense_url: Option<String>,
    /// Blnk's `type_sense_key` (never logged).
    pub typesense_key: Option<SecretString>,
    /// Put before each collection's name (`coffer.typesense_collection_prefix`).
    pub typesense_collection_prefix: String,
    /// Timeout of one Typesense call.
    pub typesense_timeout_ms: u64,
    /// Search events indexed at once (one import call per collection per batch).
    pub typesense_batch_size: usize,
    /// How long indexing waits when Typesense is down or cannot take writes (Blnk's
    /// `typesense.backpressure_retry_interval`, 5 s).
    pub typesense_retry_interval_ms: u64,
}

/// The account-number service (Blnk's `account_number_generation.http_service`).
#[derive(Debug, Clone)]
pub struct AccountNumberService {
    pub url: Option<String>,
    /// Blnk's `timeout`, in seconds; 0 means 10 s.
    pub timeout_secs: u64,
    /// Sent as the `Authorization` header (a secret: never logged).
    pub authorization: Option<SecretString>,
}

impl Default for AccountNumberService {
    fn default() -> Self {
        Self {
            url: None,
            timeout_secs: 10,
            authorization: None,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: None,
            redis_url: None,
            host: "0.0.0.0".into(),
            port: 5001,
            monitoring_port: 5004,
            http_workers: 2,
            body_bytes_max: 5 * 1024 * 1024,
            data_dir: PathBuf::from("data"),
            auto_migrate: true,
            start_workers: false,
            queue_shards: 20,
            queue_workers: 4,
            queue_capacity: 1_000_000,
            redis_key_prefix: String::new(),
            redis_pool_size_max: 32,
            db_connections_max: 20,
            db_tcp_nodelay_relay: true,
            batch_size_max: 1000,
            flush_window_ms: 0,
            commits_in_flight_max: 2,
            large_commits_in_flight_max: 3,
            rows_first_items_min: 100,
            balance_actors_max: 100_000,
            balance_idle_ms: 60_000,
            balance_mailbox_capacity: 1024,
            balance_arbiters: 2,
            receive_batch_max: 256,
            claim_idle_ms: 30_000,
            recovery_age_ms: 60_000,
            recovery_interval_ms: 30_000,
            due_check_ms: 1_000,
            health_timeout_ms: 3_000,
            monitoring_dsn: None,
            trace_filter: "info".into(),
            metrics_bearer_token: None,
            secure: false,
            secret_key: None,
            rate_limit_per_second: None,
            rate_limit_burst: None,
            rate_limit_cleanup_interval_secs: 10_800,
            trusted_proxies: Vec::new(),
            tls_cert_path: None,
            tls_key_path: None,
            api_key_cache_ttl_ms: 10_000,
            backup_dir: PathBuf::from("backups"),
            pg_dump: "pg_dump".into(),
            shutdown_timeout_ms: 30_000,
            tokenization_secret: None,
            account_number_generation: false,
            account_number_service: AccountNumberService::default(),
            snapshot_interval_ms: 1_000,
            snapshot_every_transactions: 32,
            snapshot_tick_budget_ms: 200,
            snapshot_daily_full_pass: None,
            webhook_url: None,
            webhook_headers: Vec::new(),
            webhook_timeout_ms: 10_000,
            webhook_events: Vec::new(),
            webhook_concurrency: 16,
            outbox: coffer_actors::events::dispatcher::DispatcherSettings::default(),
            monitors_refresh_ms: 5_000,
            outbox_breaker: coffer_actors::events::delivery::BreakerSettings::default(),
            outbox_health_lag_ms: 900_000,
            outbox_health_dead_max: None,
            allow_private_hook_urls: false,
            hooks_refresh_ms: 5_000,
            hooks_concurrency: 8,
            typesense_url: None,
            typesense_key: None,
            typesense_collection_prefix: String::new(),
            typesense_timeout_ms: 10_000,
            typesense_batch_size: 1_000,
            typesense_retry_interval_ms: 5_000,
        }
    }
}

/// Every key the file may hold: `(path, environment variable)`.
const KEYS: &[(&str, &str)] = &[
    ("data_source.dns", "BLNK_DATA_SOURCE_DNS"),
    (
        "data_source.max_open_conns",
        "BLNK_DATA_SOURCE_MAX_OPEN_CONNS",
    ),
    ("redis.dns", "BLNK_REDIS_DNS"),
    ("redis.pool_size", "BLNK_REDIS_POOL_SIZE"),
    ("server.port", "BLNK_SERVER_PORT"),
    ("server.secure", "BLNK_SERVER_SECURE"),
    ("server.secret_key", "BLNK_SERVER_SECRET_KEY"),
    ("server.metrics_bearer_token", "BLNK_METRICS_BEARER_TOKEN"),
    ("rate_limit.requests_per_second", "BLNK_RATE_LIMIT_RPS"),
    ("rate_limit.burst", "BLNK_RATE_LIMIT_BURST"),
    (
        "rate_limit.cleanup_interval_sec",
        "BLNK_RATE_LIMIT_CLEANUP_INTERVAL_SEC",
    ),
    ("coffer.trusted_proxies", "COFFER_TRUSTED_PROXIES"),
    ("server.ssl_cert_path", "COFFER_SSL_CERT_PATH"),
    ("server.ssl_key_path", "COFFER_SSL_KEY_PATH"),
    ("coffer.api_key_cache_ttl_ms", "COFFER_API_KEY_CACHE_TTL_MS"),
    ("monitoring_dsn", "BLNK_MONITORING_DSN"),
    ("backup_dir", "BLNK_BACKUP_DIR"),
    (
        "server.max_request_body_size_mb",
        "BLNK_SERVER_MAX_REQUEST_BODY_SIZE_MB",
    ),
    ("queue.number_of_queues", "BLNK_QUEUE_NUMBER_OF_QUEUES"),
    ("queue.monitoring_port", "BLNK_QUEUE_MONITORING_PORT"),
    ("transaction.batch_size", "BLNK_TRANSACTION_BATCH_SIZE"),
    ("coffer.host", "COFFER_HOST"),
    ("coffer.http_workers", "COFFER_HTTP_WORKERS"),
    ("coffer.data_dir", "COFFER_DATA_DIR"),
    ("coffer.auto_migrate", "COFFER_AUTO_MIGRATE"),
    (
        "coffer.database_tcp_nodelay_relay",
        "COFFER_DATABASE_TCP_NODELAY_RELAY",
    ),
    ("coffer.start_workers", "COFFER_START_WORKERS"),
    ("coffer.queue_workers", "COFFER_QUEUE_WORKERS"),
    ("coffer.queue_capacity", "COFFER_QUEUE_CAPACITY"),
    ("coffer.redis_key_prefix", "COFFER_REDIS_KEY_PREFIX"),
    ("coffer.flush_window_ms", "COFFER_FLUSH_WINDOW_MS"),
    (
        "coffer.commits_in_flight_max",
        "COFFER_COMMITS_IN_FLIGHT_MAX",
    ),
    (
        "coffer.large_commits_in_flight_max",
        "COFFER_LARGE_COMMITS_IN_FLIGHT_MAX",
    ),
    ("coffer.rows_first_items_min", "COFFER_ROWS_FIRST_ITEMS_MIN"),
    ("coffer.balance_actors_max", "COFFER_BALANCE_ACTORS_MAX"),
    ("coffer.balance_idle_ms", "COFFER_BALANCE_IDLE_MS"),
    (
        "coffer.balance_mailbox_capacity",
        "COFFER_BALANCE_MAILBOX_CAPACITY",
    ),
    ("coffer.balance_arbiters", "COFFER_BALANCE_ARBITERS"),
    ("coffer.receive_batch_max", "COFFER_RECEIVE_BATCH_MAX"),
    ("coffer.claim_idle_ms", "COFFER_CLAIM_IDLE_MS"),
    ("coffer.recovery_age_ms", "COFFER_RECOVERY_AGE_MS"),
    ("coffer.recovery_interval_ms", "COFFER_RECOVERY_INTERVAL_MS"),
    ("coffer.due_check_ms", "COFFER_DUE_CHECK_MS"),
    ("coffer.trace_filter", "COFFER_TRACE_FILTER"),
    ("coffer.pg_dump", "COFFER_PG_DUMP"),
    ("coffer.shutdown_timeout_ms", "COFFER_SHUTDOWN_TIMEOUT_MS"),
    ("tokenization_secret", "BLNK_TOKENIZATION_SECRET"),
    (
        "account_number_generation.enable_auto_generation",
        "BLNK_ACCOUNT_NUMBER_GENERATION_ENABLE_AUTO_GENERATION",
    ),
    (
        "account_number_generation.http_service.url",
        "BLNK_ACCOUNT_NUMBER_GENERATION_HTTP_SERVICE_URL",
    ),
    (
        "account_number_generation.http_service.timeout",
        "BLNK_ACCOUNT_NUMBER_GENERATION_HTTP_SERVICE_TIMEOUT",
    ),
    (
        "account_number_generation.http_service.headers.Authorization",
        "BLNK_ACCOUNT_NUMBER_GENERATION_HTTP_SERVICE_AUTHORIZATION",
    ),
    ("coffer.snapshot_interval_ms", "COFFER_SNAPSHOT_INTERVAL_MS"),
    (
        "coffer.snapshot_every_transactions",
        "COFFER_SNAPSHOT_EVERY_TRANSACTIONS",
    ),
    (
        "coffer.snapshot_tick_budget_ms",
        "COFFER_SNAPSHOT_TICK_BUDGET_MS",
    ),
    (
        "coffer.snapshot_daily_full_pass",
        "COFFER_SNAPSHOT_DAILY_FULL_PASS",
    ),
    ("notification.webhook.url", "BLNK_WEBHOOK_URL"),
    // An object in the file; a JSON object as text in the environment.
    ("notification.webhook.headers", "BLNK_WEBHOOK_HEADERS"),
    ("coffer.webhook_timeout_ms", "COFFER_WEBHOOK_TIMEOUT_MS"),
    // A list in the file; a comma list in the environment.
    ("notification.webhook.events", "BLNK_WEBHOOK_EVENTS"),
    ("coffer.webhook_concurrency", "COFFER_WEBHOOK_CONCURRENCY"),
    ("coffer.outbox_batch_size", "COFFER_OUTBOX_BATCH_SIZE"),
    (
        "coffer.outbox_poll_interval_ms",
        "COFFER_OUTBOX_POLL_INTERVAL_MS",
    ),
    (
        "coffer.outbox_backoff_base_ms",
        "COFFER_OUTBOX_BACKOFF_BASE_MS",
    ),
    (
        "coffer.outbox_backoff_cap_ms",
        "COFFER_OUTBOX_BACKOFF_CAP_MS",
    ),
    ("coffer.outbox_attempts_max", "COFFER_OUTBOX_ATTEMPTS_MAX"),
    ("coffer.outbox_lease_ms", "COFFER_OUTBOX_LEASE_MS"),
    ("coffer.outbox_retention_ms", "COFFER_OUTBOX_RETENTION_MS"),
    ("coffer.monitors_refresh_ms", "COFFER_MONITORS_REFRESH_MS"),
    (
        "coffer.outbox_breaker_failures",
        "COFFER_OUTBOX_BREAKER_FAILURES",
    ),
    (
        "coffer.outbox_breaker_cooldown_ms",
        "COFFER_OUTBOX_BREAKER_COOLDOWN_MS",
    ),
    (
        "coffer.outbox_breaker_cooldown_cap_ms",
        "COFFER_OUTBOX_BREAKER_COOLDOWN_CAP_MS",
    ),
    ("coffer.outbox_health_lag_ms", "COFFER_OUTBOX_HEALTH_LAG_MS"),
    (
        "coffer.outbox_health_dead_max",
        "COFFER_OUTBOX_HEALTH_DEAD_MAX",
    ),
    (
        "coffer.allow_private_hook_urls",
        "COFFER_ALLOW_PRIVATE_HOOK_URLS",
    ),
    ("coffer.hooks_refresh_ms", "COFFER_HOOKS_REFRESH_MS"),
    ("coffer.hooks_concurrency", "COFFER_HOOKS_CONCURRENCY"),
    ("typesense.dns", "BLNK_TYPESENSE_DNS"),
    ("type_sense_key", "BLNK_TYPESENSE_KEY"),
    (
        "coffer.typesense_collection_prefix",
        "COFFER_TYPESENSE_COLLECTION_PREFIX",
    ),
    ("coffer.typesense_timeout_ms", "COFFER_TYPESENSE_TIMEOUT_MS"),
    ("coffer.typesense_batch_size", "COFFER_TYPESENSE_BATCH_SIZE"),
    (
        "coffer.typesense_retry_interval_ms",
        "COFFER_TYPESENSE_RETRY_INTERVAL_MS",
    ),
];

/// Blnk keys that Coffer reads but does not act on are listed here so they are not warned about.
const KNOWN_SECTIONS: &[&str] = &[
    "project_name",
    "data_source",
    "redis",
    "server",
    "queue",
    "transaction",
    "typesense",
    "type_sense_key",
    "backup_dir",
    "enable_telemetry",
    "enable_observability",
    "monitoring_dsn",
    "notification",
    "rate_limit",
    "reconciliation",
    "account_number_generation",
    "tokenization_secret",
    "aws_access_key_id",
    "aws_secret_access_key",
    "s3_endpoint",
    "s3_bucket_name",
    "s3_region",
    "coffer",
];

impl Settings {
    /// Loads defaults, then `config_file` (or `$COFFER_CONFIG`, or `./blnk.json` if present),
    /// then the environment.
    pub fn load(config_file: Option<&Path>) -> anyhow::Result<Self> {
        let path = config_file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("COFFER_CONFIG").map(PathBuf::from))
            .or_else(|| Some(PathBuf::from("blnk.json")).filter(|p| p.exists()));
        let file = match &path {
            Some(path) => read_file(path)?,
            None => Value::Null,
        };
        let mut settings = Settings::default();
        for (key, env) in KEYS {
            let from_env = std::env::var(env).ok().filter(|v| !v.is_empty());
            let value = from_env
                .map(Value::String)
                .or_else(|| lookup(&file, key).cloned());
            if let Some(value) = value {
                settings
                    .apply(key, &value)
                    .with_context(|| format!("bad setting {key}"))?;
            }
        }
        Ok(settings)
    }

    fn apply(&mut self, key: &str, value: &Value) -> anyhow::Result<()> {
        match key {
            "data_source.dns" => self.database_url = text(value).filter(|v| !v.is_empty()),
            "data_source.max_open_conns" => self.db_connections_max = number(value)?,
            "redis.dns" => self.redis_url = text(value).filter(|v| !v.is_empty()).map(redis_url),
            "redis.pool_size" => self.redis_pool_size_max = number(value)?,
            "server.port" => self.port = number(value)?,
            "server.secure" => self.secure = boolean(value)?,
            "server.secret_key" => {
                self.secret_key = text(value)
                    .filter(|v| !v.is_empty())
                    .map(SecretString::from)
            }
            "rate_limit.requests_per_second" => {
                self.rate_limit_per_second = Some(number::<u32>(value)?.max(1))
            }
            "rate_limit.burst" => self.rate_limit_burst = Some(number::<u32>(value)?.max(1)),
            "rate_limit.cleanup_interval_sec" => {
                self.rate_limit_cleanup_interval_secs = number::<u64>(value)?.clamp(1, 86_400)
            }
            "coffer.trusted_proxies" => self.trusted_proxies = networks(value)?,
            "server.ssl_cert_path" => {
                self.tls_cert_path = text(value).filter(|v| !v.is_empty()).map(PathBuf::from)
            }
            "server.ssl_key_path" => {
                self.tls_key_path = text(value).filter(|v| !v.is_empty()).map(PathBuf::from)
            }
            "coffer.api_key_cache_ttl_ms" => {
                self.api_key_cache_ttl_ms = number::<u64>(value)?.min(300_000)
            }
            "server.metrics_bearer_token" => {
                self.metrics_bearer_token = text(value).filter(|v| !v.is_empty())
            }
            "monitoring_dsn" => self.monitoring_dsn = text(value).filter(|v| !v.trim().is_empty()),
            "backup_dir" => {
                self.backup_dir = PathBuf::from(
                    text(value)
                        .filter(|v| !v.is_empty())
                        .unwrap_or_else(|| "backups".into()),
                )
            }
            "server.max_request_body_size_mb" => {
                self.body_bytes_max = number::<usize>(value)? * 1024 * 1024
            }
            "queue.number_of_queues" => self.queue_shards = number::<u32>(value)?.max(1),
            "queue.monitoring_port" => self.monitoring_port = number(value)?,
            "transaction.batch_size" => {
                self.batch_size_max = number::<usize>(value)?.clamp(1, 10_000)
            }
            "coffer.host" => self.host = text(value).unwrap_or_default(),
            "coffer.http_workers" => self.http_workers = number::<usize>(value)?.max(1),
            "coffer.data_dir" => self.data_dir = PathBuf::from(text(value).unwrap_or_default()),
            "coffer.auto_migrate" => self.auto_migrate = boolean(value)?,
            "coffer.database_tcp_nodelay_relay" => self.db_tcp_nodelay_relay = boolean(value)?,
            "coffer.start_workers" => self.start_workers = boolean(value)?,
            "coffer.queue_workers" => self.queue_workers = number::<u32>(value)?.max(1),
            "coffer.queue_capacity" => self.queue_capacity = number::<usize>(value)?.max(1),
            "coffer.redis_key_prefix" => self.redis_key_prefix = text(value).unwrap_or_default(),
            "coffer.flush_window_ms" => self.flush_window_ms = number::<u64>(value)?.min(1000),
            "coffer.commits_in_flight_max" => {
                self.commits_in_flight_max = number::<usize>(value)?.clamp(1, 8)
            }
            "coffer.large_commits_in_flight_max" => {
                self.large_commits_in_flight_max = number::<usize>(value)?.clamp(1, 8)
            }
            "coffer.rows_first_items_min" => {
                self.rows_first_items_min = number::<usize>(value)?.max(1)
            }
            "coffer.balance_actors_max" => {
                self.balance_actors_max = number::<usize>(value)?.max(16)
            }
            "coffer.balance_idle_ms" => self.balance_idle_ms = number::<u64>(value)?.max(100),
            "coffer.balance_mailbox_capacity" => {
                self.balance_mailbox_capacity = number::<usize>(value)?.max(16)
            }
            "coffer.balance_arbiters" => {
                self.balance_arbiters = number::<usize>(value)?.clamp(1, 64)
            }
            "coffer.receive_batch_max" => {
                self.receive_batch_max = number::<usize>(value)?.clamp(1, 10_000)
            }
            "coffer.claim_idle_ms" => self.claim_idle_ms = number::<u64>(value)?.max(1000),
            "coffer.recovery_age_ms" => self.recovery_age_ms = number(value)?,
            "coffer.due_check_ms" => self.due_check_ms = number::<u64>(value)?.clamp(50, 60_000),
            "coffer.recovery_interval_ms" => {
                self.recovery_interval_ms = number::<u64>(value)?.max(100)
            }
            "coffer.trace_filter" => self.trace_filter = text(value).unwrap_or_default(),
            "coffer.pg_dump" => self.pg_dump = text(value).unwrap_or_default(),
            "coffer.shutdown_timeout_ms" => {
                self.shutdown_timeout_ms = number::<u64>(value)?.clamp(100, 3_600_000)
            }
            "tokenization_secret" => {
                self.tokenization_secret = match text(value).filter(|v| !v.is_empty()) {
                    None => None,
                    Some(secret) => {
                        // Checked here, so a wrong key stops the start instead of silently
                        // turning tokenization off (Blnk only warns). The length only.
                        let length = secret.len();
                        anyhow::ensure!(
                            length == coffer_actors::domain::pii::SECRET_BYTES,
                            "tokenization_secret must be exactly {} bytes, not {length}",
                            coffer_actors::domain::pii::SECRET_BYTES
                        );
                        Some(SecretString::from(secret))
                    }
                }
            }
            "account_number_generation.enable_auto_generation" => {
                self.account_number_generation = boolean(value)?
            }
            "account_number_generation.http_service.url" => {
                self.account_number_service.url = text(value).filter(|v| !v.trim().is_empty())
            }
            "account_number_generation.http_service.timeout" => {
                self.account_number_service.timeout_secs = match number::<u64>(value)? {
                    0 => 10,
                    seconds => seconds.min(300),
                }
            }
            "account_number_generation.http_service.headers.Authorization" => {
                self.account_number_service.authorization = text(value)
                    .filter(|v| !v.is_empty())
                    .map(SecretString::from)
            }
            "coffer.snapshot_interval_ms" => {
                self.snapshot_interval_ms = number::<u64>(value)?.clamp(10, 3_600_000)
            }
            "coffer.snapshot_every_transactions" => {
                self.snapshot_every_transactions = number::<usize>(value)?.clamp(1, 100_000)
            }
            "coffer.snapshot_tick_budget_ms" => {
                self.snapshot_tick_budget_ms = number::<u64>(value)?.clamp(1, 60_000)
            }
            "coffer.snapshot_daily_full_pass" => {
                self.snapshot_daily_full_pass = Some(boolean(value)?)
            }
            "notification.webhook.url" => {
                self.webhook_url = text(value).filter(|v| !v.trim().is_empty())
            }
            "notification.webhook.headers" => self.webhook_headers = headers(value)?,
            "coffer.webhook_timeout_ms" => {
                self.webhook_timeout_ms = number::<u64>(value)?.clamp(100, 300_000)
            }
            "notification.webhook.events" => self.webhook_events = names(value),
            "coffer.monitors_refresh_ms" => {
                self.monitors_refresh_ms = number::<u64>(value)?.clamp(100, 3_600_000)
            }
            "coffer.webhook_concurrency" => {
                self.webhook_concurrency = number::<usize>(value)?.clamp(1, 1_024)
            }
            "coffer.outbox_batch_size" => {
                self.outbox.batch_size = number::<usize>(value)?.clamp(1, 10_000)
            }
            "coffer.outbox_poll_interval_ms" => {
                self.outbox.poll_interval_ms = number::<u64>(value)?.clamp(5, 60_000)
            }
            "coffer.outbox_backoff_base_ms" => {
                self.outbox.backoff_base_ms = number::<u64>(value)?.clamp(1, 3_600_000)
            }
            "coffer.outbox_backoff_cap_ms" => {
                self.outbox.backoff_cap_ms = number::<u64>(value)?.clamp(1, 86_400_000)
            }
            "coffer.outbox_attempts_max" => {
                self.outbox.attempts_max = number::<u32>(value)?.clamp(1, 1_000)
            }
            "coffer.outbox_lease_ms" => {
                self.outbox.lease_ms = number::<u64>(value)?.clamp(1_000, 3_600_000)
            }
            "coffer.outbox_retention_ms" => self.outbox.retention_ms = number::<u64>(value)?,
            "coffer.outbox_breaker_failures" => {
                self.outbox_breaker.failures_max = number::<u32>(value)?.min(10_000)
            }
            "coffer.outbox_breaker_cooldown_ms" => {
                self.outbox_breaker.cooldown_ms = number::<u64>(value)?.clamp(10, 3_600_000)
            }
            "coffer.outbox_breaker_cooldown_cap_ms" => {
                self.outbox_breaker.cooldown_cap_ms = number::<u64>(value)?.clamp(10, 86_400_000)
            }
            "coffer.outbox_health_lag_ms" => self.outbox_health_lag_ms = number::<u64>(value)?,
            "coffer.outbox_health_dead_max" => {
                // Negative or empty: not checked.
                self.outbox_health_dead_max = match value {
                    Value::Null => None,
                    Value::String(text) if text.trim().is_empty() => None,
                    _ => number::<i64>(value)?.try_into().ok(),
                }
            }
            "coffer.allow_private_hook_urls" => self.allow_private_hook_urls = boolean(value)?,
            "coffer.hooks_refresh_ms" => {
                self.hooks_refresh_ms = number::<u64>(value)?.clamp(100, 600_000)
            }
            "coffer.hooks_concurrency" => {
                self.hooks_concurrency = number::<usize>(value)?.clamp(1, 256)
            }
            "typesense.dns" => self.typesense_url = text(value).filter(|v| !v.trim().is_empty()),
            "type_sense_key" => {
                self.typesense_key = text(value)
                    .filter(|v| !v.is_empty())
                    .map(SecretString::from)
            }
            "coffer.typesense_collection_prefix" => {
                let prefix = text(value).unwrap_or_default();
                // It goes into Typesense's URL paths as it is.
                let safe = |b: u8| b.is_ascii_alphanumeric() || b"_-.".contains(&b);
                if !prefix.bytes().all(safe) {
                    anyhow::bail!("the collection prefix may hold only letters, digits, _ - .");
                }
                self.typesense_collection_prefix = prefix
            }
            "coffer.typesense_timeout_ms" => {
                self.typesense_timeout_ms = number::<u64>(value)?.clamp(100, 300_000)
            }
            "coffer.typesense_batch_size" => {
                self.typesense_batch_size = number::<usize>(value)?.clamp(1, 10_000)
            }
            "coffer.typesense_retry_interval_ms" => {
                self.typesense_retry_interval_ms = number::<u64>(value)?.clamp(10, 600_000)
            }
            other => anyhow::bail!("no such setting {other}"),
        }
        Ok(())
    }

    /// The embedded default's SQLite file.
    pub fn sqlite_url(&self) -> String {
        format!("sqlite://{}", self.data_dir.join("coffer.db").display())
    }

    pub fn is_embedded_queue(&self) -> bool {
        self.redis_url.is_none()
    }
}

fn read_file(path: &Path) -> anyhow::Result<Value> {
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => config::FileFormat::Toml,
        _ => config::FileFormat::Json,
    };
    let value: Value = config::Config::builder()
        .add_source(config::File::from(path).format(format))
        .build()
        .with_context(|| format!("reading {}", path.display()))?
        .try_deserialize()
        .with_context(|| format!("parsing {}", path.display()))?;
    if let Value::Object(map) = &value {
        for key in map.keys().filter(|k| !KNOWN_SECTIONS.contains(&k.as_str())) {
            tracing::warn!(key, file = %path.display(), "unknown configuration key ignored");
        }
        if let Some(Value::Object(coffer)) = map.get("coffer") {
            for key in coffer.keys() {
                let full = format!("coffer.{key}");
                if !KEYS.iter().any(|(k, _)| *k == full) {
                    tracing::warn!(key = full, "unknown configuration key ignored");
                }
            }
        }
    }
    Ok(value)
}

/// Static headers: a JSON object of strings (in the file, or as text in the environment).
fn headers(value: &Value) -> anyhow::Result<Vec<(String, SecretString)>> {
    let object = match value {
        Value::String(raw) => serde_json::from_str(raw)
            .map_err(|_| anyhow::anyhow!("webhook headers must be a JSON object of strings"))?,
        other => other.clone(),
    };
    let Value::Object(map) = object else {
        anyhow::bail!("webhook headers must be an object of strings");
    };
    map.into_iter()
        .map(|(name, value)| match value {
            Value::String(value) => Ok((name, SecretString::from(value))),
            _ => anyhow::bail!("webhook header {name} must be a string"),
        })
        .collect()
}

/// Names, as a comma list or a JSON array; blanks dropped.
fn names(value: &Value) -> Vec<String> {
    let items: Vec<String> = match value {
        Value::Array(items) => items.iter().filter_map(text).collect(),
        other => text(other)
            .unwrap_or_default()
            .split(',')
            .map(str::to_owned)
            .collect(),
    };
    items
        .iter()
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

/// Addresses or CIDR blocks, as a comma list or a JSON array (`10.0.0.0/8, ::1`).
fn networks(value: &Value) -> anyhow::Result<Vec<ipnet::IpNet>> {
    let items: Vec<String> = match value {
        Value::Array(items) => items.iter().filter_map(text).collect(),
        other => text(other)
            .unwrap_or_default()
            .split(',')
            .map(str::to_owned)
            .collect(),
    };
    items
        .iter()
        .map(|item| item.trim())
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .with_context(|| format!("{item:?} is not an IP address or CIDR block"))
        })
        .collect()
}

/// The limiter's rate and burst from Blnk's two keys: one alone sets the other (burst twice
/// the rate, or the rate half the burst); neither: no limiter.
impl Settings {
    pub fn rate_limit(&self) -> Option<(u32, u32)> {
        match (self.rate_limit_per_second, self.rate_limit_burst) {
            (None, None) => None,
            (Some(rate), None) => Some((rate, rate.saturating_mul(2))),
            (None, Some(burst)) => Some(((burst / 2).max(1), burst)),
            (Some(rate), Some(burst)) => Some((rate, burst)),
        }
    }
}

fn lookup<'a>(value: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted
        .split('.')
        .try_fold(value, |node, part| node.get(part))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn number<T: std::str::FromStr>(value: &Value) -> anyhow::Result<T> {
    let raw = text(value).unwrap_or_default();
    raw.trim()
        .parse::<T>()
        .map_err(|_| anyhow::anyhow!("'{raw}' is not a valid number"))
}

fn boolean(value: &Value) -> anyhow::Result<bool> {
    match text(value).unwrap_or_default().trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => anyhow::bail!("'{other}' is not true or false"),
    }
}

/// Blnk accepts `host:port` as well as `redis://` URLs.
fn redis_url(value: String) -> String {
    if value.contains("://") {
        value
    } else {
        format!("redis://{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blnk_keys_are_read_from_json() {
        let file = serde_json::json!({
            "data_source": {"dns": "postgres://x/y"},
            "redis": {"dns": "localhost:6379"},
            "server": {"port": "5005"},
        });
        let mut settings = Settings::default();
        for (key, _) in KEYS {
            if let Some(value) = lookup(&file, key) {
                settings.apply(key, value).unwrap();
            }
        }
        assert_eq!(settings.database_url.as_deref(), Some("postgres://x/y"));
        assert_eq!(
            settings.redis_url.as_deref(),
            Some("redis://localhost:6379")
        );
        assert_eq!(settings.port, 5005);
    }

    #[test]
    fn a_tokenization_secret_must_be_32_bytes_and_is_never_shown() {
        let mut settings = Settings::default();
        let error = settings
            .apply("tokenization_secret", &serde_json::json!("short"))
            .unwrap_err();
        assert!(!format!("{error:#}").contains("short"), "{error:#}");
        let secret = "0123456789abcdef0123456789abcdef";
        settings
            .apply("tokenization_secret", &serde_json::json!(secret))
            .unwrap();
        assert!(settings.tokenization_secret.is_some());
        assert!(!format!("{settings:?}").contains(secret));
        settings
            .apply(
                "account_number_generation.http_service.headers.Authorization",
                &serde_json::json!("Bearer hunter2"),
            )
            .unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn the_webhook_and_the_outbox_limits_are_read() {
        let file = serde_json::json!({
            "notification": {"webhook": {
                "url": "https://hooks.example/blnk",
                "headers": {"Authorization": "Bearer s3cret"},
            }},
            "coffer": {"outbox_attempts_max": 0, "outbox_batch_size": 50},
        });
        let mut settings = Settings::default();
        for (key, _) in KEYS {
            if let Some(value) = lookup(&file, key) {
                settings.apply(key, value).unwrap();
            }
        }
        assert_eq!(
            settings.webhook_url.as_deref(),
            Some("https://hooks.example/blnk")
        );
        assert_eq!(settings.webhook_headers.len(), 1);
        assert_eq!(settings.webhook_headers[0].0, "Authorization");
        assert!(!format!("{settings:?}").contains("s3cret"));
        assert_eq!(settings.outbox.attempts_max, 1, "at least one attempt");
        assert_eq!(settings.outbox.batch_size, 50);
        settings
            .apply(
                "notification.webhook.headers",
                &serde_json::json!(r#"{"X-Env": "yes"}"#),
            )
            .unwrap();
        assert_eq!(settings.webhook_headers[0].0, "X-Env");
        assert!(settings
            .apply("notification.webhook.headers", &serde_json::json!([1]))
            .is_err());
    }

    #[test]
    fn the_breaker_and_the_outbox_health_thresholds_are_read() {
        let mut settings = Settings::default();
        assert_eq!(settings.outbox_breaker.failures_max, 5);
        assert_eq!(settings.outbox_health_dead_max, None);
        for (key, value) in [
            ("coffer.outbox_breaker_failures", serde_json::json!("0")),
            ("coffer.outbox_breaker_cooldown_ms", serde_json::json!(1)),
            (
                "coffer.outbox_breaker_cooldown_cap_ms",
                serde_json::json!(60_000),
            ),
            ("coffer.outbox_health_lag_ms", serde_json::json!("0")),
            ("coffer.outbox_health_dead_max", serde_json::json!("0")),
        ] {
            settings.apply(key, &value).unwrap();
        }
        assert_eq!(settings.outbox_breaker.failures_max, 0, "0: no breaker");
        assert_eq!(settings.outbox_breaker.cooldown_ms, 10, "clamped");
        assert_eq!(settings.outbox_breaker.cooldown_cap_ms, 60_000);
        assert_eq!(settings.outbox_health_lag_ms, 0);
        assert_eq!(settings.outbox_health_dead_max, Some(0));
        settings
            .apply("coffer.outbox_health_dead_max", &serde_json::json!(-1))
            .unwrap();
        assert_eq!(settings.outbox_health_dead_max, None, "negative: off");
        assert!(settings
            .apply("coffer.outbox_breaker_failures", &serde_json::json!("many"))
            .is_err());
    }

    #[test]
    fn the_search_settings_are_read_and_an_empty_dns_disables_search() {
        let mut settings = Settings::default();
        use serde_json::json;
        settings
            .apply("typesense.dns", &json!("http://typesense:8108"))
            .unwrap();
        settings.apply("type_sense_key", &json!("k")).unwrap();
        settings
            .apply("coffer.typesense_collection_prefix", &json!("prod_"))
            .unwrap();
        settings
            .apply("coffer.typesense_batch_size", &json!(0))
            .unwrap();
        assert_eq!(
            settings.typesense_url.as_deref(),
            Some("http://typesense:8108")
        );
        assert_eq!(settings.typesense_collection_prefix, "prod_");
        assert_eq!(settings.typesense_batch_size, 1);
        assert!(settings
            .apply("coffer.typesense_collection_prefix", &json!("a/b"))
            .is_err());
        settings.apply("typesense.dns", &json!("")).unwrap();
        assert!(settings.typesense_url.is_none());
    }

    #[test]
    fn write_path_knobs_are_read_and_bounded() {
        let mut settings = Settings::default();
        assert_eq!(settings.commits_in_flight_max, 2);
        assert!(settings.db_tcp_nodelay_relay);
        settings
            .apply("coffer.commits_in_flight_max", &serde_json::json!(50))
            .unwrap();
        assert_eq!(settings.commits_in_flight_max, 8, "clamped to 8");
        settings
            .apply("coffer.commits_in_flight_max", &serde_json::json!("0"))
            .unwrap();
        assert_eq!(settings.commits_in_flight_max, 1, "at least one");
        assert_eq!(settings.large_commits_in_flight_max, 3);
        settings
            .apply("coffer.large_commits_in_flight_max", &serde_json::json!(9))
            .unwrap();
        assert_eq!(settings.large_commits_in_flight_max, 8, "clamped to 8");
        assert_eq!(settings.rows_first_items_min, 100);
        settings
            .apply("coffer.rows_first_items_min", &serde_json::json!(0))
            .unwrap();
        assert_eq!(settings.rows_first_items_min, 1, "at least one");
        settings
            .apply(
                "coffer.database_tcp_nodelay_relay",
                &serde_json::json!(false),
            )
            .unwrap();
        assert!(!settings.db_tcp_nodelay_relay);
    }

    #[test]
    fn the_monitors_reload_interval_is_read_and_bounded() {
        let mut settings = Settings::default();
        assert_eq!(settings.monitors_refresh_ms, 5_000);
        settings
            .apply("coffer.monitors_refresh_ms", &serde_json::json!(1))
            .unwrap();
        assert_eq!(settings.monitors_refresh_ms, 100, "at least 100 ms");
        settings
            .apply("coffer.monitors_refresh_ms", &serde_json::json!("2500"))
            .unwrap();
        assert_eq!(settings.monitors_refresh_ms, 2_500);
    }

    #[test]
    fn the_hook_settings_are_read_and_bounded() {
        let mut settings = Settings::default();
        assert!(
            !settings.allow_private_hook_urls,
            "private hook URLs are refused by default"
        );
        settings
            .apply("coffer.allow_private_hook_urls", &serde_json::json!("true"))
            .unwrap();
        assert!(settings.allow_private_hook_urls);
        settings
            .apply("coffer.hooks_refresh_ms", &serde_json::json!(1))
            .unwrap();
        assert_eq!(settings.hooks_refresh_ms, 100, "at least 100 ms");
        settings
            .apply("coffer.hooks_concurrency", &serde_json::json!(0))
            .unwrap();
        assert_eq!(settings.hooks_concurrency, 1);
    }
}
