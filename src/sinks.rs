//! Which event sinks this deployment has, from its settings: the [`EventWriter`] the write
//! path routes events with, and the dispatchers (one per sink) the workers deliver them
//! with. A sink is added here in both halves: its route, and its dispatcher.

use crate::configuration::{SecretString, Settings};
use crate::event_payloads::BlnkPayloads;
use actix::{Addr, ArbiterHandle};
use coffer_actors::events::delivery::Ordered;
use coffer_actors::events::dispatcher::Dispatcher;
use coffer_actors::events::hooks::{HookSender, HookSettings, HooksSink, HOOK_SINK_PREFIX};
use coffer_actors::events::monitors::{
    MonitoredBalances, MonitorsRoute, MonitorsSink, MONITORS_SINK, MONITOR_EVENT,
};
use coffer_actors::events::outbox::SinkSelector;
use coffer_actors::events::routing::{EventWriter, WebhookRoute, WEBHOOK_SINK};
use coffer_actors::events::search::reindex::ReindexWorker;
use coffer_actors::events::search::{SearchConfig, SearchRoute, SearchSink, SEARCH_SINK};
use coffer_actors::events::webhook::{WebhookConfig, WebhookSender};
use coffer_actors::events::Sink;
use coffer_actors::store::Store;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

fn webhook_config(settings: &Settings) -> Option<WebhookConfig> {
    Some(WebhookConfig {
        url: settings.webhook_url.clone()?,
        headers: settings.webhook_headers.clone(),
        secret_key: settings.secret_key.clone(),
        timeout: Duration::from_millis(settings.webhook_timeout_ms),
    })
}

/// Monitors fire to the webhook: evaluated only when it takes `balance.monitor`.
fn monitors_enabled(settings: &Settings) -> bool {
    settings.webhook_url.is_some()
        && (settings.webhook_events.is_empty()
            || settings.webhook_events.iter().any(|e| e == MONITOR_EVENT))
}

/// The routes of the configured sinks (no sink: a writer without routes, which writes
/// nothing).
pub fn event_writer(settings: &Settings) -> EventWriter {
    let mut writer = EventWriter::new(Arc::new(BlnkPayloads));
    if settings.webhook_url.is_some() {
        let subscribed = (!settings.webhook_events.is_empty()).then(|| {
            settings
                .webhook_events
                .iter()
                .cloned()
                .collect::<HashSet<_>>()
        });
        writer = writer.route(Arc::new(WebhookRoute { subscribed }));
    }
    if monitors_enabled(settings) {
        let balances = MonitoredBalances::new(settings.monitors_refresh_ms);
        writer = writer
            .route(Arc::new(MonitorsRoute {
                balances: balances.clone(),
            }))
            .monitored(balances);
    }
    if search_config(settings).is_some() {
        writer = writer.route(Arc::new(SearchRoute));
    }
    writer
}

/// The search index's settings; `None`: search is disabled (`typesense.dns` unset).
pub fn search_config(settings: &Settings) -> Option<SearchConfig> {
    Some(SearchConfig {
        url: settings.typesense_url.clone()?,
        api_key: settings
            .typesense_key
            .clone()
            .unwrap_or_else(|| SecretString::from("")),
        collection_prefix: settings.typesense_collection_prefix.clone(),
        timeout: Duration::from_millis(settings.typesense_timeout_ms),
        retry_interval_ms: settings.typesense_retry_interval_ms,
        reindex_batch_size: coffer_actors::events::search::api::REINDEX_BATCH_DEFAULT,
    })
}

/// The search reindex's worker (with search enabled), on `arbiter`.
pub fn start_search_reindex(
    settings: &Settings,
    arbiter: &ArbiterHandle,
    store: &Store,
) -> Option<Addr<ReindexWorker>> {
    let config = search_config(settings)?;
    Some(ReindexWorker::start(
        arbiter,
        config,
        store.clone(),
        Arc::new(BlnkPayloads),
    ))
}

/// One dispatcher per configured sink, on `arbiter`.
pub fn start_dispatchers(
    settings: &Settings,
    arbiter: &ArbiterHandle,
    store: &Store,
) -> Vec<Addr<Dispatcher>> {
    let mut dispatchers = Vec::new();
    if let Some(config) = webhook_config(settings) {
        let concurrency = settings.webhook_concurrency;
        let breaker = settings.outbox_breaker.clone();
        dispatchers.push(Dispatcher::start(
            arbiter,
            store.clone(),
            SinkSelector::Exact(WEBHOOK_SINK.to_owned()),
            move || {
                let sender = WebhookSender::new(config);
                Rc::new(Ordered::new(sender, concurrency).with_breaker(breaker)) as Rc<dyn Sink>
            },
            settings.outbox.clone(),
        ));
    }
    if monitors_enabled(settings) {
        let monitors_store = store.clone();
        dispatchers.push(Dispatcher::start(
            arbiter,
            store.clone(),
            SinkSelector::Exact(MONITORS_SINK.to_owned()),
            move || Rc::new(MonitorsSink::new(monitors_store)) as Rc<dyn Sink>,
            settings.outbox.clone(),
        ));
    }
    // Always: hooks may be created at any time (their route is the store's own, see
    // `Store::write_events`).
    let hook_settings = HookSettings {
        secret_key: settings.secret_key.clone(),
        private_allowed: settings.allow_private_hook_urls,
    };
    let (hook_store, concurrency) = (store.clone(), settings.hooks_concurrency);
    let breaker = settings.outbox_breaker.clone();
    dispatchers.push(Dispatcher::start(
        arbiter,
        store.clone(),
        SinkSelector::Prefix(HOOK_SINK_PREFIX.to_owned()),
        move || {
            let sender = HookSender::new(hook_store, hook_settings);
            Rc::new(HooksSink::new(sender, concurrency).with_breaker(breaker)) as Rc<dyn Sink>
        },
        settings.outbox.clone(),
    ));
    if let Some(config) = search_config(settings) {
        let search_store = store.clone();
        let mut limits = settings.outbox.clone();
        limits.batch_size = settings.typesense_batch_size;
        dispatchers.push(Dispatcher::start(
            arbiter,
            store.clone(),
            SinkSelector::Exact(SEARCH_SINK.to_owned()),
            move || {
                Rc::new(SearchSink::new(
                    &config,
                    search_store,
                    Arc::new(BlnkPayloads),
                )) as Rc<dyn Sink>
            },
            limits,
        ));
    }
    dispatchers
}
