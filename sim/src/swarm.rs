//! Many seeds of one scenario over all cores. Each seed is a whole run on
//! its own thread-local world; results come back in seed order, so the
//! outcome does not depend on scheduling.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actors::probe::Probe;

use crate::scenario::Scenario;
use crate::Summary;

pub struct SwarmResult {
    pub runs: u64,
    pub failures: Vec<Summary>,
    pub events: u64,
    /// Per probe (indexed like `Probe::ALL`): total hits, and how many
    /// seeds hit it at least once.
    pub probe_hits: Vec<u64>,
    pub probe_seeds: Vec<u64>,
}

impl SwarmResult {
    /// The probes no run hit.
    pub fn probes_never_hit(&self) -> Vec<Probe> {
        Probe::ALL
            .iter()
            .zip(&self.probe_seeds)
            .filter(|(_, n)| **n == 0)
            .map(|(p, _)| *p)
            .collect()
    }

    /// One line per probe: seeds that hit it, total hits, name.
    pub fn probe_report(&self) -> String {
        let mut s = format!(
            "probes: {} of {} hit in {} runs (seeds hitting, total hits, probe)\n",
            Probe::ALL.len() - self.probes_never_hit().len(),
            Probe::ALL.len(),
            self.runs
        );
        for (i, p) in Probe::ALL.iter().enumerate() {
            let seeds = self.probe_seeds.get(i).copied().unwrap_or(0);
            let hits = self.probe_hits.get(i).copied().unwrap_or(0);
            let mark = if seeds == 0 { "  NEVER HIT" } else { "" };
            s += &format!("  {seeds:>7} {hits:>10}  {}{mark}\n", p.name());
        }
        s
    }
}

/// Runs `make(seed)` for every seed in `seeds` on `jobs` threads. A
/// progress bar goes to stderr when it is a terminal.
pub fn run_swarm<F>(seeds: std::ops::Range<u64>, jobs: usize, make: F) -> SwarmResult
where
    F: Fn(u64) -> Scenario + Send + Sync + 'static,
{
    run_swarm_until(seeds, jobs, usize::MAX, make)
}

/// As [`run_swarm`], but stops handing out seeds once `failures_max` runs
/// have failed (the failures found are still real, in seed order).
pub fn run_swarm_until<F>(
    seeds: std::ops::Range<u64>,
    jobs: usize,
    failures_max: usize,
    make: F,
) -> SwarmResult
where
    F: Fn(u64) -> Scenario + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(AtomicU64::new(seeds.start));
    let done = Arc::new(AtomicU64::new(0));
    let results: Arc<Mutex<Vec<Summary>>> = Arc::new(Mutex::new(Vec::new()));
    let events = Arc::new(AtomicU64::new(0));
    let probes: Arc<Mutex<(Vec<u64>, Vec<u64>)>> = Arc::new(Mutex::new((
        vec![0; Probe::ALL.len()],
        vec![0; Probe::ALL.len()],
    )));
    let total = seeds.end.saturating_sub(seeds.start);
    let tty = std::io::stderr().is_terminal();
    let mut handles = Vec::new();
    for _ in 0..jobs.max(1) {
        let (make, next, done, results, events, probes) = (
            Arc::clone(&make),
            Arc::clone(&next),
            Arc::clone(&done),
            Arc::clone(&results),
            Arc::clone(&events),
            Arc::clone(&probes),
        );
        let end = seeds.end;
        handles.push(std::thread::spawn(move || loop {
            let failed = results.lock().map(|r| r.len()).unwrap_or(0);
            if failed >= failures_max {
                break;
            }
            let seed = next.fetch_add(1, Ordering::SeqCst);
            if seed >= end {
                break;
            }
            // A panic is a failing seed, never a lost one: the run itself
            // catches panics in the world; this catches the scenario's.
            let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| make(seed)));
            let summary = match built {
                Ok(scenario) => crate::run(scenario, seed, None),
                Err(p) => Summary::panicked(
                    "(building the scenario)",
                    seed,
                    &crate::panic_message(p.as_ref()),
                ),
            };
            events.fetch_add(summary.events_processed, Ordering::Relaxed);
            if let Ok(mut p) = probes.lock() {
                let (hits, seeds) = &mut *p;
                for (i, n) in summary.probes.iter().enumerate() {
                    hits[i] += n;
                    seeds[i] += u64::from(*n > 0);
                }
            }
            if !summary.ok {
                if let Ok(mut r) = results.lock() {
                    r.push(summary);
                }
            }
            let n = done.fetch_add(1, Ordering::SeqCst) + 1;
            if tty {
                let width = 40u64;
                let filled = n * width / total.max(1);
                let bar: String = (0..width)
                    .map(|i| if i < filled { '#' } else { '.' })
                    .collect();
                eprint!("\r[{bar}] {n}/{total}");
            }
        }));
    }
    // A worker cannot panic (every run is caught above); if one dies
    // anyway, the swarm says so as a failure rather than report fewer runs
    // as a pass.
    let mut died = Vec::new();
    for h in handles {
        if let Err(p) = h.join() {
            died.push(Summary::panicked(
                "(swarm worker)",
                u64::MAX,
                &crate::panic_message(p.as_ref()),
            ));
        }
    }
    if tty {
        eprintln!();
    }
    let mut failures = match results.lock() {
        Ok(r) => r.clone(),
        Err(p) => p.into_inner().clone(),
    };
    failures.extend(died);
    failures.sort_by_key(|s| s.seed);
    let (probe_hits, probe_seeds) = match probes.lock() {
        Ok(p) => p.clone(),
        Err(p) => p.into_inner().clone(),
    };
    SwarmResult {
        runs: done.load(Ordering::SeqCst),
        failures,
        events: events.load(Ordering::Relaxed),
        probe_hits,
        probe_seeds,
    }
}
