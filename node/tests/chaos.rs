//! `reelfleet chaos` for real: a 3-member etcd cluster, six `reelfleet
//! node` processes in three regions and the YouTube emulator, broken for
//! two minutes with every fault kind at least once, then audited (CI runs
//! this; its report's path is printed). The audit is shown catching what
//! it is for: a duplicate publish and a quota ledger over its limit,
//! planted behind the fleet's back, are named, and so is the duplicate a
//! freeze inside the publisher's guard window causes for real. A bad chaos
//! config names every mistake at once.
//!
//! Skips where etcd is not installed, except on CI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use reelfleet::chaos::schedule::FaultKind;

/// One chaos run at a time: each runs nine processes.
static SERIAL: Mutex<()> = Mutex::new(());

fn etcd_here() -> bool {
    if reelfleet::chaos::etcd::etcd_installed() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "etcd is not installed, and CI must run the chaos tests"
    );
    eprintln!("skipping: etcd is not installed (apt-get install etcd-server)");
    false
}

fn out_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("chaos")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn chaos(args: &[&str], out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reelfleet"))
        .arg("chaos")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run reelfleet chaos")
}

#[test]
fn a_two_minute_run_with_every_fault_kind_passes_the_audit() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !etcd_here() {
        return;
    }
    let out = out_dir("two-minutes");
    let o = chaos(&["--duration", "2m", "--seed", "7"], &out);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprintln!("chaos report: {}", out.join("report.json").display());
    eprintln!("{stdout}");
    assert!(o.status.success(), "chaos failed:\n{stdout}\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json"))
            .expect("JSON");
    // Clock and network faults need libfaketime and root with ip and nft:
    // CI has them (and must run them); elsewhere they are left out.
    let clocks = reelfleet::chaos::fleet::libfaketime().is_some();
    let net = reelfleet::chaos::net::unavailable();
    if std::env::var_os("CI").is_some() {
        assert!(clocks, "CI must have faketime installed");
    }
    // A machine may refuse namespaces even to root (a container without
    // CAP_NET_ADMIN): then the run is on loopback, and this says why.
    if let Some(why) = &net {
        eprintln!("NOTE: no network faults in this run: {why}");
    }
    let possible =
        |k: &FaultKind| (clocks || !k.needs_faketime()) && (net.is_none() || !k.needs_net());
    for k in FaultKind::ALL
        .into_iter()
        .filter(|k| k.drawn() && possible(k))
    {
        assert!(
            report["faults_by_kind"][k.name()]
                .as_u64()
                .is_some_and(|n| n >= 1),
            "{} never caused: {}",
            k.name(),
            report["faults_by_kind"]
        );
    }
    // A node restarted an hour ahead must have refused to start.
    if clocks {
        let refused = report["checks"].as_array().is_some_and(|c| {
            c.iter().any(|c| {
                c["invariant"] == "node-clock-jump: the fleet answers as it must"
                    && c["ok"] == true
                    && c["evidence"]
                        .as_str()
                        .is_some_and(|e| e.contains("refused to start (exit 3)"))
            })
        });
        assert!(refused, "no clock refusal in {}", report["checks"]);
    }
    assert!(report["audit"]["published"].as_u64().is_some_and(|n| n > 0));
    assert!(report["checks"].as_array().is_some_and(|c| c.len() > 10));
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(
        html.contains("PASS") && html.matches("<svg").count() == 5,
        "report.html"
    );
    // Self-contained: no scripts and nothing fetched (an SVG's xmlns is a
    // name, not a fetch).
    let fetches = ["src=\"http", "href=\"http", "url(http", "@import"];
    assert!(!html.contains("<script"), "report.html has a script");
    for f in fetches {
        assert!(!html.contains(f), "report.html fetches something: {f}");
    }
}

#[test]
fn planted_violations_are_named_by_the_audit() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !etcd_here() {
        return;
    }
    let out = out_dir("planted");
    let cfg = out.with_extension("toml");
    std::fs::create_dir_all(cfg.parent().expect("parent")).expect("dir");
    std::fs::write(
        &cfg,
        "duration_s = 10\nnodes = 3\nregions = 1\nfaults = []\n",
    )
    .expect("config");
    let o = chaos(
        &[
            "--config",
            cfg.to_str().expect("path"),
            "--plant",
            "duplicate-publish",
            "--plant",
            "quota-over-limit",
            "--plant",
            "node-panic",
            "--plant",
            "superseded-write",
        ],
        &out,
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("VIOLATED published at most once"),
        "{stdout}"
    );
    assert!(stdout.contains("made visible 2 times"), "{stdout}");
    assert!(
        stdout.contains("VIOLATED quota never above a bucket's limit"),
        "{stdout}"
    );
    assert!(
        stdout.contains("VIOLATED no process panicked") && stdout.contains("planted.rs"),
        "{stdout}"
    );
    assert!(
        stdout.contains("VIOLATED no write accepted from a superseded owner")
            && stdout.contains("but the owner record held"),
        "{stdout}"
    );
}

