//! Transaction hooks (Blnk 1.9) on the outbox: which transaction events call which hooks,
//! the directory of hooks the write path routes by, and the sender that calls them.
//!
//! # Which events trigger which hooks
//! Every stored transaction row has one event ([`super::transaction_event`]). A hook is
//! called once per row it is routed to:
//!
//! | row (event)                                             | PRE_TRANSACTION | POST_TRANSACTION |
//! |---------------------------------------------------------|-----------------|------------------|
//! | `transaction.queued`, `transaction.scheduled`           | yes             | no               |
//! | the worker's row of a queued/scheduled transaction (`applied`, `inflight`, `rejected`) | no | yes |
//! | a transaction's only row, never queued (`skip_queue`, bulk items, a `skip_queue` refund: `applied`, `inflight`) | yes | yes |
//! | the commit or void of an inflight hold (`applied`, `void`) | no           | yes              |
//!
//! So a transaction's PRE hooks are called once, for its first row, and its POST hooks for
//! every outcome (an inflight transaction's POST hooks see `INFLIGHT`, then the commit's
//! `APPLIED` or the void's `VOID` row). A refund is a new transaction.
//!
//! PRE hooks **cannot veto** a transaction (neither can Blnk's, which only enqueues them):
//! like every event, the call is made from the outbox after the row is committed, at least
//! once, retried on failure.
//!
//! # The directory
//! The write path decides the sinks of an event inside its commit, so it cannot ask the
//! database which hooks exist: each process keeps a [`HookDirectory`], updated by every
//! hook change made through it and re-read from the database every
//! `coffer.hooks_refresh_ms` (so a hook created through another replica is called for this
//! replica's transactions after at most that long). An event is written once per active
//! hook of the matching type (`hook:<id>`, see [`super::routing`]).
//!
//! # Delivery
//! [`HookSender`] POSTs Blnk's body `{transaction_id, hook_type, timestamp, data}` with
//! `X-Hook-ID`, `X-Hook-Type` and, when `server.secret_key` is set, `X-Blnk-Signature` and
//! `X-Blnk-Timestamp` (as the webhook). The hook's own `timeout` bounds the call; a 2xx with
//! an empty or non-JSON body, or JSON with `"success": true`, is a success; any other
//! answer (`{"success": false, "message": …}`, a JSON object without `success`, as Blnk
//! reads it) fails and is retried: a hook's event is dead after `retry_count + 1` attempts.
//! Each call sets the hook's `last_run` and `last_success`. An event of a hook that is gone
//! or inactive when it is due is dropped (settled as delivered, nothing sent). Unless
//! `coffer.allow_private_hook_urls` is set, the host is resolved before each call and the
//! call goes to a resolved address only if every one is public (see
//! [`crate::domain::hook`]); redirects are never followed ([`super::http`]).
//!
//! [`HooksSink`] delivers each hook's events on its own (their keys in order within the
//! hook), side by side, so a failing hook never holds back another one's events; a slow
//! one delays the next claim by at most its timeout.

use super::delivery::{Ordered, Sender};
use super::outbox::NewEvent;
use super::routing::Route;
use super::{signature, Event, Outcome, Sink, SinkError};
use crate::domain::hook::{self, Hook, HookType, UrlHost, UrlRefusal};
use crate::store::Store;
use crate::LedgerError;
use futures_util::future::{join_all, LocalBoxFuture};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The outbox sink of hook `<id>` is `hook:<id>`.
pub const HOOK_SINK_PREFIX: &str = "hook:";
/// The most of a hook's answer that is read (to find `success`).
pub const ANSWER_BYTES_MAX: usize = 64 * 1024;
/// The longest failure message kept from a hook's answer.
const MESSAGE_CHARS_MAX: usize = 256;

/// The hooks of this process, as last read or changed.
#[derive(Default)]
pub struct HookDirectory {
    snapshot: RwLock<Arc<Snapshot>>,
    any_active: AtomicBool,
}

#[derive(Default)]
struct Snapshot {
    hooks: BTreeMap<String, Hook>,
    /// The sinks of the active hooks of each type.
    pre: Vec<String>,
    post: Vec<String>,
}

