//! A simulated node's clock: true time plus an offset, running fast or slow
//! by `drift_ppm`, never going backwards (as the live node's clock never
//! does either).

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Clock {
    pub offset_ms: i64,
    pub drift_ppm: i32,
    pub anchor_ms: u64,
    last_ms: u64,
}

impl Clock {
    pub fn anchored(anchor_ms: u64) -> Clock {
        Clock {
            anchor_ms,
            ..Clock::default()
        }
    }

    /// What this clock reads at true time `true_ms`.
    pub fn local(&mut self, true_ms: u64) -> u64 {
        let elapsed = true_ms.saturating_sub(self.anchor_ms) as i128;
        let drift = elapsed * i128::from(self.drift_ppm) / 1_000_000;
        let t = (true_ms as i128 + i128::from(self.offset_ms) + drift).max(0) as u64;
        self.last_ms = self.last_ms.max(t);
        self.last_ms
    }

    /// The true time at which this clock reads `local_ms` (at least `now`).
    pub fn true_at(&self, local_ms: u64, now_ms: u64) -> u64 {
        let base = local_ms as i128 - i128::from(self.offset_ms);
        let rate = 1_000_000 + i128::from(self.drift_ppm);
        let elapsed = (base - self.anchor_ms as i128) * 1_000_000 / rate;
        let t = (self.anchor_ms as i128 + elapsed).max(0) as u64;
        t.max(now_ms + 1)
    }
}
