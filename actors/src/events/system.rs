//! `system.error` (Blnk 2.8: `{error, time}`): internal errors the workers hit and no caller
//! hears of (a queued transfer that cannot be recorded, a duplicate reference found after
//! the 201, a queue that refuses an entry). Bounded: at most one event per error kind per
//! [`SYSTEM_ERROR_INTERVAL_MS`] in a process; the rest are only logged (and counted as
//! suppressed in the next event's text), so a failing dependency cannot flood the webhook.

use super::outbox::{self, NewEvent};
use crate::store::Store;
use std::collections::HashMap;
use std::sync::Mutex;

/// The event's name.
pub const SYSTEM_ERROR_EVENT: &str = "system.error";

/// At most one `system.error` of one kind this often (per process).
pub const SYSTEM_ERROR_INTERVAL_MS: i64 = 60_000;

/// Per error kind: when its last event was written, and how many were suppressed since.
#[derive(Debug, Default)]
pub struct SystemErrors {
    last: Mutex<HashMap<&'static str, (i64, u64)>>,
}

impl SystemErrors {
    /// Whether an error of `kind` at `now_ms` gets an event; `Some(suppressed since the last)`
    /// when it does.
    pub fn admit(&self, kind: &'static str, now_ms: i64) -> Option<u64> {
        let mut last = self.last.lock().ok()?;
        match last.get_mut(kind) {
            Some((at, suppressed)) if now_ms.saturating_sub(*at) < SYSTEM_ERROR_INTERVAL_MS => {
                *suppressed = suppressed.saturating_add(1);
                None
            }
            Some(entry) => {
                let suppressed = entry.1;
                *entry = (now_ms, 0);
                Some(suppressed)
            }
            None => {
                last.insert(kind, (now_ms, 0));
                Some(0)
            }
        }
    }
}

/// Blnk's `data`: `{"error": "<kind>: <message>", "time": "<RFC 3339>"}`.
pub fn payload(kind: &str, message: &str, suppressed: u64) -> String {
    let mut error = format!("{kind}: {message}");
    if suppressed > 0 {
        error.push_str(&format!(" ({suppressed} more since the last report)"));
    }
    serde_json::json!({ "error": error, "time": chrono::Utc::now().to_rfc3339() }).to_string()
}

impl Store {
    /// Reports an internal error of `kind` (a short static name) as a `system.error` event,
    /// rate-limited per kind; never fails (a failed write is logged). The caller logs the
    /// error itself.
    pub async fn report_system_error(&self, kind: &'static str, message: &str) {
        let Some(events) = self.events() else {
            return;
        };
        let Some(suppressed) = events.system_errors.admit(kind, outbox::now_ms()) else {
            return;
        };
        let event = NewEvent::of(
            SYSTEM_ERROR_EVENT,
            &format!("system:{kind}"),
            payload(kind, message, suppressed),
        );
        let written = self
            .run(move |db| async move {
                outbox::insert(&db, &events, &[event]).await?;
                Ok(())
            })
            .await;
        if let Err(error) = written {
            tracing::warn!(%error, kind, "writing a system.error event failed");
        }
    }

    /// Writes one event of no change's transaction (its own statement), for every sink that
    /// wants it.
    pub async fn write_event(&self, event: NewEvent) -> Result<(), crate::LedgerError> {
        let Some(events) = self.events() else {
            return Ok(());
        };
        self.run(move |db| async move {
            outbox::insert(&db, &events, &[event]).await?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_kind_per_interval_counting_the_rest() {
        let errors = SystemErrors::default();
        assert_eq!(errors.admit("queue", 0), Some(0));
        assert_eq!(errors.admit("queue", 10), None);
        assert_eq!(errors.admit("queue", 20), None);
        assert_eq!(errors.admit("other", 20), Some(0));
        assert_eq!(errors.admit("queue", SYSTEM_ERROR_INTERVAL_MS), Some(2));
        assert_eq!(errors.admit("queue", SYSTEM_ERROR_INTERVAL_MS + 1), None);
        let text = payload("queue", "boom", 2);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["error"], "queue: boom (2 more since the last report)");
        assert!(json["time"].as_str().is_some());
    }
}
