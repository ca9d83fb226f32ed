//! Graceful stop of the queue workers: a shared flag the worker loops check between reads,
//! and a count of loops still running, so the process can wait for the batches in hand to be
//! committed and acknowledged before it stops the actors.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Inner {
    requested: AtomicBool,
    running: AtomicUsize,
    stopped: Notify,
}

/// Cheap to clone; every clone sees the same request.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<Inner>);

/// Held by a running loop; dropping it marks the loop stopped.
pub struct Running(Shutdown);

impl Drop for Running {
    fn drop(&mut self) {
        self.0 .0.running.fetch_sub(1, Ordering::AcqRel);
        self.0 .0.stopped.notify_waiters();
    }
}

impl Shutdown {
    /// Asks every loop to stop taking new work.
    pub fn request(&self) {
        self.0.requested.store(true, Ordering::Release);
    }

    pub fn is_requested(&self) -> bool {
        self.0.requested.load(Ordering::Acquire)
    }

    /// Registers a running loop until the returned guard is dropped.
    pub fn running(&self) -> Running {
        self.0.running.fetch_add(1, Ordering::AcqRel);
        Running(self.clone())
    }

    /// Loops still running.
    pub fn running_count(&self) -> usize {
        self.0.running.load(Ordering::Acquire)
    }

    /// Waits until no loop runs, at most `timeout`; true if they all stopped.
    pub async fn stopped(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.0.stopped.notified();
            if self.running_count() == 0 {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // Bounded wait: a notification between the check and here is caught next round.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), notified).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stopped_waits_for_running_loops() {
        let shutdown = Shutdown::default();
        let guard = shutdown.running();
        assert!(!shutdown.stopped(Duration::from_millis(20)).await);
        shutdown.request();
        assert!(shutdown.is_requested());
        let waiter = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.stopped(Duration::from_secs(5)).await }
        });
        drop(guard);
        assert!(waiter.await.unwrap());
    }
}
