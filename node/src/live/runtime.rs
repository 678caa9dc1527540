//! Starting and stopping one live node: the transport, the shared context,
//! the supervision tree, GPU telemetry and metrics. `reelfleet node` runs
//! one of these; `reelfleet up` runs six in one process.
//!
//! Peers find each other through the store: each node writes its QUIC
//! address under `x/addr/<node>` when it starts, and dials read it there.
//! The address is contact information, not state: nothing is decided on it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use ractor::{Actor, ActorRef};

use actors::gpu::GpuInput;
use actors::membership::MembershipInput;
use actors::node::Local;
use actors::store::{StoreError, Txn, Write};
use topology::{NodeId, Topology};

use super::assemble::{build_ports, PortsSpec};
use super::clock::Clock;
use super::clock_check::{self, Verdict};
use super::config::{ExecutorConfig, GpuConfig, Timing};
use super::ports::NodePorts;
use super::router::QuicOutbox;
use super::supervisor::{NodeRoot, WorkArgs};
use super::transport::{OnFrame, Resolve, TlsIdentity, Transport};
use crate::gpu_probe::GpuProbe;
use crate::publish::Publisher;
use crate::store::any::AnyStore;
use crate::store::Store;

pub const ADDR_PREFIX: &[u8] = b"x/addr/";
/// How `start`'s error begins when the node was drained through the admin
/// RPC (not a failure: `reelfleet node` exits 0 on it, so that a service
/// manager does not restart it over and over).
pub const DRAINED_PREFIX: &str = "drained: ";

pub fn addr_key(node: &str) -> actors::store::Key {
    let mut k = actors::store::key(ADDR_PREFIX);
    k.extend_from_slice(node.as_bytes());
    k
}

pub struct NodeSpec {
    pub topo: Arc<Topology>,
    pub name: String,
    pub store: Arc<AnyStore>,
    pub listen: SocketAddr,
    pub identity: TlsIdentity,
    pub timing: Timing,
    pub executors: BTreeMap<String, ExecutorConfig>,
    pub artifacts: PathBuf,
    pub publisher: Arc<dyn Publisher>,
    pub gpu: GpuConfig,
    pub metrics: Option<SocketAddr>,
    /// Per-channel ledger series while the node owns at most this many
    /// channels (`NodeConfig::metrics_channels_max`).
    pub metrics_channels_max: usize,
    /// Off except in a node started with `--allow-faults`.
    pub fault_points: super::fault_points::FaultPoints,
    /// Records every machine's inputs (`--record`, `[record]`).
    pub recorder: Option<Arc<crate::record::Recorder>>,
}

pub struct RunningNode {
    pub ctx: Arc<NodePorts>,
    pub net: Arc<Transport>,
    pub quic_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    root: ActorRef<()>,
    root_join: tokio::task::JoinHandle<()>,
    /// GPU telemetry, ledger metrics, reports, admin requests, clock
    /// checks: stopped with the node.
    loops: [tokio::task::JoinHandle<()>; 5],
}

