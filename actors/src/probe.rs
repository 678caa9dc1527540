//! Coverage probes, after FoundationDB's code probes: a [`probe!`] mark on
//! each rare branch of the machines, so that a swarm can say how often each
//! ran, and a test can fail when a swarm of a stated size never reaches one
//! (a branch the simulator never takes is a branch it does not prove).
//!
//! Outside the simulator a probe costs one thread-local read: counting is
//! off unless the running thread turned it on with [`start_counting`].
//! Counting is per thread, so a swarm's worker threads never share state,
//! and it draws no entropy and reads no clock, so machines stay pure.

use std::cell::RefCell;

macro_rules! probes {
    ($($variant:ident => $name:literal: $what:literal,)*) => {
        /// Every probe, by the branch it marks.
        #[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Probe {
            $(#[doc = $what] $variant,)*
        }

        impl Probe {
            pub const ALL: &'static [Probe] = &[$(Probe::$variant,)*];

            /// A short, stable name for reports.
            pub fn name(self) -> &'static str {
                match self {
                    $(Probe::$variant => $name,)*
                }
            }

            /// The branch it marks, in a sentence.
            pub fn what(self) -> &'static str {
                match self {
                    $(Probe::$variant => $what,)*
                }
            }
        }
    };
}

probes! {
    // --- channel: store replies ------------------------------------------
    CommitAppliedAfterAll => "channel.commit-applied-after-all":
        "a commit whose result was unknown had applied after all (read back)",
    CommitNotApplied => "channel.commit-not-applied":
        "a commit that conflicted or was unknown had not applied: its work was requeued",
    CommitUnavailable => "channel.commit-unavailable":
        "the store was unreachable for a commit: nothing written, retried",
    ReadBackFailed => "channel.read-back-failed":
        "reading back an unknown or conflicted commit failed and was retried",
    FencedAtLoad => "channel.fenced-at-load":
        "a channel started under an epoch that was no longer its owner's",
    FencedAtReadBack => "channel.fenced-at-read-back":
        "a refused commit turned out to be the epoch fence: the machine stopped",
    ControlSeenAtReadBack => "channel.control-seen-at-read-back":
        "a read-back brought news of a pause or kill the node had not heard",
    StartDroppedAfterStop => "channel.start-dropped-after-stop":
        "a job start that did not commit was taken back because a stop arrived",
    // --- channel: jobs --------------------------------------------------
    JobStartedLateCancelled => "channel.job-started-late-cancelled":
        "a job this machine no longer wanted reported starting, and was cancelled",
    JobLost => "channel.job-lost":
        "a job was lost without failing (no answer by its deadline, or turned away)",
    StageFailure => "channel.stage-failure":
        "a stage really failed (executor, provider, GPU fault or lease) and will be retried",
    StageRetriesExhausted => "channel.stage-retries-exhausted":
        "a stage failed as many times as its retry budget allows",
    CheapTierChosen => "channel.cheap-tier":
        "a soft budget limit switched a stage to its cheap provider",
    BudgetStop => "channel.budget-stop":
        "a hard budget (daily or per video) stopped a video",
    BreakerHeldBack => "channel.breaker-held-back":
        "an open circuit breaker held a provider call back",
    // --- channel: publishing --------------------------------------------
    QuotaWaitForReset => "channel.quota-wait-for-reset":
        "a reservation did not fit today's quota: the video waits for the reset",
    QuotaExhaustedLate => "channel.quota-exhausted-late":
        "a video that could not get quota before its grace ran out failed",
    JobHeldForLease => "channel.job-held-for-lease":
        "a job start committed while the lease held was answered after it ran out: taken back, not run",
    PublishHeldForLease => "channel.publish-held-for-lease":
        "a publish reservation was answered when the lease known here was about to run out: held, not uploaded, until the lease is known good",
    UploadTimedOut => "channel.upload-timed-out":
        "an upload was not answered within its timeout: its outcome is unknown",
    UploadRateLimited => "channel.upload-rate-limited":
        "the API answered an upload with 429",
    UploadQuotaRefused => "channel.upload-quota-refused":
        "the API refused an upload for quota although the ledger had room",
    UploadTransient => "channel.upload-transient":
        "an upload failed definitely (5xx): refunded and retried",
    LookupAfterTakeover => "channel.lookup-after-takeover":
        "a new owner found a publish intent and looks the upload up before anything else",
    LookupFoundUpload => "channel.lookup-found-upload":
        "a lookup found an upload whose answer was lost: recorded as published",
    LookupFoundAfterTakeover => "channel.lookup-found-after-takeover":
        "a lookup after a takeover found the previous owner's upload",
    LookupNotFound => "channel.lookup-not-found":
        "a lookup found nothing: the reservation is refunded and the video publishes afresh",
    LookupFailed => "channel.lookup-failed":
        "a lookup failed or went unanswered and will be asked again",
    KillWaitsForUpload => "channel.kill-waits-for-upload":
        "the kill switch met a video whose upload may be in flight: it settles first",
    ReleaseWaitsForUpload => "channel.release-waits-for-upload":
        "a release waited for an upload in flight to settle",
    // --- membership -----------------------------------------------------
    JoinRetried => "membership.join-retried":
        "joining the members record conflicted or failed and was retried",
    RenewFailed => "membership.renew-failed":
        "a lease renewal did not commit",
    WatchReset => "membership.watch-reset":
        "after a gap in refreshes every watched lease started over",
    PeerRemoved => "membership.peer-removed":
        "a peer's lease expired and this node removed it",
    MembersHinted => "membership.members-hinted":
        "a peer said the members record changed and this node refreshed at once",
    RemoveRefused => "membership.remove-refused":
        "removing an expired peer was refused (it renewed, or another node moved first)",
    DeclaredDead => "membership.declared-dead":
        "this node found itself removed while alive, dropped its channels and rejoins",
    DeclaredDeadWhileDraining => "membership.declared-dead-while-draining":
        "a draining node found itself removed and stopped there, drained",
    QuotaWaitWoken => "channel.quota-wait-woken":
        "a video asleep until the quota reset was woken by an operator's quota",
    LimitsPushed => "channel.limits-pushed":
        "an operator's budget or quota reached the channel through membership",
    LimitsChanged => "channel.limits-changed":
        "an operator's budget or quota for the channel was read (at load or after a refused write)",
    MaintenanceRead => "membership.maintenance-read":
        "an operator's maintenance window was read and started on this node's clock",
    RemovalAfterControlRead => "membership.removal-after-control-read":
        "an expired peer's removal waited for changed control records to be read",
    RemovalHeldForMaintenance => "membership.removal-held-for-maintenance":
        "an expired peer was not removed: it is inside a maintenance window",
    DrainWhileJoining => "membership.drain-while-joining":
        "a drain asked while the node was (re)joining ended at once",
    MembersStale => "membership.members-stale":
        "a drain mark or leave was refused: the members record is read again first",
    ClaimFromGoneOwner => "membership.claim-from-gone-owner":
        "a channel was claimed from an owner whose process is gone",
    ClaimAppliedAfterAll => "membership.claim-applied-after-all":
        "a claim whose commit result was unknown had applied: the channels start here",
    ClaimNotApplied => "membership.claim-not-applied":
        "a claim whose commit result was unknown had not applied",
    ClaimOwnerBusy => "membership.claim-owner-busy":
        "a wanted channel was still owned by a live member and left for later",
    ReleasesHeldAtLimit => "membership.releases-held-at-limit":
        "releases to ask stopped at the limit in flight: the rest go as those finish",
    ReleaseSlotAged => "membership.release-slot-aged":
        "a release waiting longer than its slot is held gave the slot up",
    // --- GPU ------------------------------------------------------------
    GpuDuplicateSubmit => "gpu.duplicate-submit":
        "a duplicated submit was dropped, not run twice",
    GpuLeaseExpired => "gpu.lease-expired":
        "a job ran past its lease and was killed",
    GpuQueueFull => "gpu.queue-full":
        "a submit met a full queue (or a draining GPU) and went back to its owner",
    GpuCancelRunning => "gpu.cancel-running":
        "a running job was cancelled by its owner",
    GpuQueuedJobExpired => "gpu.queued-job-expired":
        "a queued job outwaited its owner's dispatch timeout and was dropped unrun",
    // --- dispatcher -----------------------------------------------------
    DispatchSpilled => "dispatch.spilled":
        "a job was spilled to a faster region",
    DispatchDuplicate => "dispatch.duplicate-submit":
        "a duplicated submit reached the dispatcher and was dropped",
    DispatchNoGpu => "dispatch.no-gpu":
        "no GPU could take a job: it went back to its owner",
}

