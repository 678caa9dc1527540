//! The supervision tree of one node:
//!
//! ```text
//! NodeRoot
//! ├── membership shell          (leases, failure detection, claims)
//! └── WorkSupervisor
//!     ├── channel shells        (one per hosted channel, started on claims)
//!     ├── GPU shells            (one per GPU of this node)
//!     └── dispatcher shell      (while this node hosts its region's)
//! ```
//!
//! A failed child of the work supervisor is restarted with the same
//! identity (a channel with the same epoch, which makes it reload its
//! state from the store; a GPU with an empty machine, whose lost jobs their
//! owners resubmit). More than `RESTARTS_MAX` failures within
//! `RESTART_WINDOW_MS` escalate: the work supervisor fails, and the root
//! stops the node, because a node that keeps failing is safer dead (its
//! lease lapses and survivors take over) than limping.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use actors::channel::{ChannelMachine, ChannelParams};
use actors::dispatch::{DispatchInput, DispatchMachine, DispatchParams};
use actors::gpu::{GpuInput, GpuMachine, GpuParams};
use actors::membership::{MembershipMachine, MembershipParams};
use topology::{placement, ChannelId, GpuId};

use super::clock::Clock;
use super::config::Timing;
use super::ports::{ChannelPorts, DispatchPorts, GpuPorts, MembershipPorts, NodePorts, WorkMsg};
use super::router::Hosted;
use super::shell::{spawn_linked, Mailbox, ShellMsg};
use super::store_port::Fence;
use crate::record::format::Built;

pub const RESTARTS_MAX: usize = 5;
pub const RESTART_WINDOW_MS: u64 = 60_000;

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

pub fn channel_params(t: &Timing) -> ChannelParams {
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

pub fn membership_params(t: &Timing) -> MembershipParams {
    MembershipParams {
        lease_ms: t.lease_ms,
        renew_ms: t.renew_ms,
        ..MembershipParams::default()
    }
}

/// What the supervisors need to build machines.
pub struct WorkArgs {
    pub ports: Arc<NodePorts>,
    pub clock: Clock,
    pub timing: Timing,
}

pub struct WorkSupervisor;

pub struct WorkState {
    args: Arc<WorkArgs>,
    children: BTreeMap<ActorId, (Child, ActorCell)>,
    failures_ms: VecDeque<u64>,
}

/// A shell's mailbox and its id, as the router keeps them.
fn hosted<I: Send + 'static>(r: &ActorRef<ShellMsg<I>>) -> Hosted<I> {
    Hosted {
        id: r.get_id(),
        mailbox: Mailbox::of(r.clone()),
    }
}

impl WorkState {
    fn node(&self) -> &Arc<NodePorts> {
        &self.args.ports
    }

    async fn spawn(&mut self, me: &ActorCell, child: Child) -> Result<(), ActorProcessingErr> {
        let cell = match child {
            Child::Channel {
                channel,
                epoch,
                incarnation,
            } => self.spawn_channel(me, channel, epoch, incarnation).await?,
            Child::Gpu(gpu) => self.spawn_gpu(me, gpu).await?,
            Child::Dispatcher => self.spawn_dispatcher(me).await?,
        };
        self.children.insert(cell.get_id(), (child, cell));
        Ok(())
    }

    async fn spawn_channel(
        &mut self,
        me: &ActorCell,
        channel: ChannelId,
        epoch: u64,
        incarnation: u64,
    ) -> Result<ActorCell, ActorProcessingErr> {
        let node = Arc::clone(self.node());
        let clock = self.args.clock;
        let seed = placement::mix64(u64::from(channel.0) << 32 ^ epoch ^ clock.now_ms());
        let machine = ChannelMachine::new(
            Arc::clone(&node.topo),
            channel,
            node.me,
            epoch,
            incarnation,
            channel_params(&self.args.timing),
            seed,
        );
        let fence = Fence {
            channel,
            epoch,
            incarnation,
        };
        let ports = Arc::new(ChannelPorts {
            node: Arc::clone(&node),
            fence,
        });
        let tape = node.recorder.as_ref().map(|rec| {
            rec.tape(Built::Channel {
                channel,
                node: node.me,
                epoch,
                incarnation,
                params: channel_params(&self.args.timing),
                seed,
            })
        });
        let r = spawn_linked(machine, ports, clock, tape, me).await?;
        let mut locals = node.router.locals();
        locals.channels.insert(channel, (epoch, hosted(&r)));
        node.metrics.set_channels_owned(locals.channels.len());
        Ok(r.get_cell())
    }

