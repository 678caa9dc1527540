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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use tokio::sync::Notify;

use actors::gpu::GpuInput;
use actors::membership::MembershipInput;
use actors::store::{Txn, Write};
use topology::{NodeId, Topology};

use super::clock::Clock;
use super::config::{ExecutorConfig, GpuConfig, Timing};
use super::ctx::{Locals, NodeCtx, View};
use super::metrics::{self, Metrics};
use super::shell::ShellMsg;
use super::supervisor::NodeSupervisor;
use super::transport::{OnFrame, Resolve, TlsIdentity, Transport};
use crate::gpu_probe::GpuProbe;
use crate::publish::Publisher;
use crate::store::any::AnyStore;
use crate::store::Store;

pub const ADDR_PREFIX: &[u8] = b"x/addr/";

pub fn addr_key(node: &str) -> Vec<u8> {
    let mut k = ADDR_PREFIX.to_vec();
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
}

pub struct RunningNode {
    pub ctx: Arc<NodeCtx>,
    pub quic_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    root: ActorRef<()>,
    root_join: tokio::task::JoinHandle<()>,
    telemetry: tokio::task::JoinHandle<()>,
}

impl RunningNode {
    pub async fn start(spec: NodeSpec) -> Result<RunningNode, String> {
        let me = spec
            .topo
            .nodes
            .iter()
            .position(|n| n.name == spec.name)
            .map(|i| NodeId(i as u32))
            .ok_or_else(|| {
                format!(
                    "node {:?} is not in the cluster config (nodes: {})",
                    spec.name,
                    spec.topo
                        .nodes
                        .iter()
                        .map(|n| n.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        let cell: Arc<OnceLock<Weak<NodeCtx>>> = Arc::new(OnceLock::new());
        let on_frame: OnFrame = {
            let cell = Arc::clone(&cell);
            Arc::new(move |_peer: &str, wire| {
                if let Some(ctx) = cell.get().and_then(Weak::upgrade) {
                    ctx.deliver(wire);
                }
            })
        };
        let resolve: Resolve = {
            let store = Arc::clone(&spec.store);
            Arc::new(move |peer: String| {
                let store = Arc::clone(&store);
                Box::pin(async move {
                    let got = store.get(&[addr_key(&peer)]).await.ok()?;
                    let e = got.into_iter().next().flatten()?;
                    std::str::from_utf8(&e.value).ok()?.parse().ok()
                })
            })
        };
        let net = Transport::start(spec.listen, &spec.identity, &spec.name, on_frame, resolve)?;
        let quic_addr = net.local_addr()?;
        let advertised = if quic_addr.ip().is_unspecified() {
            SocketAddr::new([127, 0, 0, 1].into(), quic_addr.port())
        } else {
            quic_addr
        };
        spec.store
            .commit(&Txn {
                checks: vec![],
                writes: vec![Write::Put(
                    addr_key(&spec.name),
                    advertised.to_string().into_bytes(),
                )],
            })
            .await
            .map_err(|e| format!("cannot publish this node's address in the store: {e:?}"))?;
        let region = spec.topo.node(me).region;
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let ctx = Arc::new(NodeCtx {
            topo: Arc::clone(&spec.topo),
            me,
            name: spec.name.clone(),
            region,
            clock: Clock::new(),
            store: spec.store,
            timing: spec.timing,
            executors: spec.executors,
            artifacts: spec.artifacts,
            publisher: spec.publisher,
            http,
            net,
            metrics: Arc::new(Metrics::default()),
            lease_valid_until_ms: AtomicU64::new(0),
            view: RwLock::new(View::default()),
            locals: Mutex::new(Locals::default()),
            running: Mutex::new(BTreeMap::new()),
            stopping: AtomicBool::new(false),
            stop: Notify::new(),
            stop_reason: Mutex::new(None),
        });
        let _ = cell.set(Arc::downgrade(&ctx));
        // A lost connection hints membership (it may watch that peer).
        let weak = Arc::downgrade(&ctx);
        ctx.net.on_unreachable(Arc::new(move |peer: &str| {
            if let Some(ctx) = weak.upgrade() {
                if let Some(i) = ctx.topo.nodes.iter().position(|n| n.name == peer) {
                    ctx.to_membership(MembershipInput::PeerUnreachable(NodeId(i as u32)));
                }
            }
        }));
        let metrics_addr = match spec.metrics {
            Some(addr) => {
                let c = Arc::clone(&ctx);
                let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(move || {
                    c.metrics
                        .render(&c.name, &c.net.stats, &c.publisher.quota_units_spent())
                });
                Some(metrics::serve(addr, render).await?)
            }
            None => None,
        };
        let telemetry = tokio::spawn(telemetry_loop(Arc::clone(&ctx), spec.gpu));
        let (root, root_join) = Actor::spawn(None, NodeSupervisor, Arc::clone(&ctx))
            .await
            .map_err(|e| format!("cannot start the supervision tree: {e}"))?;
        Ok(RunningNode {
            ctx,
            quic_addr: advertised,
            metrics_addr,
            root,
            root_join,
            telemetry,
        })
    }

    /// Resolves when the node asks to stop (drained, or escalated).
    pub async fn stop_requested(&self) -> String {
        loop {
            let notified = self.ctx.stop.notified();
            if self.ctx.stopping.load(Ordering::Acquire) {
                break;
            }
            notified.await;
        }
        super::lock(&self.ctx.stop_reason)
            .clone()
            .unwrap_or_default()
    }

    /// Hands every channel away (drain) and waits, at most `timeout`.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.ctx.to_membership(MembershipInput::Drain);
        tokio::time::timeout(timeout, self.stop_requested())
            .await
            .is_ok()
    }

    /// Stops every actor, cancels running work and closes the endpoint.
    pub async fn stop(self) {
        self.ctx.stopping.store(true, Ordering::Release);
        self.root.stop(Some("node stopping".into()));
        let _ = tokio::time::timeout(Duration::from_secs(5), self.root_join).await;
        self.telemetry.abort();
        self.ctx.running().clear();
        self.ctx.net.close();
    }
}

/// GPU telemetry: NVML when present, else the declared GPUs. Rows go to
/// metrics; a GPU that turns unhealthy (not answering, overheating) is
/// drained, so that its jobs finish and no new ones come.
async fn telemetry_loop(ctx: Arc<NodeCtx>, cfg: GpuConfig) {
    let probe = if cfg.probe {
        let p = tokio::task::spawn_blocking(GpuProbe::open).await.ok();
        p.map(|p| p.with_overheat_c(cfg.overheat_c))
    } else {
        None
    };
    match &probe {
        Some(p) => eprintln!("{}: {}", ctx.name, p.describe()),
        None => eprintln!("{}: gpus: declared in the config (probe off)", ctx.name),
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
                eprintln!("{}: {w}", ctx.name);
            }
            warned = true;
        }
        *super::lock(&ctx.metrics.gpus) = rows
            .iter()
            .map(|t| {
                (
                    format!("{}:{}", t.index, t.name),
                    t.memory_used_bytes,
                    t.memory_total_bytes,
                    t.utilization_percent,
                    t.temperature_c,
                    t.healthy,
                )
            })
            .collect();
        for t in &rows {
            let i = t.index as usize;
            if !t.healthy && i < gpus.len() && !drained[i] {
                drained[i] = true;
                eprintln!(
                    "{}: GPU {} unhealthy ({}): draining it",
                    ctx.name,
                    i,
                    t.reason.clone().unwrap_or_default()
                );
                if let Some(g) = ctx.locals().gpus.get(&gpus[i]) {
                    let _ = g.cast(ShellMsg::Input(GpuInput::Drain));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(cfg.sample_interval_ms.max(100))).await;
    }
}
