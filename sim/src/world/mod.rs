//! The simulated world: one thread, one seeded RNG, one virtual clock, one
//! event queue. It hosts the production machines on simulated nodes, hands
//! their effects to the node layer (`actors::node::route`, the same code
//! the live node calls), and carries the routes out against a simulated
//! network, store, GPUs, executors and publishing API, with faults injected
//! from the scenario.
//!
//! The parts, one file each: `events` (the queue and what happens when an
//! event comes due), `clock` (node clocks), `nodes` (hosting and feeding
//! machines), `carry` (routes carried out), `network`, `store`,
//! `hardware` (GPUs and local executors), `publishing` (the API), and
//! `lifecycle` (faults, the heal, recovery and end-of-run checks).
//!
//! Architecture invariant: nothing here reads the wall clock or an unseeded
//! RNG, and every collection iterated is ordered (`BTreeMap`, `Vec`), so a
//! seed fixes the whole run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use actors::channel::{ChannelEffect, ChannelMachine};
use actors::dispatch::DispatchEffect;
use actors::gpu::GpuEffect;
use actors::membership::MembershipEffect;
use actors::node::Route;
use actors::rng::SeededRng;
use actors::store::MemStore;
use topology::{ChannelId, NodeId, RegionId, Topology};

use crate::api::PublishApi;
use crate::checks::{Failover, Invariant, RetryLimits, StoreWatch, Truth, Violation};
use crate::scenario::{Fault, Scenario};
use crate::trace::Trace;

pub mod carry;
mod clock;
mod events;
mod faults;
mod hardware;
mod lifecycle;
mod network;
mod nodes;
mod publishing;
mod queue;
mod seed;
mod store;
mod trace_codes;

use events::Ev;
use hardware::GpuHw;
use nodes::SimNode;
use queue::EventQueue;
use seed::Baseline;

#[derive(Default, Clone, Debug)]
pub struct Stats {
    pub published: u64,
    pub publish_latency_ms: Vec<u64>,
    pub failovers: Vec<Failover>,
    pub jobs_started: u64,
    pub gpu_jobs: u64,
    pub spilled_jobs: u64,
    pub store_ops: u64,
    pub commit_unknowns: u64,
    pub fenced: u64,
    pub node_removals: u64,
}

/// The faults in force now.
#[derive(Default)]
struct Faults {
    store_outage: bool,
    /// Added to every store call's latency (`store-slow`).
    store_slow_ms: u64,
    unknown_ppm: u32,
    partitioned: Vec<bool>,
    one_way: BTreeSet<(RegionId, RegionId)>,
    loss_ppm: u32,
    dup_ppm: u32,
    reorder_ppm: u32,
    gpu_fail_ppm: u32,
    straggler_ppm: u32,
    providers_down: BTreeSet<String>,
    frozen: Vec<bool>,
    /// Events that came due for a frozen node, in order.
    frozen_events: Vec<Vec<Ev>>,
    /// Operator commands that wait for the store to come back.
    deferred_controls: Vec<Fault>,
}

