//! The simulated network between nodes: latency per region pair plus
//! jitter, loss, duplication and reordering, partitions of a region (both
//! ways, and from the store) and one-way cuts between regions.

use actors::node::NodeMsg;
use topology::{NodeId, RegionId};

use super::events::{Ev, ForInc, Msg};
use super::World;

impl World {
    pub(super) fn region_blocked(&self, a: RegionId, b: RegionId) -> bool {
        a != b && (self.faults.partitioned[a.index()] || self.faults.partitioned[b.index()])
    }

    /// Sends a node-to-node message through the simulated network.
    pub(super) fn send(&mut self, from: NodeId, to: NodeId, msg: NodeMsg) {
        debug_assert_ne!(from, to, "the node layer delivers to itself locally");
        let (ra, rb) = (
            self.nodes[from.index()].region,
            self.nodes[to.index()].region,
        );
        if self.region_blocked(ra, rb) || self.faults.one_way.contains(&(ra, rb)) {
            return;
        }
        if self.rng.chance(self.faults.loss_ppm) {
            return;
        }
        let mut delay =
            u64::from(self.topo.latency(ra, rb)) + self.rng.below(self.sc.world.jitter_ms + 1);
        if self.rng.chance(self.faults.reorder_ppm) {
            delay += self.rng.below(50);
        }
        if self.rng.chance(self.faults.dup_ppm) {
            let extra = delay + self.rng.below(20);
            let copy = Ev::Deliver {
                node: to,
                inc: ForInc::ANY,
                msg: Msg::Net(msg.clone()),
            };
            self.push(self.now_ms + extra, copy);
        }
        let deliver = Ev::Deliver {
            node: to,
            inc: ForInc::ANY,
            msg: Msg::Net(msg),
        };
        self.push(self.now_ms + delay, deliver);
    }
}
