//! Many seeds of one scenario over all cores. Each seed is a whole run on
//! its own thread-local world; results come back in seed order, so the
//! outcome does not depend on scheduling.

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

/// Told after each run: (runs done, runs in all). The CLI draws a
/// progress bar with it; tests pass [`no_progress`].
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

pub fn no_progress() -> Progress {
    Arc::new(|_, _| {})
}

/// Runs `make(seed)` for every seed in `seeds` on `jobs` threads.
pub fn run_swarm<F>(seeds: std::ops::Range<u64>, jobs: usize, make: F) -> SwarmResult
where
    F: Fn(u64) -> Scenario + Send + Sync + 'static,
{
    run_swarm_until(seeds, jobs, usize::MAX, make, no_progress())
}

/// What the workers share.
struct Shared<F> {
    make: F,
    next: AtomicU64,
    end: u64,
    done: AtomicU64,
    failures_max: usize,
    failures: Mutex<Vec<Summary>>,
    events: AtomicU64,
    /// Per probe: total hits, and seeds that hit it.
    probes: Mutex<(Vec<u64>, Vec<u64>)>,
    progress: Progress,
}

/// As [`run_swarm`], but stops handing out seeds once `failures_max` runs
/// have failed (the failures found are still real, in seed order), and
/// tells `progress` after each run.
pub fn run_swarm_until<F>(
    seeds: std::ops::Range<u64>,
    jobs: usize,
    failures_max: usize,
    make: F,
    progress: Progress,
) -> SwarmResult
where
    F: Fn(u64) -> Scenario + Send + Sync + 'static,
{
    let shared = Arc::new(Shared {
        make,
        next: AtomicU64::new(seeds.start),
        end: seeds.end,
        done: AtomicU64::new(0),
        failures_max,
        failures: Mutex::new(Vec::new()),
        events: AtomicU64::new(0),
        probes: Mutex::new((vec![0; Probe::ALL.len()], vec![0; Probe::ALL.len()])),
        progress,
    });
    let handles: Vec<_> = (0..jobs.max(1))
        .map(|_| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || work(&shared))
        })
        .collect();
    // A worker cannot panic (every run is caught); if one dies anyway, the
    // swarm says so as a failure rather than report fewer runs as a pass.
    let mut died = Vec::new();
    for h in handles {
        if let Err(p) = h.join() {
            let message = crate::panic_message(p.as_ref());
            died.push(Summary::panicked("(swarm worker)", u64::MAX, &message));
        }
    }
    let mut failures = locked(&shared.failures).clone();
    failures.extend(died);
    failures.sort_by_key(|s| s.seed);
    let (probe_hits, probe_seeds) = locked(&shared.probes).clone();
    SwarmResult {
        runs: shared.done.load(Ordering::SeqCst),
        failures,
        events: shared.events.load(Ordering::Relaxed),
        probe_hits,
        probe_seeds,
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// One worker: takes seeds until they run out (or enough failed).
fn work<F>(shared: &Shared<F>)
where
    F: Fn(u64) -> Scenario,
{
    let total = shared
        .end
        .saturating_sub(shared.next.load(Ordering::SeqCst));
    loop {
        if locked(&shared.failures).len() >= shared.failures_max {
            break;
        }
        let seed = shared.next.fetch_add(1, Ordering::SeqCst);
        if seed >= shared.end {
            break;
        }
        let summary = run_seed(&shared.make, seed);
        shared
            .events
            .fetch_add(summary.events_processed, Ordering::Relaxed);
        tally_probes(&mut locked(&shared.probes), &summary.probes);
        if !summary.ok {
            locked(&shared.failures).push(summary);
        }
        let n = shared.done.fetch_add(1, Ordering::SeqCst) + 1;
        (shared.progress)(n, total.max(n));
    }
}

/// One seed's run. A panic is a failing seed, never a lost one: the run
/// itself catches panics in the world; this catches the scenario's.
fn run_seed<F: Fn(u64) -> Scenario>(make: &F, seed: u64) -> Summary {
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| make(seed)));
    match built {
        Ok(scenario) => crate::run(scenario, seed, None),
        Err(p) => Summary::panicked(
            "(building the scenario)",
            seed,
            &crate::panic_message(p.as_ref()),
        ),
    }
}

fn tally_probes(tally: &mut (Vec<u64>, Vec<u64>), counts: &[u64]) {
    let (hits, seeds) = tally;
    for (i, n) in counts.iter().enumerate() {
        hits[i] += n;
        seeds[i] += u64::from(*n > 0);
    }
}