pub struct World {
    pub sc: Scenario,
    pub topo: Arc<Topology>,
    pub now_ms: u64,
    seq: u64,
    queue: EventQueue,
    slab: Vec<Option<Ev>>,
    free_slots: Vec<u32>,
    rng: SeededRng,
    nodes: Vec<SimNode>,
    pub store: MemStore,
    faults: Faults,
    gpu_hw: Vec<GpuHw>,
    /// Each GPU's node and its index among that node's GPUs.
    gpu_local: Vec<(NodeId, usize)>,
    pub api: PublishApi,
    pub watch: StoreWatch,
    pub truth: Truth,
    pub stats: Stats,
    pub trace: Trace,
    pub violation: Option<Violation>,
    machine_gen: u64,
    /// Channels with a kill or pause in force, and since when (true ms).
    stopped_since_ms: BTreeMap<Option<ChannelId>, u64>,
    pub heal_at_ms: u64,
    pub end_at_ms: u64,
    /// Active video records at the heal: each must end before `end_at_ms`.
    pub must_finish: Vec<(ChannelId, u64)>,
    pending_failovers: Vec<usize>,
    cancelled_local: BTreeSet<actors::protocol::JobId>,
    /// Drains asked and not yet finished: (incarnation, asked at).
    pub(crate) drains_pending: BTreeMap<NodeId, (u32, u64)>,
    /// Nodes an operator excluded (and did not include again).
    pub(crate) excluded: BTreeSet<NodeId>,
    /// The operator's maintenance window: its nodes, and until when (true
    /// ms) a node may still be holding it.
    pub(crate) maintenance: Option<(BTreeSet<NodeId>, u64)>,
    /// A run from a recorded state (`seed.rs`): what the ledgers held
    /// beyond the videos the state shows (the videos published before the
    /// recording began, or whose records it never saw), per channel and
    /// per project. The ledger checks hold the run to the rest. Empty
    /// otherwise.
    pub(crate) baseline: Baseline,
    ch_buf: Vec<ChannelEffect>,
    mem_buf: Vec<MembershipEffect>,
    gpu_buf: Vec<GpuEffect>,
    dis_buf: Vec<DispatchEffect>,
    route_buf: Vec<Route>,
    events_this_ms: u64,
    /// Routing decisions kept for tests, and how many to keep.
    route_log: Option<(Vec<carry::RouteRecord>, usize)>,
}

/// How often the recovery probe looks (true ms).
const PROBE_MS: u64 = 100;

/// More events than this at one moment means machines are feeding each
/// other without time moving: a livelock, failed as an assertion. Ticks
/// superseded by an earlier one do nothing and are not counted: an actor
/// whose deadline moves earlier and back, again and again, leaves a tick
/// queued at the later time each time (capacity-10m-chaos: 545 for one
/// channel of a region cut off for 30 minutes, 690,000 at one moment).
const EVENTS_PER_MS_MAX: u64 = 200_000;

impl World {
    pub fn new(sc: Scenario, seed: u64, trace: Trace) -> World {
        let topo = Arc::clone(&sc.topology);
        let mut rng = SeededRng::new(seed);
        let (nodes, gpu_hw, gpu_local) = nodes::build(&sc);
        let heal_at_ms = sc.start_utc_ms + sc.duration_ms;
        let end_at_ms = heal_at_ms + sc.bounds.liveness_ms;
        let retry_limits = RetryLimits {
            stage_attempts_max: sc.machines.channel.stage_attempts_max,
            publish_attempts_max: sc.machines.channel.publish_attempts_max,
        };
        let mut w = World {
            topo: Arc::clone(&topo),
            now_ms: sc.start_utc_ms,
            seq: 0,
            queue: EventQueue::new(),
            slab: Vec::new(),
            free_slots: Vec::new(),
            rng: rng.fork(1),
            nodes,
            store: MemStore::new(),
            faults: Faults {
                partitioned: vec![false; topo.regions.len()],
                frozen: vec![false; topo.nodes.len()],
                frozen_events: vec![Vec::new(); topo.nodes.len()],
                ..Faults::default()
            },
            gpu_hw,
            gpu_local,
            api: PublishApi::default(),
            watch: StoreWatch {
                retry_limits,
                ..StoreWatch::default()
            },
            truth: Truth::default(),
            stats: Stats::default(),
            trace,
            violation: None,
            machine_gen: 0,
            stopped_since_ms: BTreeMap::new(),
            heal_at_ms,
            end_at_ms,
            must_finish: Vec::new(),
            pending_failovers: Vec::new(),
            cancelled_local: BTreeSet::new(),
            drains_pending: BTreeMap::new(),
            excluded: BTreeSet::new(),
            maintenance: None,
            baseline: Baseline::default(),
            ch_buf: Vec::new(),
            mem_buf: Vec::new(),
            gpu_buf: Vec::new(),
            dis_buf: Vec::new(),
            route_buf: Vec::new(),
            events_this_ms: 0,
            route_log: None,
            sc,
        };
        w.schedule_start();
        w
    }

