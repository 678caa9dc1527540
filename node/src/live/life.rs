//! Whether the node should stop, and why: drained, escalated by its
//! supervisor, or asked to (a signal, the console). Everything that runs
//! uploads or jobs checks it; the runtime waits on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

use super::lock;

#[derive(Default)]
pub struct Life {
    stopping: AtomicBool,
    stop: Notify,
    reason: Mutex<Option<String>>,
}

impl Life {
    /// Asks the node to stop (once); `reason` is kept for the exit message.
    pub fn request_stop(&self, reason: &str) {
        if !self.stopping.swap(true, Ordering::AcqRel) {
            *lock(&self.reason) = Some(reason.to_string());
        }
        self.stop.notify_waiters();
        self.stop.notify_one();
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Marks the node stopping without a reason of its own (it is being
    /// stopped from outside).
    pub fn mark_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Resolves once a stop is requested, with its reason.
    pub async fn stop_requested(&self) -> String {
        loop {
            let notified = self.stop.notified();
            if self.is_stopping() {
                break;
            }
            notified.await;
        }
        lock(&self.reason).clone().unwrap_or_default()
    }
}
