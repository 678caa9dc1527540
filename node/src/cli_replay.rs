//! `reelfleet replay DIR`: runs a flight recording (`reelfleet node
//! --record DIR`) back through this build's machines and says, per
//! machine, "identical" or where it first decided otherwise.

use std::path::PathBuf;

use reelfleet::record::read::{node_dirs, read_node};
use reelfleet::record::replay::{replay_node, ReplayOptions, TraceOut, Verdict, PARAMS};

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// A recording folder (every node's) or one node's folder in it.
    dir: PathBuf,
    /// Only this node's recording.
    #[arg(long)]
    node: Option<String>,
    /// Only this machine: channel:NAME, gpu:gN, dispatch:REGION,
    /// membership:NODE.
    #[arg(long)]
    machine: Option<String>,
    /// Only inputs at or before this time (the node's clock, ms).
    #[arg(long, value_name = "MS")]
    until: Option<u64>,
    /// Write the replayed inputs and effects here, one line each, in the
    /// simulator's trace format.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Replay with a parameter changed (KEY=VALUE, repeatable): shows where
    /// the machines would have decided otherwise. Keys: channel.retry_base_ms,
    /// channel.retry_max_ms, channel.stage_attempts_max,
    /// channel.dispatch_timeout_ms, channel.job_grace_ms,
    /// channel.publish_timeout_ms, channel.plan_lead_ms, membership.lease_ms, membership.renew_ms,
    /// membership.monitors.
    #[arg(long, value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print only the machines that did not replay identically, and the
    /// totals.
    #[arg(long)]
    quiet: bool,
}

fn parse_set(s: &str) -> Result<(String, u64), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("--set {s}: expected KEY=VALUE"))?;
    if !PARAMS.contains(&k) {
        return Err(format!(
            "--set {k}: unknown parameter (known: {})",
            PARAMS.join(", ")
        ));
    }
    let v = v
        .parse()
        .map_err(|_| format!("--set {s}: {v:?} is not a whole number"))?;
    Ok((k.to_string(), v))
}

pub fn run(args: ReplayArgs) -> i32 {
    match run_inner(&args) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

/// `Ok(true)`: every machine replayed identically.
fn run_inner(args: &ReplayArgs) -> Result<bool, String> {
    let set = args
        .set
        .iter()
        .map(|s| parse_set(s))
        .collect::<Result<Vec<_>, _>>()?;
    let opts = ReplayOptions {
        node: args.node.clone(),
        machine: args.machine.clone(),
        until_ms: args.until,
        set,
    };
    let mut file = match &args.trace {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?,
        )),
        None => None,
    };
    let mut trace = file.as_mut().map(|f| TraceOut {
        out: f as &mut dyn std::io::Write,
    });
    let (mut identical, mut diverged, mut skipped, mut nodes) = (0usize, 0usize, 0usize, 0usize);
    for dir in node_dirs(&args.dir)? {
        let rec = read_node(&dir).map_err(|e| e.to_string())?;
        if opts.node.as_ref().is_some_and(|n| *n != rec.node) {
            continue;
        }
        nodes += 1;
        for (run, r) in &rec.runs {
            for n in &r.notes {
                println!("{} run {run}: note: {n}", rec.node);
            }
        }
        for report in replay_node(&rec, &opts, &mut trace)? {
            match &report.verdict {
                Verdict::Identical { .. } => identical += 1,
                Verdict::Diverged(_) => diverged += 1,
                Verdict::Skipped(_) => skipped += 1,
            }
            if !args.quiet || !matches!(report.verdict, Verdict::Identical { .. }) {
                println!("{report}");
            }
        }
    }
    if let Some(n) = &opts.node {
        if nodes == 0 {
            return Err(format!(
                "no recording of node {n:?} in {}",
                args.dir.display()
            ));
        }
    }
    if let Some(m) = &opts.machine {
        if identical + diverged + skipped == 0 {
            return Err(format!(
                "no machine {m:?} in the recording (names: channel:NAME, gpu:gN, dispatch:REGION, membership:NODE)"
            ));
        }
    }
    if let Some(f) = file.as_mut() {
        std::io::Write::flush(f).map_err(|e| format!("trace file: {e}"))?;
    }
    println!(
        "replayed {} machines of {nodes} nodes: {identical} identical, {diverged} diverged, {skipped} skipped",
        identical + diverged + skipped
    );
    Ok(diverged == 0)
}
