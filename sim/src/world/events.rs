//! The event queue and what happens when each event comes due. Events are
//! ordered by (time, sequence): two events at one moment happen in the
//! order they were queued, so the order never depends on anything but the
//! seed.

use std::cmp::Ordering;

use actors::channel::ChannelInput;
use actors::node::{Local, NodeMsg};
use actors::protocol::{JobId, JobSpec};
use topology::{ChannelId, GpuId, NodeId};

use super::trace_codes::{actor_code, fault_code, msg_code, msg_name};
use super::{World, PROBE_MS};
use crate::scenario::Fault;

/// What a delivery carries.
#[derive(Clone, Debug)]
pub(super) enum Msg {
    /// For a machine of the node, routed there by the node layer.
    Local(Local),
    /// Arrived over the network: the receiving node's view says for whom.
    Net(NodeMsg),
    /// For one channel machine instance only (its start, its store replies).
    ChannelGen(ChannelId, u64, ChannelInput),
}

/// Which machine of a node a tick is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Actor {
    Membership,
    Channel(ChannelId, u64),
    Gpu(usize),
    Dispatcher,
}

#[derive(Clone, Debug)]
pub(super) enum Ev {
    Tick {
        node: NodeId,
        inc: u32,
        actor: Actor,
        /// The moment it was scheduled for: a tick that waited (its node
        /// was frozen) arrives late, and is still the current one.
        due_ms: u64,
    },
    Deliver {
        node: NodeId,
        inc: ForInc,
        msg: Msg,
    },
    /// Held in the event, not boxed (one allocation per store operation):
    /// at 120 bytes it keeps an `Ev` within 128 (`an_event_fits_in_128_bytes`).
    StoreArrive(super::store::StoreCall),
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
    UploadArrive(Box<super::publishing::Upload>),
    UploadDone(Box<super::publishing::UploadDone>),
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

/// Which incarnations of its node a delivery is for: one, or any. A
/// plain `u32` with a reserved value, not an `Option<u32>`: those four
/// bytes keep an `Ev` within 128, the largest move the compiler makes
/// without a call to `memcpy` (every event moves into the slab and out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ForInc(u32);

impl ForInc {
    pub(super) const ANY: ForInc = ForInc(u32::MAX);

    pub(super) fn only(inc: u32) -> ForInc {
        assert_ne!(inc, u32::MAX, "an incarnation number out of range");
        ForInc(inc)
    }

    pub(super) fn admits(self, inc: u32) -> bool {
        self == ForInc::ANY || self.0 == inc
    }
}

/// A queue entry: the event itself waits in a slab, so that the heap
/// moves 24 bytes per swap rather than a whole event.
pub(super) struct Scheduled {
    pub at_ms: u64,
    pub seq: u64,
    pub slot: u32,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at_ms, self.seq) == (o.at_ms, o.seq)
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
        // BinaryHeap is a max-heap: earliest first (the far heap of
        // `queue::EventQueue`).
        (o.at_ms, o.seq).cmp(&(self.at_ms, self.seq))
    }
}

impl World {
    pub(super) fn push(&mut self, at: u64, ev: Ev) {
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
            at_ms: at.max(self.now_ms),
            seq: self.seq,
            slot,
        });
    }

    /// Queues a delivery to `node` at the present moment (after whatever is
    /// already queued for now).
    pub(super) fn deliver_now(&mut self, node: NodeId, inc: u32, msg: Msg) {
        let inc = ForInc::only(inc);
        self.push(self.now_ms, Ev::Deliver { node, inc, msg });
    }

    /// The node an event acts on, if it is one a frozen node must wait for.
    fn frozen_target(&self, ev: &Ev) -> Option<NodeId> {
        let node = match ev {
            Ev::Tick { node, .. } | Ev::Deliver { node, .. } | Ev::LocalJobEnd { node, .. } => {
                *node
            }
            Ev::UploadDone(u) => u.node,
            Ev::GpuEnd { gpu, .. } => self.gpu_local[gpu.index()].0,
            _ => return None,
        };
        self.faults.frozen[node.index()].then_some(node)
    }

    /// Kept out of `step`: inlined there (as one change to the store's
    /// code made the compiler do), the loop ran a swarm 3 % slower for
    /// the same instructions (`perf`, ninth session).
    #[inline(never)]
    pub(super) fn dispatch(&mut self, ev: Ev) {
        if let Some(node) = self.frozen_target(&ev) {
            self.faults.frozen_events[node.index()].push(ev);
            return;
        }
        match ev {
            Ev::Tick {
                node,
                inc,
                actor,
                due_ms,
            } => self.tick_due(node, inc, actor, due_ms),
            Ev::Deliver { node, inc, msg } => self.delivery_due(node, inc, msg),
            Ev::StoreArrive(call) => self.store_arrive(call),
            Ev::LocalJobEnd {
                node,
                inc,
                spec,
                ok,
            } => self.local_job_end(node, inc, *spec, ok),
            Ev::GpuEnd { gpu, inc, id, ok } => self.gpu_job_end(gpu, inc, id, ok),
            Ev::UploadArrive(u) => self.upload_arrive(*u),
            Ev::UploadDone(u) => self.upload_done(*u),
            Ev::LookupArrive {
                node,
                ch,
                slot,
                key,
            } => self.lookup_arrive(node, ch, slot, key),
            other => self.run_event_due(other),
        }
    }

    /// The run's own events: faults, the heal, the probe, the end.
    fn run_event_due(&mut self, ev: Ev) {
        let rel = self.rel_ms();
        match ev {
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
                if self.now_ms + PROBE_MS < self.end_at_ms {
                    self.push(self.now_ms + PROBE_MS, Ev::Probe);
                }
            }
            Ev::End => {
                self.trace.event(rel, 0, "end", 0, 0);
                self.final_checks();
            }
            other => unreachable!("not a run event: {other:?}"),
        }
    }

    fn tick_due(&mut self, node: NodeId, inc: u32, actor: Actor, due: u64) {
        if !self.is_current(node, inc) {
            return;
        }
        let rel = self.rel_ms();
        self.trace.event(rel, node.0, "tick", actor_code(actor), 0);
        if !self.on_tick(node, actor, due) {
            self.events_this_ms = self.events_this_ms.saturating_sub(1);
        }
    }

    fn delivery_due(&mut self, node: NodeId, inc: ForInc, msg: Msg) {
        let n = &self.nodes[node.index()];
        if !n.alive || !inc.admits(n.inc) {
            return;
        }
        let rel = self.rel_ms();
        self.trace
            .event(rel, node.0, msg_name(&msg), msg_code(&msg), 0);
        self.deliver(node, msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event moves without a call to `memcpy` (see `ForInc`).
    #[test]
    fn an_event_fits_in_128_bytes() {
        assert!(std::mem::size_of::<Option<Ev>>() <= 128);
    }

    #[test]
    fn a_delivery_for_one_incarnation_admits_only_it() {
        assert!(ForInc::only(3).admits(3));
        assert!(!ForInc::only(3).admits(4));
        assert!(ForInc::ANY.admits(0) && ForInc::ANY.admits(7));
    }
}
