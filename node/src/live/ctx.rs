//! What one node's shells share: the topology, the store, the clock, the
//! transport, the current view (placeable nodes and region dispatchers),
//! the lease, and the local actors that cross-node messages are routed to.
//!
//! Routing mirrors the simulator's `send`: a message for this node goes
//! straight to the local actor, any other over QUIC. A message for an actor
//! that is not (or no longer) here is dropped: every one of them is a
//! message its sender resends or times out on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use ractor::ActorRef;
use tokio::sync::Notify;

use actors::channel::ChannelInput;
use actors::gpu::GpuInput;
use actors::membership::MembershipInput;
use actors::protocol::JobId;
use actors::dispatch::DispatchInput;
use topology::{placement, ChannelId, GpuId, NodeId, RegionId, Topology};

use super::clock::Clock;
use super::config::{ExecutorConfig, Timing};
use super::lock;
use super::metrics::Metrics;
use super::shell::ShellMsg;
use super::supervisor::SupMsg;
use super::transport::Transport;
use super::wire::Wire;
use crate::publish::Publisher;
use crate::store::any::AnyStore;

pub type ChannelRef = ActorRef<ShellMsg<ChannelInput>>;
pub type GpuRef = ActorRef<ShellMsg<GpuInput>>;
pub type RegionRef = ActorRef<ShellMsg<DispatchInput>>;
pub type MembershipRef = ActorRef<ShellMsg<MembershipInput>>;

#[derive(Clone, Debug, Default)]
pub struct View {
    pub placeable: Vec<bool>,
    pub dispatchers: Vec<Option<NodeId>>,
}

#[derive(Default)]
pub struct Locals {
    /// Hosted channels: the epoch they run under and their actor.
    pub channels: BTreeMap<ChannelId, (u64, ChannelRef)>,
    pub gpus: BTreeMap<GpuId, GpuRef>,
    pub dispatcher: Option<RegionRef>,
    pub membership: Option<MembershipRef>,
    pub supervisor: Option<ActorRef<SupMsg>>,
}

/// Work running on this node's executors, by job: dropping the sender
/// cancels it.
pub type Running = Mutex<BTreeMap<JobId, tokio::sync::oneshot::Sender<()>>>;

pub struct NodeCtx {
    pub topo: Arc<Topology>,
    pub me: NodeId,
    pub name: String,
    pub region: RegionId,
    pub clock: Clock,
    pub store: Arc<AnyStore>,
    pub timing: Timing,
    pub executors: BTreeMap<String, ExecutorConfig>,
    pub artifacts: PathBuf,
    pub publisher: Arc<dyn Publisher>,
    pub http: reqwest::Client,
    pub net: Arc<Transport>,
    pub metrics: Arc<Metrics>,
    pub lease_valid_until_ms: AtomicU64,
    pub view: RwLock<View>,
    pub locals: Mutex<Locals>,
    /// Jobs on this node's GPUs and local (CPU, external) jobs.
    pub running: Running,
    pub stopping: AtomicBool,
    /// Set when the node should stop: drained, escalated, or asked to.
    pub stop: Notify,
    pub stop_reason: Mutex<Option<String>>,
}

impl NodeCtx {
    pub fn locals(&self) -> std::sync::MutexGuard<'_, Locals> {
        lock(&self.locals)
    }

    pub fn running(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<JobId, tokio::sync::oneshot::Sender<()>>> {
        lock(&self.running)
    }

    pub fn view(&self) -> View {
        match self.view.read() {
            Ok(v) => v.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set_view(&self, placeable: Vec<bool>) -> View {
        let dispatchers = (0..self.topo.regions.len())
            .map(|r| placement::dispatcher_of(&self.topo, RegionId(r as u16), &placeable))
            .collect();
        let v = View {
            placeable,
            dispatchers,
        };
        match self.view.write() {
            Ok(mut g) => *g = v.clone(),
            Err(p) => *p.into_inner() = v.clone(),
        }
        v
    }

    pub fn dispatcher_of(&self, region: RegionId) -> Option<NodeId> {
        self.view()
            .dispatchers
            .get(region.index())
            .copied()
            .flatten()
    }

    pub fn lease_valid_until(&self) -> u64 {
        self.lease_valid_until_ms.load(Ordering::Acquire)
    }

    /// Asks the node to stop (once); `reason` is kept for the exit message.
    pub fn request_stop(&self, reason: &str) {
        if !self.stopping.swap(true, Ordering::AcqRel) {
            *lock(&self.stop_reason) = Some(reason.to_string());
        }
        self.stop.notify_waiters();
        self.stop.notify_one();
    }

    pub fn supervisor(&self) -> Option<ActorRef<SupMsg>> {
        self.locals().supervisor.clone()
    }

    pub fn to_membership(&self, input: MembershipInput) {
        if let Some(m) = self.locals().membership.clone() {
            let _ = m.cast(ShellMsg::Input(input));
        }
    }

    /// Sends `wire` to `to`: locally or over QUIC.
    pub fn send(&self, to: NodeId, wire: Wire) {
        if to == self.me {
            self.deliver(wire);
        } else {
            let peer = &self.topo.node(to).name;
            self.net.send(peer, &wire);
        }
    }

    /// A frame for this node: hand it to the actor it is for.
    pub fn deliver(&self, wire: Wire) {
        let l = self.locals();
        match wire {
            Wire::JobStarted { id, gpu } => {
                if let Some((_, ch)) = l.channels.get(&id.channel) {
                    let _ = ch.cast(ShellMsg::Input(ChannelInput::JobStarted {
                        id,
                        gpu: Some(gpu),
                    }));
                }
            }
            Wire::JobFinished { id, outcome } => {
                if let Some((_, ch)) = l.channels.get(&id.channel) {
                    let _ = ch.cast(ShellMsg::Input(ChannelInput::JobFinished { id, outcome }));
                }
            }
            Wire::GpuSubmit { gpu, job } => {
                if let Some(g) = l.gpus.get(&gpu) {
                    let _ = g.cast(ShellMsg::Input(GpuInput::Submit(job)));
                }
            }
            Wire::GpuCancel { gpu, id } => {
                if let Some(g) = l.gpus.get(&gpu) {
                    let _ = g.cast(ShellMsg::Input(GpuInput::Cancel(id)));
                }
            }
            Wire::RegionSubmit { region, job } => {
                if region == self.region {
                    if let Some(d) = &l.dispatcher {
                        let _ = d.cast(ShellMsg::Input(DispatchInput::Submit(job)));
                    }
                }
            }
            Wire::RegionLoad { region, report } => {
                if region == self.region {
                    if let Some(d) = &l.dispatcher {
                        let _ = d.cast(ShellMsg::Input(DispatchInput::Load(report)));
                    }
                }
            }
            Wire::RegionSummary {
                to,
                region,
                best_wait_ms,
            } => {
                if to == self.region {
                    if let Some(d) = &l.dispatcher {
                        let _ = d.cast(ShellMsg::Input(DispatchInput::Summary {
                            region,
                            best_wait_ms,
                        }));
                    }
                }
            }
        }
    }

    /// The node that runs `gpu`.
    pub fn gpu_node(&self, gpu: GpuId) -> NodeId {
        self.topo.gpu(gpu).node
    }
}
