//! What each machine's effects do for real. Every effect goes to the node
//! layer's routing (`actors::node::route`, the code the simulator runs) and
//! the routes it returns are carried out here, in order, by [`NodePorts::carry`]:
//! messages by the [`Router`], store operations by the [`StorePort`], jobs
//! by the [`JobPort`], uploads by the [`PublishPort`], and the starting and
//! stopping of machines by the work supervisor. Ports never decide, and
//! never retry on their own: retries (and their charges) are the machine's.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};

use actors::channel::{ChannelEffect, ChannelInput, ChannelMachine};
use actors::dispatch::{DispatchEffect, DispatchInput, DispatchMachine};
use actors::gpu::{GpuEffect, GpuInput, GpuMachine};
use actors::membership::{MembershipEffect, MembershipInput, MembershipMachine};
use actors::node::{route, Observation, Route};
use actors::protocol::JobId;
use actors::records::VideoStatus;
use topology::{ChannelId, GpuId, NodeId, Topology};

use super::clock::Clock;
use super::config::Timing;
use super::jobs::JobPort;
use super::life::Life;
use super::lock;
use super::metrics::Metrics;
use super::publish_port::{PublishPort, UploadOrder};
use super::router::Router;
use super::shell::{Mailbox, Ports};
use super::store_port::{Fence, StorePort};

/// What the work supervisor is asked to do (it owns the machines' actors).
pub enum WorkMsg {
    StartChannel {
        channel: ChannelId,
        epoch: u64,
        incarnation: u64,
    },
    /// A channel machine stopped itself (released or fenced).
    ChannelStopped {
        channel: ChannelId,
        epoch: u64,
    },
    StopAllChannels,
    HostDispatcher(bool),
}

/// Watches every route a node carries out (tests, and later recordings).
pub type RouteTap = Arc<dyn Fn(NodeId, &Route) + Send + Sync>;

/// Everything a node's machines reach through their ports.
pub struct NodePorts {
    pub topo: Arc<Topology>,
    pub me: NodeId,
    pub name: String,
    pub clock: Clock,
    pub timing: Timing,
    pub router: Arc<Router>,
    pub store: Arc<StorePort>,
    pub jobs: Arc<JobPort>,
    pub publish: Arc<PublishPort>,
    pub life: Arc<Life>,
    pub metrics: Arc<Metrics>,
    /// The work supervisor, once it runs.
    pub work: OnceLock<Mailbox<WorkMsg>>,
    pub tap: OnceLock<RouteTap>,
    /// The flight recorder, when this node records (`--record`).
    pub recorder: Option<Arc<crate::record::Recorder>>,
}

/// The machine a route came from, and how to reach it.
pub enum Origin<'a> {
    Membership(&'a Mailbox<MembershipInput>),
    Channel {
        fence: Fence,
        me: &'a Mailbox<ChannelInput>,
    },
    Gpu {
        me: &'a Mailbox<GpuInput>,
        jobs: &'a Mutex<BTreeSet<JobId>>,
    },
    Dispatcher,
}

impl NodePorts {
    /// This node's region, for logs.
    pub fn region(&self) -> &str {
        &self.topo.region(self.topo.node(self.me).region).name
    }

    fn to_work(&self, msg: WorkMsg) {
        if let Some(w) = self.work.get() {
            w.post(msg);
        }
    }

    /// Carries out `routes`, in order.
    pub fn carry_all(&self, routes: Vec<Route>, from: &Origin<'_>) {
        for r in routes {
            if let Some(tap) = self.tap.get() {
                tap(self.me, &r);
            }
            self.carry(r, from);
        }
    }

