//! What a node tells the admin RPC about itself: its GPUs, the jobs it
//! runs, the channels it hosts, and the fleet control it last applied.
//! Any node answers for the whole cluster by reading these reports from
//! the store (`x/node/<name>`), so a console reaches every node's state
//! through whichever node it is connected to.
//!
//! A report is information, never state: nothing is decided on it, and a
//! stale one only shows an old picture (each carries its time, and the
//! console shows its age). It is written every `REPORT_INTERVAL_MS` and at
//! once when the fleet's control record reaches this node's channels, so
//! that `killswitch` can tell when every node has stopped starting work.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::records::ControlRecord;
use actors::store::{Txn, Write};
use serde::{Deserialize, Serialize};

use super::clock::Clock;
use super::lock;
use super::ports::NodePorts;
use crate::store::Store;

/// Where reports live: `x/node/<name>`.
pub const REPORT_PREFIX: &[u8] = b"x/node/";
/// How often a node writes its report without a reason to write sooner.
pub const REPORT_INTERVAL_MS: u64 = 5_000;
/// Most jobs one report lists (a report is one store value).
const JOBS_MAX: usize = 500;

pub fn report_key(node: &str) -> actors::store::Key {
    let mut k = actors::store::key(REPORT_PREFIX);
    k.extend_from_slice(node.as_bytes());
    k
}

/// The fleet control record as this node last handed it to its channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlSeen {
    /// The store version of the fleet's control record.
    pub version: u64,
    pub killed: bool,
    pub paused: bool,
    /// When this node delivered it to every channel it hosts (its clock).
    pub applied_ms: u64,
}

/// The fleet control last applied here, and a wake-up for the report.
pub struct FleetControl {
    clock: Clock,
    seen: Mutex<Option<ControlSeen>>,
    pub changed: tokio::sync::Notify,
}

impl FleetControl {
    pub fn new(clock: Clock) -> FleetControl {
        FleetControl {
            clock,
            seen: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Called once the record was posted to every hosted channel: each
    /// handles it before any input that comes after, so from here on no
    /// channel of this node starts work the record forbids.
    pub fn applied(&self, record: ControlRecord, version: u64) {
        let now_ms = self.clock.now_ms();
        let mut seen = lock(&self.seen);
        if seen.is_some_and(|s| s.version >= version) {
            return;
        }
        *seen = Some(ControlSeen {
            version,
            killed: record.killed,
            paused: record.paused,
            applied_ms: now_ms,
        });
        drop(seen);
        self.changed.notify_one();
    }

    pub fn seen(&self) -> Option<ControlSeen> {
        *lock(&self.seen)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GpuReport {
    pub index: u32,
    pub model: String,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub utilization_percent: u32,
    pub temperature_c: u32,
    pub healthy: bool,
    pub reason: Option<String>,
    /// Jobs this node runs on it now.
    pub jobs_running: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobReport {
    pub channel: String,
    pub slot: u64,
    pub stage: String,
    pub attempt: u32,
    /// `gpu N` or `local`.
    pub on: String,
    pub running_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: String,
    pub region: String,
    pub at_ms: u64,
    pub pid: u32,
    pub build: String,
    pub channels_hosted: usize,
    pub gpus: Vec<GpuReport>,
    pub jobs: Vec<JobReport>,
    /// How many jobs run here (`jobs` lists at most `JOBS_MAX`).
    pub jobs_running: usize,
    pub fleet_control: Option<ControlSeen>,
}

/// This node's report, now.
pub fn report(node: &NodePorts) -> NodeReport {
    let topo = &node.topo;
    let now_ms = node.clock.now_ms();
    let running = node.jobs.running();
    let my_gpus = &topo.node(node.me).gpus;
    let on_gpu = |i: u32| {
        let id = my_gpus.get(i as usize).copied();
        running
            .iter()
            .filter(|(_, j)| j.gpu.is_some() && j.gpu == id)
            .count()
    };
    let gpus = lock(&node.metrics.gpus)
        .iter()
        .map(|g| GpuReport {
            index: g.index,
            model: g.name.clone(),
            memory_total_bytes: g.memory_total_bytes,
            memory_used_bytes: g.memory_used_bytes,
            utilization_percent: g.utilization_percent,
            temperature_c: g.temperature_c,
            healthy: g.healthy,
            reason: g.reason.clone(),
            jobs_running: on_gpu(g.index),
        })
        .collect();
    let jobs = running
        .iter()
        .take(JOBS_MAX)
        .map(|(id, j)| {
            let chan = topo.channel(id.channel);
            let stage = topo
                .pipeline(chan.pipeline)
                .stages
                .get(usize::from(id.stage))
                .map(|s| s.name.clone())
                .unwrap_or_else(|| format!("stage {}", id.stage));
            let on = match j.gpu.and_then(|g| my_gpus.iter().position(|x| *x == g)) {
                Some(i) => format!("gpu {i}"),
                None => "local".into(),
            };
            JobReport {
                channel: chan.name.clone(),
                slot: id.slot,
                stage,
                attempt: id.attempt,
                on,
                running_ms: now_ms.saturating_sub(j.started_ms),
            }
        })
        .collect();
    NodeReport {
        node: node.name.clone(),
        region: node.region().to_string(),
        at_ms: now_ms,
        pid: std::process::id(),
        build: env!("CARGO_PKG_VERSION").to_string(),
        channels_hosted: node.router.locals().channels.len(),
        gpus,
        jobs,
        jobs_running: running.len(),
        fleet_control: node.router.fleet_control.seen(),
    }
}

/// Writes this node's report every `REPORT_INTERVAL_MS`, and at once when
/// the fleet control changes here. A failed write is tried again next
/// time: the report is information, and the node goes on without it.
pub async fn report_loop(node: Arc<NodePorts>) {
    let key = report_key(&node.name);
    loop {
        let r = report(&node);
        match serde_json::to_vec(&r) {
            Ok(value) => {
                let txn = Txn {
                    checks: vec![],
                    writes: vec![Write::Put(key.clone(), value)],
                };
                if let Err(e) = node.store.store.commit(&txn).await {
                    tracing::debug!(node = %node.name, error = %e, "report not written");
                }
            }
            Err(e) => tracing::warn!(node = %node.name, error = %e, "report not encoded"),
        }
        let wait = Duration::from_millis(REPORT_INTERVAL_MS);
        let _ = tokio::time::timeout(wait, node.router.fleet_control.changed.notified()).await;
    }
}