/// The window no time-based guard closes, shown for real: a node stops
/// itself (`--allow-faults`) right after its publisher's last guard said
/// yes and before the final bytes leave; held past its lease, its channel
/// moves and the new owner publishes the video; thawed, the old upload
/// goes out too. The audit must name the duplicate (README, "The window a
/// guard cannot close").
#[test]
fn a_stall_inside_the_guards_window_publishes_twice_and_the_audit_names_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !etcd_here() {
        return;
    }
    let out = out_dir("publish-stall");
    let cfg = out.with_extension("toml");
    std::fs::create_dir_all(cfg.parent().expect("parent")).expect("dir");
    std::fs::write(
        &cfg,
        "duration_s = 45\nnodes = 2\nregions = 1\n\
         [[faults]]\nkind = \"publish-stall\"\nat_s = 2\nfor_s = 30\nnode = \"n0\"\n",
    )
    .expect("config");
    let o = chaos(&["--config", cfg.to_str().expect("path")], &out);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprintln!("chaos report: {}", out.join("report.json").display());
    assert_eq!(o.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("VIOLATED published at most once")
            && stdout.contains("made visible 2 times"),
        "{stdout}"
    );
    assert!(
        stdout.contains("VIOLATED no video made visible by a superseded owner")
            && stdout.contains("by n0 at epoch"),
        "{stdout}"
    );
    let log = std::fs::read_to_string(out.join("logs").join("n0.log")).expect("n0.log");
    assert!(log.contains("fault point fired"), "{log}");
}