impl Snapshot {
    fn of(hooks: BTreeMap<String, Hook>) -> Self {
        let sinks = |wanted: HookType| {
            hooks
                .values()
                .filter(|h| h.spec.active && h.spec.hook_type == wanted)
                .map(|h| format!("{HOOK_SINK_PREFIX}{}", h.id))
                .collect()
        };
        Self {
            pre: sinks(HookType::PreTransaction),
            post: sinks(HookType::PostTransaction),
            hooks,
        }
    }
}

impl HookDirectory {
    fn current(&self) -> Arc<Snapshot> {
        // A poisoned lock still holds a whole snapshot (it is swapped, never edited).
        self.snapshot
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn change(&self, edit: impl FnOnce(&mut BTreeMap<String, Hook>)) {
        let mut guard = self
            .snapshot
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut hooks = guard.hooks.clone();
        edit(&mut hooks);
        let next = Snapshot::of(hooks);
        self.any_active.store(
            !next.pre.is_empty() || !next.post.is_empty(),
            Ordering::Release,
        );
        *guard = Arc::new(next);
    }

    /// Every hook, as read from the database.
    pub fn replace(&self, hooks: Vec<Hook>) {
        self.change(|all| *all = hooks.into_iter().map(|h| (h.id.clone(), h)).collect());
    }

    pub fn upsert(&self, hook: Hook) {
        self.change(|all| {
            all.insert(hook.id.clone(), hook);
        });
    }

    pub fn remove(&self, id: &str) {
        self.change(|all| {
            all.remove(id);
        });
    }

    pub fn get(&self, id: &str) -> Option<Hook> {
        self.current().hooks.get(id).cloned()
    }

    pub fn any_active(&self) -> bool {
        self.any_active.load(Ordering::Acquire)
    }
}

/// Which hook types a transaction event calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Triggers {
    pub pre: bool,
    pub post: bool,
}

/// What routing needs of a transaction's payload (every other field is skipped unread, so
/// amounts never pass through a float).
#[derive(Deserialize)]
struct Lineage<'a> {
    #[serde(default, borrow)]
    parent_transaction: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    reference: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    meta_data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct QueuedParent<'a> {
    #[serde(rename = "QUEUED_PARENT_TRANSACTION", default, borrow)]
    queued_parent: Option<&'a RawValue>,
}

/// The hook types the event `name` of a transaction row (`payload`: the row as the API
/// serves it) calls: the table in the module docs.
pub fn triggers(name: &str, payload: &str) -> Triggers {
    match name {
        "transaction.queued" | "transaction.scheduled" => Triggers {
            pre: true,
            post: false,
        },
        "transaction.applied"
        | "transaction.inflight"
        | "transaction.void"
        | "transaction.rejected" => Triggers {
            pre: is_first_row(name, payload),
            post: true,
        },
        _ => Triggers::default(),
    }
}

/// Whether an outcome row is its transaction's first row: not the worker's row of a queued
/// transaction, not the commit or void of a hold.
fn is_first_row(name: &str, payload: &str) -> bool {
    let Ok(row) = serde_json::from_str::<Lineage<'_>>(payload) else {
        // Our own serializer wrote it; unreadable, it is not called a first row twice.
        return false;
    };
    let parent = row.parent_transaction.as_deref().unwrap_or_default();
    if parent.is_empty() {
        return true;
    }
    let queued_parent = row
        .meta_data
        .and_then(|meta| serde_json::from_str::<QueuedParent<'_>>(meta.get()).ok())
        .and_then(|meta| meta.queued_parent)
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
    if queued_parent.as_deref() == Some(parent) {
        return false;
    }
    let refund = row.reference.as_deref() == Some(format!("{parent}_refund").as_str());
    let hold_action = parent.starts_with("txn_")
        && !refund
        && matches!(name, "transaction.applied" | "transaction.void");
    !hold_action
}

/// Routes transaction events to the active hooks of the types they trigger.
pub struct HooksRoute {
    directory: Arc<HookDirectory>,
}

impl HooksRoute {
    pub fn new(directory: Arc<HookDirectory>) -> Self {
        Self { directory }
    }
}

