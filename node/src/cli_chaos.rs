//! `reelfleet chaos`: break a real fleet on this machine and audit it (see
//! `reelfleet::chaos`). Exits 1 when any invariant was violated.

use std::path::PathBuf;

use clap::Args;
use reelfleet::chaos::report::ChaosReport;
use reelfleet::chaos::ChaosConfig;

#[derive(Args)]
pub struct ChaosArgs {
    /// A chaos config (TOML: seed, duration_s, nodes, regions,
    /// channels_per_node, lease_ms, cluster, [[faults]]).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The seed the fault schedule is drawn from.
    #[arg(long)]
    seed: Option<u64>,
    /// Break this cluster config's fleet (its nodes, regions, pipelines
    /// and channels) instead of the generated one.
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// How long to break the fleet: 90s, 2m, 30m, 1h.
    #[arg(long)]
    duration: Option<String>,
    /// Where everything goes (logs, etcd data, report.json); must not
    /// exist or be empty.
    #[arg(long, default_value = "chaos-out")]
    out: PathBuf,
    /// Plant a violation right before the audit (to see the audit catch
    /// it): duplicate-publish, quota-over-limit, node-panic.
    #[arg(long, value_enum)]
    plant: Vec<reelfleet::chaos::plant::Plant>,
}

/// `90s`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration_s(s: &str) -> Result<u64, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("--duration {s:?}: a number with s, m or h (90s, 2m, 1h)"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("--duration {s:?}: the unit must be s, m or h")),
    };
    Ok(n * mult)
}

pub fn run(args: ChaosArgs) -> i32 {
    match run_inner(args) {
        Ok(report) => {
            if report.violations() == 0 {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

fn load(args: &ChaosArgs) -> Result<ChaosConfig, String> {
    let mut cfg = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let mut cfg: ChaosConfig =
                toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
            if let (Some(c), Some(dir)) = (&cfg.cluster, p.parent()) {
                cfg.cluster = Some(dir.join(c));
            }
            cfg
        }
        None => ChaosConfig::default(),
    };
    if let Some(c) = &args.cluster {
        cfg.cluster = Some(c.clone());
    }
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    if let Some(d) = &args.duration {
        cfg.duration_s = parse_duration_s(d)?;
    }
    Ok(cfg)
}

fn run_inner(args: ChaosArgs) -> Result<ChaosReport, String> {
    let cfg = load(&args)?;
    let fleet = match &cfg.cluster {
        Some(c) => format!("the fleet of {}", c.display()),
        None => format!("{} nodes in {} regions", cfg.nodes, cfg.regions),
    };
    eprintln!(
        "chaos: seed {}, {} s, {fleet}, everything under {}",
        cfg.seed,
        cfg.duration_s,
        args.out.display()
    );
    let report = reelfleet::chaos::run::run(&cfg, &args.out, &args.plant)?;
    let path = args.out.join("report.json");
    let text = serde_json::to_string_pretty(&report).map_err(|e| format!("report: {e}"))?;
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let html = args.out.join("report.html");
    let page = reelfleet::chaos::html::render(&report)?;
    std::fs::write(&html, page).map_err(|e| format!("cannot write {}: {e}", html.display()))?;
    print!("{}", summary(&report));
    println!("report: {} and {}", path.display(), html.display());
    Ok(report)
}

/// The verdict for a person: what was broken, how the fleet coped.
fn summary(r: &ChaosReport) -> String {
    let mut s = format!(
        "{} faults ({}), {} videos published, {} failed, {} ownership changes\n",
        r.faults.len(),
        r.faults_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.audit.published,
        r.audit.failed_by_reason.values().sum::<usize>(),
        r.ownership_changes
    );
    for (k, d) in &r.recovery_by_kind {
        s.push_str(&format!(
            "recovery {k}: p50 {} ms, p99 {} ms, max {} ms over {}\n",
            d.p50_ms, d.p99_ms, d.max_ms, d.count
        ));
    }
    let bad: Vec<_> = r.checks.iter().filter(|c| !c.ok).collect();
    if bad.is_empty() {
        s.push_str(&format!("all {} checks passed\n", r.checks.len()));
    } else {
        for c in &bad {
            s.push_str(&format!("VIOLATED {}: {}\n", c.invariant, c.evidence));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::parse_duration_s;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration_s("90s"), Ok(90));
        assert_eq!(parse_duration_s("2m"), Ok(120));
        assert_eq!(parse_duration_s("1h"), Ok(3600));
        assert_eq!(parse_duration_s("45"), Ok(45));
        assert!(parse_duration_s("2 weeks").is_err());
        assert!(parse_duration_s("m").is_err());
    }
}
