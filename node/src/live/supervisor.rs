//! The supervision tree of one node:
//!
//! ```text
//! NodeSupervisor
//! ├── membership shell          (leases, failure detection, claims)
//! └── RegionSupervisor
//!     ├── channel shells        (one per hosted channel, started on claims)
//!     ├── GPU shells            (one per GPU of this node)
//!     └── dispatcher shell      (while this node hosts its region's)
//! ```
//!
//! A failed child of the region supervisor is restarted with the same
//! identity (a channel with the same epoch, which makes it reload its
//! state from the store; a GPU with an empty machine, whose lost jobs their
//! owners resubmit). More than `RESTARTS_MAX` failures within
//! `RESTART_WINDOW_MS` escalate: the region supervisor fails, and the node
//! supervisor stops the node, because a node that keeps failing is safer
//! dead (its lease lapses and survivors take over) than limping.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use actors::channel::{ChannelMachine, ChannelParams};
use actors::gpu::{GpuMachine, GpuParams};
use actors::membership::{MembershipMachine, MembershipParams};
use actors::dispatch::{DispatchInput, DispatchMachine, DispatchParams};
use topology::{placement, ChannelId, GpuId};

use super::ctx::NodeCtx;
use super::metrics::Metrics;
use super::ports::{ChannelPorts, GpuPorts, MembershipPorts, RegionPorts};
use super::shell::{spawn_linked, ShellMsg};

pub const RESTARTS_MAX: usize = 5;
pub const RESTART_WINDOW_MS: u64 = 60_000;

pub enum SupMsg {
    StartChannel {
        channel: ChannelId,
        epoch: u64,
        incarnation: u64,
    },
    StopAllChannels,
    HostDispatcher(bool),
}

#[derive(Clone, Copy, Debug)]
enum Child {
    Channel {
        channel: ChannelId,
        epoch: u64,
        incarnation: u64,
    },
    Gpu(GpuId),
    Dispatcher,
}

pub fn channel_params(ctx: &NodeCtx) -> ChannelParams {
    let t = &ctx.timing;
    ChannelParams {
        plan_lead_ms: t.plan_lead_ms,
        publish_timeout_ms: t.publish_timeout_ms,
        dispatch_timeout_ms: t.dispatch_timeout_ms,
        job_grace_ms: t.job_grace_ms,
        retry_base_ms: t.retry_base_ms,
        active_videos_max: t.active_videos_max,
        ..ChannelParams::default()
    }
}

pub fn membership_params(ctx: &NodeCtx) -> MembershipParams {
    MembershipParams {
        lease_ms: ctx.timing.lease_ms,
        renew_ms: ctx.timing.renew_ms,
        ..MembershipParams::default()
    }
}

pub struct RegionSupervisor;

pub struct RegionSupState {
    ctx: Arc<NodeCtx>,
    children: BTreeMap<ActorId, Child>,
    failures_ms: VecDeque<u64>,
}

impl RegionSupState {
    async fn spawn(&mut self, me: &ActorCell, child: Child) -> Result<(), ActorProcessingErr> {
        let ctx = &self.ctx;
        let clock = ctx.clock;
        let cell = match child {
            Child::Channel {
                channel,
                epoch,
                incarnation,
            } => {
                let seed =
                    placement::mix64(u64::from(channel.0) << 32 ^ epoch ^ ctx.clock.now_ms());
                let machine = ChannelMachine::new(
                    Arc::clone(&ctx.topo),
                    channel,
                    ctx.me,
                    epoch,
                    incarnation,
                    channel_params(ctx),
                    seed,
                );
                let ports = Arc::new(ChannelPorts {
                    ctx: Arc::clone(ctx),
                    channel,
                    epoch,
                    incarnation,
                });
                let r = spawn_linked(machine, ports, clock, me).await?;
                ctx.locals().channels.insert(channel, (epoch, r.clone()));
                r.get_cell()
            }
            Child::Gpu(gpu) => {
                let g = ctx.topo.gpu(gpu);
                let machine = GpuMachine::new(
                    gpu,
                    g.memory_bytes,
                    g.cost_per_hour_micros,
                    GpuParams::default(),
                );
                let ports = Arc::new(GpuPorts::new(Arc::clone(ctx), gpu));
                let r = spawn_linked(machine, ports, clock, me).await?;
                ctx.locals().gpus.insert(gpu, r.clone());
                r.get_cell()
            }
            Child::Dispatcher => {
                let machine =
                    DispatchMachine::new(Arc::clone(&ctx.topo), ctx.region, DispatchParams::default());
                let ports = Arc::new(RegionPorts {
                    ctx: Arc::clone(ctx),
                });
                let r = spawn_linked(machine, ports, clock, me).await?;
                let placeable = ctx.view().placeable;
                let _ = r.cast(ShellMsg::Input(DispatchInput::Members(placeable)));
                ctx.locals().dispatcher = Some(r.clone());
                // Every GPU of the region reports to a new dispatcher on the
                // next view; this node's own ones at once.
                for g in ctx.locals().gpus.values() {
                    let _ = g.cast(ShellMsg::Input(actors::gpu::GpuInput::ReportNow));
                }
                r.get_cell()
            }
        };
        self.children.insert(cell.get_id(), child);
        Ok(())
    }
}