    /// The fault schedule, the nodes that start at once, the heal, the end
    /// and the recovery probe.
    fn schedule_start(&mut self) {
        let start = self.sc.start_utc_ms;
        for f in self.sc.faults.clone() {
            match f.fault {
                // A clock that is off from the start is set before its node
                // boots, rather than stepped under a running node.
                Fault::ClockSkew {
                    node,
                    offset_ms,
                    drift_ppm,
                } if f.at_ms == 0 => {
                    self.nodes[node.index()]
                        .clock
                        .off_from_boot(offset_ms, drift_ppm);
                }
                fault => self.push(start + f.at_ms, Ev::Fault(fault)),
            }
        }
        for n in self.topo.node_ids() {
            if !self.sc.world.late_nodes.contains(&n) {
                self.start_node(n);
            }
        }
        self.push(self.heal_at_ms, Ev::Heal);
        self.push(self.end_at_ms, Ev::End);
        self.push(start + PROBE_MS, Ev::Probe);
    }

    fn fail(&mut self, v: Violation) {
        if self.violation.is_none() {
            self.violation = Some(v);
        }
    }

    /// A panic stopped the run: the seed fails with its message.
    pub fn fail_with_panic(&mut self, message: String) {
        let rel = self.rel_ms();
        self.trace.flush();
        self.fail(Violation::new(
            Invariant::Assertion,
            format!("panicked: {message}"),
            rel,
        ));
    }

    /// Runs until the end of the liveness phase or the first violation.
    pub fn run(&mut self) {
        while self.step() {}
        self.trace.flush();
    }

    /// Processes the next event. False once the run is over: its end was
    /// reached, an invariant broke, or nothing is left to happen.
    pub fn step(&mut self) -> bool {
        let Some((at_ms, slot)) = self.queue.pop() else {
            return false;
        };
        assert!(at_ms >= self.now_ms, "time only moves forward");
        if at_ms == self.now_ms {
            self.events_this_ms += 1;
            assert!(
                self.events_this_ms < EVENTS_PER_MS_MAX,
                "livelock: {EVENTS_PER_MS_MAX} events at one moment ({} ms into the run) and time does not move",
                self.rel_ms()
            );
        } else {
            self.events_this_ms = 0;
        }
        self.now_ms = at_ms;
        let Some(ev) = self.slab[slot as usize].take() else {
            return true;
        };
        self.free_slots.push(slot);
        let end = matches!(ev, Ev::End);
        self.dispatch(ev);
        !(self.violation.is_some() || end)
    }

    /// When the next event is due (true ms), if any.
    pub(crate) fn next_event_at(&self) -> Option<u64> {
        self.queue.peek_at()
    }

    /// The nodes hosting a machine for `ch`.
    pub(crate) fn hosting(&self, ch: ChannelId) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.alive && n.channels.contains_key(&ch))
            .map(|n| n.id)
            .collect()
    }

    pub(crate) fn membership(
        &self,
        node: NodeId,
    ) -> Option<&actors::membership::MembershipMachine> {
        self.nodes[node.index()].membership.as_ref().map(|(m, _)| m)
    }

    pub(crate) fn node_view(&self, node: NodeId) -> &actors::node::NodeView {
        &self.nodes[node.index()].view
    }

    pub(crate) fn channel_machine(&self, node: NodeId, ch: ChannelId) -> Option<&ChannelMachine> {
        self.nodes
            .get(node.index())?
            .channels
            .get(&ch)
            .map(|h| &h.m)
    }

    fn is_current(&self, node: NodeId, inc: u32) -> bool {
        let n = &self.nodes[node.index()];
        n.alive && n.inc == inc
    }

    /// `node`'s clock now.
    fn local_now(&mut self, node: NodeId) -> u64 {
        let now = self.now_ms;
        self.nodes[node.index()].clock.local(now)
    }

    /// The index of the publish stage in `ch`'s pipeline.
    fn publish_stage_of(&self, ch: ChannelId) -> Option<u16> {
        let stages = &self.topo.pipeline(self.topo.channel(ch).pipeline).stages;
        let i = stages
            .iter()
            .position(|s| s.kind == topology::StageKind::Publish)?;
        u16::try_from(i).ok()
    }

    /// GPU-busy milliseconds so far, all GPUs together.
    pub fn gpu_busy_ms(&self) -> u64 {
        self.gpu_hw
            .iter()
            .map(|h| h.busy_ms + h.busy_since_ms.map(|s| self.now_ms - s).unwrap_or(0))
            .sum()
    }
}
