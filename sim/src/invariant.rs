//! The invariants every run is held to, by name. This list is the
//! repository's statement of what reelfleet promises; ARCHITECTURE.md
//! repeats it, and `checks.rs` and `world/lifecycle.rs` enforce it (each check
//! names the invariant it enforces). The numbers are stable: reports, JSON
//! summaries and regression notes use them.

use serde::Serialize;

/// One promise the simulator checks while a run goes (or at its end).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Invariant {
    /// A machine's or the simulator's own always-on assertion failed (a
    /// panic): the run stops there, and the seed fails with the message and
    /// the last events.
    Assertion,
    /// 1. No video is published twice: not the same channel slot, not the
    ///    same idempotency key (the publishing API itself refuses nothing).
    NoDoublePublish,
    /// 2. No video is lost: every planned video ends published, or failed
    ///    with a reason, or is still progressing; once faults heal, every
    ///    video planned before the heal ends within the liveness bound, and
    ///    the store and the API agree on what was published.
    NoLostVideo,
    /// 3. A publishing project's daily quota is never exceeded: not in the
    ///    ledger, and never charged by the API beyond what was reserved.
    QuotaNeverExceeded,
    /// 4. A channel's hard budgets (daily, per video) are never exceeded, in
    ///    the ledger or by what really ran.
    HardBudgetNeverExceeded,
    /// 5. At most one owner per channel per epoch; a write of a stale epoch
    ///    never commits.
    OneOwnerPerEpoch,
    /// 6. A GPU's memory is never over-committed.
    GpuMemoryNeverOvercommitted,
    /// 7. After a node or region failure, every channel that may move runs
    ///    again elsewhere within the recovery bound (when one is set).
    RecoveryWithinBound,
    /// 8. After the kill switch or a pause, no job of a stopped channel
    ///    starts later than the stop bound.
    KillSwitchWithinBound,
    /// 9. Cost and quota ledgers equal the sum of their videos, and what
    ///    really ran (billed by the executors) is within them.
    LedgersMatchReality,
    /// 10. Same seed, same build, same trace hash (checked by running twice).
    Determinism,
    /// 11. A failure reason is true: a video that failed because a stage's
    ///     retries ran out had that many real failures of that stage, as the
    ///     executors, GPUs and API saw them; one that failed for good had at
    ///     least one; one that failed as killed did so under a kill switch
    ///     that is on. Takeovers, jobs lost with dead nodes and restarts do
    ///     not spend a video's retry budget.
    FailureReasonsTrue,
    /// 12. A drain asked of a live node ends: it hands every channel over
    ///     and leaves, before the end of the liveness phase (unless the
    ///     node crashed first, which owes nothing).
    DrainsFinish,
    /// 13. An excluded node hosts nothing: by the end of the liveness
    ///     phase, a live node an operator excluded (and did not include
    ///     again) hosts no channel.
    ExclusionsHold,
    /// 14. A maintenance window holds: while it is in force, no node in it
    ///     is taken out of the members for a lapsed lease, whether it is
    ///     down or restarting (a drain may take it out), so its channels
    ///     wait for it instead of failing over.
    MaintenanceHolds,
}

impl Invariant {
    pub const ALL: [Invariant; 15] = [
        Invariant::Assertion,
        Invariant::NoDoublePublish,
        Invariant::NoLostVideo,
        Invariant::QuotaNeverExceeded,
        Invariant::HardBudgetNeverExceeded,
        Invariant::OneOwnerPerEpoch,
        Invariant::GpuMemoryNeverOvercommitted,
        Invariant::RecoveryWithinBound,
        Invariant::KillSwitchWithinBound,
        Invariant::LedgersMatchReality,
        Invariant::Determinism,
        Invariant::FailureReasonsTrue,
        Invariant::DrainsFinish,
        Invariant::ExclusionsHold,
        Invariant::MaintenanceHolds,
    ];

    /// The number reports use (0 for a failed assertion).
    pub fn number(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            Invariant::Assertion => "assertion",
            Invariant::NoDoublePublish => "no-double-publish",
            Invariant::NoLostVideo => "no-lost-video",
            Invariant::QuotaNeverExceeded => "quota-never-exceeded",
            Invariant::HardBudgetNeverExceeded => "hard-budget-never-exceeded",
            Invariant::OneOwnerPerEpoch => "one-owner-per-epoch",
            Invariant::GpuMemoryNeverOvercommitted => "gpu-memory-never-overcommitted",
            Invariant::RecoveryWithinBound => "recovery-within-bound",
            Invariant::KillSwitchWithinBound => "kill-switch-within-bound",
            Invariant::LedgersMatchReality => "ledgers-match-reality",
            Invariant::Determinism => "determinism",
            Invariant::FailureReasonsTrue => "failure-reasons-true",
            Invariant::DrainsFinish => "drains-finish",
            Invariant::ExclusionsHold => "exclusions-hold",
            Invariant::MaintenanceHolds => "maintenance-holds",
        }
    }
}

/// A broken invariant, with what broke it and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: Invariant,
    pub detail: String,
    /// Milliseconds since the run's start.
    pub at_ms: u64,
}

impl Violation {
    pub fn new(invariant: Invariant, detail: String, at_ms: u64) -> Violation {
        Violation {
            invariant,
            detail,
            at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_are_distinct_and_in_order() {
        for (i, inv) in Invariant::ALL.iter().enumerate() {
            assert_eq!(usize::from(inv.number()), i);
        }
        let mut names: Vec<&str> = Invariant::ALL.iter().map(|i| i.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Invariant::ALL.len());
    }
}