impl Route for HooksRoute {
    fn sinks(&self, event: &NewEvent, sinks: &mut Vec<String>) {
        if !event.name.starts_with("transaction.") || !self.directory.any_active() {
            return;
        }
        let snapshot = self.directory.current();
        let post_only = snapshot.pre.is_empty();
        if post_only && snapshot.post.is_empty() {
            return;
        }
        let wanted = if post_only {
            // No PRE hook: no need to read the payload.
            triggers(event.name, "")
        } else {
            triggers(event.name, &event.payload)
        };
        if wanted.pre {
            sinks.extend(snapshot.pre.iter().cloned());
        }
        if wanted.post {
            sinks.extend(snapshot.post.iter().cloned());
        }
    }

    fn wants_events(&self) -> bool {
        self.directory.any_active()
    }
}

/// Blnk's hook body: `{"transaction_id", "hook_type", "timestamp", "data": <payload>}`,
/// the payload as stored.
pub fn hook_body(event: &Event, hook_type: HookType, at: chrono::DateTime<chrono::Utc>) -> String {
    let id = serde_json::Value::String(event.entity_id.clone()).to_string();
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    format!(
        "{{\"transaction_id\":{id},\"hook_type\":\"{}\",\"timestamp\":\"{at}\",\"data\":{}}}",
        hook_type.as_str(),
        event.payload
    )
}

/// A hook's answer, as Blnk reads it.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    message: Option<String>,
}

/// Judges a 2xx answer's body: empty or not a JSON object → success; a JSON object →
/// its `success` (absent: false, as Blnk's decoder leaves it).
pub fn judge_answer(body: &[u8]) -> Result<(), SinkError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match serde_json::from_slice::<Answer>(body) {
        Ok(answer) if !answer.success => {
            let message: String = answer
                .message
                .unwrap_or_default()
                .chars()
                .take(MESSAGE_CHARS_MAX)
                .collect();
            Err(SinkError(format!(
                "the hook answered success false: {message}"
            )))
        }
        _ => Ok(()),
    }
}

/// The address to call a hook URL at: its host's, resolved now (within `timeout`), when
/// every address it resolves to is public, so a name that turned private since the hook was
/// made (DNS rebinding) is refused at the call itself, and the call goes to the address
/// checked, not to a second lookup's answer.
pub async fn resolve_public(url: &str, timeout: Duration) -> Result<SocketAddr, UrlRefusal> {
    hook::check_url(url, false)?;
    let (host, port) = hook::url_host(url)?;
    let name = match host {
        UrlHost::Address(address) => return Ok(SocketAddr::new(address, port)),
        UrlHost::Name(name) => name,
    };
    let resolved = tokio::time::timeout(timeout, tokio::net::lookup_host((name.as_str(), port)))
        .await
        .ok()
        .and_then(Result::ok)
        .map(Iterator::collect::<Vec<SocketAddr>>)
        .unwrap_or_default();
    let first = *resolved
        .first()
        .ok_or_else(|| UrlRefusal::Unresolvable(name.clone()))?;
    if let Some(private) = resolved.iter().find(|a| !hook::address_allowed(a.ip())) {
        return Err(UrlRefusal::PrivateHost(format!(
            "{name} ({})",
            private.ip()
        )));
    }
    Ok(first)
}

/// What every hook call shares.
#[derive(Clone)]
pub struct HookSettings {
    /// Signs the calls (Blnk's `server.secret_key`).
    pub secret_key: Option<SecretString>,
    /// `coffer.allow_private_hook_urls`: no address check at delivery.
    pub private_allowed: bool,
}

pub struct HookSender {
    client: awc::Client,
    store: Store,
    directory: Arc<HookDirectory>,
    settings: HookSettings,
}

impl HookSender {
    /// Runs on its dispatcher's thread (the client belongs to it).
    pub fn new(store: Store, settings: HookSettings) -> Self {
        Self {
            client: super::http::client(Duration::from_secs(hook::TIMEOUT_S_MAX.into())),
            directory: store.hook_directory().clone(),
            store,
            settings,
        }
    }

