//! reelfleet's deterministic simulator: the production machines of
//! `actors` on simulated nodes, network, store, GPUs and publishing API,
//! with faults from a scenario, checked against every invariant as it runs.
//!
//! Entry points: [`run`] for one (scenario, seed); [`swarm::run_swarm`] for
//! many seeds on all cores; [`scenarios::builtin`] and
//! [`scenario_file::load`] to get a scenario.

pub mod api;
pub mod checks;
pub mod harness;
pub mod invariant;
pub mod report;
pub mod scenario;
pub mod scenario_file;
pub mod scenarios;
pub mod swarm;
pub mod trace;
pub mod variation;
pub mod world;

pub use report::Summary;
pub use scenario::Scenario;

/// Runs one scenario from one seed to the end of its liveness phase (or
/// its first violation) and summarises it. A panic anywhere in the run (a
/// machine's assertion, the simulator's own) is a failure of this seed,
/// reported with its message and the last events, never lost.
pub fn run(scenario: Scenario, seed: u64, trace_file: Option<std::fs::File>) -> Summary {
    run_from(scenario, seed, trace_file, Vec::new())
}

/// As [`run`], from a store that already holds `initial` (a flight
/// recording's state at one moment: `reelfleet sim --from-recording`).
pub fn run_from(
    scenario: Scenario,
    seed: u64,
    trace_file: Option<std::fs::File>,
    initial: Vec<actors::store::Entry>,
) -> Summary {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let name = scenario.name.clone();
    actors::probe::start_counting();
    let built = catch_unwind(AssertUnwindSafe(|| {
        let mut w = world::World::new(scenario, seed, trace::Trace::new(trace_file));
        w.seed_state(initial);
        w
    }));
    let mut w = match built {
        Ok(w) => w,
        Err(p) => {
            actors::probe::stop_counting();
            return Summary::panicked(&name, seed, &panic_message(p.as_ref()));
        }
    };
    if let Err(p) = catch_unwind(AssertUnwindSafe(|| w.run())) {
        w.fail_with_panic(panic_message(p.as_ref()));
    }
    let mut summary = report::summarize(&w, seed);
    summary.probes = actors::probe::stop_counting();
    summary.probe_hits = actors::probe::Probe::ALL
        .iter()
        .zip(&summary.probes)
        .filter(|(_, n)| **n > 0)
        .map(|(p, n)| (p.name().to_string(), *n))
        .collect();
    summary
}

/// The text a panic carried (`panic!` with a literal or a format).
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}
