//! The simulated world: one thread, one seeded RNG, one virtual clock, one
//! event queue. It hosts the production machines on simulated nodes and
//! executes their effects against a simulated network, store, GPUs,
//! executors and publishing API, with faults injected from the scenario.
//!
//! Architecture invariant: nothing here reads the wall clock or an unseeded
//! RNG, and every collection iterated is ordered (`BTreeMap`, `Vec`), so a
//! seed fixes the whole run.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;

use actors::channel::{ChannelEffect, ChannelInput, ChannelMachine};
use actors::gpu::{GpuEffect, GpuInput, GpuMachine, GpuNotice};
use actors::membership::{MembershipEffect, MembershipInput, MembershipMachine};
use actors::protocol::{
    JobFailure, JobId, JobKind, JobOutcome, JobSpec, LookupOutcome, PublishOutcome,
};
use actors::dispatch::{DispatchEffect, DispatchInput, DispatchMachine};
use actors::rng::SeededRng;
use actors::store::{MemStore, StoreError, StoreOp, StoreReply, Txn, Write};
use topology::{placement, ChannelId, GpuId, NodeId, RegionId, Topology};

use crate::api::PublishApi;
use crate::checks::{Failover, Invariant, StoreWatch, Truth, Violation};
use crate::scenario::{Fault, Scenario};
use crate::trace::Trace;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReplyTo {
    Membership,
    Channel(ChannelId, u64),
}

