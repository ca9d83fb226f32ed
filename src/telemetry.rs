//! Logging and trace export through `tracing`.
//!
//! Logs: `RUST_LOG` filters (default `info`), colours only on a terminal. A log line carries
//! the fields of the spans it is in (`http{method route}`, the transfer's reference, ...)
//! only when debug logging is on: otherwise the log layer takes no spans at all, and without
//! trace export nothing creates them (formatting every request's spans for lines that are
//! almost never written cost about a tenth of the queued path's throughput, see
//! BENCHMARKS.md).
//!
//! Traces (off by default): when `monitoring_dsn` (Blnk's key; `BLNK_MONITORING_DSN`) or the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, spans
//! at `coffer.trace_filter` (default `info`) are exported over OTLP/HTTP (protobuf) to that
//! collector (Jaeger accepts it on port 4318) by OpenTelemetry's batch span processor, on its
//! own thread: a request only creates spans and hands finished ones to a bounded queue (a
//! full queue drops spans, it never blocks). W3C trace context (`traceparent`) is taken from
//! incoming requests (the `http` span becomes a child of the caller's span) and carried
//! across the queue to the worker (see `coffer_actors::telemetry`), so one queued transfer is
//! one trace from the request to the worker's commit. The standard `OTEL_*` variables apply
//! (`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_SCHEDULE_DELAY`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SDK_DISABLED`, ...).

mod otlp;

use crate::configuration::Settings;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Set once trace export is installed: propagation work is skipped without it.
static EXPORTING: AtomicBool = AtomicBool::new(false);
/// How long shutdown waits for the last spans to be sent.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs the global log subscriber once (no trace export); later calls do nothing.
pub fn init(default_filter: &str) {
    let _ = fmt_subscriber(default_filter).try_init();
}

/// Runs `load` with a temporary log subscriber, so what reading the configuration logs is
/// shown before the global subscriber (which depends on that configuration) exists.
pub fn while_loading<T>(default_filter: &str, load: impl FnOnce() -> T) -> T {
    tracing::subscriber::with_default(fmt_subscriber(default_filter).finish(), load)
}

fn log_filter(default_filter: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter))
}

fn ansi() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdout())
}

fn fmt_subscriber(
    default_filter: &str,
) -> tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    EnvFilter,
> {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(default_filter))
        .with_target(false)
        .with_ansi(ansi())
}

/// Flushes and stops trace export when dropped (or on [`Telemetry::shutdown`]).
#[must_use = "dropping it stops trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans still queued (waiting at most a few seconds) and stops export.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
                tracing::warn!(%error, "trace export did not shut down cleanly");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The OTLP/HTTP traces endpoint to use, if trace export is on. `None` means off.
/// `Some(None)` means on, with the endpoint left to the `OTEL_EXPORTER_OTLP_*` variables.
pub fn export_target(settings: &Settings) -> Option<Option<String>> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return None;
    }
    if let Some(dsn) = settings.monitoring_dsn.as_deref() {
        return Some(Some(traces_url(dsn)));
    }
    (env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some())
    .then_some(None)
}

/// `monitoring_dsn` as the traces URL: a bare `host:port` gets `http://`, a base URL gets
/// `/v1/traces` (as `OTEL_EXPORTER_OTLP_ENDPOINT` does).
fn traces_url(dsn: &str) -> String {
    let dsn = dsn.trim();
    let url = if dsn.contains("://") {
        dsn.to_owned()
    } else {
        format!("http://{dsn}")
    };
    if url.ends_with("/v1/traces") {
        url
    } else {
        format!("{}/v1/traces", url.trim_end_matches('/'))
    }
}

/// Installs the global subscriber: logs, plus trace export when configured (see the module
/// documentation) and `service` is given; it names the process in the traces
/// (`OTEL_SERVICE_NAME` wins). Call once, early in `main`.
pub fn install(default_filter: &str, settings: &Settings, service: Option<&str>) -> Telemetry {
    let log_filter = log_filter(default_filter);
    let log_spans = log_filter
        .max_level_hint()
        .is_some_and(|level| level >= LevelFilter::DEBUG);
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(ansi())
        .with_filter(log_filter)
        .with_filter(filter_fn(move |metadata| log_spans || !metadata.is_span()));
    let target = service.zip(export_target(settings));
    let provider = target.and_then(|(service, endpoint)| {
        match otlp::provider(endpoint.as_deref(), service) {
            Ok(provider) => Some((provider, endpoint)),
            Err(error) => {
                // Logged once the subscriber is up, below.
                eprintln!("trace export disabled: {error}");
                None
            }
        }
    });
    let Some((provider, endpoint)) = provider else {
        let _ = tracing_subscriber::registry().with(fmt).try_init();
        return Telemetry { provider: None };
    };
    // The SDK's own diagnostics go to the log, never back into the exported traces.
    let trace_filter = EnvFilter::try_new(format!(
        "{},opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off",
        settings.trace_filter
    ))
    .unwrap_or_else(|error| {
        eprintln!("bad coffer.trace_filter ({error}); using info");
        EnvFilter::new("info,opentelemetry=off")
    });
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("coffer"))
        .with_filter(trace_filter);
    if tracing_subscriber::registry()
        .with(fmt)
        .with(layer)
        .try_init()
        .is_err()
    {
        // Another subscriber was installed first (tests): export would see nothing.
        let _ = provider.shutdown();
        return Telemetry { provider: None };
    }
    coffer_actors::telemetry::install(coffer_actors::telemetry::Propagation {
        current: current_traceparent,
        adopt: adopt_traceparent,
    });
    EXPORTING.store(true, Ordering::Release);
    tracing::info!(
        endpoint = endpoint.as_deref().unwrap_or("from OTEL_EXPORTER_OTLP_*"),
        service = service.unwrap_or_default(),
        "exporting traces over OTLP/HTTP"
    );
    Telemetry {
        provider: Some(provider),
    }
}

/// Makes the request's `http` span a child of the caller's W3C trace context, if it sent one
/// (`traceparent`, `tracestate` headers) and traces are exported.
pub fn adopt_request_context(span: &tracing::Span, headers: &actix_web::http::header::HeaderMap) {
    if !EXPORTING.load(Ordering::Acquire) || !headers.contains_key("traceparent") {
        return;
    }
    let carrier: HashMap<String, String> = ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect();
    set_remote_parent(span, &carrier);
}

fn set_remote_parent(span: &tracing::Span, carrier: &HashMap<String, String>) {
    let context = TraceContextPropagator::new().extract(carrier);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// The current span's context as a W3C `traceparent` (installed into the core).
fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    if !span_context.is_valid() {
        return None;
    }
    Some(format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    ))
}

/// Makes `span` a child of a `traceparent` carried by the queue (installed into the core).
fn adopt_traceparent(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    set_remote_parent(span, &carrier);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitoring_dsn_becomes_a_traces_url() {
        assert_eq!(traces_url("jaeger:4318"), "http://jaeger:4318/v1/traces");
        assert_eq!(
            traces_url("https://otel.example.com/"),
            "https://otel.example.com/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
