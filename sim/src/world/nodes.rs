//! Simulated nodes: which machines each hosts, their ticks, and feeding
//! them inputs. Effects go to `carry`, which hands them to the node layer.

use std::collections::BTreeMap;
use std::sync::Arc;

use actors::channel::{ChannelInput, ChannelMachine};
use actors::dispatch::{DispatchInput, DispatchMachine};
use actors::gpu::{GpuInput, GpuMachine};
use actors::membership::{MembershipInput, MembershipMachine};
use actors::node::{route, Local, NodeView};
use topology::{ChannelId, GpuId, NodeId, RegionId};

use super::clock::Clock;
use super::events::{Actor, Ev, Msg};
use super::hardware::GpuHw;
use super::World;
use crate::scenario::Scenario;

pub(super) struct HostedChannel {
    pub m: ChannelMachine,
    /// Which instance: replies for an earlier one are dropped.
    pub gen: u64,
    pub tick: TickSlot,
}

/// One machine's tick: the one queued (true ms) and the deadline the
/// machine asked for last. A deadline that moves later leaves the queued
/// tick where it is; when it comes due it is queued again at the later
/// time instead of delivered. So a machine is ticked only at the deadline
/// it last asked for, as the live shell's timer does (it re-arms for
/// every new deadline), and a deadline that moves later and back costs no
/// event each time (`EVENTS_PER_MS_MAX`).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct TickSlot {
    queued: Option<u64>,
    wanted: Option<u64>,
    /// The last tick delivered (true ms), and how many before it came
    /// each within `BUSY_TICK_GAP_MS` of the one before (`BUSY_TICKS_MAX`).
    last_delivered: u64,
    busy_run: u32,
}

/// Ticks at most this far apart (true ms; a skewed clock may round a
/// deadline of "the next millisecond" to two) count as a busy run.
const BUSY_TICK_GAP_MS: u64 = 2;

/// A machine ticked this many times in a row, each within
/// `BUSY_TICK_GAP_MS` of the last (5 s and more of true time), is polling
/// instead of sleeping until something it waits for happens: failed as an
/// assertion. No machine has a reason to: every wait of theirs ends with
/// an input or at a deadline they know (a channel releasing behind an
/// upload once ticked every millisecond until the upload settled:
/// `dense-drain`, 262 M events).
const BUSY_TICKS_MAX: u32 = 5_000;

pub(super) struct SimNode {
    pub id: NodeId,
    pub region: RegionId,
    pub alive: bool,
    pub inc: u32,
    pub clock: Clock,
    pub membership: Option<(MembershipMachine, TickSlot)>,
    pub channels: BTreeMap<ChannelId, HostedChannel>,
    pub gpus: Vec<(GpuMachine, TickSlot)>,
    pub dispatcher: Option<(DispatchMachine, TickSlot)>,
    pub view: NodeView,
}

/// Every node of the scenario (none started), its GPUs' hardware, and
/// where each GPU sits.
pub(super) fn build(sc: &Scenario) -> (Vec<SimNode>, Vec<GpuHw>, Vec<(NodeId, usize)>) {
    let topo = &sc.topology;
    let mut gpu_hw = Vec::new();
    let mut gpu_local = Vec::new();
    let nodes = topo
        .node_ids()
        .map(|n| {
            let gpus = topo
                .node(n)
                .gpus
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    assert_eq!(gpu_hw.len(), g.index(), "GPUs are numbered node by node");
                    gpu_hw.push(GpuHw::new(n, topo.gpu(*g).memory_bytes));
                    gpu_local.push((n, i));
                    (new_gpu(sc, *g), TickSlot::default())
                })
                .collect();
            SimNode {
                id: n,
                region: topo.node(n).region,
                alive: false,
                inc: 0,
                clock: Clock::anchored(sc.start_utc_ms),
                membership: None,
                channels: BTreeMap::new(),
                gpus,
                dispatcher: None,
                view: NodeView::new(Arc::clone(topo), n),
            }
        })
        .collect();
    (nodes, gpu_hw, gpu_local)
}

fn new_gpu(sc: &Scenario, g: GpuId) -> GpuMachine {
    let spec = sc.topology.gpu(g);
    // A queued job is dropped once its owner's dispatch timeout has passed
    // (as the live node sets it from the same timing).
    let params = actors::gpu::GpuParams {
        queue_wait_max_ms: sc.machines.channel.dispatch_timeout_ms,
        ..sc.machines.gpu
    };
    GpuMachine::new(g, spec.memory_bytes, spec.cost_per_hour_micros, params)
}

