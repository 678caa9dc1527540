//! The deploy kit in `deploy/` holds together: its configs load, its
//! Prometheus config, rules and rule tests pass promtool, and every
//! reelfleet metric the alerts and the dashboard use is one the nodes
//! export (`live::metrics::FAMILIES`).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use reelfleet::live::config::NodeConfig;
use reelfleet::live::metrics::FAMILIES;
use reelfleet::store::url::StoreUrl;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every `reelfleet_*` name in `text`, without histogram suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("reelfleet_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(base.to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn alerts_and_dashboard_use_only_exported_metrics() {
    let exported: BTreeSet<&str> = FAMILIES.iter().map(|f| f.0).collect();
    let alerts =
        std::fs::read_to_string(deploy().join("prometheus/reelfleet-alerts.yml")).expect("rules");
    let dashboard =
        std::fs::read_to_string(deploy().join("grafana/reelfleet-fleet.json")).expect("dashboard");
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    for (what, text) in [("alert rules", &alerts), ("dashboard", &dashboard)] {
        let used = metric_names(text);
        assert!(used.len() >= 8, "{what} uses only {used:?}");
        for m in &used {
            assert!(
                exported.contains(m.as_str()),
                "{what} use {m}, which no node exports"
            );
        }
    }
    // The checker catches a metric nobody exports.
    let bad = metric_names("rate(reelfleet_videos_publishd_total[5m])");
    assert!(bad.iter().any(|m| !exported.contains(m.as_str())));
}

#[test]
fn promtool_accepts_the_config_the_rules_and_their_tests() {
    let Some(tool) = common::promtool::promtool_path() else {
        return;
    };
    let dir = deploy().join("prometheus");
    for args in [
        vec!["check", "config", "prometheus.yml"],
        vec!["check", "rules", "reelfleet-alerts.yml"],
        vec!["test", "rules", "reelfleet-alerts.test.yml"],
    ] {
        let out = Command::new(tool)
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_example_configs_load() {
    let cluster = std::fs::read_to_string(deploy().join("config/cluster.toml")).expect("cluster");
    let topo = topology::config::parse_topology(&cluster).expect("the cluster config parses");
    assert_eq!(topo.regions.len(), 3);
    let cfg = NodeConfig::load(&deploy().join("config/node-us-east-0.toml")).expect("node config");
    assert!(topo.nodes.iter().any(|n| n.name == cfg.node));
    let url: StoreUrl = cfg.store.parse().expect("store URL");
    let StoreUrl::Etcd {
        endpoints, options, ..
    } = url
    else {
        panic!("not etcd: {url:?}");
    };
    assert_eq!(endpoints.len(), 3);
    assert!(options.ca.is_some() && options.cert.is_some() && options.user.is_some());
    for stage in cfg.executors.keys() {
        assert!(
            topo.pipelines
                .iter()
                .any(|p| p.stages.iter().any(|s| &s.name == stage)),
            "[executors.{stage}] is no stage"
        );
    }
}