fn node_id(topo: &Topology, name: &str) -> Result<NodeId, String> {
    topo.nodes
        .iter()
        .position(|n| n.name == name)
        .map(|i| NodeId(i as u32))
        .ok_or_else(|| {
            format!(
                "node {name:?} is not in the cluster config (nodes: {})",
                topo.nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Where a peer's QUIC address is: under `x/addr/<peer>` in the store.
fn resolver(store: &Arc<AnyStore>) -> Resolve {
    let store = Arc::clone(store);
    Arc::new(move |peer: String| {
        let store = Arc::clone(&store);
        Box::pin(async move {
            let got = store.get(&[addr_key(&peer)]).await.ok()?;
            let e = got.into_iter().next().flatten()?;
            std::str::from_utf8(&e.value).ok()?.parse().ok()
        })
    })
}

/// How long a starting node waits out a store that is unavailable (an
/// etcd cluster restarting, a member electing a leader just after a
/// restart) before its start fails.
const START_STORE_WAIT: Duration = Duration::from_secs(30);

/// Runs `op` until it does not fail as unavailable, or
/// [`START_STORE_WAIT`] has passed (each wait logged, naming `what`).
/// Other errors (a bad URL, a corrupt file) are final at once. Only for
/// steps that may run twice: opening, a read, a write of the same value
/// (a starting node's; the audit's snapshot).
pub async fn waiting_out_unavailable<T, F, Fut>(what: &str, op: F) -> Result<T, StoreError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let started = std::time::Instant::now();
    let mut wait = Duration::from_millis(250);
    loop {
        match op().await {
            Err(StoreError::Unavailable(why)) if started.elapsed() + wait < START_STORE_WAIT => {
                tracing::warn!(retry_in_ms = wait.as_millis() as u64, %why, "{what}: the store is unavailable; waiting for it");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// A node drained through the admin RPC stays out until undrained.
async fn refuse_if_drained(spec: &NodeSpec) -> Result<(), String> {
    let what = "cannot read this node's requests from the store";
    let found = waiting_out_unavailable(what, || {
        super::requests::drain_requested(&spec.store, &spec.name)
    })
    .await
    .map_err(|e| format!("{what}: {e}"))?;
    match found {
        Some(r) => Err(format!(
            "{DRAINED_PREFIX}node {:?} was drained by {} at {} (Unix ms); \
             `reelfleet ctl undrain {}` lets it run again",
            spec.name, r.by, r.at_ms, spec.name
        )),
        None => Ok(()),
    }
}

/// Writes this node's QUIC address where its peers look for it.
async fn advertise(store: &AnyStore, name: &str, quic: SocketAddr) -> Result<SocketAddr, String> {
    let advertised = if quic.ip().is_unspecified() {
        SocketAddr::new([127, 0, 0, 1].into(), quic.port())
    } else {
        quic
    };
    let txn = Txn {
        checks: vec![],
        writes: vec![Write::Put(
            addr_key(name),
            advertised.to_string().into_bytes(),
        )],
    };
    let what = "cannot publish this node's address in the store";
    waiting_out_unavailable(what, || store.commit(&txn))
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    Ok(advertised)
}

/// A node on the network: its transport, answering clock probes, its
/// address in the store; the cell its frames find its ports in.
struct Joined {
    net: Arc<Transport>,
    resolve: Resolve,
    cell: Arc<OnceLock<Weak<NodePorts>>>,
    quic_addr: SocketAddr,
}

async fn join(spec: &NodeSpec, clock: Clock) -> Result<Joined, String> {
    // Frames may arrive before the ports exist: they find them here.
    let cell: Arc<OnceLock<Weak<NodePorts>>> = Arc::new(OnceLock::new());
    let on_frame: OnFrame = {
        let cell = Arc::clone(&cell);
        Arc::new(move |_peer: &str, msg| {
            if let Some(node) = cell.get().and_then(Weak::upgrade) {
                node.router.arrive(msg);
            }
        })
    };
    let resolve = resolver(&spec.store);
    let net = Transport::start(
        spec.listen,
        &spec.identity,
        &spec.name,
        on_frame,
        Arc::clone(&resolve),
    )?;
    net.serve_clock(clock);
    let quic_addr = advertise(&spec.store, &spec.name, net.local_addr()?).await?;
    Ok(Joined {
        net,
        resolve,
        cell,
        quic_addr,
    })
}

impl RunningNode {
    pub async fn start(spec: NodeSpec) -> Result<RunningNode, String> {
        let me = node_id(&spec.topo, &spec.name)?;
        refuse_if_drained(&spec).await?;
        let clock = Clock::new();
        let Joined {
            net,
            resolve,
            cell,
            quic_addr,
        } = join(&spec, clock).await?;
        // Before a channel is claimed: a node far off its peers' calendar
        // would publish its channels' slots early (clock_check).
        let clock_max_ms = spec.timing.clock_offset_max_ms;
        let peers = peers_of(&spec.topo, &spec.name);
        check_clock_at_start(&net, &resolve, &spec.name, &peers, clock, clock_max_ms).await?;
        let (gpu, metrics_at) = (spec.gpu.clone(), spec.metrics);
        let channels_max = spec.metrics_channels_max;
        let outbox = Arc::new(QuicOutbox {
            topo: Arc::clone(&spec.topo),
            net: Arc::clone(&net),
        });
        let parts = PortsSpec {
            topo: spec.topo,
            name: spec.name,
            store: spec.store,
            timing: spec.timing,
            executors: spec.executors,
            artifacts: spec.artifacts,
            publisher: spec.publisher,
            fault_points: spec.fault_points,
            clock,
            recorder: spec.recorder,
        };
        let node = build_ports(parts, me, outbox)?;
        let _ = cell.set(Arc::downgrade(&node));
        wire_transport(&net, &node);
        let metrics_addr = serve_pages(&node, &net, metrics_at).await?;
        let loops = [
            tokio::spawn(telemetry_loop(Arc::clone(&node), gpu)),
            tokio::spawn(super::ledger_metrics::ledger_loop(
                Arc::clone(&node),
                channels_max,
            )),
            tokio::spawn(super::report::report_loop(Arc::clone(&node))),
            tokio::spawn(super::requests::request_loop(Arc::clone(&node))),
            tokio::spawn(clock_loop(
                Arc::clone(&node),
                Arc::clone(&net),
                resolve,
                peers,
                clock_max_ms,
            )),
        ];
        let args = Arc::new(WorkArgs {
            ports: Arc::clone(&node),
            clock: node.clock,
            timing: node.timing.clone(),
        });
        let (root, root_join) = Actor::spawn(None, NodeRoot, args)
            .await
            .map_err(|e| format!("cannot start the supervision tree: {e}"))?;
        Ok(RunningNode {
            ctx: node,
            net,
            quic_addr,
            metrics_addr,
            root,
            root_join,
            loops,
        })
    }

    /// Resolves when the node asks to stop (drained, or escalated).
    pub async fn stop_requested(&self) -> String {
        self.ctx.life.stop_requested().await
    }

    /// Hands every channel away (drain) and waits, at most `timeout`.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.ctx
            .router
            .deliver(Local::Membership(MembershipInput::Drain));
        tokio::time::timeout(timeout, self.stop_requested())
            .await
            .is_ok()
    }

    /// Stops every actor, cancels running work and closes the endpoint.
    pub async fn stop(self) {
        self.ctx.life.mark_stopping();
        self.root.stop(Some("node stopping".into()));
        let _ = tokio::time::timeout(Duration::from_secs(5), self.root_join).await;
        for l in &self.loops {
            l.abort();
        }
        self.ctx.jobs.cancel_all();
        self.net.close();
        // What the machines were fed up to here is written and synced.
        if let Some(r) = self.ctx.recorder.clone() {
            let _ = tokio::task::spawn_blocking(move || r.finish()).await;
        }
    }
}

/// The node's metrics collectors, and its HTTP pages on `at` (if given).
async fn serve_pages(
    node: &Arc<NodePorts>,
    net: &Arc<Transport>,
    at: Option<SocketAddr>,
) -> Result<Option<SocketAddr>, String> {
    let shown = super::pages::Shown {
        ports: Arc::clone(node),
        net: Arc::clone(net),
    };
    super::pages::register_collectors(&shown);
    match at {
        Some(addr) => Ok(Some(
            crate::http::serve(addr, super::pages::pages(vec![shown])).await?,
        )),
        None => Ok(None),
    }
}

/// Every node of the fleet but `me`.
fn peers_of(topo: &Topology, me: &str) -> Vec<String> {
    topo.nodes
        .iter()
        .filter(|n| n.name != me)
        .map(|n| n.name.clone())
        .collect()
}

/// How a node's error begins when its clock is too far from its peers'
/// (`reelfleet node` exits with status 3 on it).
pub const CLOCK_PREFIX: &str = "clock: ";

/// Each answer as a metric: this node's view of each peer's offset.
fn record_offsets(node: &str, samples: &[clock_check::Sample]) {
    for s in samples {
        metrics::gauge!(
            "reelfleet_peer_clock_offset_seconds",
            "node" => node.to_string(),
            "peer" => s.peer.clone()
        )
        .set(s.offset_ms as f64 / 1000.0);
    }
}

/// Refuses to start a node whose clock is more than `max_ms` from most of
/// the peers that answer (at least one). Where no peer answers (the first
/// node of a fleet, or one cut off), it starts unchecked and says so; the
/// running check takes over.
async fn check_clock_at_start(
    net: &Arc<Transport>,
    resolve: &Resolve,
    name: &str,
    peers: &[String],
    clock: Clock,
    max_ms: u64,
) -> Result<(), String> {
    if max_ms == 0 || peers.is_empty() {
        return Ok(());
    }
    for round in 0..clock_check::START_ROUNDS {
        let asked = clock_check::peers_for_round(peers, round);
        let samples = clock_check::round(net, resolve, asked, clock).await;
        record_offsets(name, &samples);
        match clock_check::judge(&samples, max_ms, 1) {
            v @ Verdict::Off { .. } => {
                let why = clock_check::explain(&v, &samples, max_ms);
                tracing::error!(node = %name, "refusing to start: {why}");
                return Err(format!("{CLOCK_PREFIX}{why}"));
            }
            Verdict::Agrees { answered } => {
                tracing::info!(node = %name, answered, "clock agrees with the peers'");
                return Ok(());
            }
            Verdict::Unchecked { .. } => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    tracing::warn!(
        node = %name,
        "no peer answered a clock probe: starting on this machine's clock, unchecked \
         (the running node checks again every {} s)",
        clock_check::CHECK_INTERVAL.as_secs()
    );
    Ok(())
}

/// While the node runs: when most of at least two answering peers say its
/// clock is too far off (a drifting clock), it stops as a crash would.
async fn clock_loop(
    node: Arc<NodePorts>,
    net: Arc<Transport>,
    resolve: Resolve,
    peers: Vec<String>,
    max_ms: u64,
) {
    if max_ms == 0 || peers.is_empty() {
        return;
    }
    for round in 1usize.. {
        tokio::time::sleep(clock_check::CHECK_INTERVAL).await;
        let asked = clock_check::peers_for_round(&peers, round);
        let samples = clock_check::round(&net, &resolve, asked, node.clock).await;
        record_offsets(&node.name, &samples);
        let v = clock_check::judge(&samples, max_ms, clock_check::RUNNING_QUORUM);
        if let Verdict::Off { .. } = v {
            let why = clock_check::explain(&v, &samples, max_ms);
            tracing::error!(node = %node.name, "stopping: {why}");
            node.life.request_stop(&format!("{CLOCK_PREFIX}{why}"));
            return;
        }
    }
}

/// GPU telemetry: NVML when present, else the declared GPUs. Rows go to
/// metrics; a GPU that turns unhealthy (not answering, overheating) is
/// drained, so that its jobs finish and no new ones come.
async fn telemetry_loop(ctx: Arc<NodePorts>, cfg: GpuConfig) {
    let probe = if cfg.probe {
        let p = tokio::task::spawn_blocking(GpuProbe::open).await.ok();
        p.map(|p| p.with_overheat_c(cfg.overheat_c))
    } else {
        None
    };
    match &probe {
        Some(p) => tracing::info!(node = %ctx.name, probe = %p.describe(), "GPU probe"),
        None => tracing::info!(node = %ctx.name, "GPUs as declared in the config (probe off)"),
    }
    let gpus = ctx.topo.node(ctx.me).gpus.clone();
    let mut drained = vec![false; gpus.len()];
    let mut warned = false;
    loop {
        let (rows, warnings) = match &probe {
            Some(p) => p.telemetry_for(&ctx.topo, ctx.me),
            None => (crate::gpu_probe::declared(&ctx.topo, ctx.me), Vec::new()),
        };
        if !warned {
            for w in &warnings {
                tracing::warn!(node = %ctx.name, "{w}");
            }
            warned = true;
        }
        *super::lock(&ctx.metrics.gpus) = rows.clone();
        for t in &rows {
            let i = t.index as usize;
            if !t.healthy && i < gpus.len() && !drained[i] {
                drained[i] = true;
                tracing::error!(
                    node = %ctx.name,
                    gpu = i,
                    reason = %t.reason.clone().unwrap_or_default(),
                    "GPU unhealthy: draining it"
                );
                ctx.router.deliver(Local::Gpu(gpus[i], GpuInput::Drain));
            }
        }
        tokio::time::sleep(Duration::from_millis(cfg.sample_interval_ms.max(100))).await;
    }
}

/// Hooks the node into its transport: operators' consoles reach it through
/// the same endpoint, and a lost connection hints membership (it may watch
/// that peer).
fn wire_transport(net: &Arc<Transport>, node: &Arc<NodePorts>) {
    // Operators' consoles reach the node through the same endpoint.
    let for_admin = Arc::downgrade(node);
    net.on_admin(Arc::new(move |conn| match for_admin.upgrade() {
        Some(node) => crate::admin::server::serve(conn, node),
        None => conn.close(quinn::VarInt::from_u32(3), b"node stopping"),
    }));
    // A lost connection hints membership (it may watch that peer).
    let weak = Arc::downgrade(node);
    net.on_unreachable(Arc::new(move |peer: &str| {
        if let Some(node) = weak.upgrade() {
            if let Some(i) = node.topo.nodes.iter().position(|n| n.name == peer) {
                let hint = MembershipInput::PeerUnreachable(NodeId(i as u32));
                node.router.deliver(Local::Membership(hint));
            }
        }
    }));
}