impl World {
    /// Boots `node` as a new incarnation with fresh machines.
    pub(super) fn start_node(&mut self, node: NodeId) {
        let seed = self.rng.next_u64();
        let topo = Arc::clone(&self.topo);
        let params = self.sc.machines.membership;
        let gpus: Vec<GpuMachine> = topo
            .node(node)
            .gpus
            .iter()
            .map(|g| new_gpu(&self.sc, *g))
            .collect();
        let n = &mut self.nodes[node.index()];
        if n.alive {
            return;
        }
        n.alive = true;
        n.inc += 1;
        n.clock.restart();
        n.membership = Some((
            MembershipMachine::new(Arc::clone(&topo), node, params, seed),
            TickSlot::default(),
        ));
        n.channels.clear();
        n.dispatcher = None;
        n.view = NodeView::new(Arc::clone(&topo), node);
        n.gpus = gpus.into_iter().map(|g| (g, TickSlot::default())).collect();
        let inc = n.inc;
        let start = Local::Membership(MembershipInput::Start);
        self.deliver_now(node, inc, Msg::Local(start));
        for g in topo.node(node).gpus.clone() {
            let tick = Local::Gpu(g, GpuInput::Tick);
            self.deliver_now(node, inc, Msg::Local(tick));
        }
    }

    /// Kills `node`: its machines are gone, its GPUs' jobs die with it
    /// (billed for the time they held).
    pub(super) fn crash_node(&mut self, node: NodeId) {
        self.faults.frozen[node.index()] = false;
        self.faults.frozen_events[node.index()].clear();
        let now = self.now_ms;
        let n = &mut self.nodes[node.index()];
        if !n.alive {
            return;
        }
        n.alive = false;
        n.membership = None;
        n.channels.clear();
        n.dispatcher = None;
        let gpus: Vec<GpuId> = self.topo.node(node).gpus.clone();
        for g in gpus {
            let ids: Vec<_> = self.gpu_hw[g.index()].running.keys().copied().collect();
            for id in ids {
                self.gpu_hw_stop(g, id);
            }
            if let Some(s) = self.gpu_hw[g.index()].busy_since_ms.take() {
                self.gpu_hw[g.index()].busy_ms += now - s;
            }
        }
    }

    /// `actor`'s tick slot, if the actor is there (a channel only in the
    /// instance its `Actor` names, with `same_gen`).
    fn tick_slot(&mut self, node: NodeId, actor: Actor, same_gen: bool) -> Option<&mut TickSlot> {
        let n = &mut self.nodes[node.index()];
        match actor {
            Actor::Membership => n.membership.as_mut().map(|(_, t)| t),
            Actor::Channel(ch, g) => n
                .channels
                .get_mut(&ch)
                .filter(|h| !same_gen || h.gen == g)
                .map(|h| &mut h.tick),
            Actor::Gpu(i) => n.gpus.get_mut(i).map(|(_, t)| t),
            Actor::Dispatcher => n.dispatcher.as_mut().map(|(_, t)| t),
        }
    }

    /// A tick came due: deliver it unless a later schedule superseded it.
    /// Feeds `actor` its tick due at `due`; false if that tick was
    /// superseded, or moved on to the later deadline asked since (nothing
    /// happened).
    pub(super) fn on_tick(&mut self, node: NodeId, actor: Actor, due: u64) -> bool {
        let now = self.now_ms;
        let rel_ms = self.rel_ms();
        let inc = self.nodes[node.index()].inc;
        let Some(slot) = self.tick_slot(node, actor, true) else {
            return false;
        };
        if slot.queued != Some(due) {
            return false; // superseded by an earlier tick
        }
        slot.queued = None;
        if let Some(later) = slot.wanted.filter(|w| *w > due && *w > now) {
            slot.queued = Some(later);
            let ev = Ev::Tick {
                node,
                inc,
                actor,
                due_ms: later,
            };
            self.push(later, ev);
            return false;
        }
        if due <= slot.last_delivered + BUSY_TICK_GAP_MS {
            slot.busy_run += 1;
            assert!(
                slot.busy_run < BUSY_TICKS_MAX,
                "busy wait: {actor:?} of {node} ticked {BUSY_TICKS_MAX} times in a row, each within {BUSY_TICK_GAP_MS} ms of the last ({rel_ms} ms into the run)"
            );
        } else {
            slot.busy_run = 0;
        }
        slot.last_delivered = due;
        let msg = match actor {
            Actor::Membership => Msg::Local(Local::Membership(MembershipInput::Tick)),
            Actor::Channel(ch, gen) => Msg::ChannelGen(ch, gen, ChannelInput::Tick),
            Actor::Gpu(i) => {
                let g = self.topo.node(node).gpus[i];
                Msg::Local(Local::Gpu(g, GpuInput::Tick))
            }
            Actor::Dispatcher => Msg::Local(Local::Dispatcher(DispatchInput::Tick)),
        };
        self.deliver(node, msg);
        true
    }

    /// Schedules a tick for `actor` at its local `deadline`; one already
    /// queued for no later than that, and not in the past, stays and is
    /// moved on when it comes due (`TickSlot`). No deadline: what was
    /// asked last stands, as the live shell's timer does.
    fn schedule_tick(&mut self, node: NodeId, actor: Actor, deadline: Option<u64>) {
        let Some(d) = deadline else { return };
        let now = self.now_ms;
        let n = &mut self.nodes[node.index()];
        let at = n.clock.true_at(d, now);
        let inc = n.inc;
        let Some(slot) = self.tick_slot(node, actor, false) else {
            return;
        };
        slot.wanted = Some(at);
        if slot.queued.is_some_and(|t| t <= at && t >= now) {
            return;
        }
        slot.queued = Some(at);
        self.push(
            at,
            Ev::Tick {
                node,
                inc,
                actor,
                due_ms: at,
            },
        );
    }

