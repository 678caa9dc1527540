//! The node's clock: milliseconds since the Unix epoch (the machines plan
//! slots by calendar day), read once at start and then advanced by the
//! monotonic clock, so that it never runs backwards however the wall clock
//! is stepped. Linux's monotonic clock keeps counting while the process is
//! stopped (SIGSTOP), which is what makes a frozen node's deadlines lapse.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base_unix_ms: u64,
    start: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        let base_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            base_unix_ms,
            start: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.base_unix_ms + self.start.elapsed().as_millis() as u64
    }

    /// How long until `deadline_ms` on this clock (zero if it has passed).
    pub fn until(&self, deadline_ms: u64) -> Duration {
        Duration::from_millis(deadline_ms.saturating_sub(self.now_ms()))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
