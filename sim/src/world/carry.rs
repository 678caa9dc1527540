//! Effects become routes through the node layer (`actors::node::route`,
//! the code the live node runs), and routes are carried out here against
//! the simulated network, store, hardware and API. Nothing here decides
//! where an effect goes; the simulator only checks what it sees on the
//! way (a job started after a stop, a commit by a stale owner).

use std::sync::Arc;

use actors::channel::{ChannelEffect, ChannelInput, ChannelMachine};
use actors::dispatch::{DispatchEffect, DispatchInput, DispatchMachine};
use actors::gpu::GpuEffect;
use actors::membership::MembershipEffect;
use actors::node::{route, NodeView, Observation, Route};
use topology::{ChannelId, GpuId, NodeId};

use super::events::Msg;
use super::nodes::{HostedChannel, TickSlot};
use super::store::ReplyTo;
use super::World;

/// The machine whose effect a route came from.
#[derive(Clone, Copy, Debug)]
pub(super) enum Origin {
    Membership,
    /// A channel machine instance, and the epoch its writes are fenced by.
    Channel {
        ch: ChannelId,
        gen: u64,
        epoch: u64,
    },
    Gpu,
    Dispatcher,
}

/// An effect as a machine produced it, for the route log.
#[derive(Clone, Debug)]
pub enum AnyEffect {
    Membership(MembershipEffect),
    Channel {
        channel: ChannelId,
        epoch: u64,
        incarnation: u64,
        effect: ChannelEffect,
    },
    Gpu(GpuId, GpuEffect),
    Dispatch(DispatchEffect),
}

/// One routing decision the simulator made: which node, its view before,
/// the effect, and the routes the node layer gave it.
#[derive(Clone, Debug)]
pub struct RouteRecord {
    pub node: NodeId,
    pub view: NodeView,
    pub effect: AnyEffect,
    pub routes: Vec<Route>,
}

impl World {
    /// Keeps the first `max` routing decisions from now on (for tests that
    /// hand the same effects to the live node's ports).
    pub fn record_routes(&mut self, max: usize) {
        self.route_log = Some((Vec::new(), max));
    }

    pub fn route_log(&self) -> &[RouteRecord] {
        self.route_log
            .as_ref()
            .map(|(l, _)| l.as_slice())
            .unwrap_or(&[])
    }

    /// The view before routing, if decisions are being recorded.
    fn view_to_record(&self, node: NodeId) -> Option<NodeView> {
        let (log, max) = self.route_log.as_ref()?;
        (log.len() < *max).then(|| self.nodes[node.index()].view.clone())
    }

    fn log_route(
        &mut self,
        node: NodeId,
        view: Option<NodeView>,
        effect: AnyEffect,
        routes: &[Route],
    ) {
        if let (Some(view), Some((log, _))) = (view, self.route_log.as_mut()) {
            let routes = routes.to_vec();
            log.push(RouteRecord {
                node,
                view,
                effect,
                routes,
            });
        }
    }

    pub(super) fn exec_membership(&mut self, node: NodeId, e: MembershipEffect) {
        let view = self.view_to_record(node);
        let logged = view.as_ref().map(|_| AnyEffect::Membership(e.clone()));
        let mut routes = std::mem::take(&mut self.route_buf);
        route::membership_effect(&mut self.nodes[node.index()].view, e, &mut routes);
        if let Some(effect) = logged {
            self.log_route(node, view, effect, &routes);
        }
        self.carry_all(node, Origin::Membership, &mut routes);
        self.route_buf = routes;
    }

    pub(super) fn exec_channel(&mut self, node: NodeId, ch: ChannelId, gen: u64, e: ChannelEffect) {
        if let ChannelEffect::StartJob(spec) = &e {
            if !self.job_may_start(spec) {
                return;
            }
        }
        let (epoch, incarnation) = self.nodes[node.index()]
            .channels
            .get(&ch)
            .map(|h| (h.m.epoch(), h.m.incarnation()))
            .unwrap_or((0, 0));
        let view = self.view_to_record(node);
        let logged = view.as_ref().map(|_| AnyEffect::Channel {
            channel: ch,
            epoch,
            incarnation,
            effect: e.clone(),
        });
        let mut routes = std::mem::take(&mut self.route_buf);
        route::channel_effect(&self.nodes[node.index()].view, ch, e, &mut routes);
        if let Some(effect) = logged {
            self.log_route(node, view, effect, &routes);
        }
        self.carry_all(node, Origin::Channel { ch, gen, epoch }, &mut routes);
        self.route_buf = routes;
    }

    pub(super) fn exec_gpu(&mut self, node: NodeId, gpu: GpuId, e: GpuEffect) {
        let view = self.view_to_record(node);
        let logged = view.as_ref().map(|_| AnyEffect::Gpu(gpu, e.clone()));
        let mut routes = std::mem::take(&mut self.route_buf);
        route::gpu_effect(&self.nodes[node.index()].view, gpu, e, &mut routes);
        if let Some(effect) = logged {
            self.log_route(node, view, effect, &routes);
        }
        self.carry_all(node, Origin::Gpu, &mut routes);
        self.route_buf = routes;
    }

