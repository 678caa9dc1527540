//! `reelfleet sim`: one run, or a swarm of seeds.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;
use sim::scenarios;

#[derive(Args, Debug)]
pub struct SimArgs {
    /// List the built-in scenarios and exit.
    #[arg(long)]
    list: bool,
    /// A built-in scenario (see --list).
    #[arg(long, default_value = "steady")]
    scenario: String,
    /// A scenario described in a TOML file (see README).
    #[arg(long, conflicts_with = "scenario")]
    scenario_file: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Write every event to this file.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Run many seeds (with --seeds) and name every failing one.
    #[arg(long)]
    swarm: bool,
    /// Seeds for --swarm, as A..B (B excluded).
    #[arg(long, default_value = "1..101")]
    seeds: String,
    /// Threads for --swarm (default: all cores; at least 1).
    #[arg(long, value_parser = threads_at_least_one)]
    jobs: Option<usize>,
    /// Start from a flight recording's state (`reelfleet node --record`):
    /// the store as the recorded nodes saw it at --at, their cluster
    /// config as the fleet; the scenario file gives the faults, the
    /// parameters (the "what if") and the bounds.
    #[arg(
        long,
        value_name = "DIR",
        requires = "scenario_file",
        requires = "at",
        conflicts_with = "swarm"
    )]
    from_recording: Option<PathBuf>,
    /// With --from-recording: the moment to start from, on the recorded
    /// nodes' clocks (Unix ms).
    #[arg(long, value_name = "MS", requires = "from_recording")]
    at: Option<u64>,
}

/// Prints to stdout; a closed pipe (`| head`) ends the output quietly
/// instead of panicking.
fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn parse_seeds(s: &str) -> Result<std::ops::Range<u64>, String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("--seeds {s:?}: expected A..B, like 1..2001"))?;
    let a: u64 = a
        .trim()
        .parse()
        .map_err(|_| format!("--seeds {s:?}: {a:?} is not a number"))?;
    let b: u64 = b
        .trim()
        .parse()
        .map_err(|_| format!("--seeds {s:?}: {b:?} is not a number"))?;
    if b <= a {
        return Err(format!("--seeds {s:?}: the end must be after the start"));
    }
    Ok(a..b)
}

/// Builds the scenario for a seed.
type MakeScenario = Box<dyn Fn(u64) -> Result<sim::Scenario, String> + Send + Sync>;

