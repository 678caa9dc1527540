//! Adopting a members record: who is placeable, which channels placement
//! now gives this node (`want`) and which it must hand over (released),
//! and noticing that this node itself was removed while alive.

use topology::{placement, ChannelId};

use crate::records::MembersRecord;

use super::{
    MemberPhase, MembershipEffect, MembershipMachine, RELEASES_IN_FLIGHT_MAX,
    RELEASE_SLOT_HELD_MS_MAX,
};

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
        self.rescan_releases();
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
        self.release_slots_held = 0;
        self.release_slots.clear();
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

    /// Every hosted channel may need a release request (the view or the
    /// phase changed, or channels were claimed): the next scan starts over.
    pub(super) fn rescan_releases(&mut self) {
        self.releases_due = true;
        self.release_from = ChannelId(0);
    }

    /// Release requests for hosted channels that placement moved away (all
    /// of them when draining), at most `RELEASES_IN_FLIGHT_MAX` releasing
    /// at once: each release is a commit in flight, and a node draining
    /// 100,000 channels asked for all of them at once (BENCHMARKS "One
    /// live node at scale": 1.33 GiB at the drain's peak against 0.93 GiB
    /// steady). A scan that stops there goes on from the channel it
    /// stopped at once releases finish (`on_channel_stopped`) or give
    /// their slots up (`age_release_slots`), so a drain scans the hosted
    /// channels once, not once per input.
    pub(super) fn releases(&mut self, out: &mut Vec<MembershipEffect>) {
        self.age_release_slots();
        if !self.releases_due || self.release_slots_held >= RELEASES_IN_FLIGHT_MAX {
            return;
        }
        self.releases_due = false;
        let now_ms = self.clock.now_ms();
        let draining = self.phase == MemberPhase::Draining;
        for (ch, h) in self.hosted.range_mut(self.release_from..) {
            if h.releasing {
                continue;
            }
            if draining || !placement::owns(&self.topo, *ch, &self.live_by_region, self.node) {
                if self.release_slots_held == RELEASES_IN_FLIGHT_MAX {
                    probe!(ReleasesHeldAtLimit);
                    self.releases_due = true;
                    self.release_from = *ch;
                    return;
                }
                h.releasing = true;
                h.holds_slot = true;
                self.release_slots_held += 1;
                self.release_slots.push_back((now_ms, *ch, h.epoch));
                out.push(MembershipEffect::ReleaseChannel(*ch));
            }
        }
        debug_assert_eq!(
            self.release_slots_held,
            self.hosted.values().filter(|h| h.holds_slot).count(),
            "the count of releases in flight is the hosted channels holding a slot"
        );
    }

    /// Releases asked `RELEASE_SLOT_HELD_MS_MAX` ago or longer give their
    /// slots up (they still release, when their channels have settled).
    fn age_release_slots(&mut self) {
        let now_ms = self.clock.now_ms();
        while let Some(&(asked_ms, ch, epoch)) = self.release_slots.front() {
            match self.hosted.get_mut(&ch) {
                Some(h) if h.epoch == epoch && h.holds_slot => {
                    if asked_ms + RELEASE_SLOT_HELD_MS_MAX > now_ms {
                        break;
                    }
                    probe!(ReleaseSlotAged);
                    h.holds_slot = false;
                    assert!(self.release_slots_held > 0, "a slot given up was counted");
                    self.release_slots_held -= 1;
                }
                // Stopped (perhaps claimed again since, at a new epoch).
                _ => {}
            }
            self.release_slots.pop_front();
        }
    }
}
