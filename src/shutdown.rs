//! Graceful shutdown on SIGTERM or SIGINT, for `coffer start` and `coffer workers`.
//!
//! 1. The HTTP servers stop accepting connections and finish the requests in flight (at most
//!    `coffer.shutdown_timeout_ms`); a request's transfer is not cancelled by the stop, it
//!    runs to its commit and its answer is sent.
//! 2. The queue workers stop reading; each finishes the batch in hand: applies it, waits for
//!    the commits, acknowledges exactly the committed entries. Entries not committed are not
//!    acknowledged and are delivered again (Redis) or re-queued by the recovery sweep after a
//!    restart (embedded queue).
//! 3. The committer drains: every unit already handed to it is committed and answered.
//! 4. The actors stop, and the last spans are exported.
//!
//! A deadline that passes is logged and the process stops anyway: nothing is lost, because
//! only committed work was acknowledged. A second signal exits at once (status 1), with the
//! same guarantee.

use coffer_actors::ledger::Ledger;
use std::time::{Duration, Instant};

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C); a second one exits the process at once.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut terminate, mut interrupt) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(terminate), Ok(interrupt)) => (terminate, interrupt),
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(%error, "cannot listen for shutdown signals");
            return std::future::pending().await;
        }
    };
    let name = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down gracefully");
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::warn!("second signal: exiting without waiting");
        std::process::exit(1);
    });
}

/// Waits until every unit handed to the committer has been answered, at most `timeout`.
pub async fn drain_committer(ledger: &Ledger, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let pending = ledger.metrics().committer_pending();
        if pending <= 0 {
            return true;
        }
        if Instant::now() >= deadline {
            tracing::warn!(pending, "shutdown deadline passed with commits pending");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
