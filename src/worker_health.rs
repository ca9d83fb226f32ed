//! The `coffer workers` health endpoints, on the monitoring port. `/health` reads the
//! outbox: 503 when its oldest pending event is older than `coffer.outbox_health_lag_ms` or
//! more events are dead than `coffer.outbox_health_dead_max` (or when the database does
//! not answer), with the backlog by sink in the body either way. `/health/live` only says
//! the process answers: it is the one for a liveness probe (restarting workers does not
//! bring a receiver back).

use crate::configuration::Settings;
use actix_web::{web, HttpResponse};
use coffer_actors::events::admin::outbox_health;
use coffer_actors::ledger::Ledger;
use std::time::Duration;

/// What `/health` needs.
#[derive(Clone)]
pub struct WorkerHealth {
    ledger: Ledger,
    lag_max_ms: u64,
    dead_max: Option<u64>,
    timeout: Duration,
}

impl WorkerHealth {
    pub fn new(ledger: Ledger, settings: &Settings) -> Self {
        Self {
            ledger,
            lag_max_ms: settings.outbox_health_lag_ms,
            dead_max: settings.outbox_health_dead_max,
            timeout: Duration::from_millis(settings.health_timeout_ms),
        }
    }
}

pub async fn health(state: web::Data<WorkerHealth>) -> HttpResponse {
    let stats = state.ledger.store().outbox_sink_stats(false);
    let stats = match tokio::time::timeout(state.timeout, stats).await {
        Ok(Ok(stats)) => stats,
        Ok(Err(error)) => {
            tracing::warn!(%error, "worker health: the outbox is unreadable");
            return down("the database did not answer");
        }
        Err(_) => return down("the database did not answer in time"),
    };
    let now = chrono::Utc::now().timestamp_millis();
    let outbox = outbox_health(&stats, now, state.lag_max_ms, state.dead_max);
    let body = serde_json::json!({
        "status": if outbox.healthy { "UP" } else { "DOWN" },
        "service": "worker",
        "outbox": outbox,
    });
    if outbox.healthy {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

fn down(why: &str) -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(serde_json::json!({
        "status": "DOWN", "service": "worker", "problems": [why],
    }))
}

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "UP", "service": "worker" }))
}
