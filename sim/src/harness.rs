//! A small harness over [`World`], in the spirit of turmoil's `Sim`: step
//! the world, run it until a moment, break and mend it by hand, and look
//! inside, so that a targeted test can script a situation without a
//! scenario file (and a failing seed can be examined at the moment it
//! goes wrong).
//!
//! Times are milliseconds since the run's start (`rel_ms`), as in traces.

use actors::records::{active_key, done_key, VideoRecord};
use topology::{ChannelId, NodeId, RegionId};

use crate::scenario::Fault;
use crate::world::World;

impl World {
    /// Milliseconds since the run's start.
    pub fn rel_ms(&self) -> u64 {
        self.now_ms - self.sc.start_utc_ms
    }

    /// Runs until `rel_ms` (events at that moment included), the end of the
    /// run, or the first violation. Returns whether the run can go on.
    pub fn run_until(&mut self, rel_ms: u64) -> bool {
        let until = self.sc.start_utc_ms + rel_ms;
        while self.next_event_at().is_some_and(|t| t <= until) {
            if !self.step() {
                return false;
            }
        }
        self.now_ms = self.now_ms.max(until);
        self.violation.is_none()
    }

    /// Applies a fault now, as the scenario's schedule would.
    pub fn inject(&mut self, fault: Fault) {
        self.apply_fault(fault);
    }

    pub fn crash(&mut self, node: NodeId) {
        self.inject(Fault::CrashNode(node));
    }

    pub fn restart(&mut self, node: NodeId) {
        self.inject(Fault::StartNode(node));
    }

    pub fn partition(&mut self, region: RegionId) {
        self.inject(Fault::PartitionRegion(region));
    }

    pub fn heal_region(&mut self, region: RegionId) {
        self.inject(Fault::HealRegion(region));
    }

    /// The nodes hosting a machine for `ch` now (more than one only while a
    /// fenced owner has not noticed yet).
    pub fn hosts_of(&self, ch: ChannelId) -> Vec<NodeId> {
        self.hosting(ch)
    }

    /// The channel machine of `ch` on `node`, described.
    pub fn describe_channel(&self, node: NodeId, ch: ChannelId) -> Option<String> {
        self.channel_machine(node, ch).map(|m| m.describe())
    }

    /// Every node's view of dispatchers, its dispatcher and GPUs, described.
    pub fn describe_nodes(&mut self) -> String {
        let mut s = String::new();
        for n in self.topo.node_ids() {
            s += &self.describe_node(n);
        }
        s
    }

    /// The first (node, channel) whose hosted machine satisfies `pred`.
    pub fn find_channel(
        &self,
        pred: impl Fn(&actors::channel::ChannelMachine) -> bool,
    ) -> Option<(NodeId, ChannelId)> {
        for n in self.topo.node_ids() {
            for ch in self.topo.channel_ids() {
                if self.channel_machine(n, ch).is_some_and(&pred) {
                    return Some((n, ch));
                }
            }
        }
        None
    }

    /// `node`'s membership machine, described (`None` if the node is down).
    pub fn describe_membership(&self, node: NodeId) -> Option<String> {
        self.membership(node).map(|m| m.describe())
    }

    /// Store operations `node`'s membership machine has in flight (`None`
    /// if the node is down).
    pub fn membership_ops_in_flight(&self, node: NodeId) -> Option<usize> {
        self.membership(node).map(|m| m.ops_in_flight())
    }

    /// Until when `node`'s lease is valid, as its node layer last heard.
    pub fn lease_valid_until_ms(&self, node: NodeId) -> u64 {
        self.node_view(node).lease_valid_until_ms
    }

    /// The stored record of a video, active or done.
    pub fn video_record(&self, ch: ChannelId, slot: u64) -> Option<VideoRecord> {
        let v = self
            .store
            .value(&active_key(ch, slot))
            .or_else(|| self.store.value(&done_key(ch, slot)))?;
        VideoRecord::decode(v).ok()
    }
}