#[derive(Clone, Debug)]
enum Msg {
    Membership(MembershipInput),
    /// To whichever machine hosts the channel (results matched by id).
    Channel(ChannelId, ChannelInput),
    /// To one machine instance only (store replies).
    ChannelGen(ChannelId, u64, ChannelInput),
    Gpu(usize, GpuInput),
    Region(DispatchInput),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Actor {
    Membership,
    Channel(ChannelId, u64),
    Gpu(usize),
    Dispatcher,
}

#[derive(Clone, Debug)]
enum Ev {
    Tick {
        node: NodeId,
        inc: u32,
        actor: Actor,
        /// The moment it was scheduled for: a tick that waited (its node
        /// was frozen) arrives late, and is still the current one.
        due: u64,
    },
    Deliver {
        node: NodeId,
        inc: Option<u32>,
        msg: Msg,
    },
    StoreArrive {
        node: NodeId,
        inc: u32,
        reply_to: ReplyTo,
        op_id: u64,
        op: StoreOp,
        fence: Option<(ChannelId, u64)>,
    },
    LocalJobEnd {
        node: NodeId,
        inc: u32,
        spec: Box<JobSpec>,
        ok: bool,
    },
    GpuEnd {
        gpu: GpuId,
        inc: u32,
        id: JobId,
        ok: bool,
    },
    UploadArrive {
        node: NodeId,
        ch: ChannelId,
        slot: u64,
        attempt: u32,
        key: String,
        sent_ms: u64,
        timeout_ms: u64,
    },
    UploadDone {
        node: NodeId,
        ch: ChannelId,
        slot: u64,
        attempt: u32,
        key: String,
        lost: bool,
        /// The client's clock when it sent, and its timeout: past that on
        /// the client's clock, it has stopped sending and the upload dies.
        give_up_local_ms: u64,
        charged: Vec<u64>,
        day: u64,
    },
    LookupArrive {
        node: NodeId,
        ch: ChannelId,
        slot: u64,
        key: String,
    },
    Fault(Fault),
    Heal,
    Probe,
    End,
}

/// A queue entry: the event itself waits in a slab, so that the heap
/// moves 24 bytes per swap rather than a whole event.
struct Scheduled {
    at: u64,
    seq: u64,
    slot: u32,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> Ordering {
        // BinaryHeap is a max-heap: earliest first.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// A node's clock: true time plus an offset, running fast or slow by
/// `drift_ppm`, never going backwards.
#[derive(Clone, Copy, Debug, Default)]
struct Clock {
    offset_ms: i64,
    drift_ppm: i32,
    anchor_ms: u64,
    last_ms: u64,
}

impl Clock {
    fn local(&mut self, true_ms: u64) -> u64 {
        let elapsed = true_ms.saturating_sub(self.anchor_ms) as i128;
        let drift = elapsed * i128::from(self.drift_ppm) / 1_000_000;
        let t = (true_ms as i128 + i128::from(self.offset_ms) + drift).max(0) as u64;
        self.last_ms = self.last_ms.max(t);
        self.last_ms
    }
    /// The true time at which this clock reads `local_ms` (at least `now`).
    fn true_at(&self, local_ms: u64, now_ms: u64) -> u64 {
        let base = local_ms as i128 - i128::from(self.offset_ms);
        let rate = 1_000_000 + i128::from(self.drift_ppm);
        let elapsed = (base - self.anchor_ms as i128) * 1_000_000 / rate;
        let t = (self.anchor_ms as i128 + elapsed).max(0) as u64;
        t.max(now_ms + 1)
    }
}

struct HostedChannel {
    m: ChannelMachine,
    gen: u64,
    tick: Option<u64>,
}

struct SimNode {
    id: NodeId,
    region: RegionId,
    alive: bool,
    inc: u32,
    clock: Clock,
    membership: Option<(MembershipMachine, Option<u64>)>,
    channels: BTreeMap<ChannelId, HostedChannel>,
    gpus: Vec<(GpuMachine, Option<u64>)>,
    dispatcher: Option<(DispatchMachine, Option<u64>)>,
    placeable: Vec<bool>,
    /// Which node hosts each region's dispatcher, in this node's view.
    dispatchers: Vec<Option<NodeId>>,
    lease_valid_until: u64,
}

struct GpuHw {
    node: NodeId,
    total_bytes: u64,
    used_bytes: u64,
    running: BTreeMap<JobId, (u64, u64, Box<JobSpec>)>,
    busy_since: Option<u64>,
    busy_ms: u64,
}

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

pub struct World {
    pub sc: Scenario,
    pub topo: Arc<Topology>,
    pub now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    slab: Vec<Option<Ev>>,
    free_slots: Vec<u32>,
    rng: SeededRng,
    nodes: Vec<SimNode>,
    pub store: MemStore,
    store_outage: bool,
    unknown_ppm: u32,
    partitioned: Vec<bool>,
    one_way: BTreeSet<(RegionId, RegionId)>,
    loss_ppm: u32,
    dup_ppm: u32,
    reorder_ppm: u32,
    gpu_hw: Vec<GpuHw>,
    gpu_local: Vec<(NodeId, usize)>,
    gpu_fail_ppm: u32,
    straggler_ppm: u32,
    providers_down: BTreeSet<String>,
    pub api: PublishApi,
    pub watch: StoreWatch,
    pub truth: Truth,
    pub stats: Stats,
    pub trace: Trace,
    pub violation: Option<Violation>,
    machine_gen: u64,
    /// Channels with a kill or pause in force, and since when (true ms).
    stopped_since: BTreeMap<Option<ChannelId>, u64>,
    pub heal_at: u64,
    pub end_at: u64,
    /// Active video records at the heal: each must end before `end_at`.
    pub must_finish: Vec<(ChannelId, u64)>,
    pending_failovers: Vec<usize>,
    cancelled_local: BTreeSet<JobId>,
    /// Drains asked and not yet finished: (incarnation, asked at).
    pub(crate) drains_pending: BTreeMap<NodeId, (u32, u64)>,
    frozen: Vec<bool>,
    frozen_events: Vec<Vec<Ev>>,
    deferred_controls: Vec<Fault>,
    ch_buf: Vec<ChannelEffect>,
    mem_buf: Vec<MembershipEffect>,
    gpu_buf: Vec<GpuEffect>,
    reg_buf: Vec<DispatchEffect>,
}

const PROBE_MS: u64 = 100;

#[path = "lifecycle.rs"]
mod lifecycle;

impl World {
    pub fn new(sc: Scenario, seed: u64, trace: Trace) -> World {
        let topo = Arc::clone(&sc.topology);
        let mut rng = SeededRng::new(seed);
        let start = sc.start_utc_ms;
        let mut gpu_hw = Vec::new();
        let mut gpu_local = Vec::new();
        let nodes = topo
            .node_ids()
            .map(|n| {
                let spec = topo.node(n);
                let gpus = spec
                    .gpus
                    .iter()
                    .enumerate()
                    .map(|(i, g)| {
                        let gs = topo.gpu(*g);
                        debug_assert_eq!(gpu_hw.len(), g.index(), "GPUs are numbered node by node");
                        gpu_hw.push(GpuHw {
                            node: n,
                            total_bytes: gs.memory_bytes,
                            used_bytes: 0,
                            running: BTreeMap::new(),
                            busy_since: None,
                            busy_ms: 0,
                        });
                        gpu_local.push((n, i));
                        (
                            GpuMachine::new(
                                *g,
                                gs.memory_bytes,
                                gs.cost_per_hour_micros,
                                sc.machines.gpu,
                            ),
                            None,
                        )
                    })
                    .collect();
                SimNode {
                    id: n,
                    region: spec.region,
                    alive: false,
                    inc: 0,
                    clock: Clock {
                        anchor_ms: start,
                        ..Clock::default()
                    },
                    membership: None,
                    channels: BTreeMap::new(),
                    gpus,
                    dispatcher: None,
                    placeable: vec![false; topo.nodes.len()],
                    dispatchers: vec![None; topo.regions.len()],
                    lease_valid_until: 0,
                }
            })
            .collect();
        let heal_at = start + sc.duration_ms;
        let end_at = heal_at + sc.bounds.liveness_ms;
        let rng_world = rng.fork(1);
        let mut w = World {
            topo: Arc::clone(&topo),
            now: start,
            seq: 0,
            queue: BinaryHeap::new(),
            slab: Vec::new(),
            free_slots: Vec::new(),
            rng: rng_world,
            nodes,
            store: MemStore::new(),
            store_outage: false,
            unknown_ppm: 0,
            partitioned: vec![false; topo.regions.len()],
            one_way: BTreeSet::new(),
            loss_ppm: 0,
            dup_ppm: 0,
            reorder_ppm: 0,
            gpu_hw,
            gpu_local,
            gpu_fail_ppm: 0,
            straggler_ppm: 0,
            providers_down: BTreeSet::new(),
            api: PublishApi::default(),
            watch: StoreWatch {
                retry_limits: crate::checks::RetryLimits {
                    stage_attempts_max: sc.machines.channel.stage_attempts_max,
                    publish_attempts_max: sc.machines.channel.publish_attempts_max,
                },
                ..StoreWatch::default()
            },
            truth: Truth::default(),
            stats: Stats::default(),
            trace,
            violation: None,
            machine_gen: 0,
            stopped_since: BTreeMap::new(),
            heal_at,
            end_at,
            must_finish: Vec::new(),
            pending_failovers: Vec::new(),
            cancelled_local: BTreeSet::new(),
            drains_pending: BTreeMap::new(),
            frozen: vec![false; topo.nodes.len()],
            frozen_events: vec![Vec::new(); topo.nodes.len()],
            deferred_controls: Vec::new(),
            ch_buf: Vec::new(),
            mem_buf: Vec::new(),
            gpu_buf: Vec::new(),
            reg_buf: Vec::new(),
            sc,
        };
        let faults = w.sc.faults.clone();
        for f in faults {
            match f.fault {
                // A clock that is off from the start is set before its node
                // boots, rather than stepped under a running node.
                Fault::ClockSkew {
                    node,
                    offset_ms,
                    drift_ppm,
                } if f.at_ms == 0 => {
                    let c = &mut w.nodes[node.index()].clock;
                    c.offset_ms = offset_ms;
                    c.drift_ppm = drift_ppm;
                }
                fault => w.push(start + f.at_ms, Ev::Fault(fault)),
            }
        }
        for n in topo.node_ids() {
            if !w.sc.world.late_nodes.contains(&n) {
                w.start_node(n);
            }
        }
        w.push(heal_at, Ev::Heal);
        w.push(end_at, Ev::End);
        w.push(start + PROBE_MS, Ev::Probe);
        w
    }

    fn rel(&self) -> u64 {
        self.now - self.sc.start_utc_ms
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.slab[s as usize] = Some(ev);
                s
            }
            None => {
                self.slab.push(Some(ev));
                (self.slab.len() - 1) as u32
            }
        };
        self.queue.push(Scheduled {
            at: at.max(self.now),
            seq: self.seq,
            slot,
        });
    }

    /// Queues a delivery to `node` at the present moment (after whatever is
    /// already queued for now).
    fn deliver_now(&mut self, node: NodeId, inc: Option<u32>, msg: Msg) {
        self.push(self.now, Ev::Deliver { node, inc, msg });
    }

    fn fail(&mut self, v: Violation) {
        if self.violation.is_none() {
            self.violation = Some(v);
        }
    }