pub fn run(args: SimArgs) -> i32 {
    if args.list {
        for b in scenarios::BUILTINS {
            out(&format!("{:22} {}\n", b.name, b.description));
        }
        return 0;
    }
    // A recording's fleet replaces the file's: its faults are checked
    // against the recorded nodes, not the file's own fleet.
    if let (Some(dir), Some(at)) = (&args.from_recording, args.at) {
        return match from_recording(&args, dir, at) {
            Ok((scenario, entries)) => run_one(&args, &|_| Ok(scenario.clone()), entries),
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
        };
    }
    let make = match scenario_maker(&args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if args.swarm {
        run_many(&args, make)
    } else {
        run_one(&args, &make, Vec::new())
    }
}

/// The scenario file's scenario (the same for every seed), or the named
/// built-in one; checked here, so that a swarm never starts on a bad one.
fn scenario_maker(args: &SimArgs) -> Result<MakeScenario, String> {
    if let Some(path) = &args.scenario_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read scenario file {}: {e}", path.display()))?;
        let s = sim::scenario_file::load(&text)
            .map_err(|e| format!("scenario file {}:\n{e}", path.display()))?;
        return Ok(Box::new(move |_| Ok(s.clone())));
    }
    let name = args.scenario.clone();
    if scenarios::builtin(&name, 0).is_none() {
        return Err(format!(
            "unknown scenario {name:?}; known: {}",
            scenarios::names().collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(Box::new(move |seed| {
        scenarios::builtin(&name, seed).ok_or_else(|| "unknown scenario".to_string())
    }))
}

/// `--swarm`: runs every seed in `--seeds` and names the failing ones.
fn run_many(args: &SimArgs, make: MakeScenario) -> i32 {
    let seeds = match parse_seeds(&args.seeds) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let started = std::time::Instant::now();
    let bar = progress_bar(seeds.end - seeds.start);
    let progress: sim::swarm::Progress = {
        let bar = bar.clone();
        std::sync::Arc::new(move |done, _| bar.set_position(done))
    };
    let build = move |seed| {
        // Validated above; if a seed's scenario still cannot be built, the
        // panic makes that seed a failure the summary names.
        make(seed).unwrap_or_else(|e| panic!("the scenario for seed {seed}: {e}"))
    };
    let result = sim::swarm::run_swarm_until(seeds.clone(), jobs, usize::MAX, build, progress);
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    for f in &result.failures {
        out(&f.to_text());
    }
    out(&result.probe_report());
    out(&format!(
        "swarm {}: {} seeds {}..{}, {} failed{}; {} events in {:.1} s\n",
        args.scenario,
        result.runs,
        seeds.start,
        seeds.end,
        result.failures.len(),
        failed_seeds(&result),
        result.events,
        secs
    ));
    if result.failures.is_empty() {
        0
    } else {
        1
    }
}

/// A progress bar on a terminal (hidden otherwise: logs stay clean).
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "[{elapsed_precise}] {wide_bar} {pos}/{len} seeds ({eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// " (seeds 3, 17)" naming the failed seeds, or nothing when none failed.
fn failed_seeds(result: &sim::swarm::SwarmResult) -> String {
    if result.failures.is_empty() {
        return String::new();
    }
    let seeds: Vec<String> = result.failures.iter().map(|f| f.seed.to_string()).collect();
    format!(" (seeds {})", seeds.join(", "))
}

/// The scenario file run on a recording's fleet from its state at `at_ms`:
/// the file's `[fleet]` or `[topology]` is replaced by the recorded cluster
/// config (so that its faults name the recorded nodes), its start by
/// `at_ms`; and the store's entries at that moment.
fn from_recording(
    args: &SimArgs,
    dir: &std::path::Path,
    at_ms: u64,
) -> Result<(sim::Scenario, Vec<actors::store::Entry>), String> {
    use reelfleet::record::{read, state};
    let path = args
        .scenario_file
        .as_ref()
        .ok_or("--from-recording needs --scenario-file")?;
    let mut recs = Vec::new();
    for d in read::node_dirs(dir)? {
        recs.push(read::read_node(&d).map_err(|e| e.to_string())?);
    }
    let at = state::store_at(&recs, at_ms)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read scenario file {}: {e}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("scenario file {}: {e}", path.display()))?;
    let cluster: toml::Table = toml::from_str(&at.cluster_text)
        .map_err(|e| format!("the recording's cluster config: {e}"))?;
    table.remove("fleet");
    table.insert("topology".into(), toml::Value::Table(cluster));
    let merged = toml::to_string(&table).map_err(|e| format!("scenario file: {e}"))?;
    let mut scenario = sim::scenario_file::load(&merged).map_err(|e| {
        format!(
            "scenario file {} on the recording's fleet:\n{e}",
            path.display()
        )
    })?;
    scenario.start_utc_ms = at_ms;
    out(&format!(
        "from the recording of {} at {at_ms}: store version {}, {} keys (from {} read entries and {} commits)\n",
        at.nodes.join(", "),
        at.cut,
        at.entries.len(),
        at.reads,
        at.commits
    ));
    Ok((scenario, at.entries))
}

/// One run of `--seed`, with its summary as text or JSON.
fn run_one(
    args: &SimArgs,
    make: &dyn Fn(u64) -> Result<sim::Scenario, String>,
    initial: Vec<actors::store::Entry>,
) -> i32 {
    let scenario = match make(args.seed) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let trace = match &args.trace {
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("error: cannot create trace file {}: {e}", p.display());
                return 2;
            }
        },
        None => None,
    };
    let started = std::time::Instant::now();
    let summary = sim::run_from(scenario, args.seed, trace, initial);
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        match serde_json::to_string_pretty(&summary) {
            Ok(j) => out(&format!("{j}\n")),
            Err(e) => {
                eprintln!("error: cannot encode summary: {e}");
                return 2;
            }
        }
    } else {
        out(&summary.to_text());
        out(&format!(
            "  wall {:.2} s, {:.0} events/s\n",
            secs,
            summary.events_processed as f64 / secs.max(1e-9)
        ));
    }
    if summary.ok {
        0
    } else {
        1
    }
}

/// `--jobs` as a number of threads. 0 is refused rather than quietly run
/// as 1 (as the swarm runner would): an operator who typed it meant
/// something else.
fn threads_at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("a swarm needs at least 1 thread".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}")),
    }
}