thread_local! {
    static COUNTS: RefCell<Option<Vec<u64>>> = const { RefCell::new(None) };
}

/// Counts one pass through `p`'s branch, if this thread counts.
pub fn hit(p: Probe) {
    COUNTS.with(|c| {
        if let Some(counts) = c.borrow_mut().as_mut() {
            counts[p as usize] += 1;
        }
    });
}

/// Turns counting on for this thread, from zero.
pub fn start_counting() {
    COUNTS.with(|c| *c.borrow_mut() = Some(vec![0; Probe::ALL.len()]));
}

/// Turns counting off for this thread and returns the counts, indexed like
/// [`Probe::ALL`] (all zero if counting was off).
pub fn stop_counting() -> Vec<u64> {
    COUNTS
        .with(|c| c.borrow_mut().take())
        .unwrap_or_else(|| vec![0; Probe::ALL.len()])
}

/// Marks a rare branch: `probe!(JobLost)`.
#[macro_export]
macro_rules! probe {
    ($p:ident) => {
        $crate::probe::hit($crate::probe::Probe::$p)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_while_on_and_per_probe() {
        hit(Probe::JobLost);
        start_counting();
        hit(Probe::JobLost);
        hit(Probe::JobLost);
        hit(Probe::GpuLeaseExpired);
        let counts = stop_counting();
        assert_eq!(counts[Probe::JobLost as usize], 2);
        assert_eq!(counts[Probe::GpuLeaseExpired as usize], 1);
        assert_eq!(counts.iter().sum::<u64>(), 3);
        hit(Probe::JobLost);
        assert_eq!(stop_counting().iter().sum::<u64>(), 0);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = Probe::ALL.iter().map(|p| p.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Probe::ALL.len());
    }
}