    fn carry(&self, r: Route, from: &Origin<'_>) {
        let Some(r) = self.router.carry(r) else {
            return;
        };
        match (r, from) {
            (Route::Store { op_id, op }, Origin::Membership(me)) => {
                let reply = move |reply| MembershipInput::StoreReply { op_id, reply };
                self.store.spawn(op, None, (*me).clone(), reply);
            }
            (Route::Store { op_id, op }, Origin::Channel { fence, me, .. }) => {
                let reply = move |reply| ChannelInput::StoreReply { op_id, reply };
                self.store.spawn(op, Some(*fence), (*me).clone(), reply);
            }
            (Route::RunLocal(spec), Origin::Channel { me, .. }) => {
                self.jobs.run_local(spec, (*me).clone())
            }
            (Route::CancelLocal(id), _) => self.jobs.cancel(id),
            (
                Route::RunGpu {
                    gpu,
                    job,
                    lease_until_ms,
                },
                Origin::Gpu { me, jobs },
            ) => {
                lock(jobs).insert(job.id);
                self.jobs.run_gpu(gpu, job, lease_until_ms, (*me).clone());
            }
            (Route::KillGpu { id, .. }, Origin::Gpu { jobs, .. }) => {
                lock(jobs).remove(&id);
                self.jobs.cancel(id);
            }
            (r, from) => self.carry_channel_io(r, from),
        }
    }

    /// Uploads, lookups and the lifecycle routes.
    fn carry_channel_io(&self, r: Route, from: &Origin<'_>) {
        match (r, from) {
            (
                Route::Publish {
                    channel,
                    slot,
                    attempt,
                    idempotency_key,
                    timeout_ms,
                },
                Origin::Channel { fence, me, .. },
            ) => {
                let order = UploadOrder {
                    channel,
                    epoch: fence.epoch,
                    slot,
                    attempt,
                    key: idempotency_key,
                    timeout_ms,
                };
                self.publish.publish(order, (*me).clone());
            }
            (
                Route::Lookup {
                    slot,
                    idempotency_key,
                    ..
                },
                Origin::Channel { me, .. },
            ) => self.publish.lookup(slot, idempotency_key, (*me).clone()),
            (Route::ChannelStopped { channel, fenced }, Origin::Channel { fence, .. }) => {
                self.channel_stopped(channel, fence.epoch, fenced)
            }
            (r, _) => self.carry_lifecycle(r),
        }
    }

    fn channel_stopped(&self, channel: ChannelId, epoch: u64, fenced: bool) {
        if fenced {
            self.metrics.fenced();
            tracing::warn!(
                node = %self.name,
                region = %self.region(),
                channel = %self.topo.channel(channel).name,
                epoch,
                "channel fenced: another node owns it now"
            );
        }
        self.to_work(WorkMsg::ChannelStopped { channel, epoch });
    }

    fn carry_lifecycle(&self, r: Route) {
        match r {
            Route::StartChannel {
                channel,
                epoch,
                incarnation,
            } => self.to_work(WorkMsg::StartChannel {
                channel,
                epoch,
                incarnation,
            }),
            Route::DropAllChannels => {
                tracing::error!(
                    node = %self.name,
                    region = %self.region(),
                    "this node was declared dead (its lease lapsed): dropping every channel"
                );
                self.to_work(WorkMsg::StopAllChannels);
            }
            Route::HostDispatcher(host) => self.to_work(WorkMsg::HostDispatcher(host)),
            Route::Drained => self.life.request_stop("drained"),
            Route::Observe(o) => self.observe(o),
            other => tracing::error!(
                node = %self.name,
                route = ?other,
                "a route with no port here"
            ),
        }
    }

    fn observe(&self, o: Observation) {
        match o {
            Observation::VideoDone {
                channel,
                slot,
                status,
                cost_micros,
                publish_at_ms,
            } => {
                let name = &self.topo.channel(channel).name;
                let span = crate::logs::video_span(&self.name, self.region(), name, slot);
                let _in_video = span.enter();
                let cost_usd = cost_micros as f64 / 1e6;
                match status {
                    VideoStatus::Published { remote_id } => {
                        let late_ms = self.clock.now_ms().saturating_sub(publish_at_ms);
                        self.metrics.video_published(name);
                        self.metrics
                            .video_done("published", cost_usd, Some(late_ms));
                        tracing::info!(%remote_id, cost_usd, late_ms, "published");
                    }
                    VideoStatus::Failed(why) => {
                        self.metrics.video_failed(name, &reason_label(&why));
                        self.metrics.video_done("failed", cost_usd, None);
                        tracing::warn!(reason = ?why, cost_usd, "video failed");
                    }
                    VideoStatus::Active => {}
                }
            }
            Observation::NodeRemoved { node: n, silent_ms } => {
                self.metrics.takeover(silent_ms);
                let who = self
                    .topo
                    .nodes
                    .get(n.index())
                    .map(|x| x.name.clone())
                    .unwrap_or_else(|| n.to_string());
                tracing::warn!(
                    node = %self.name,
                    region = %self.region(),
                    removed = %who,
                    silent_ms,
                    "removed a peer whose lease expired; claiming its channels"
                );
            }
        }
    }
}