    async fn spawn_gpu(
        &mut self,
        me: &ActorCell,
        gpu: GpuId,
    ) -> Result<ActorCell, ActorProcessingErr> {
        let node = Arc::clone(self.node());
        let g = node.topo.gpu(gpu);
        // A queued job is dropped once its owner's dispatch timeout has
        // passed (the fleet shares its timing).
        let params = GpuParams {
            queue_wait_max_ms: self.args.timing.dispatch_timeout_ms,
            ..GpuParams::default()
        };
        let machine = GpuMachine::new(gpu, g.memory_bytes, g.cost_per_hour_micros, params);
        let tape = node.recorder.as_ref().map(|rec| {
            rec.tape(Built::Gpu {
                gpu,
                memory_bytes: g.memory_bytes,
                cost_per_hour_micros: g.cost_per_hour_micros,
                params,
            })
        });
        let ports = Arc::new(GpuPorts::new(Arc::clone(&node), gpu));
        let r = spawn_linked(machine, ports, self.args.clock, tape, me).await?;
        node.router.locals().gpus.insert(gpu, hosted(&r));
        Ok(r.get_cell())
    }

    async fn spawn_dispatcher(&mut self, me: &ActorCell) -> Result<ActorCell, ActorProcessingErr> {
        let node = Arc::clone(self.node());
        let region = node.topo.node(node.me).region;
        let params = DispatchParams::default();
        let machine = DispatchMachine::new(Arc::clone(&node.topo), region, params);
        let tape = node
            .recorder
            .as_ref()
            .map(|rec| rec.tape(Built::Dispatch { region, params }));
        let ports = Arc::new(DispatchPorts {
            node: Arc::clone(&node),
        });
        let r = spawn_linked(machine, ports, self.args.clock, tape, me).await?;
        // A new dispatcher learns the members from the view, and every GPU
        // of this node reports to it at once (the others on their next
        // view or heartbeat).
        let placeable = node.router.view().placeable;
        let _ = r.cast(ShellMsg::Input(DispatchInput::Members(placeable)));
        let mut locals = node.router.locals();
        locals.dispatcher = Some(hosted(&r));
        for g in locals.gpus.values() {
            g.mailbox.post(GpuInput::ReportNow);
        }
        Ok(r.get_cell())
    }

    /// Stops a child on purpose (not a failure: it is not restarted).
    fn retire(&mut self, id: ActorId, why: &str) {
        if let Some((_, cell)) = self.children.remove(&id) {
            cell.stop(Some(why.into()));
        }
    }

    fn count_channels(&self) {
        let n = self.node().router.locals().channels.len();
        self.node().metrics.set_channels_owned(n);
    }
}