    /// The hook as it is now: from the directory when it is active there, else re-read
    /// (another process may have made or re-activated it since the last refresh).
    async fn current(&self, id: &str) -> Result<Option<Hook>, SinkError> {
        if let Some(hook) = self.directory.get(id).filter(|h| h.spec.active) {
            return Ok(Some(hook));
        }
        match self.store.hook(id).await {
            Ok(hook) => {
                self.directory.upsert(hook.clone());
                Ok(Some(hook))
            }
            Err(LedgerError::HookNotFound(_)) => Ok(None),
            Err(error) => {
                tracing::warn!(%error, hook = id, "reading a hook failed");
                Err(SinkError("the hook could not be read".into()))
            }
        }
    }

    async fn call(&self, hook: &Hook, event: &Event) -> Result<(), SinkError> {
        let timeout = Duration::from_secs(hook.spec.timeout_s.max(1).into());
        let hook_type = hook.spec.hook_type.as_str();
        let body = hook_body(event, hook.spec.hook_type, chrono::Utc::now());
        let mut request = self
            .client
            .post(&hook.spec.url)
            .timeout(timeout)
            .insert_header(("Content-Type", "application/json"))
            .insert_header(("X-Hook-ID", hook.id.as_str()))
            .insert_header(("X-Hook-Type", hook_type));
        if !self.settings.private_allowed {
            let address = resolve_public(&hook.spec.url, timeout)
                .await
                .map_err(|refusal| SinkError(format!("the hook URL is refused: {refusal}")))?;
            request = request.address(address);
        }
        if let Some(secret) = &self.settings.secret_key {
            let timestamp = chrono::Utc::now().timestamp();
            let signed = signature(secret.expose_secret().as_bytes(), timestamp, &body);
            request = request
                .insert_header(("X-Blnk-Signature", signed))
                .insert_header(("X-Blnk-Timestamp", timestamp.to_string()));
        }
        let mut response = request
            .send_body(body)
            .await
            .map_err(|error| SinkError(super::http::send_error(&error, "the hook", timeout)))?;
        if !response.status().is_success() {
            return Err(SinkError(format!(
                "the hook answered HTTP {}",
                response.status().as_u16()
            )));
        }
        let answer = tokio::time::timeout(timeout, response.body().limit(ANSWER_BYTES_MAX))
            .await
            .map_err(|_| SinkError("the hook's answer did not arrive in time".into()))?
            .map_err(|_| SinkError("the hook's answer could not be read".into()))?;
        judge_answer(&answer)
    }

    async fn deliver(&self, event: &Event) -> Result<(), SinkError> {
        let Some(id) = event.sink.strip_prefix(HOOK_SINK_PREFIX) else {
            return Ok(());
        };
        let hook = match self.current(id).await? {
            Some(hook) if hook.spec.active => hook,
            _ => {
                tracing::debug!(hook = id, event = %event.name, "hook gone or inactive: event dropped");
                return Ok(());
            }
        };
        let result = self.call(&hook, event).await;
        if let Err(error) = self
            .store
            .record_hook_run(id, chrono::Utc::now(), result.is_ok())
            .await
        {
            tracing::warn!(%error, hook = id, "recording a hook's run failed");
        }
        result
    }
}

impl Sender for HookSender {
    fn send<'a>(&'a self, event: &'a Event) -> LocalBoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.deliver(event))
    }

    fn attempts_max(&self, event: &Event) -> Option<u32> {
        let id = event.sink.strip_prefix(HOOK_SINK_PREFIX)?;
        let hook = self.directory.get(id)?;
        Some(hook.spec.retry_count.saturating_add(1))
    }
}

/// Delivers a claimed batch hook by hook, side by side: each hook's events in key order
/// ([`Ordered`]), no hook's failure or slowness holding back another's events.
pub struct HooksSink<S> {
    ordered: Ordered<S>,
}

impl<S: Sender> HooksSink<S> {
    /// `concurrency`: each hook's calls in flight at once.
    pub fn new(sender: S, concurrency: usize) -> Self {
        Self {
            ordered: Ordered::new(sender, concurrency),
        }
    }

    /// Each hook's circuit breaker (see [`Ordered::with_breaker`]).
    pub fn with_breaker(mut self, settings: super::delivery::BreakerSettings) -> Self {
        self.ordered = self.ordered.with_breaker(settings);
        self
    }