#[test]
fn a_bad_chaos_config_names_every_mistake_at_once() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = dir.path().join("chaos.toml");
    std::fs::write(&cfg, "nodes = 0\nlease_ms = 10\n").expect("config");
    let o = chaos(
        &["--config", cfg.to_str().expect("path")],
        &dir.path().join("out"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("nodes = 0") && err.contains("lease_ms = 10"),
        "{err}"
    );
    assert!(
        !dir.path().join("out").exists(),
        "a refused run wrote {err}"
    );
    // The schedule's mistakes come with the config's, each with its path.
    std::fs::write(
        &cfg,
        "lease_ms = 10\n\
         [[faults]]\nat_s = 5\nkind = \"crash-node\"\nnode = \"n9\"\n\
         [[faults]]\nat_s = 6\nkind = \"network\"\nloss = 10\n\
         [[faults]]\nat_s = 7\nkind = \"thaw-node\"\nnode = \"n1\"\n",
    )
    .expect("config");
    let o = chaos(
        &["--config", cfg.to_str().expect("path")],
        &dir.path().join("out"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for want in [
        "lease_ms = 10",
        "faults[0].node: unknown node \"n9\"",
        "faults[1].kind: \"network\" is a simulator fault the chaos runner cannot cause",
        "faults[2]: ends a fault on node \"n1\" that is not under way",
    ] {
        assert!(err.contains(want), "{want:?} missing from {err}");
    }
    std::fs::write(&cfg, "nodes = 3\nnodez = 4\n").expect("config");
    let o = chaos(
        &["--config", cfg.to_str().expect("path")],
        &dir.path().join("out"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nodez"), "{err}");
    let o = chaos(&["--duration", "2 weeks"], &dir.path().join("out"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--duration"), "{err}");
}

/// An operator's cluster config: two regions, three nodes, a pipeline
/// with a `voice` stage, a project of its own.
const STUDIO_CLUSTER: &str = r#"
[[regions]]
name = "east"
[[regions]]
name = "west"
[[latency]]
between = ["east", "west"]
ms = 1

[[pipelines]]
name = "explainer"
[[pipelines.stages]]
name = "script"
kind = "cpu"
duration_ms = 300
jitter_ms = 100
cost = 0.001
[[pipelines.stages]]
name = "voice"
kind = "cpu"
duration_ms = 200
[[pipelines.stages]]
name = "render"
kind = "gpu"
duration_ms = 600
jitter_ms = 200
gpu_memory_gib = 2
[[pipelines.stages]]
name = "upload"
kind = "publish"
duration_ms = 200

[[projects]]
name = "studio"
[[projects.buckets]]
name = "units"
units_per_day = 10000000
[projects.costs]
upload = { bucket = "units", units = 16 }
lookup = { bucket = "units", units = 1 }

[[channels]]
name = "east-ch"
count = 3
home_region = "east"
videos_per_day = 10000
pipeline = "explainer"
project = "studio"

[[channels]]
name = "west-ch"
count = 3
home_region = "west"
videos_per_day = 10000
pipeline = "explainer"
project = "studio"

[[nodes]]
name = "alpha"
region = "east"
[[nodes.gpus]]
model = "L4"
memory_gib = 6
cost_per_hour = 0.8
[[nodes]]
name = "beta"
region = "east"
[[nodes.gpus]]
model = "L4"
memory_gib = 6
cost_per_hour = 0.8
[[nodes]]
name = "gamma"
region = "west"
[[nodes.gpus]]
model = "L4"
memory_gib = 6
cost_per_hour = 0.8
"#;

/// An operator's own cluster config (`cluster = ...` in the chaos config):
/// its node and region names, a pipeline of its own with a stage the
/// model-server emulator does not serve (run by the synthetic executor),
/// its project; broken by a kill and a slow GPU, then audited.
#[test]
fn an_operator_s_own_cluster_config_is_broken_and_audited() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !etcd_here() {
        return;
    }
    let out = out_dir("own-cluster");
    let dir = out.with_extension("config");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("studio.toml"), STUDIO_CLUSTER).expect("cluster");
    // The schedule in the simulator's words where the fault is the
    // simulator's (events by name: crash-node ... start-node), the
    // runner's own kinds with `for_s`; faults may overlap.
    let namespaced = reelfleet::chaos::net::unavailable().is_none();
    let mut schedule = String::from(
        "duration_s = 60\ncluster = \"studio.toml\"\n\
         [[faults]]\nat_s = 5\nkind = \"crash-node\"\nnode = \"beta\"\n\
         [[faults]]\nat_s = 9\nkind = \"start-node\"\nnode = \"beta\"\n\
         [[faults]]\nat_s = 14\nkind = \"gpu-slow\"\nfor_s = 3\n\
         [[faults]]\nat_s = 20\nkind = \"pause\"\nchannel = \"west-ch-1\"\n\
         [[faults]]\nat_s = 20.5\nkind = \"api-faults\"\nerror_5xx = 200000\n\
         [[faults]]\nat_s = 26\nkind = \"resume\"\nchannel = \"west-ch-1\"\n\
         [[faults]]\nat_s = 28\nkind = \"api-faults\"\n\
         [[faults]]\nat_s = 30\nkind = \"exclude-node\"\nnode = \"alpha\"\n\
         [[faults]]\nat_s = 38\nkind = \"include-node\"\nnode = \"alpha\"\n",
    );
    if namespaced {
        schedule.push_str(
            "[[faults]]\nat_s = 41\nkind = \"one-way\"\nfrom = \"east\"\nto = \"west\"\n\
             [[faults]]\nat_s = 45\nkind = \"heal-one-way\"\nfrom = \"east\"\nto = \"west\"\n\
             [[faults]]\nat_s = 46\nkind = \"partition-region\"\nregion = \"west\"\n\
             [[faults]]\nat_s = 50\nkind = \"heal-region\"\nregion = \"west\"\n",
        );
    }
    std::fs::write(dir.join("chaos.toml"), schedule).expect("chaos config");
    let cfg = dir.join("chaos.toml");
    let o = chaos(&["--config", cfg.to_str().expect("path")], &out);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "chaos failed:\n{stdout}\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json"))
            .expect("JSON");
    assert_eq!(
        report["node_names"],
        serde_json::json!(["alpha", "beta", "gamma"]),
        "{}",
        report["node_names"]
    );
    assert_eq!(report["regions"], 2);
    let mut kinds = vec![
        "node-kill",
        "gpu-slow",
        "pause",
        "api-faults",
        "exclude-node",
    ];
    if namespaced {
        kinds.extend(["one-way-partition", "partition-region"]);
    }
    for k in kinds {
        assert_eq!(
            report["faults_by_kind"][k], 1,
            "{k}: {}",
            report["faults_by_kind"]
        );
    }
    assert!(report["audit"]["published"].as_u64().is_some_and(|n| n > 0));
    // The stage the emulator does not serve ran on the synthetic executor.
    let beta = std::fs::read_to_string(out.join("beta.toml")).expect("beta's config");
    assert!(
        beta.contains("[executors.script]") && !beta.contains("[executors.voice]"),
        "{beta}"
    );
}