impl Actor for WorkSupervisor {
    type Msg = WorkMsg;
    type State = WorkState;
    type Arguments = Arc<WorkArgs>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Arc<WorkArgs>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let sup = myself.clone();
        let work = Mailbox::from_fn(move |m| {
            if let ShellMsg::Input(w) = m {
                let _ = sup.cast(w);
            }
        });
        let _ = args.ports.work.set(work);
        let mut st = WorkState {
            children: BTreeMap::new(),
            failures_ms: VecDeque::new(),
            args,
        };
        let node = Arc::clone(st.node());
        for g in node.topo.node(node.me).gpus.clone() {
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
            WorkMsg::StartChannel {
                channel,
                epoch,
                incarnation,
            } => {
                let old = st.node().router.locals().channels.remove(&channel);
                if let Some((_, h)) = old {
                    st.retire(h.id, "replaced");
                }
                let child = Child::Channel {
                    channel,
                    epoch,
                    incarnation,
                };
                st.spawn(&myself.get_cell(), child).await?;
            }
            WorkMsg::ChannelStopped { channel, epoch } => {
                let mut locals = st.node().router.locals();
                let same = locals
                    .channels
                    .get(&channel)
                    .is_some_and(|(e, _)| *e == epoch);
                let gone = same.then(|| locals.channels.remove(&channel)).flatten();
                drop(locals);
                if let Some((_, h)) = gone {
                    st.retire(h.id, "released or fenced");
                }
                st.count_channels();
            }
            WorkMsg::StopAllChannels => {
                let all = std::mem::take(&mut st.node().router.locals().channels);
                for (_, h) in all.into_values() {
                    st.retire(h.id, "node declared dead");
                }
                st.count_channels();
            }
            WorkMsg::HostDispatcher(host) => {
                let existing = st.node().router.locals().dispatcher.clone();
                match (host, existing) {
                    (true, None) => st.spawn(&myself.get_cell(), Child::Dispatcher).await?,
                    (false, Some(h)) => {
                        st.node().router.locals().dispatcher = None;
                        st.retire(h.id, "no longer this region's dispatcher");
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
                let Some((child, _)) = st.children.remove(&cell.get_id()) else {
                    return Ok(());
                };
                st.note_failure(child, &err.to_string())?;
                if st.still_wanted(child, cell.get_id()) {
                    st.spawn(&myself.get_cell(), child).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl WorkState {
    /// Counts a failure; too many within the window escalate.
    fn note_failure(&mut self, child: Child, err: &str) -> Result<(), ActorProcessingErr> {
        let now = self.args.clock.now_ms();
        self.failures_ms.push_back(now);
        while self
            .failures_ms
            .front()
            .is_some_and(|t| now.saturating_sub(*t) > RESTART_WINDOW_MS)
        {
            self.failures_ms.pop_front();
        }
        tracing::error!(node = %self.node().name, child = ?child, error = %err, "actor failed; restarting it");
        if self.failures_ms.len() > RESTARTS_MAX {
            return Err(format!(
                "{} actor failures within {} s; last: {child:?}: {err}",
                self.failures_ms.len(),
                RESTART_WINDOW_MS / 1000
            )
            .into());
        }
        self.node().metrics.actor_restart();
        Ok(())
    }

    /// Restart only what is still wanted here: a channel that was replaced
    /// or dropped meanwhile stays gone.
    fn still_wanted(&mut self, child: Child, id: ActorId) -> bool {
        let mut l = self.node().router.locals();
        match child {
            Child::Channel { channel, .. } => {
                let same = l.channels.get(&channel).is_some_and(|(_, h)| h.id == id);
                if same {
                    l.channels.remove(&channel);
                }
                same
            }
            Child::Gpu(_) => true,
            Child::Dispatcher => {
                let same = l.dispatcher.as_ref().is_some_and(|h| h.id == id);
                if same {
                    l.dispatcher = None;
                }
                same
            }
        }
    }
}

/// The root: membership and the work supervisor. Either failing stops
/// the node (see the module docs).
pub struct NodeRoot;

impl Actor for NodeRoot {
    type Msg = ();
    type State = Arc<WorkArgs>;
    type Arguments = Arc<WorkArgs>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Arc<WorkArgs>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Actor::spawn_linked(None, WorkSupervisor, Arc::clone(&args), myself.get_cell()).await?;
        let node = Arc::clone(&args.ports);
        let seed = placement::mix64(u64::from(node.me.0) ^ args.clock.now_ms());
        let params = membership_params(&args.timing);
        let machine = MembershipMachine::new(Arc::clone(&node.topo), node.me, params, seed);
        let tape = node.recorder.as_ref().map(|rec| {
            rec.tape(Built::Membership {
                node: node.me,
                params,
                seed,
            })
        });
        let ports = Arc::new(MembershipPorts {
            node: Arc::clone(&node),
        });
        let m = spawn_linked(machine, ports, args.clock, tape, &myself.get_cell()).await?;
        node.router.locals().membership = Some(hosted(&m));
        Ok(args)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        args: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let life = &args.ports.life;
        match evt {
            SupervisionEvent::ActorFailed(_, err) => {
                life.request_stop(&format!("escalated: {err}"));
                myself.stop(Some("escalated".into()));
            }
            SupervisionEvent::ActorTerminated(_, _, reason) if !life.is_stopping() => {
                life.request_stop(&format!("a supervisor stopped: {reason:?}"));
                myself.stop(None);
            }
            _ => {}
        }
        Ok(())
    }
}