impl Actor for RegionSupervisor {
    type Msg = SupMsg;
    type State = RegionSupState;
    type Arguments = Arc<NodeCtx>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: Arc<NodeCtx>,
    ) -> Result<Self::State, ActorProcessingErr> {
        ctx.locals().supervisor = Some(myself.clone());
        let mut st = RegionSupState {
            ctx: Arc::clone(&ctx),
            children: BTreeMap::new(),
            failures_ms: VecDeque::new(),
        };
        for g in ctx.topo.node(ctx.me).gpus.clone() {
            st.spawn(&myself.get_cell(), Child::Gpu(g)).await?;
        }
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupMsg::StartChannel {
                channel,
                epoch,
                incarnation,
            } => {
                let old = st.ctx.locals().channels.remove(&channel);
                if let Some((_, r)) = old {
                    st.children.remove(&r.get_id());
                    r.stop(Some("replaced".into()));
                }
                st.spawn(
                    &myself.get_cell(),
                    Child::Channel {
                        channel,
                        epoch,
                        incarnation,
                    },
                )
                .await?;
            }
            SupMsg::StopAllChannels => {
                let all: Vec<_> = std::mem::take(&mut st.ctx.locals().channels)
                    .into_values()
                    .collect();
                for (_, r) in all {
                    st.children.remove(&r.get_id());
                    r.stop(Some("node declared dead".into()));
                }
            }
            SupMsg::HostDispatcher(host) => {
                let existing = st.ctx.locals().dispatcher.clone();
                match (host, existing) {
                    (true, None) => st.spawn(&myself.get_cell(), Child::Dispatcher).await?,
                    (false, Some(r)) => {
                        st.ctx.locals().dispatcher = None;
                        st.children.remove(&r.get_id());
                        r.stop(Some("no longer this region's dispatcher".into()));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                st.children.remove(&cell.get_id());
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(child) = st.children.remove(&cell.get_id()) else {
                    return Ok(());
                };
                let now = st.ctx.clock.now_ms();
                st.failures_ms.push_back(now);
                while st
                    .failures_ms
                    .front()
                    .is_some_and(|t| now.saturating_sub(*t) > RESTART_WINDOW_MS)
                {
                    st.failures_ms.pop_front();
                }
                eprintln!("{}: {child:?} failed: {err}", st.ctx.name);
                if st.failures_ms.len() > RESTARTS_MAX {
                    return Err(format!(
                        "{} actor failures within {} s; last: {child:?}: {err}",
                        st.failures_ms.len(),
                        RESTART_WINDOW_MS / 1000
                    )
                    .into());
                }
                Metrics::inc(&st.ctx.metrics.actor_restarts);
                // Restart only what is still wanted here: a channel that was
                // replaced or dropped meanwhile stays gone.
                let wanted = match child {
                    Child::Channel { channel, .. } => {
                        let mut l = st.ctx.locals();
                        let same = l
                            .channels
                            .get(&channel)
                            .is_some_and(|(_, r)| r.get_id() == cell.get_id());
                        if same {
                            l.channels.remove(&channel);
                        }
                        same
                    }
                    Child::Gpu(_) => true,
                    Child::Dispatcher => {
                        let mut l = st.ctx.locals();
                        let same = l
                            .dispatcher
                            .as_ref()
                            .is_some_and(|r| r.get_id() == cell.get_id());
                        if same {
                            l.dispatcher = None;
                        }
                        same
                    }
                };
                if wanted {
                    st.spawn(&myself.get_cell(), child).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The root: membership and the region supervisor. Either failing stops
/// the node (see the module docs).
pub struct NodeSupervisor;

impl Actor for NodeSupervisor {
    type Msg = ();
    type State = Arc<NodeCtx>;
    type Arguments = Arc<NodeCtx>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: Arc<NodeCtx>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Actor::spawn_linked(None, RegionSupervisor, Arc::clone(&ctx), myself.get_cell()).await?;
        let seed = placement::mix64(u64::from(ctx.me.0) ^ ctx.clock.now_ms());
        let machine =
            MembershipMachine::new(Arc::clone(&ctx.topo), ctx.me, membership_params(&ctx), seed);
        let ports = Arc::new(MembershipPorts {
            ctx: Arc::clone(&ctx),
        });
        let m = spawn_linked(machine, ports, ctx.clock, &myself.get_cell()).await?;
        ctx.locals().membership = Some(m);
        Ok(ctx)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        ctx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(_, err) => {
                ctx.request_stop(&format!("escalated: {err}"));
                myself.stop(Some("escalated".into()));
            }
            SupervisionEvent::ActorTerminated(_, _, reason)
                if !ctx.stopping.load(std::sync::atomic::Ordering::Acquire) =>
            {
                ctx.request_stop(&format!("a supervisor stopped: {reason:?}"));
                myself.stop(None);
            }
            _ => {}
        }
        Ok(())
    }
}
