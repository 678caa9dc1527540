//! Putting one node's ports together: the router around a way out to
//! other nodes, the store, job and publish ports, and what they share. The
//! runtime hands it QUIC; a test hands it a recorder and drives the ports
//! without a runtime, a transport or a network.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use actors::node::NodeView;
use topology::{NodeId, Topology};

use super::clock::Clock;
use super::config::{ExecutorConfig, Timing};
use super::jobs::JobPort;
use super::life::Life;
use super::metrics::Metrics;
use super::ports::NodePorts;
use super::publish_port::PublishPort;
use super::router::{Outbox, Router};
use super::store_port::StorePort;
use crate::publish::Publisher;
use crate::store::any::AnyStore;

/// What a node's ports are made of.
pub struct PortsSpec {
    pub topo: Arc<Topology>,
    pub name: String,
    pub store: Arc<AnyStore>,
    pub timing: Timing,
    pub executors: BTreeMap<String, ExecutorConfig>,
    pub artifacts: PathBuf,
    pub publisher: Arc<dyn Publisher>,
    pub fault_points: super::fault_points::FaultPoints,
    /// The node's clock (the one its transport answers clock probes with).
    pub clock: Clock,
    /// The flight recorder, when the node records.
    pub recorder: Option<Arc<crate::record::Recorder>>,
}

/// The ports of node `me`, sending to other nodes through `outbox`.
pub fn build_ports(
    spec: PortsSpec,
    me: NodeId,
    outbox: Arc<dyn Outbox>,
) -> Result<Arc<NodePorts>, String> {
    let clock = spec.clock;
    let region = &spec.topo.region(spec.topo.node(me).region).name;
    let metrics = Arc::new(Metrics::new(&spec.name, region));
    let view = NodeView::new(Arc::clone(&spec.topo), me);
    let router = Arc::new(Router::new(view, outbox, clock));
    let http = reqwest::Client::builder()
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let jobs = Arc::new(JobPort::new(
        Arc::clone(&spec.topo),
        spec.name.clone(),
        clock,
        spec.artifacts,
        spec.executors,
        http,
        spec.timing.job_grace_ms,
        Arc::clone(&metrics),
    ));
    let life = Arc::new(Life::default());
    let publish = Arc::new(PublishPort {
        topo: Arc::clone(&spec.topo),
        name: spec.name.clone(),
        clock,
        publisher: spec.publisher,
        metrics: Arc::clone(&metrics),
        router: Arc::clone(&router),
        jobs: Arc::clone(&jobs),
        life: Arc::clone(&life),
        faults: spec.fault_points.clone(),
    });
    let store = Arc::new(StorePort {
        store: spec.store,
        metrics: Arc::clone(&metrics),
        topo: Arc::clone(&spec.topo),
        me,
        name: spec.name.clone(),
        channel_reads: Arc::new(tokio::sync::Semaphore::new(
            super::store_port::CHANNEL_READS_IN_FLIGHT_MAX,
        )),
        batched_reads: super::read_batch::Queue::new(),
    });
    Ok(Arc::new(NodePorts {
        topo: spec.topo,
        me,
        name: spec.name,
        router,
        store,
        jobs,
        publish,
        life,
        metrics,
        clock,
        timing: spec.timing,
        work: OnceLock::new(),
        tap: OnceLock::new(),
        recorder: spec.recorder,
    }))
}
