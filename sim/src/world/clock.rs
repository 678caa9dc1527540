//! A simulated node's clock: true time plus an offset, running fast or slow
//! by `drift_ppm`, never going backwards (as the live node's clock never
//! does either).
//!
//! Nor is it ever set back while its node runs: the live node's clock is
//! the wall clock read once at start, advanced by the monotonic clock, so
//! no later step of the wall clock moves it, and a clock held still is a
//! clock running slow, the one fault no lease survives (ARCHITECTURE.md;
//! the chaos runner never makes one either). A step back reaches a node at
//! its next start, when it reads the wall clock again (swarm seed 229851:
//! a node frozen mid-upload whose clock was set back 297 s during the
//! freeze read, at the thaw, the moment it froze; its upload's timeout had
//! not passed on that clock, so the upload completed after the new owner
//! had published the video).

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Clock {
    offset_ms: i64,
    drift_ppm: i32,
    anchor_ms: u64,
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
        let drift = mul_div(elapsed, i128::from(self.drift_ppm), 1_000_000);
        let t = (true_ms as i128 + i128::from(self.offset_ms) + drift).max(0) as u64;
        self.last_ms = self.last_ms.max(t);
        self.last_ms
    }

    /// A clock that is off from the start: set before its node boots.
    pub fn off_from_boot(&mut self, offset_ms: i64, drift_ppm: i32) {
        self.offset_ms = offset_ms;
        self.drift_ppm = drift_ppm;
    }

    /// A clock fault at true time `now_ms`: from now on the clock is off
    /// by `offset_ms` and runs fast or slow by `drift_ppm`. On a running
    /// node (`running`) an offset below what the clock reads now is not
    /// taken: it keeps its reading and runs on at the new rate. True if
    /// the clock jumped ahead.
    pub fn step(&mut self, now_ms: u64, offset_ms: i64, drift_ppm: i32, running: bool) -> bool {
        let reading = self.local(now_ms) as i64 - now_ms as i64;
        let offset_ms = if running {
            offset_ms.max(reading)
        } else {
            offset_ms
        };
        self.offset_ms = offset_ms;
        self.drift_ppm = drift_ppm;
        self.anchor_ms = now_ms;
        if running {
            assert!(self.local(now_ms) as i64 - now_ms as i64 >= reading);
        }
        offset_ms > reading
    }

    /// A new incarnation of the node reads its clock afresh: it may read
    /// less than the last incarnation did, if the clock was set back.
    pub fn restart(&mut self) {
        self.last_ms = 0;
    }

    /// The true time at which this clock reads `local_ms` (at least `now`).
    pub fn true_at(&self, local_ms: u64, now_ms: u64) -> u64 {
        let base = local_ms as i128 - i128::from(self.offset_ms);
        let rate = 1_000_000 + i128::from(self.drift_ppm);
        let elapsed = mul_div(base - self.anchor_ms as i128, 1_000_000, rate);
        let t = (self.anchor_ms as i128 + elapsed).max(0) as u64;
        t.max(now_ms + 1)
    }
}

/// `a * b / d`, truncated toward zero as 128-bit arithmetic does, in 64
/// bits whenever the operands and the product fit (elapsed times under
/// 292 years at 1 % drift): without the call to `__divti3` that every
/// delivery and tick paid.
fn mul_div(a: i128, b: i128, d: i128) -> i128 {
    let narrow = (i64::try_from(a), i64::try_from(b), i64::try_from(d));
    if let (Ok(a), Ok(b), Ok(d)) = narrow {
        if let Some(p) = a.checked_mul(b) {
            return i128::from(p / d);
        }
    }
    a * b / d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_clock_is_never_set_back_and_a_restarted_one_is() {
        let mut c = Clock::anchored(1_000_000);
        assert_eq!(c.local(1_010_000), 1_010_000);
        // Set back 300 s while running: it keeps its reading, runs on.
        assert!(!c.step(1_010_000, -300_000, 0, true));
        assert_eq!(c.local(1_010_000), 1_010_000);
        assert_eq!(c.local(1_070_000), 1_070_000);
        // Set ahead while running: it jumps.
        assert!(c.step(1_070_000, 60_000, 0, true));
        assert_eq!(c.local(1_070_000), 1_130_000);
        // Set back while the node is down: the next incarnation reads it.
        c.step(1_080_000, -300_000, 0, false);
        assert_eq!(
            c.local(1_080_000),
            1_140_000,
            "never backwards within an incarnation"
        );
        c.restart();
        assert_eq!(c.local(1_090_000), 790_000);
    }

    /// The 64-bit fast paths give what the 128-bit arithmetic gives, for
    /// drifts either way and times from the anchor to centuries past it.
    #[test]
    fn the_64_bit_paths_match_the_128_bit_arithmetic() {
        let mut rng = actors::rng::SeededRng::new(11);
        for _ in 0..100_000 {
            let anchor_ms = 1_700_000_000_000 + rng.below(1_000_000_000);
            let drift_ppm = rng.below(2_001) as i32 - 1_000;
            let offset_ms = rng.below(600_001) as i64 - 300_000;
            let ahead_ms = match rng.below(3) {
                0 => rng.below(100_000),
                1 => rng.below(10_000_000_000),
                _ => rng.below(u64::MAX / 4),
            };
            let true_ms = anchor_ms + ahead_ms;
            let mut c = Clock::anchored(anchor_ms);
            c.off_from_boot(offset_ms, drift_ppm);
            let elapsed = i128::from(true_ms - anchor_ms);
            let want = (i128::from(true_ms)
                + i128::from(offset_ms)
                + elapsed * i128::from(drift_ppm) / 1_000_000)
                .max(0) as u64;
            assert_eq!(c.local(true_ms), want, "{anchor_ms} {drift_ppm} {true_ms}");
            let local_ms = want;
            let base = i128::from(local_ms) - i128::from(offset_ms);
            let rate = 1_000_000 + i128::from(drift_ppm);
            let back = (i128::from(anchor_ms) + (base - i128::from(anchor_ms)) * 1_000_000 / rate)
                .max(0) as u64;
            assert_eq!(c.true_at(local_ms, 0), back.max(1));
        }
    }
}
