//! Adopting a members record: who is placeable, which channels placement
//! now gives this node (`want`) and which it must hand over (released),
//! and noticing that this node itself was removed while alive.

use topology::placement;

use crate::records::MembersRecord;

use super::{MemberPhase, MembershipEffect, MembershipMachine};

impl MembershipMachine {
    pub(super) fn adopt_members(
        &mut self,
        members: MembersRecord,
        version: u64,
        out: &mut Vec<MembershipEffect>,
    ) {
        if version == self.members_version && members == self.members {
            return;
        }
        self.members = members;
        self.members_version = version;
        self.expired.retain(|n| self.members.contains(*n));
        let mut live = vec![false; self.topo.nodes.len()];
        for n in &self.members.nodes {
            if let Some(slot) = live.get_mut(n.index()) {
                *slot = if self.params.sabotage.no_exclusion {
                    !self.members.is_draining(*n)
                } else {
                    self.members.placeable(*n)
                };
            }
        }
        self.live_by_region = placement::live_by_region(&self.topo, &live);
        assert_eq!(self.live_by_region.len(), self.topo.regions.len());
        self.releases_due = true;
        out.push(MembershipEffect::View(self.members.clone()));
        let removed = !self.members.contains(self.node);
        if removed && matches!(self.phase, MemberPhase::Member | MemberPhase::Draining) {
            self.removed_while_alive(out);
        }
        self.recompute_want();
    }

    /// Declared dead while alive (partitioned from the store): every
    /// channel here is fenced already. Start over as a new incarnation --
    /// unless the node was draining: then it is out and hosts nothing,
    /// which is all a drain asks, so it stops there instead of rejoining
    /// and forgetting that it was asked to go.
    fn removed_while_alive(&mut self, out: &mut Vec<MembershipEffect>) {
        out.push(MembershipEffect::DropAllChannels);
        self.hosted.clear();
        self.lease_op = None;
        if self.phase == MemberPhase::Draining {
            probe!(DeclaredDeadWhileDraining);
            self.phase = MemberPhase::Drained;
            out.push(MembershipEffect::Drained);
        } else {
            probe!(DeclaredDead);
            self.phase = MemberPhase::Joining;
        }
        assert!(self.hosted.is_empty());
    }

    /// The channels placement gives this node that it does not host yet.
    pub(super) fn recompute_want(&mut self) {
        self.want.clear();
        if self.phase != MemberPhase::Member {
            return;
        }
        for ch in self.topo.channel_ids() {
            if placement::owns(&self.topo, ch, &self.live_by_region, self.node)
                && !self.hosted.contains_key(&ch)
            {
                self.want.insert(ch);
            }
        }
        assert!(self.want.iter().all(|c| !self.hosted.contains_key(c)));
    }

    /// Release requests for hosted channels that placement moved away (all
    /// of them when draining).
    pub(super) fn releases(&mut self, out: &mut Vec<MembershipEffect>) {
        self.releases_due = false;
        let draining = self.phase == MemberPhase::Draining;
        for (ch, h) in self.hosted.iter_mut() {
            if h.releasing {
                continue;
            }
            if draining || !placement::owns(&self.topo, *ch, &self.live_by_region, self.node) {
                h.releasing = true;
                out.push(MembershipEffect::ReleaseChannel(*ch));
            }
        }
    }
}
