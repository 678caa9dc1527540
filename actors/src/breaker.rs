//! A circuit breaker for one external provider: closed (calls flow, failures
//! counted), open (calls held back until `open_until_ms`), half-open (one
//! probe call; its result closes or re-opens the breaker).

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerParams {
    /// Consecutive failures that open a closed breaker.
    pub failures_to_open: u32,
    /// First open period; doubles on each failed probe up to the max.
    pub open_ms: u64,
    pub open_ms_max: u64,
}

impl Default for BreakerParams {
    fn default() -> Self {
        BreakerParams {
            failures_to_open: 5,
            open_ms: 5_000,
            open_ms_max: 120_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        until_ms: u64,
        period_ms: u64,
    },
    HalfOpen {
        probe_in_flight: bool,
        period_ms: u64,
    },
}

#[derive(Clone, Debug)]
pub struct Breaker {
    pub state: BreakerState,
    params: BreakerParams,
}

impl Breaker {
    pub fn new(params: BreakerParams) -> Breaker {
        assert!(
            params.failures_to_open > 0,
            "a breaker opens after at least one failure"
        );
        assert!(params.open_ms > 0 && params.open_ms <= params.open_ms_max);
        Breaker {
            state: BreakerState::Closed {
                consecutive_failures: 0,
            },
            params,
        }
    }

    /// May a call start now? `Err(t)`: not before `t`. A granted half-open
    /// call is the probe.
    pub fn try_acquire(&mut self, now_ms: u64) -> Result<(), u64> {
        match self.state {
            BreakerState::Closed { .. } => Ok(()),
            BreakerState::Open {
                until_ms,
                period_ms,
            } => {
                if now_ms >= until_ms {
                    self.state = BreakerState::HalfOpen {
                        probe_in_flight: true,
                        period_ms,
                    };
                    Ok(())
                } else {
                    Err(until_ms)
                }
            }
            BreakerState::HalfOpen {
                probe_in_flight: true,
                ..
            } => Err(now_ms + self.params.open_ms.min(1_000)),
            BreakerState::HalfOpen { period_ms, .. } => {
                self.state = BreakerState::HalfOpen {
                    probe_in_flight: true,
                    period_ms,
                };
                Ok(())
            }
        }
    }

    pub fn on_success(&mut self) {
        self.state = BreakerState::Closed {
            consecutive_failures: 0,
        };
    }

    pub fn on_failure(&mut self, now_ms: u64) {
        self.state = match self.state {
            BreakerState::Closed {
                consecutive_failures,
            } => {
                let n = consecutive_failures + 1;
                if n >= self.params.failures_to_open {
                    BreakerState::Open {
                        until_ms: now_ms + self.params.open_ms,
                        period_ms: self.params.open_ms,
                    }
                } else {
                    BreakerState::Closed {
                        consecutive_failures: n,
                    }
                }
            }
            BreakerState::HalfOpen { period_ms, .. } | BreakerState::Open { period_ms, .. } => {
                assert!(
                    period_ms <= self.params.open_ms_max,
                    "an open period past its cap"
                );
                let next = (period_ms * 2).min(self.params.open_ms_max);
                BreakerState::Open {
                    until_ms: now_ms + next,
                    period_ms: next,
                }
            }
        };
    }

    /// A call that ended without telling (cancelled): frees a probe slot.
    pub fn on_abandoned(&mut self) {
        if let BreakerState::HalfOpen { period_ms, .. } = self.state {
            self.state = BreakerState::HalfOpen {
                probe_in_flight: false,
                period_ms,
            };
        }
    }
}

/// Capped exponential backoff: `base * 2^(attempt-1)`, at most `max`, plus a
/// jitter of up to half the delay drawn by the caller (`jitter_unit` in
/// `[0, 2^32)`).
pub fn backoff_ms(attempt: u32, base_ms: u64, max_ms: u64, jitter_unit: u32) -> u64 {
    let exp = attempt.saturating_sub(1).min(30);
    let delay = base_ms.saturating_mul(1u64 << exp).min(max_ms);
    delay + (((delay / 2) * u64::from(jitter_unit)) >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_and_probes_after_the_period() {
        let p = BreakerParams {
            failures_to_open: 2,
            open_ms: 100,
            open_ms_max: 400,
        };
        let mut b = Breaker::new(p);
        b.on_failure(0);
        assert_eq!(b.try_acquire(1), Ok(()));
        b.on_failure(1);
        assert_eq!(b.try_acquire(50), Err(101));
        // The period passes: exactly one probe goes.
        assert_eq!(b.try_acquire(101), Ok(()));
        assert!(b.try_acquire(102).is_err());
        // The probe fails: open again for twice as long.
        b.on_failure(110);
        assert_eq!(b.try_acquire(150), Err(310));
        assert_eq!(b.try_acquire(310), Ok(()));
        b.on_success();
        assert_eq!(b.try_acquire(311), Ok(()));
    }

    #[test]
    fn backoff_is_capped() {
        assert_eq!(backoff_ms(1, 100, 1000, 0), 100);
        assert_eq!(backoff_ms(3, 100, 1000, 0), 400);
        assert_eq!(backoff_ms(30, 100, 1000, 0), 1000);
        assert!(backoff_ms(30, 100, 1000, u32::MAX) < 1500);
    }
}
