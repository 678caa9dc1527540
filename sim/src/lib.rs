//! reelfleet's deterministic simulator: the production machines of
//! `actors` on simulated nodes, network, store, GPUs and publishing API,
//! with faults from a scenario, checked against every invariant as it runs.
//!
//! Entry points: [`run`] for one (scenario, seed); [`swarm::run_swarm`] for
//! many seeds on all cores; [`scenarios::builtin`] and
//! [`scenario_file::load`] to get a scenario.

pub mod api;
pub mod checks;
pub mod report;
pub mod scenario;
pub mod scenario_file;
pub mod scenarios;
pub mod swarm;
pub mod trace;
pub mod world;

pub use report::Summary;
pub use scenario::Scenario;

/// Runs one scenario from one seed to the end of its liveness phase (or
/// its first violation) and summarises it.
pub fn run(scenario: Scenario, seed: u64, trace_file: Option<std::fs::File>) -> Summary {
    let mut w = world::World::new(scenario, seed, trace::Trace::new(trace_file));
    w.run();
    report::summarize(&w, seed)
}