    pub(super) fn exec_dispatch(&mut self, node: NodeId, e: DispatchEffect) {
        let view = self.view_to_record(node);
        let logged = view.as_ref().map(|_| AnyEffect::Dispatch(e.clone()));
        let mut routes = std::mem::take(&mut self.route_buf);
        route::dispatch_effect(&self.nodes[node.index()].view, e, &mut routes);
        if let Some(effect) = logged {
            self.log_route(node, view, effect, &routes);
        }
        self.carry_all(node, Origin::Dispatcher, &mut routes);
        self.route_buf = routes;
    }

    /// Carries out `routes` in order, leaving the buffer empty. (No route
    /// feeds a machine at once: deliveries are queued, so the buffer is
    /// free to reuse.)
    fn carry_all(&mut self, node: NodeId, from: Origin, routes: &mut Vec<Route>) {
        for r in routes.drain(..) {
            self.carry(node, from, r);
        }
    }

    fn carry(&mut self, node: NodeId, from: Origin, r: Route) {
        let inc = self.nodes[node.index()].inc;
        match r {
            Route::Local(local) => self.deliver_now(node, inc, Msg::Local(local)),
            Route::Remote { to, msg } => self.send(node, to, msg),
            Route::Store { op_id, op } => {
                let (reply_to, fence) = match from {
                    Origin::Membership => (ReplyTo::Membership, None),
                    Origin::Channel { ch, gen, epoch } => {
                        let commit = matches!(op, actors::store::StoreOp::Commit(_));
                        (ReplyTo::Channel(ch, gen), commit.then_some((ch, epoch)))
                    }
                    Origin::Gpu | Origin::Dispatcher => {
                        unreachable!("only membership and channels use the store")
                    }
                };
                self.send_store(node, reply_to, op_id, op, fence);
            }
            Route::RunLocal(spec) => self.run_local_job(node, spec),
            Route::CancelLocal(id) => {
                self.cancelled_local.insert(id);
            }
            Route::RunGpu {
                gpu,
                job,
                lease_until_ms,
            } => self.run_gpu_job(node, gpu, job, lease_until_ms),
            Route::KillGpu { gpu, id } => self.kill_gpu_job(node, gpu, id),
            Route::Publish {
                channel,
                slot,
                attempt,
                idempotency_key,
                timeout_ms,
            } => self.send_upload(node, channel, slot, attempt, idempotency_key, timeout_ms),
            Route::Lookup {
                channel,
                slot,
                idempotency_key,
            } => self.send_lookup(node, channel, slot, idempotency_key),
            other => self.carry_lifecycle(node, from, other),
        }
    }

    /// Routes that start and stop this node's machines, and observations.
    fn carry_lifecycle(&mut self, node: NodeId, from: Origin, r: Route) {
        match r {
            Route::StartChannel {
                channel,
                epoch,
                incarnation,
            } => self.host_channel(node, channel, epoch, incarnation),
            Route::ChannelStopped { channel, fenced } => {
                if fenced {
                    self.stats.fenced += 1;
                }
                let Origin::Channel { gen, .. } = from else {
                    unreachable!("only a channel machine stops itself");
                };
                let n = &mut self.nodes[node.index()];
                if n.channels.get(&channel).is_some_and(|h| h.gen == gen) {
                    n.channels.remove(&channel);
                }
            }
            Route::DropAllChannels => self.nodes[node.index()].channels.clear(),
            Route::HostDispatcher(host) => self.host_dispatcher(node, host),
            Route::Drained => {
                self.drains_pending.remove(&node);
                self.crash_node(node);
            }
            Route::Observe(Observation::NodeRemoved { .. }) => self.stats.node_removals += 1,
            Route::Observe(Observation::VideoDone { .. }) => {}
            other => unreachable!("carried elsewhere: {other:?}"),
        }
    }

    fn host_channel(&mut self, node: NodeId, channel: ChannelId, epoch: u64, incarnation: u64) {
        self.machine_gen += 1;
        let gen = self.machine_gen;
        let seed = self.rng.next_u64();
        let m = ChannelMachine::new(
            Arc::clone(&self.topo),
            channel,
            node,
            epoch,
            incarnation,
            self.sc.machines.channel.clone(),
            seed,
        );
        let hosted = HostedChannel {
            m,
            gen,
            tick: TickSlot::default(),
        };
        self.nodes[node.index()].channels.insert(channel, hosted);
        let inc = self.nodes[node.index()].inc;
        let start = Msg::ChannelGen(channel, gen, ChannelInput::Start);
        self.deliver_now(node, inc, start);
    }

    fn host_dispatcher(&mut self, node: NodeId, host: bool) {
        let n = &mut self.nodes[node.index()];
        match (host, n.dispatcher.is_some()) {
            (true, false) => {
                let m = DispatchMachine::new(
                    Arc::clone(&self.topo),
                    n.region,
                    self.sc.machines.dispatch,
                );
                n.dispatcher = Some((m, TickSlot::default()));
                let inc = n.inc;
                let tick = actors::node::Local::Dispatcher(DispatchInput::Tick);
                self.deliver_now(node, inc, Msg::Local(tick));
            }
            (false, true) => n.dispatcher = None,
            _ => {}
        }
    }
}
