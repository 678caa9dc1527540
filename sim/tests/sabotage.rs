//! Proof the simulator has teeth: with one safety mechanism switched off,
//! the swarm finds the violation that mechanism prevents within 500 seeds;
//! with it intact, the same seed passes.

use actors::sabotage::Sabotage;
use sim::scenarios::builtin;
use sim::swarm::{no_progress, run_swarm_until};

fn sabotaged(name: &str) -> Sabotage {
    Sabotage::by_name(name).expect("a known sabotage")
}

/// The lowest failing seed the swarm finds with `sabotage`, and its
/// violated invariant.
fn hunt(sabotage: Sabotage) -> (u64, u8) {
    let make = move |seed| {
        let mut s = builtin("swarm", seed).expect("swarm exists");
        s.machines.channel.sabotage = sabotage;
        s.machines.gpu.sabotage = sabotage;
        s
    };
    let result = run_swarm_until(1..501, 2, 1, make, no_progress());
    let first = result
        .failures
        .first()
        .unwrap_or_else(|| panic!("{sabotage:?}: no violation in {} seeds", result.runs));
    let v = first
        .violation
        .as_ref()
        .expect("a failure names its violation");
    eprintln!(
        "{sabotage:?}: seed {} -> invariant {} ({}): {}",
        first.seed, v.invariant, v.name, v.detail
    );
    (first.seed, v.invariant)
}

fn intact_passes(seed: u64) {
    let s = builtin("swarm", seed).expect("swarm exists");
    let summary = sim::run(s, seed, None);
    assert!(
        summary.ok,
        "seed {seed} fails even intact: {:?}",
        summary.violation
    );
}

#[test]
fn without_epoch_fencing_a_stale_owner_write_is_caught() {
    let (seed, invariant) = hunt(sabotaged("epoch-fencing"));
    assert_eq!(invariant, 5, "one-owner-per-epoch");
    intact_passes(seed);
}

#[test]
fn without_quota_reservation_the_ledger_falls_behind_the_api() {
    let (seed, invariant) = hunt(sabotaged("quota-reservation"));
    assert_eq!(invariant, 3, "quota-never-exceeded");
    intact_passes(seed);
}

#[test]
fn without_reconciliation_a_lost_response_publishes_twice() {
    let (seed, invariant) = hunt(sabotaged("reconciliation"));
    assert_eq!(invariant, 1, "no-double-publish");
    intact_passes(seed);
}

#[test]
fn without_vram_admission_a_gpu_is_overcommitted() {
    let (seed, invariant) = hunt(sabotaged("vram-admission"));
    assert_eq!(invariant, 6, "gpu-memory-never-overcommitted");
    intact_passes(seed);
}

/// Failovers spending a video's retry budget: with the old accounting (every
/// job started at a stage counts, lost jobs count as failures), frequent
/// takeovers fail videos as `stage-retries-exhausted` that never had that
/// many real failures; with true accounting the same seeds pass.
#[test]
fn with_old_retry_accounting_takeovers_fail_videos_for_a_false_reason() {
    let sabotage = sabotaged("true-retry-accounting");
    let make = move |seed| {
        let mut s = builtin("owner-flap", seed).expect("owner-flap exists");
        s.machines.channel.sabotage = sabotage;
        s
    };
    let result = run_swarm_until(1..21, 2, 1, make, no_progress());
    let first = result
        .failures
        .first()
        .unwrap_or_else(|| panic!("no violation in {} seeds", result.runs));
    let v = first
        .violation
        .as_ref()
        .expect("a failure names its violation");
    eprintln!("owner-flap seed {}: {} {}", first.seed, v.name, v.detail);
    assert_eq!(v.invariant, 11, "failure-reasons-true");
    let intact = sim::run(
        builtin("owner-flap", first.seed).expect("exists"),
        first.seed,
        None,
    );
    assert!(intact.ok, "{:?}", intact.violation);
}

/// The livelock guard: with lease asks unthrottled, a video whose lease is
/// too short to reserve an upload asks, is answered, wakes and asks again
/// without time moving; the run fails as an assertion naming the livelock
/// instead of hanging. (A 1 s lease renewed only every 900 ms is too short
/// for part of each cycle.) Intact, the same run passes.
#[test]
fn a_livelock_is_caught_not_waited_out() {
    let short_lease = |s: &mut sim::Scenario| {
        let m = &mut s.machines.membership;
        m.lease_ms = 1_000;
        m.renew_ms = 900;
        m.drift_margin_ms = 100;
    };
    let mut s = builtin("steady", 1).expect("steady");
    short_lease(&mut s);
    s.machines.channel.sabotage = sabotaged("lease-ask-throttle");
    let broken = sim::run(s, 1, None);
    let v = broken.violation.expect("the livelock is caught");
    assert_eq!(v.invariant, 0, "{}", v.detail);
    assert!(v.detail.contains("livelock"), "{}", v.detail);
    let mut s = builtin("steady", 1).expect("steady");
    short_lease(&mut s);
    let intact = sim::run(s, 1, None);
    assert!(intact.ok, "{:?}", intact.violation);
}

/// Runs built-in `name`, seed 1, with `sabotage` applied: it must fail,
/// and the same run intact must pass. The sabotaged run's violation.
fn caught_and_intact_passes(
    name: &str,
    sabotage: impl Fn(&mut sim::Scenario),
) -> sim::report::ViolationReport {
    let mut s = builtin(name, 1).expect("a built-in scenario");
    sabotage(&mut s);
    let broken = sim::run(s, 1, None);
    let v = broken.violation.expect("the sabotaged run fails");
    let intact = sim::run(builtin(name, 1).expect("a built-in scenario"), 1, None);
    assert!(intact.ok, "{:?}", intact.violation);
    v
}

#[test]
fn without_exclusion_an_excluded_node_keeps_its_channels() {
    let v = caught_and_intact_passes("exclude", |s| {
        s.machines.membership.sabotage = sabotaged("exclusion")
    });
    assert_eq!(v.invariant, 13, "exclusions-hold: {}", v.detail);
}

#[test]
fn without_maintenance_a_restarting_node_loses_its_channels() {
    let v = caught_and_intact_passes("maintenance", |s| {
        s.machines.membership.sabotage = sabotaged("maintenance")
    });
    assert_eq!(v.invariant, 14, "maintenance-holds: {}", v.detail);
}

/// The busy-wait guard: with a release behind an upload counted as due
/// now, a draining node's channels tick every millisecond until their
/// uploads settle; the run fails as an assertion naming the busy wait
/// (before the guard it passed, 262 M events later). Intact, it passes.
#[test]
fn a_busy_wait_is_caught_not_waited_out() {
    let v = caught_and_intact_passes("dense-drain", |s| {
        s.machines.channel.sabotage = sabotaged("release-sleep")
    });
    assert_eq!(v.invariant, 0, "{}", v.detail);
    assert!(v.detail.contains("busy wait"), "{}", v.detail);
}