    /// A panic stopped the run: the seed fails with its message.
    pub fn fail_with_panic(&mut self, message: String) {
        let rel = self.rel();
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
        let Some(s) = self.queue.pop() else {
            return false;
        };
        assert!(s.at >= self.now, "time only moves forward");
        self.now = s.at;
        let Some(ev) = self.slab[s.slot as usize].take() else {
            return true;
        };
        self.free_slots.push(s.slot);
        let end = matches!(ev, Ev::End);
        self.dispatch(ev);
        !(self.violation.is_some() || end)
    }

    /// When the next event is due (true ms), if any.
    pub(crate) fn next_event_at(&self) -> Option<u64> {
        self.queue.peek().map(|s| s.at)
    }

    /// The nodes hosting a machine for `ch`.
    pub(crate) fn hosting(&self, ch: ChannelId) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.alive && n.channels.contains_key(&ch))
            .map(|n| n.id)
            .collect()
    }

    pub(crate) fn describe_node(&mut self, node: NodeId) -> String {
        let local = self.local_now(node);
        let n = &self.nodes[node.index()];
        let mut s = format!(
            "{} alive {} inc {} frozen {} dispatchers {:?} lease until {}\n",
            node,
            n.alive,
            n.inc,
            self.frozen[node.index()],
            n.dispatchers,
            n.lease_valid_until
        );
        if let Some((m, _)) = &n.membership {
            s += &format!(
                "  membership {:?} members {:?}\n",
                m.phase(),
                m.members()
            );
        }
        if let Some((d, _)) = &n.dispatcher {
            s += &d.describe(local);
        }
        for (g, _) in &n.gpus {
            s += &format!("  {}\n", g.describe());
        }
        s
    }

    pub(crate) fn channel_machine(&self, node: NodeId, ch: ChannelId) -> Option<&ChannelMachine> {
        self.nodes.get(node.index())?.channels.get(&ch).map(|h| &h.m)
    }

    /// The node an event acts on, if it is one a frozen node must wait for.
    fn frozen_target(&self, ev: &Ev) -> Option<NodeId> {
        let node = match ev {
            Ev::Tick { node, .. }
            | Ev::Deliver { node, .. }
            | Ev::LocalJobEnd { node, .. }
            | Ev::UploadDone { node, .. } => *node,
            Ev::GpuEnd { gpu, .. } => self.gpu_local[gpu.index()].0,
            _ => return None,
        };
        self.frozen[node.index()].then_some(node)
    }

    fn dispatch(&mut self, ev: Ev) {
        if let Some(node) = self.frozen_target(&ev) {
            self.frozen_events[node.index()].push(ev);
            return;
        }
        let rel = self.rel();
        match ev {
            Ev::Tick {
                node,
                inc,
                actor,
                due,
            } => {
                if !self.is_current(node, inc) {
                    return;
                }
                self.trace.event(rel, node.0, "tick", actor_code(actor), 0);
                self.on_tick(node, actor, due);
            }
            Ev::Deliver { node, inc, msg } => {
                if !self.nodes[node.index()].alive
                    || inc.is_some_and(|i| i != self.nodes[node.index()].inc)
                {
                    return;
                }
                self.trace
                    .event(rel, node.0, msg_name(&msg), msg_code(&msg), 0);
                self.deliver(node, msg);
            }
            Ev::StoreArrive {
                node,
                inc,
                reply_to,
                op_id,
                op,
                fence,
            } => {
                self.trace
                    .event(rel, node.0, "store-op", op_id, store_op_code(&op));
                self.store_arrive(node, inc, reply_to, op_id, op, fence);
            }
            Ev::LocalJobEnd {
                node,
                inc,
                spec,
                ok,
            } => {
                if !self.is_current(node, inc) || self.cancelled_local.remove(&spec.id) {
                    return;
                }
                self.trace
                    .event(rel, node.0, "local-job-end", spec.id.slot, u64::from(ok));
                let outcome = if ok {
                    let cost = spec.fixed_cost_micros;
                    self.bill(&spec, cost);
                    JobOutcome::Succeeded { cost_micros: cost }
                } else {
                    self.truth
                        .stage_failed(spec.id.channel, spec.id.slot, spec.id.stage);
                    JobOutcome::Failed {
                        failure: JobFailure::ProviderError,
                        retryable: true,
                        cost_micros: 0,
                    }
                };
                self.deliver(
                    node,
                    Msg::Channel(
                        spec.id.channel,
                        ChannelInput::JobFinished {
                            id: spec.id,
                            outcome,
                        },
                    ),
                );
            }
            Ev::GpuEnd { gpu, inc, id, ok } => {
                let (node, local) = self.gpu_local[gpu.index()];
                if !self.is_current(node, inc) {
                    return;
                }
                if !self.gpu_hw_stop(gpu, id) {
                    return;
                }
                if !ok {
                    self.truth.stage_failed(id.channel, id.slot, id.stage);
                }
                self.trace
                    .event(rel, node.0, "gpu-job-end", id.slot, u64::from(ok));
                self.deliver(node, Msg::Gpu(local, GpuInput::Finished { id, ok }));
            }
            Ev::UploadArrive {
                node,
                ch,
                slot,
                attempt,
                key,
                sent_ms,
                timeout_ms,
            } => {
                self.trace
                    .event(rel, node.0, "upload-arrive", u64::from(ch.0), slot);
                self.upload_arrive(node, ch, slot, attempt, key, sent_ms, timeout_ms);
            }
            Ev::UploadDone {
                node,
                ch,
                slot,
                attempt,
                key,
                lost,
                give_up_local_ms,
                charged,
                day,
            } => {
                self.trace
                    .event(rel, node.0, "upload-done", u64::from(ch.0), slot);
                let project = self.topo.channel(ch).project;
                if self.nodes[node.index()].alive && self.local_now(node) >= give_up_local_ms {
                    // The client gave up before the last byte: no video.
                    self.api.refund(project, day, &charged);
                    return;
                }
                self.api.settle(project, &charged);
                let duplicate_before = self.api.duplicates.len();
                let remote_id = self.api.complete(key.clone(), ch, slot, project, self.now);
                if self.api.duplicates.len() > duplicate_before {
                    self.fail(Violation::new(
                        Invariant::NoDoublePublish,
                        format!("video {key} uploaded twice"),
                        rel,
                    ));
                    return;
                }
                self.stats.published += 1;
                if let Some(planned) = self.watch.planned_at.get(&(ch, slot)) {
                    self.stats.publish_latency_ms.push(self.now - planned);
                }
                let charged = self.api.charged_total.get(&project).copied().unwrap_or(0);
                let reserved = self.watch.ledger_units.get(&project).copied().unwrap_or(0);
                if charged > reserved {
                    self.fail(Violation::new(
                        Invariant::QuotaNeverExceeded,
                        format!(
                            "project {} charged {charged} units by the API but only {reserved} reserved in the ledger",
                            self.topo.project(project).name
                        ),
                        rel,
                    ));
                    return;
                }
                if !lost {
                    let at = self.now + self.sc.world.api_latency_ms;
                    self.push(
                        at,
                        Ev::Deliver {
                            node,
                            inc: None,
                            msg: Msg::Channel(
                                ch,
                                ChannelInput::PublishResult {
                                    slot,
                                    attempt,
                                    outcome: PublishOutcome::Published { remote_id },
                                },
                            ),
                        },
                    );
                }
            }
            Ev::LookupArrive {
                node,
                ch,
                slot,
                key,
            } => {
                self.trace
                    .event(rel, node.0, "lookup-arrive", u64::from(ch.0), slot);
                self.lookup_arrive(node, ch, slot, key);
            }
            Ev::Fault(f) => {
                self.trace.event(rel, 0, "fault", fault_code(&f), 0);
                self.apply_fault(f);
            }
            Ev::Heal => {
                self.trace.event(rel, 0, "heal", 0, 0);
                self.heal();
            }
            Ev::Probe => {
                self.probe();
                if self.now + PROBE_MS < self.end_at {
                    self.push(self.now + PROBE_MS, Ev::Probe);
                }
            }
            Ev::End => {
                self.trace.event(rel, 0, "end", 0, 0);
                self.final_checks();
            }
        }
    }

    fn is_current(&self, node: NodeId, inc: u32) -> bool {
        let n = &self.nodes[node.index()];
        n.alive && n.inc == inc
    }

    fn local_now(&mut self, node: NodeId) -> u64 {
        let now = self.now;
        self.nodes[node.index()].clock.local(now)
    }

    // ----- nodes ---------------------------------------------------------

    fn start_node(&mut self, node: NodeId) {
        let seed = self.rng.next_u64();
        let topo = Arc::clone(&self.topo);
        let params = self.sc.machines.membership;
        let gpu_params = self.sc.machines.gpu;
        let n = &mut self.nodes[node.index()];
        if n.alive {
            return;
        }
        n.alive = true;
        n.inc += 1;
        n.membership = Some((
            MembershipMachine::new(topo.clone(), node, params, seed),
            None,
        ));
        n.channels.clear();
        n.dispatcher = None;
        n.placeable = vec![false; topo.nodes.len()];
        n.dispatchers = vec![None; topo.regions.len()];
        n.lease_valid_until = 0;
        for (i, g) in topo.node(node).gpus.iter().enumerate() {
            let gs = topo.gpu(*g);
            n.gpus[i] = (
                GpuMachine::new(*g, gs.memory_bytes, gs.cost_per_hour_micros, gpu_params),
                None,
            );
        }
        let inc = n.inc;
        self.deliver_now(node, Some(inc), Msg::Membership(MembershipInput::Start));
        for i in 0..topo.node(node).gpus.len() {
            self.deliver_now(node, Some(inc), Msg::Gpu(i, GpuInput::Tick));
        }
    }

    fn crash_node(&mut self, node: NodeId) {
        self.frozen[node.index()] = false;
        self.frozen_events[node.index()].clear();
        let now = self.now;
        let n = &mut self.nodes[node.index()];
        if !n.alive {
            return;
        }
        n.alive = false;
        n.membership = None;
        n.channels.clear();
        n.dispatcher = None;
        // Jobs on its GPUs die with it, billed for the time they held.
        let gpus: Vec<GpuId> = self.topo.node(node).gpus.clone();
        for g in gpus {
            let ids: Vec<JobId> = self.gpu_hw[g.index()].running.keys().copied().collect();
            for id in ids {
                self.gpu_hw_stop(g, id);
            }
            if let Some(s) = self.gpu_hw[g.index()].busy_since.take() {
                self.gpu_hw[g.index()].busy_ms += now - s;
            }
        }
    }

    fn hosts_dispatcher(&self, node: NodeId) -> bool {
        let n = &self.nodes[node.index()];
        n.dispatchers[n.region.index()] == Some(node)
    }

    fn dispatcher_node(&self, from: NodeId, region: RegionId) -> Option<NodeId> {
        self.nodes[from.index()].dispatchers[region.index()]
    }

    // ----- ticks and deliveries -----------------------------------------

    fn on_tick(&mut self, node: NodeId, actor: Actor, due: u64) {
        let n = &mut self.nodes[node.index()];
        let due_slot = match actor {
            Actor::Membership => n.membership.as_mut().map(|(_, t)| t),
            Actor::Channel(ch, gen) => n
                .channels
                .get_mut(&ch)
                .filter(|h| h.gen == gen)
                .map(|h| &mut h.tick),
            Actor::Gpu(i) => n.gpus.get_mut(i).map(|(_, t)| t),
            Actor::Dispatcher => n.dispatcher.as_mut().map(|(_, t)| t),
        };
        let Some(slot) = due_slot else { return };
        if *slot != Some(due) {
            return; // superseded by an earlier tick
        }
        *slot = None;
        match actor {
            Actor::Membership => self.deliver(node, Msg::Membership(MembershipInput::Tick)),
            Actor::Channel(ch, gen) => {
                self.deliver(node, Msg::ChannelGen(ch, gen, ChannelInput::Tick))
            }
            Actor::Gpu(i) => self.deliver(node, Msg::Gpu(i, GpuInput::Tick)),
            Actor::Dispatcher => self.deliver(node, Msg::Region(DispatchInput::Tick)),
        }
    }

    /// Schedules a tick for `actor` at its local `deadline` unless an
    /// earlier one is pending.
    fn schedule_tick(&mut self, node: NodeId, actor: Actor, deadline: Option<u64>) {
        let Some(d) = deadline else { return };
        let now = self.now;
        let n = &mut self.nodes[node.index()];
        let at = n.clock.true_at(d, now);
        let inc = n.inc;
        let slot = match actor {
            Actor::Membership => n.membership.as_mut().map(|(_, t)| t),
            Actor::Channel(ch, _) => n.channels.get_mut(&ch).map(|h| &mut h.tick),
            Actor::Gpu(i) => n.gpus.get_mut(i).map(|(_, t)| t),
            Actor::Dispatcher => n.dispatcher.as_mut().map(|(_, t)| t),
        };
        let Some(slot) = slot else { return };
        if slot.is_some_and(|t| t <= at && t >= now) {
            return;
        }
        *slot = Some(at);
        self.push(
            at,
            Ev::Tick {
                node,
                inc,
                actor,
                due: at,
            },
        );
    }

    fn deliver(&mut self, node: NodeId, msg: Msg) {
        let local = self.local_now(node);
        match msg {
            Msg::Membership(input) => {
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
            Msg::Channel(ch, input) => self.deliver_channel(node, ch, None, input, local),
            Msg::ChannelGen(ch, gen, input) => {
                self.deliver_channel(node, ch, Some(gen), input, local)
            }
            Msg::Gpu(i, input) => {
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
            Msg::Region(input) => {
                let mut out = std::mem::take(&mut self.reg_buf);
                let Some((r, _)) = self.nodes[node.index()].dispatcher.as_mut() else {
                    return;
                };
                r.handle(local, input, &mut out);
                let d = r.next_deadline();
                self.stats.spilled_jobs = self.stats.spilled_jobs.max(r.spilled());
                self.schedule_tick(node, Actor::Dispatcher, d);
                for e in out.drain(..) {
                    self.exec_region(node, e);
                }
                self.reg_buf = out;
            }
        }
    }

    fn deliver_channel(
        &mut self,
        node: NodeId,
        ch: ChannelId,
        gen: Option<u64>,
        input: ChannelInput,
        local: u64,
    ) {
        let mut out = std::mem::take(&mut self.ch_buf);
        let n = &mut self.nodes[node.index()];
        let lease_valid_until = n.lease_valid_until;
        let Some(h) = n.channels.get_mut(&ch) else {
            return;
        };
        if gen.is_some_and(|g| g != h.gen) {
            return;
        }
        h.m.note_lease_valid_until(lease_valid_until);
        h.m.handle(local, input, &mut out);
        let d = h.m.next_deadline();
        let g = h.gen;
        self.schedule_tick(node, Actor::Channel(ch, g), d);
        for e in out.drain(..) {
            self.exec_channel(node, ch, g, e);
        }
        self.ch_buf = out;
    }

    // ----- the network ---------------------------------------------------

    fn region_blocked(&self, a: RegionId, b: RegionId) -> bool {
        a != b && (self.partitioned[a.index()] || self.partitioned[b.index()])
    }

    /// Sends a node-to-node message through the simulated network.
    fn send(&mut self, from: NodeId, to: NodeId, msg: Msg) {
        if from == to {
            self.deliver_now(to, None, msg);
            return;
        }
        let (ra, rb) = (
            self.nodes[from.index()].region,
            self.nodes[to.index()].region,
        );
        if self.region_blocked(ra, rb) || self.one_way.contains(&(ra, rb)) {
            return;
        }
        if self.rng.chance(self.loss_ppm) {
            return;
        }
        let mut delay =
            u64::from(self.topo.latency(ra, rb)) + self.rng.below(self.sc.world.jitter_ms + 1);
        if self.rng.chance(self.reorder_ppm) {
            delay += self.rng.below(50);
        }
        if self.rng.chance(self.dup_ppm) {
            let extra = delay + self.rng.below(20);
            self.push(
                self.now + extra,
                Ev::Deliver {
                    node: to,
                    inc: None,
                    msg: msg.clone(),
                },
            );
        }
        self.push(
            self.now + delay,
            Ev::Deliver {
                node: to,
                inc: None,
                msg,
            },
        );
    }

    // ----- the store -----------------------------------------------------

    fn store_latency(&mut self, node: NodeId) -> u64 {
        let r = self.nodes[node.index()].region;
        u64::from(self.topo.latency(r, self.sc.world.store_region))
            + self.sc.world.store_service_ms
            + self.rng.below(self.sc.world.jitter_ms + 1)
    }

    fn store_reachable(&self, node: NodeId) -> bool {
        let r = self.nodes[node.index()].region;
        !self.store_outage && !self.region_blocked(r, self.sc.world.store_region)
    }

    fn send_store(
        &mut self,
        node: NodeId,
        reply_to: ReplyTo,
        op_id: u64,
        op: StoreOp,
        fence: Option<(ChannelId, u64)>,
    ) {
        self.stats.store_ops += 1;
        let inc = self.nodes[node.index()].inc;
        let lat = self.store_latency(node);
        self.push(
            self.now + lat,
            Ev::StoreArrive {
                node,
                inc,
                reply_to,
                op_id,
                op,
                fence,
            },
        );
    }

    fn store_arrive(
        &mut self,
        node: NodeId,
        inc: u32,
        reply_to: ReplyTo,
        op_id: u64,
        op: StoreOp,
        fence: Option<(ChannelId, u64)>,
    ) {
        let rel = self.rel();
        let reply = if !self.store_reachable(node) {
            // The client hears nothing and gives up after its timeout.
            let at = self.now + 1_000;
            self.push_reply(
                node,
                inc,
                reply_to,
                op_id,
                StoreReply::Failed(StoreError::Unavailable("store unreachable".into())),
                at,
            );
            return;
        } else {
            match &op {
                StoreOp::Commit(txn) => {
                    if let Err(e) = actors::store::check_limits(&op) {
                        StoreReply::Failed(e)
                    } else if self.rng.chance(self.sc.world.store_conflict_ppm) {
                        StoreReply::Failed(StoreError::Conflict { check_index: None })
                    } else if self.rng.chance(self.unknown_ppm) {
                        self.stats.commit_unknowns += 1;
                        if self.rng.chance(500_000) {
                            self.apply_commit(node, txn, fence, rel);
                        }
                        StoreReply::Failed(StoreError::CommitUnknown)
                    } else {
                        match self.apply_commit(node, txn, fence, rel) {
                            Some(r) => r,
                            None => return,
                        }
                    }
                }
                other => self.store.apply(other),
            }
        };
        let at = self.now + self.store_latency(node);
        self.push_reply(node, inc, reply_to, op_id, reply, at);
    }

    fn apply_commit(
        &mut self,
        node: NodeId,
        txn: &Txn,
        fence: Option<(ChannelId, u64)>,
        rel: u64,
    ) -> Option<StoreReply> {
        if self.store.evaluate(&txn.checks).is_ok() {
            let fence = fence.map(|(ch, epoch)| (ch, node, epoch));
            if let Err(v) = self.watch.before_apply(
                &self.topo,
                &self.truth,
                &self.store,
                txn,
                fence,
                self.now,
                rel,
            ) {
                self.fail(v);
                return None;
            }
        }
        Some(match self.store.commit_checked(txn) {
            Ok(v) => StoreReply::Committed(v),
            Err(e) => StoreReply::Failed(e),
        })
    }

    fn push_reply(
        &mut self,
        node: NodeId,
        inc: u32,
        reply_to: ReplyTo,
        op_id: u64,
        reply: StoreReply,
        at: u64,
    ) {
        let msg = match reply_to {
            ReplyTo::Membership => Msg::Membership(MembershipInput::StoreReply { op_id, reply }),
            ReplyTo::Channel(ch, gen) => {
                Msg::ChannelGen(ch, gen, ChannelInput::StoreReply { op_id, reply })
            }
        };
        self.push(
            at,
            Ev::Deliver {
                node,
                inc: Some(inc),
                msg,
            },
        );
    }

    // ----- effects -------------------------------------------------------

    fn exec_membership(&mut self, node: NodeId, e: MembershipEffect) {
        match e {
            MembershipEffect::Store { op_id, op } => {
                self.send_store(node, ReplyTo::Membership, op_id, op, None)
            }
            MembershipEffect::StartChannel {
                channel,
                epoch,
                incarnation,
            } => {
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
                self.nodes[node.index()]
                    .channels
                    .insert(channel, HostedChannel { m, gen, tick: None });
                let inc = self.nodes[node.index()].inc;
                self.deliver_now(
                    node,
                    Some(inc),
                    Msg::ChannelGen(channel, gen, ChannelInput::Start),
                );
            }
            MembershipEffect::ReleaseChannel(ch) => {
                self.deliver_now(node, None, Msg::Channel(ch, ChannelInput::Release));
            }
            MembershipEffect::DropAllChannels => {
                self.nodes[node.index()].channels.clear();
            }
            MembershipEffect::View(members) => {
                let n = &mut self.nodes[node.index()];
                n.placeable = vec![false; self.topo.nodes.len()];
                for m in &members.nodes {
                    if !members.is_draining(*m) {
                        n.placeable[m.index()] = true;
                    }
                }
                n.dispatchers = (0..self.topo.regions.len())
                    .map(|r| placement::dispatcher_of(&self.topo, RegionId(r as u16), &n.placeable))
                    .collect();
                let host = self.hosts_dispatcher(node);
                let n = &mut self.nodes[node.index()];
                match (host, n.dispatcher.is_some()) {
                    (true, false) => {
                        n.dispatcher = Some((
                            DispatchMachine::new(
                                Arc::clone(&self.topo),
                                n.region,
                                self.sc.machines.dispatch,
                            ),
                            None,
                        ));
                        let inc = n.inc;
                        self.deliver_now(node, Some(inc), Msg::Region(DispatchInput::Tick));
                    }
                    (false, true) => n.dispatcher = None,
                    _ => {}
                }
                // GPUs report to the (possibly new) dispatcher at once, and
                // the dispatcher forgets GPUs of nodes that left.
                let inc = self.nodes[node.index()].inc;
                for i in 0..self.nodes[node.index()].gpus.len() {
                    self.deliver_now(node, Some(inc), Msg::Gpu(i, GpuInput::ReportNow));
                }
                if self.nodes[node.index()].dispatcher.is_some() {
                    let live = self.nodes[node.index()].placeable.clone();
                    self.deliver_now(node, Some(inc), Msg::Region(DispatchInput::Members(live)));
                }
            }
            MembershipEffect::LeaseValidUntil(t) => {
                // Channels read it before each input (`note_lease_valid_until`).
                self.nodes[node.index()].lease_valid_until = t;
            }
            MembershipEffect::Control {
                channel,
                record,
                version,
            } => {
                let targets: Vec<(ChannelId, ChannelInput)> = match channel {
                    Some(ch) => vec![(ch, ChannelInput::Control { record, version })],
                    None => self.nodes[node.index()]
                        .channels
                        .keys()
                        .map(|ch| (*ch, ChannelInput::ControlAll { record, version }))
                        .collect(),
                };
                for (ch, input) in targets {
                    self.deliver_now(node, None, Msg::Channel(ch, input));
                }
            }
            MembershipEffect::NodeRemoved(_) => self.stats.node_removals += 1,
            MembershipEffect::Drained => {
                self.drains_pending.remove(&node);
                self.crash_node(node);
            }
        }
    }

    fn exec_channel(&mut self, node: NodeId, ch: ChannelId, gen: u64, e: ChannelEffect) {
        match e {
            ChannelEffect::Store { op_id, op } => {
                let epoch = self.nodes[node.index()]
                    .channels
                    .get(&ch)
                    .map(|h| h.m.epoch())
                    .unwrap_or(0);
                let fence = matches!(op, StoreOp::Commit(_)).then_some((ch, epoch));
                self.send_store(node, ReplyTo::Channel(ch, gen), op_id, op, fence);
            }
            ChannelEffect::StartJob(spec) => self.start_job(node, spec),
            ChannelEffect::CancelJob { id, gpu } => match gpu {
                Some(g) => {
                    let (gn, local) = self.gpu_local[g.index()];
                    self.send(node, gn, Msg::Gpu(local, GpuInput::Cancel(id)));
                }
                None => {
                    self.cancelled_local.insert(id);
                }
            },
            ChannelEffect::Publish {
                slot,
                attempt,
                idempotency_key,
                timeout_ms,
            } => {
                let at = self.now + self.sc.world.api_latency_ms;
                let sent_ms = self.local_now(node);
                self.push(
                    at,
                    Ev::UploadArrive {
                        node,
                        ch,
                        slot,
                        attempt,
                        key: idempotency_key,
                        sent_ms,
                        timeout_ms,
                    },
                );
            }
            ChannelEffect::Lookup {
                slot,
                idempotency_key,
            } => {
                let at = self.now + self.sc.world.api_latency_ms;
                self.push(
                    at,
                    Ev::LookupArrive {
                        node,
                        ch,
                        slot,
                        key: idempotency_key,
                    },
                );
            }
            ChannelEffect::Released | ChannelEffect::Fenced => {
                if matches!(e, ChannelEffect::Fenced) {
                    self.stats.fenced += 1;
                }
                let n = &mut self.nodes[node.index()];
                if n.channels.get(&ch).is_some_and(|h| h.gen == gen) {
                    n.channels.remove(&ch);
                }
                let inc = n.inc;
                self.deliver_now(
                    node,
                    Some(inc),
                    Msg::Membership(MembershipInput::ChannelStopped(ch)),
                );
            }
            ChannelEffect::VideoDone { .. } => {}
        }
    }

    fn stop_in_force(&self, ch: ChannelId) -> Option<u64> {
        let all = self.stopped_since.get(&None).copied();
        let own = self.stopped_since.get(&Some(ch)).copied();
        match (all, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn start_job(&mut self, node: NodeId, spec: JobSpec) {
        let rel = self.rel();
        if let Some(since) = self.stop_in_force(spec.id.channel) {
            if self.now > since + self.sc.bounds.stop_ms {
                self.fail(Violation::new(
                    Invariant::KillSwitchWithinBound,
                    format!(
                        "channel {} started stage {} of slot {} {} ms after it was stopped (bound {} ms)",
                        self.topo.channel(spec.id.channel).name,
                        spec.id.stage,
                        spec.id.slot,
                        self.now - since,
                        self.sc.bounds.stop_ms
                    ),
                    rel,
                ));
                return;
            }
        }
        self.stats.jobs_started += 1;
        match &spec.kind {
            JobKind::Gpu => {
                self.stats.gpu_jobs += 1;
                let region = spec.home_region;
                match self.dispatcher_node(node, region) {
                    Some(d) => self.send(node, d, Msg::Region(DispatchInput::Submit(spec))),
                    None => {
                        // No dispatcher in view: try the node's own region.
                        let own = self.nodes[node.index()].region;
                        if let Some(d) = self.dispatcher_node(node, own) {
                            self.send(node, d, Msg::Region(DispatchInput::Submit(spec)));
                        }
                    }
                }
            }
            JobKind::Cpu | JobKind::External { .. } => {
                let ok = match &spec.kind {
                    JobKind::External { provider } => {
                        !self.providers_down.contains(provider)
                            && !self.rng.chance(self.sc.world.provider_error_ppm)
                    }
                    _ => true,
                };
                let dur = if ok {
                    spec.duration.sample_ms(self.rng.next_u32())
                } else {
                    // A failing provider answers fast.
                    200 + self.rng.below(300)
                };
                let inc = self.nodes[node.index()].inc;
                self.push(
                    self.now + dur,
                    Ev::LocalJobEnd {
                        node,
                        inc,
                        spec: Box::new(spec),
                        ok,
                    },
                );
            }
        }
    }

    fn exec_gpu(&mut self, node: NodeId, gpu: GpuId, e: GpuEffect) {
        match e {
            GpuEffect::Run {
                job,
                lease_until_ms,
            } => {
                let rel = self.rel();
                let hw = &mut self.gpu_hw[gpu.index()];
                if hw.used_bytes + job.gpu_memory_bytes > hw.total_bytes {
                    let (used, total) = (hw.used_bytes, hw.total_bytes);
                    self.fail(Violation::new(
                        Invariant::GpuMemoryNeverOvercommitted,
                        format!(
                            "GPU {gpu} asked to hold {} bytes more with {used} of {total} in use",
                            job.gpu_memory_bytes
                        ),
                        rel,
                    ));
                    return;
                }
                let local_start = self.local_now(node);
                let mut dur = job.duration.sample_ms(self.rng.next_u32());
                if self.rng.chance(self.straggler_ppm) {
                    dur *= self.sc.world.straggler_factor;
                }
                let fault = self.rng.chance(self.gpu_fail_ppm);
                if fault {
                    dur = self.rng.below(dur + 1);
                }
                let _ = lease_until_ms;
                let inc = self.nodes[node.index()].inc;
                let hw = &mut self.gpu_hw[gpu.index()];
                hw.used_bytes += job.gpu_memory_bytes;
                if hw.running.is_empty() {
                    hw.busy_since = Some(self.now);
                }
                let id = job.id;
                hw.running
                    .insert(id, (local_start, lease_until_ms, Box::new(job)));
                self.push(
                    self.now + dur,
                    Ev::GpuEnd {
                        gpu,
                        inc,
                        id,
                        ok: !fault,
                    },
                );
            }
            GpuEffect::Kill { id } => {
                // Still running at its lease: the job timed out on a live
                // GPU, a real failure of its stage.
                let lease_until = self.gpu_hw[gpu.index()].running.get(&id).map(|r| r.1);
                if lease_until.is_some_and(|l| self.local_now(node) >= l) {
                    self.truth.stage_failed(id.channel, id.slot, id.stage);
                }
                self.gpu_hw_stop(gpu, id);
            }
            GpuEffect::Notify { to, notice } => {
                let msg = match notice {
                    GpuNotice::Started { id, gpu } => {
                        Msg::Channel(id.channel, ChannelInput::JobStarted { id, gpu: Some(gpu) })
                    }
                    GpuNotice::Finished { id, outcome } => {
                        Msg::Channel(id.channel, ChannelInput::JobFinished { id, outcome })
                    }
                };
                self.send(node, to, msg);
            }
            GpuEffect::Report(report) => {
                let region = self.nodes[node.index()].region;
                if let Some(d) = self.dispatcher_node(node, region) {
                    self.send(node, d, Msg::Region(DispatchInput::Load(report)));
                }
            }
        }
    }

    /// Bills what a job really cost to the truth ledgers (invariant 4 and 9).
    fn bill(&mut self, spec: &JobSpec, cost_micros: u64) {
        let rel = self.rel();
        if let Err(v) = self.truth.bill(
            &self.topo,
            spec.id.channel,
            spec.id.slot,
            spec.budget_day,
            cost_micros,
            rel,
        ) {
            self.fail(v);
        }
    }

    /// Takes a job off the simulated hardware and bills it; false if it was
    /// not running (already stopped).
    fn gpu_hw_stop(&mut self, gpu: GpuId, id: JobId) -> bool {
        let node = self.gpu_hw[gpu.index()].node;
        let Some((local_start, lease_until, spec)) = self.gpu_hw[gpu.index()].running.remove(&id)
        else {
            return false;
        };
        let local_now = self.local_now(node);
        let now = self.now;
        let hw = &mut self.gpu_hw[gpu.index()];
        hw.used_bytes -= spec.gpu_memory_bytes;
        if hw.running.is_empty() {
            if let Some(s) = hw.busy_since.take() {
                hw.busy_ms += now - s;
            }
        }
        let held = local_now
            .saturating_sub(local_start)
            .min(lease_until - local_start);
        let price = self.topo.gpu(gpu).cost_per_hour_micros;
        let cost = spec.fixed_cost_micros + price * held / 3_600_000;
        self.bill(&spec, cost);
        true
    }

    fn exec_region(&mut self, node: NodeId, e: DispatchEffect) {
        match e {
            DispatchEffect::ToGpu { gpu, job } => {
                let (gn, local) = self.gpu_local[gpu.index()];
                self.send(node, gn, Msg::Gpu(local, GpuInput::Submit(job)));
            }
            DispatchEffect::ToRegion { region, job } => {
                if let Some(d) = self.dispatcher_node(node, region) {
                    self.send(node, d, Msg::Region(DispatchInput::Submit(job)));
                }
            }
            DispatchEffect::Refuse { job, failure } => {
                let outcome = JobOutcome::Failed {
                    failure,
                    retryable: true,
                    cost_micros: 0,
                };
                self.send(
                    node,
                    job.owner,
                    Msg::Channel(
                        job.id.channel,
                        ChannelInput::JobFinished {
                            id: job.id,
                            outcome,
                        },
                    ),
                );
            }
            DispatchEffect::Summary {
                region,
                best_wait_ms,
            } => {
                for r in 0..self.topo.regions.len() {
                    let r = RegionId(r as u16);
                    if r == region {
                        continue;
                    }
                    if let Some(d) = self.dispatcher_node(node, r) {
                        self.send(
                            node,
                            d,
                            Msg::Region(DispatchInput::Summary {
                                region,
                                best_wait_ms,
                            }),
                        );
                    }
                }
            }
        }
    }

    // ----- the publishing API -------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn upload_arrive(
        &mut self,
        node: NodeId,
        ch: ChannelId,
        slot: u64,
        attempt: u32,
        key: String,
        sent_ms: u64,
        timeout_ms: u64,
    ) {
        self.api.upload_calls += 1;
        let project = self.topo.channel(ch).project;
        let spec = self.topo.project(project).clone();
        let answer = |outcome| {
            Msg::Channel(
                ch,
                ChannelInput::PublishResult {
                    slot,
                    attempt,
                    outcome,
                },
            )
        };
        let back = self.now + self.sc.world.api_latency_ms;
        if self.rng.chance(self.api.faults.error_5xx_ppm) {
            if let Some(stage) = self.publish_stage_of(ch) {
                self.truth.stage_failed(ch, slot, stage);
            }
            self.push(
                back,
                Ev::Deliver {
                    node,
                    inc: None,
                    msg: answer(PublishOutcome::Transient),
                },
            );
            return;
        }
        if self.rng.chance(self.api.faults.rate_limited_ppm) {
            let outcome = PublishOutcome::RateLimited {
                retry_after_ms: 5_000,
            };
            self.push(
                back,
                Ev::Deliver {
                    node,
                    inc: None,
                    msg: answer(outcome),
                },
            );
            return;
        }
        let done_at = self.now + self.sc.world.upload_ms;
        let day = spec.quota_day(self.now);
        let charged = spec.publish_units();
        if !self.api.try_take(project, &spec, day, &charged) {
            self.push(
                back,
                Ev::Deliver {
                    node,
                    inc: None,
                    msg: answer(PublishOutcome::QuotaExceeded),
                },
            );
            return;
        }
        let lost = self.rng.chance(self.api.faults.lost_response_ppm);
        self.push(
            done_at,
            Ev::UploadDone {
                node,
                ch,
                slot,
                attempt,
                key,
                lost,
                give_up_local_ms: sent_ms + timeout_ms,
                charged,
                day,
            },
        );
    }

    fn lookup_arrive(&mut self, node: NodeId, ch: ChannelId, slot: u64, key: String) {
        self.api.lookup_calls += 1;
        let project = self.topo.channel(ch).project;
        let spec = self.topo.project(project).clone();
        let back = self.now + self.sc.world.api_latency_ms;
        let outcome = if self.rng.chance(self.api.faults.error_5xx_ppm) {
            LookupOutcome::Failed
        } else {
            let mut units = vec![0; spec.buckets.len()];
            units[spec.lookup_cost.bucket] += spec.lookup_cost.units;
            let day = spec.quota_day(self.now);
            if !self.api.try_take(project, &spec, day, &units) {
                LookupOutcome::Failed
            } else {
                self.api.settle(project, &units);
                let charged = self.api.charged_total.get(&project).copied().unwrap_or(0);
                let reserved = self.watch.ledger_units.get(&project).copied().unwrap_or(0);
                if charged > reserved {
                    self.fail(Violation::new(
                        Invariant::QuotaNeverExceeded,
                        format!(
                            "project {} charged {charged} units, {reserved} reserved (lookup)",
                            spec.name
                        ),
                        self.rel(),
                    ));
                    return;
                }
                match self.api.uploads.get(&key) {
                    Some(u) => LookupOutcome::Found {
                        remote_id: u.remote_id.clone(),
                    },
                    None => LookupOutcome::NotFound,
                }
            }
        };
        if self.rng.chance(self.api.faults.lost_response_ppm) {
            return;
        }
        self.push(
            back,
            Ev::Deliver {
                node,
                inc: None,
                msg: Msg::Channel(ch, ChannelInput::LookupResult { slot, outcome }),
            },
        );
    }
}

fn actor_code(a: Actor) -> u64 {
    match a {
        Actor::Membership => 0,
        Actor::Channel(ch, _) => 1 + u64::from(ch.0),
        Actor::Gpu(i) => 1_000_000 + i as u64,
        Actor::Dispatcher => 2_000_000,
    }
}

fn msg_name(m: &Msg) -> &'static str {
    match m {
        Msg::Membership(_) => "to-membership",
        Msg::Channel(..) | Msg::ChannelGen(..) => "to-channel",
        Msg::Gpu(..) => "to-gpu",
        Msg::Region(_) => "to-dispatcher",
    }
}

fn msg_code(m: &Msg) -> u64 {
    match m {
        Msg::Membership(_) => 0,
        Msg::Channel(ch, _) | Msg::ChannelGen(ch, _, _) => u64::from(ch.0),
        Msg::Gpu(i, _) => *i as u64,
        Msg::Region(_) => 0,
    }
}

fn store_op_code(op: &StoreOp) -> u64 {
    match op {
        StoreOp::Get(k) => k.len() as u64,
        StoreOp::Range { limit, .. } => *limit as u64,
        StoreOp::Commit(t) => 1_000 + t.writes.len() as u64,
    }
}

fn fault_code(f: &Fault) -> u64 {
    match f {
        Fault::CrashNode(n)
        | Fault::StartNode(n)
        | Fault::DrainNode(n)
        | Fault::FreezeNode(n)
        | Fault::ThawNode(n) => u64::from(n.0),
        Fault::PartitionRegion(r) | Fault::HealRegion(r) => u64::from(r.0),
        _ => 0,
    }
}

/// Whether a write touches a video record key.
pub fn is_video_key(w: &Write) -> bool {
    let k = w.key();
    k.starts_with(b"va/") || k.starts_with(b"vd/")
}

impl World {
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
            .map(|h| h.busy_ms + h.busy_since.map(|s| self.now - s).unwrap_or(0))
            .sum()
    }
}
