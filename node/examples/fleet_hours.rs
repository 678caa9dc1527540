//! Runs a window of a built-in scenario's simulated time and says how long
//! it took: the tool behind BENCHMARKS.md's capacity-10m profiles, where a
//! whole day is too long to profile and its first hour (every node joining)
//! is not the steady state.
//!
//! ```sh
//! cargo build --release -p reelfleet --example fleet_hours
//! target/release/examples/fleet_hours capacity-10m 2 6       # hours 2..6
//! valgrind --tool=callgrind --collect-atstart=no \
//!     --toggle-collect='fleet_hours::measured*' \
//!     target/release/examples/fleet_hours capacity-10m 2 4
//! ```
//!
//! It lives beside the binary, not in `sim/`, because it reads the wall
//! clock. It allocates with the binary's allocator at the simulator's
//! settings (mimalloc 2, purging after a second: ARCHITECTURE "The
//! allocator"), so that its profiles weigh allocation as `reelfleet sim`
//! does.

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: reelfleet::allocator::MiMalloc = reelfleet::allocator::MiMalloc;

const HOUR_MS: u64 = 3_600_000;

fn main() -> ExitCode {
    reelfleet::allocator::tune_for_the_simulator();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: fleet_hours SCENARIO FROM_HOUR TO_HOUR [SEED]";
    let (Some(name), Some(from), Some(to)) = (
        args.first(),
        args.get(1).and_then(|s| s.parse::<u64>().ok()),
        args.get(2).and_then(|s| s.parse::<u64>().ok()),
    ) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let seed = match args.get(3).map(|s| s.parse::<u64>()) {
        None => 1,
        Some(Ok(s)) => s,
        Some(Err(_)) => {
            eprintln!("{usage}: the seed is a number");
            return ExitCode::from(2);
        }
    };
    if to <= from {
        eprintln!("{usage}: TO_HOUR must be after FROM_HOUR");
        return ExitCode::from(2);
    }
    let Some(scenario) = sim::scenarios::builtin(name, seed) else {
        eprintln!("no built-in scenario {name:?} (reelfleet sim --list)");
        return ExitCode::from(2);
    };
    let mut w = sim::world::World::new(scenario, seed, sim::trace::Trace::new(None));
    w.seed_state(Vec::new());
    if from > 0 && !w.run_until(from * HOUR_MS) {
        eprintln!("the run ended before hour {from}");
        return ExitCode::FAILURE;
    }
    let (events, published) = (w.trace.events, w.stats.published);
    let started = std::time::Instant::now();
    let ok = measured(&mut w, to * HOUR_MS);
    let wall_s = started.elapsed().as_secs_f64();
    println!(
        "{name} seed {seed}, hours {from}..{to}: {wall_s:.2} s, {} events, {} published, ok {ok}",
        w.trace.events - events,
        w.stats.published - published,
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The measured window, a function of its own so that a profiler can
/// count it alone.
#[inline(never)]
fn measured(w: &mut sim::world::World, until_ms: u64) -> bool {
    w.run_until(until_ms)
}