/// A channel machine's ports.
pub struct ChannelPorts {
    pub node: Arc<NodePorts>,
    pub fence: Fence,
}

impl Ports<ChannelMachine> for ChannelPorts {
    fn execute(&self, me: &Mailbox<ChannelInput>, effect: ChannelEffect) {
        let mut routes = Vec::new();
        let view = self.node.router.view();
        route::channel_effect(&view, self.fence.channel, effect, &mut routes);
        let from = Origin::Channel {
            fence: self.fence,
            me,
        };
        self.node.carry_all(routes, &from);
    }

    fn stopped(&self) {
        self.node.metrics.breakers_gone(self.fence.channel.0);
    }

    fn observe(&self, machine: &ChannelMachine) {
        self.node
            .metrics
            .breakers(self.fence.channel.0, machine.breakers_open());
    }
}

/// A GPU machine's ports: it remembers the jobs it started, so that they
/// stop with it.
pub struct GpuPorts {
    pub node: Arc<NodePorts>,
    pub gpu: GpuId,
    jobs: Mutex<BTreeSet<JobId>>,
}

impl GpuPorts {
    pub fn new(node: Arc<NodePorts>, gpu: GpuId) -> GpuPorts {
        GpuPorts {
            node,
            gpu,
            jobs: Mutex::new(BTreeSet::new()),
        }
    }
}

impl Ports<GpuMachine> for GpuPorts {
    fn execute(&self, me: &Mailbox<GpuInput>, effect: GpuEffect) {
        if let GpuEffect::Notify {
            notice: actors::gpu::GpuNotice::Finished { outcome, .. },
            ..
        } = &effect
        {
            self.node.metrics.stage_cost("gpu", outcome.cost_micros());
        }
        let mut routes = Vec::new();
        route::gpu_effect(&self.node.router.view(), self.gpu, effect, &mut routes);
        let from = Origin::Gpu {
            me,
            jobs: &self.jobs,
        };
        self.node.carry_all(routes, &from);
    }

    /// A failed or stopped GPU actor takes its jobs with it: their owners
    /// time out and resubmit, as after a GPU fault.
    fn stopped(&self) {
        let ids: Vec<JobId> = lock(&self.jobs).iter().copied().collect();
        for id in ids {
            self.node.jobs.cancel(id);
        }
        self.node.metrics.gpu_queue(self.gpu.0, 0);
    }

    fn observe(&self, machine: &GpuMachine) {
        self.node
            .metrics
            .gpu_queue(self.gpu.0, machine.queued_jobs() as u64);
    }
}

/// The region dispatcher's ports.
pub struct DispatchPorts {
    pub node: Arc<NodePorts>,
}

impl Ports<DispatchMachine> for DispatchPorts {
    fn execute(&self, _me: &Mailbox<DispatchInput>, effect: DispatchEffect) {
        let mut routes = Vec::new();
        route::dispatch_effect(&self.node.router.view(), effect, &mut routes);
        self.node.carry_all(routes, &Origin::Dispatcher);
    }
}

/// The membership machine's ports: its routing changes the node's view.
pub struct MembershipPorts {
    pub node: Arc<NodePorts>,
}

impl Ports<MembershipMachine> for MembershipPorts {
    fn execute(&self, me: &Mailbox<MembershipInput>, effect: MembershipEffect) {
        let mut routes = Vec::new();
        self.node
            .router
            .update_view(|view| route::membership_effect(view, effect, &mut routes));
        self.node.carry_all(routes, &Origin::Membership(me));
    }
}

/// A failure reason as a metric label: its variant's name, without data
/// (bounded cardinality).
fn reason_label(why: &impl std::fmt::Debug) -> String {
    let s = format!("{why:?}");
    s.split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or_default()
        .to_string()
}