    async fn deliver_all(&self, events: &[Event]) -> Vec<Outcome> {
        let mut groups: BTreeMap<&str, (Vec<usize>, Vec<Event>)> = BTreeMap::new();
        for (index, event) in events.iter().enumerate() {
            let group = groups.entry(event.sink.as_str()).or_default();
            group.0.push(index);
            group.1.push(event.clone());
        }
        let delivered = join_all(
            groups
                .values()
                .map(|(_, group)| self.ordered.deliver(group)),
        )
        .await;
        let mut outcomes = vec![Outcome::Skipped; events.len()];
        for ((indexes, _), group_outcomes) in groups.values().zip(delivered) {
            for (index, outcome) in indexes.iter().zip(group_outcomes) {
                outcomes[*index] = outcome;
            }
        }
        outcomes
    }
}

impl<S: Sender> Sink for HooksSink<S> {
    fn deliver<'a>(&'a self, events: &'a [Event]) -> LocalBoxFuture<'a, Vec<Outcome>> {
        Box::pin(self.deliver_all(events))
    }

    fn attempts_max(&self, event: &Event) -> Option<u32> {
        self.ordered.sender().attempts_max(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::hook::HookSpec;
    use std::cell::RefCell;
    use std::collections::HashSet;

    fn hook(id: &str, hook_type: HookType, active: bool) -> Hook {
        Hook {
            id: id.into(),
            spec: HookSpec {
                name: id.into(),
                url: "https://example.com/h".into(),
                hook_type,
                active,
                timeout_s: 30,
                retry_count: 2,
            },
            created_at: chrono::Utc::now(),
            last_run: None,
            last_success: false,
        }
    }

    const BIG: &str = "123456789012345678901234567890123456789012345678901234567890";

    fn row(id: &str, parent: &str, reference: &str, queued_parent: Option<&str>) -> String {
        let meta = queued_parent.map_or("null".to_owned(), |p| {
            format!(r#"{{"QUEUED_PARENT_TRANSACTION":"{p}","n":{BIG}}}"#)
        });
        format!(
            r#"{{"transaction_id":"{id}","precise_amount":{BIG},"parent_transaction":"{parent}","reference":"{reference}","meta_data":{meta}}}"#
        )
    }

    #[test]
    fn pre_hooks_fire_on_a_transactions_first_row_and_post_hooks_on_every_outcome() {
        let pre_only = Triggers {
            pre: true,
            post: false,
        };
        let both = Triggers {
            pre: true,
            post: true,
        };
        let post_only = Triggers {
            pre: false,
            post: true,
        };
        let queued = row("txn_q", "", "r1", Some("txn_q"));
        assert_eq!(triggers("transaction.queued", &queued), pre_only);
        assert_eq!(triggers("transaction.scheduled", &queued), pre_only);
        // The worker's row of the queued transaction.
        let child = row("txn_c", "txn_q", "r1_q", Some("txn_q"));
        assert_eq!(triggers("transaction.applied", &child), post_only);
        assert_eq!(triggers("transaction.rejected", &child), post_only);
        assert_eq!(triggers("transaction.inflight", &child), post_only);
        // skip_queue: the only row.
        let direct = row("txn_d", "", "r2", None);
        assert_eq!(triggers("transaction.applied", &direct), both);
        assert_eq!(triggers("transaction.inflight", &direct), both);
        // A bulk item (its parent is the batch).
        let item = row("txn_b", "bulk_1", "r3", None);
        assert_eq!(triggers("transaction.applied", &item), both);
        // A hold's commit and void (cloned from a queued hold: its queued parent differs).
        let commit = row("txn_x", "txn_c", "r1_q_commit", Some("txn_q"));
        assert_eq!(triggers("transaction.applied", &commit), post_only);
        assert_eq!(triggers("transaction.void", &commit), post_only);
        // A skip_queue refund is a new transaction.
        let refund = row("txn_r", "txn_d", "txn_d_refund", None);
        assert_eq!(triggers("transaction.applied", &refund), both);
        // Not transaction outcomes.
        assert_eq!(triggers("ledger.created", "{}"), Triggers::default());
        assert_eq!(triggers("balance.monitor", "{}"), Triggers::default());
    }

    #[test]
    fn the_route_names_each_active_hook_of_the_triggered_types() {
        let directory = Arc::new(HookDirectory::default());
        let route = HooksRoute::new(directory.clone());
        assert!(!route.wants_events());
        directory.replace(vec![
            hook("hook_pre", HookType::PreTransaction, true),
            hook("hook_post", HookType::PostTransaction, true),
            hook("hook_off", HookType::PostTransaction, false),
        ]);
        assert!(route.wants_events());
        let mut event = NewEvent::of("transaction.applied", "txn_d", row("txn_d", "", "r", None));
        let mut sinks = Vec::new();
        route.sinks(&event, &mut sinks);
        assert_eq!(sinks, ["hook:hook_pre", "hook:hook_post"]);
        event.name = "transaction.queued";
        sinks.clear();
        route.sinks(&event, &mut sinks);
        assert_eq!(sinks, ["hook:hook_pre"]);
        event.name = "identity.created";
        sinks.clear();
        route.sinks(&event, &mut sinks);
        assert!(sinks.is_empty());
        directory.remove("hook_pre");
        directory.remove("hook_post");
        assert!(!route.wants_events(), "only an inactive hook is left");
    }

    #[test]
    fn the_body_is_blnks_with_the_payload_as_stored() {
        let event = Event {
            id: 1,
            sink: "hook:hook_1".into(),
            name: "transaction.applied".into(),
            entity_id: "txn_1".into(),
            key_a: "bln_a".into(),
            key_b: None,
            payload: format!(r#"{{"precise_amount":{BIG}}}"#),
            attempts: 0,
        };
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(
            hook_body(&event, HookType::PostTransaction, at),
            format!(
                r#"{{"transaction_id":"txn_1","hook_type":"POST_TRANSACTION","timestamp":"2023-11-14T22:13:20Z","data":{{"precise_amount":{BIG}}}}}"#
            )
        );
    }

    #[test]
    fn an_answer_succeeds_empty_non_json_or_with_success_true() {
        assert!(judge_answer(b"").is_ok());
        assert!(judge_answer(b"  \n").is_ok());
        assert!(judge_answer(b"OK").is_ok());
        assert!(judge_answer(b"[1,2]").is_ok());
        assert!(judge_answer(br#"{"success":true}"#).is_ok());
        assert_eq!(
            judge_answer(br#"{"success":false,"message":"nope"}"#),
            Err(SinkError("the hook answered success false: nope".into()))
        );
        assert!(
            judge_answer(br#"{"ok":true}"#).is_err(),
            "Blnk reads a missing success as false"
        );
    }

    /// Fails every event of one sink, records the ids it sent.
    struct FailingSink {
        failing: &'static str,
        seen: RefCell<Vec<i64>>,
    }

    impl Sender for FailingSink {
        fn send<'a>(&'a self, event: &'a Event) -> LocalBoxFuture<'a, Result<(), SinkError>> {
            self.seen.borrow_mut().push(event.id);
            let failed = event.sink == self.failing;
            Box::pin(async move {
                if failed {
                    Err(SinkError("HTTP 500".into()))
                } else {
                    Ok(())
                }
            })
        }
    }

    fn event(id: i64, sink: &str, key: &str) -> Event {
        Event {
            id,
            sink: sink.into(),
            name: "transaction.applied".into(),
            entity_id: format!("txn_{id}"),
            key_a: key.into(),
            key_b: None,
            payload: "{}".into(),
            attempts: 0,
        }
    }

    #[actix::test]
    async fn a_failing_hook_holds_back_only_its_own_later_events() {
        let sink = HooksSink::new(
            FailingSink {
                failing: "hook:bad",
                seen: RefCell::default(),
            },
            4,
        );
        let events = [
            event(1, "hook:bad", "bln_a"),
            event(2, "hook:good", "bln_a"),
            event(3, "hook:bad", "bln_a"),
            event(4, "hook:good", "bln_a"),
        ];
        let outcomes = sink.deliver(&events).await;
        assert_eq!(
            outcomes,
            [
                Outcome::Failed(SinkError("HTTP 500".into())),
                Outcome::Delivered,
                Outcome::Skipped,
                Outcome::Delivered,
            ]
        );
        let seen: HashSet<i64> = sink
            .ordered
            .sender()
            .seen
            .borrow()
            .iter()
            .copied()
            .collect();
        assert_eq!(seen, HashSet::from([1, 2, 4]));
    }
}
