//! [`NodeView`]: what one node knows of the cluster, as the routing
//! functions read it. It changes only through the node's own membership
//! machine (a new members record, a renewed lease), applied by
//! [`super::route::membership_effect`].

use std::sync::Arc;

use topology::{placement, GpuId, NodeId, RegionId, Topology};

use crate::records::MembersRecord;

#[derive(Clone, Debug)]
pub struct NodeView {
    topo: Arc<Topology>,
    pub me: NodeId,
    pub region: RegionId,
    /// `placeable[node]`: a member that is neither draining nor excluded.
    pub placeable: Vec<bool>,
    /// `dispatchers[region]`: the node hosting that region's dispatcher.
    pub dispatchers: Vec<Option<NodeId>>,
    /// Until when (this node's clock) its lease is certainly valid.
    pub lease_valid_until_ms: u64,
}

impl NodeView {
    /// The view of a node that has not joined yet: nobody is placeable.
    pub fn new(topo: Arc<Topology>, me: NodeId) -> NodeView {
        assert!(me.index() < topo.nodes.len(), "{me} is not in the topology");
        let region = topo.node(me).region;
        NodeView {
            placeable: vec![false; topo.nodes.len()],
            dispatchers: vec![None; topo.regions.len()],
            region,
            me,
            topo,
            lease_valid_until_ms: 0,
        }
    }

    pub fn topo(&self) -> &Arc<Topology> {
        &self.topo
    }

    /// Takes a new members record: who is placeable, and so who hosts
    /// each region's dispatcher.
    pub fn set_members(&mut self, members: &MembersRecord) {
        self.placeable = vec![false; self.topo.nodes.len()];
        for n in &members.nodes {
            if members.placeable(*n) {
                if let Some(p) = self.placeable.get_mut(n.index()) {
                    *p = true;
                }
            }
        }
        self.dispatchers = (0..self.topo.regions.len())
            .map(|r| placement::dispatcher_of(&self.topo, RegionId(r as u16), &self.placeable))
            .collect();
        debug_assert_eq!(self.dispatchers.len(), self.topo.regions.len());
    }

    /// The node hosting `region`'s dispatcher, in this view.
    pub fn dispatcher_of(&self, region: RegionId) -> Option<NodeId> {
        self.dispatchers.get(region.index()).copied().flatten()
    }

    /// Whether this node hosts its own region's dispatcher.
    pub fn hosts_dispatcher(&self) -> bool {
        self.dispatcher_of(self.region) == Some(self.me)
    }

    /// The node a GPU belongs to.
    pub fn node_of_gpu(&self, gpu: GpuId) -> NodeId {
        self.topo.gpu(gpu).node
    }

    /// This node's GPUs.
    pub fn my_gpus(&self) -> &[GpuId] {
        &self.topo.node(self.me).gpus
    }
}