    /// Feeds a delivery to the machine it is for, now.
    pub(super) fn deliver(&mut self, node: NodeId, msg: Msg) {
        match msg {
            Msg::Local(local) => self.deliver_local(node, local),
            Msg::Net(m) => {
                if let Some(local) = route::arrive(&self.nodes[node.index()].view, m) {
                    self.deliver_local(node, local);
                }
            }
            Msg::ChannelGen(ch, gen, input) => self.feed_channel(node, ch, Some(gen), input),
        }
    }

    fn deliver_local(&mut self, node: NodeId, local: Local) {
        match local {
            Local::Membership(input) => self.feed_membership(node, input),
            Local::Channel(ch, input) => self.feed_channel(node, ch, None, input),
            Local::EachChannel(input) => {
                let hosted: Vec<ChannelId> =
                    self.nodes[node.index()].channels.keys().copied().collect();
                for ch in hosted {
                    self.feed_channel(node, ch, None, input.clone());
                }
            }
            Local::Gpu(g, input) => {
                let (at, i) = self.gpu_local[g.index()];
                if at == node {
                    self.feed_gpu(node, i, input);
                }
            }
            Local::Dispatcher(input) => self.feed_dispatcher(node, input),
        }
    }

    fn feed_membership(&mut self, node: NodeId, input: MembershipInput) {
        let local = self.local_now(node);
        let mut out = std::mem::take(&mut self.mem_buf);
        let Some((m, _)) = self.nodes[node.index()].membership.as_mut() else {
            return;
        };
        m.handle(local, input, &mut out);
        let d = m.next_deadline();
        self.schedule_tick(node, Actor::Membership, d);
        for e in out.drain(..) {
            self.exec_membership(node, e);
        }
        self.mem_buf = out;
    }

    fn feed_gpu(&mut self, node: NodeId, i: usize, input: GpuInput) {
        let local = self.local_now(node);
        let mut out = std::mem::take(&mut self.gpu_buf);
        let Some((g, _)) = self.nodes[node.index()].gpus.get_mut(i) else {
            return;
        };
        g.handle(local, input, &mut out);
        let d = g.next_deadline();
        let gpu = g.id();
        self.schedule_tick(node, Actor::Gpu(i), d);
        for e in out.drain(..) {
            self.exec_gpu(node, gpu, e);
        }
        self.gpu_buf = out;
    }

    fn feed_dispatcher(&mut self, node: NodeId, input: DispatchInput) {
        let local = self.local_now(node);
        let mut out = std::mem::take(&mut self.dis_buf);
        let Some((r, _)) = self.nodes[node.index()].dispatcher.as_mut() else {
            return;
        };
        r.handle(local, input, &mut out);
        let d = r.next_deadline();
        self.stats.spilled_jobs = self.stats.spilled_jobs.max(r.spilled());
        self.schedule_tick(node, Actor::Dispatcher, d);
        for e in out.drain(..) {
            self.exec_dispatch(node, e);
        }
        self.dis_buf = out;
    }

    fn feed_channel(&mut self, node: NodeId, ch: ChannelId, gen: Option<u64>, input: ChannelInput) {
        let local = self.local_now(node);
        let mut out = std::mem::take(&mut self.ch_buf);
        let Some(h) = self.nodes[node.index()].channels.get_mut(&ch) else {
            return;
        };
        if gen.is_some_and(|g| g != h.gen) {
            return;
        }
        h.m.handle(local, input, &mut out);
        let d = h.m.next_deadline();
        let g = h.gen;
        self.schedule_tick(node, Actor::Channel(ch, g), d);
        for e in out.drain(..) {
            self.exec_channel(node, ch, g, e);
        }
        self.ch_buf = out;
    }

    /// Every node's view, dispatcher and GPUs, for people debugging a seed.
    pub(crate) fn describe_node(&mut self, node: NodeId) -> String {
        let local = self.local_now(node);
        let n = &self.nodes[node.index()];
        let mut s = format!(
            "{} alive {} inc {} frozen {} dispatchers {:?} lease until {}\n",
            node,
            n.alive,
            n.inc,
            self.faults.frozen[node.index()],
            n.view.dispatchers,
            n.view.lease_valid_until_ms
        );
        if let Some((m, _)) = &n.membership {
            s += &format!("  {}\n  members {:?}\n", m.describe(), m.members());
        }
        if let Some((d, _)) = &n.dispatcher {
            s += &d.describe(local);
        }
        for (g, _) in &n.gpus {
            s += &format!("  {}\n", g.describe());
        }
        s
    }
}
