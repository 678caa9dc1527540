//! `reelfleet chaos`: a real fleet of processes on this machine — a
//! 3-member etcd cluster, N `reelfleet node` processes across R regions
//! and the YouTube emulator as the publisher's API — broken on a schedule
//! drawn from a seed, then healed, left to settle, and audited.
//!
//! - `etcd.rs` the etcd cluster, `fleet.rs` the node processes, `net.rs`
//!   their network namespaces and the nftables rules that cut links,
//! - `schedule.rs` what breaks when (drawn from a seed), `schedule_file.rs`
//!   the same read from a config's `[[faults]]`, `faults.rs` breaking and
//!   mending it,
//! - `monitor.rs` what the runner sees while it runs (owners, publishing),
//! - `fence_audit.rs` the epoch fence checked against etcd's history,
//! - `report.rs` the verdict, `html.rs` it drawn on one page,
//! - `plant.rs` violations planted to show the audit catching them,
//! - `run.rs` the whole run in order.

pub mod etcd;
pub mod faults;
pub mod fence_audit;
pub mod fleet;
pub mod html;
pub mod monitor;
pub mod net;
pub mod plant;
pub mod report;
pub mod run;
pub mod schedule;
pub mod schedule_file;

use serde::Deserialize;

/// The chaos config (`--config chaos.toml`); every field optional.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChaosConfig {
    pub seed: u64,
    pub duration_s: u64,
    pub nodes: usize,
    pub regions: usize,
    pub channels_per_node: usize,
    pub lease_ms: u64,
    /// An operator's cluster config to break instead of the generated
    /// fleet (its nodes, regions, pipelines and channels; `nodes`,
    /// `regions` and `channels_per_node` are then not used). Relative to
    /// the chaos config's folder.
    pub cluster: Option<std::path::PathBuf>,
    /// The schedule (`[[faults]]`, read by `schedule_file` once the fleet
    /// is known); drawn from the seed when absent.
    pub faults: Option<toml::Value>,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        ChaosConfig {
            seed: 1,
            duration_s: 120,
            nodes: 6,
            regions: 3,
            channels_per_node: 3,
            lease_ms: 2_000,
            cluster: None,
            faults: None,
        }
    }
}

/// Bounds on what one machine runs.
pub const NODES_MAX: usize = 32;
pub const REGIONS_MAX: usize = 8;

impl ChaosConfig {
    /// Every mistake at once, each with its field.
    pub fn check(&self) -> Result<(), String> {
        let mut bad = Vec::new();
        if self.nodes == 0 || self.nodes > NODES_MAX {
            bad.push(format!("nodes = {}: between 1 and {NODES_MAX}", self.nodes));
        }
        if self.regions == 0 || self.regions > REGIONS_MAX || self.regions > self.nodes {
            bad.push(format!(
                "regions = {}: between 1 and {REGIONS_MAX}, and no more than nodes",
                self.regions
            ));
        }
        if self.channels_per_node == 0 || self.channels_per_node > 64 {
            bad.push(format!(
                "channels_per_node = {}: between 1 and 64",
                self.channels_per_node
            ));
        }
        if !(500..=60_000).contains(&self.lease_ms) {
            bad.push(format!(
                "lease_ms = {}: between 500 and 60000",
                self.lease_ms
            ));
        }
        if self.duration_s == 0 || self.duration_s > 24 * 3600 {
            bad.push(format!(
                "duration_s = {}: between 1 and 86400",
                self.duration_s
            ));
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join("; "))
        }
    }
}
