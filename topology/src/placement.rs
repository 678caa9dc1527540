//! Where a channel runs: rendezvous (highest-random-weight) hashing over the
//! live nodes of the first allowed region that has any, home region first.
//!
//! Rendezvous hashing gives each (channel, node) pair a pseudo-random weight
//! and picks the heaviest live node. Removing a node moves only the channels
//! it won; adding one moves only the channels it now wins, about 1/N of them.
//!
//! Architecture invariant: placement is a pure function of the channel, the
//! topology and the set of live nodes; every node computes the same answer
//! from the same view.

use crate::ids::{ChannelId, NodeId, RegionId};
use crate::model::Topology;

/// A 64-bit mix (splitmix64's finaliser): cheap and well distributed.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The rendezvous weight of `node` for the item `key`.
pub fn weight(key: u64, node: NodeId) -> u64 {
    mix64(key.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ mix64(u64::from(node.0) + 1))
}

/// The heaviest node among `candidates` for `key`; ties (practically never)
/// go to the lower id so the answer is total.
pub fn rendezvous(key: u64, candidates: impl Iterator<Item = NodeId>) -> Option<NodeId> {
    // Each candidate weighed once (a comparator would weigh both sides of
    // every comparison): placing a fleet's channels is this, thousands of
    // times, at every change of the view.
    let mut best: Option<(u64, NodeId)> = None;
    for n in candidates {
        let w = weight(key, n);
        if best.is_none_or(|b| heavier((w, n), b)) {
            best = Some((w, n));
        }
    }
    best.map(|(_, n)| n)
}

/// Whether weighted node `a` wins over `b`: heavier, or as heavy and a
/// lower id.
#[inline]
fn heavier(a: (u64, NodeId), b: (u64, NodeId)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 .0 < b.1 .0)
}

/// The node that should own `channel` given which nodes are live
/// (`live[node.index()]`). `None` when no allowed region has a live node:
/// the channel waits.
pub fn owner_of(topology: &Topology, channel: ChannelId, live: &[bool]) -> Option<NodeId> {
    owner_among(topology, channel, &live_by_region(topology, live))
}

/// The live nodes of each region, in id order: computed once per view so
/// that placing thousands of channels does not rescan every node for each.
pub fn live_by_region(topology: &Topology, live: &[bool]) -> Vec<Vec<NodeId>> {
    let mut by_region = vec![Vec::new(); topology.regions.len()];
    for n in topology.node_ids() {
        if live.get(n.index()).copied().unwrap_or(false) {
            by_region[topology.node(n).region.index()].push(n);
        }
    }
    by_region
}

/// [`owner_of`] with the live nodes already grouped by region.
pub fn owner_among(
    topology: &Topology,
    channel: ChannelId,
    by_region: &[Vec<NodeId>],
) -> Option<NodeId> {
    let candidates = candidates(topology, channel, by_region);
    rendezvous(u64::from(channel.0), candidates.iter().copied())
}

/// Whether `owner_among` gives `channel` to `node`, answered without
/// weighing every candidate: none at all unless `node` is one, then it
/// stops at the first that outweighs `node` (a few, for the channels a
/// node does not win: all but ~1/N of them).
pub fn owns(
    topology: &Topology,
    channel: ChannelId,
    by_region: &[Vec<NodeId>],
    node: NodeId,
) -> bool {
    let candidates = candidates(topology, channel, by_region);
    if !candidates.contains(&node) {
        return false;
    }
    let key = u64::from(channel.0);
    let mine = (weight(key, node), node);
    candidates
        .iter()
        .all(|&n| n == node || !heavier((weight(key, n), n), mine))
}

/// Where `channel` is placed: the live nodes of its first allowed region
/// (home first) that has any; none when no allowed region has one.
fn candidates<'a>(
    topology: &Topology,
    channel: ChannelId,
    by_region: &'a [Vec<NodeId>],
) -> &'a [NodeId] {
    topology
        .channel(channel)
        .allowed_regions()
        .filter_map(|r| by_region.get(r.index()))
        .find(|v| !v.is_empty())
        .map_or(&[], |v| v.as_slice())
}

/// The node that hosts a region's dispatcher: rendezvous among the live
/// nodes of that region, keyed apart from channel ids.
pub fn dispatcher_of(topology: &Topology, region: RegionId, live: &[bool]) -> Option<NodeId> {
    rendezvous(
        0xD15A_7C00_0000_0000 | u64::from(region.0),
        topology
            .nodes_in(region)
            .filter(|n| live.get(n.index()).copied().unwrap_or(false)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{PipelineId, ProjectId};
    use crate::model::*;
    use proptest::prelude::*;

    fn fleet(nodes_per_region: &[usize], channels: usize, failover: bool) -> Topology {
        let mut t = Topology::default();
        for (r, count) in nodes_per_region.iter().enumerate() {
            t.regions.push(Region {
                name: format!("r{r}"),
            });
            for i in 0..*count {
                t.nodes.push(Node {
                    name: format!("r{r}-n{i}"),
                    region: RegionId(r as u16),
                    zone: "a".into(),
                    gpus: vec![],
                });
            }
        }
        let regions = nodes_per_region.len() as u16;
        for c in 0..channels {
            let home = RegionId((c as u16) % regions);
            t.channels.push(Channel {
                name: format!("ch{c}"),
                home_region: home,
                failover_regions: if failover {
                    (1..regions)
                        .map(|d| RegionId((home.0 + d) % regions))
                        .collect()
                } else {
                    vec![]
                },
                videos_per_day: 1,
                window: PublishWindow::ALL_DAY,
                pipeline: PipelineId(0),
                priority: 0,
                budget: Budget::UNLIMITED,
                project: ProjectId(0),
            });
        }
        t
    }

    fn owners(t: &Topology, live: &[bool]) -> Vec<Option<NodeId>> {
        t.channel_ids().map(|c| owner_of(t, c, live)).collect()
    }

    #[test]
    fn home_region_first_then_failover_in_order() {
        let t = fleet(&[2, 2, 2], 30, true);
        let mut live = vec![true; 6];
        for (c, owner) in owners(&t, &live).iter().enumerate() {
            let owner = owner.expect("all live");
            assert_eq!(t.node(owner).region, t.channels[c].home_region);
        }
        // Region 0 down: its channels go to their first failover region, r1.
        live[0] = false;
        live[1] = false;
        for (c, owner) in owners(&t, &live).iter().enumerate() {
            if t.channels[c].home_region == RegionId(0) {
                assert_eq!(t.node(owner.expect("failover")).region, RegionId(1));
            }
        }
    }

    #[test]
    fn channel_without_failover_waits_for_its_region() {
        let t = fleet(&[2, 2], 10, false);
        let live = vec![false, false, true, true];
        for (c, owner) in owners(&t, &live).iter().enumerate() {
            if t.channels[c].home_region == RegionId(0) {
                assert_eq!(*owner, None);
            }
        }
    }

    proptest! {
        #[test]
        fn removing_a_node_moves_only_its_channels(
            per_region in proptest::collection::vec(1usize..6, 1..4),
            channels in 1usize..400,
            victim_pick in any::<prop::sample::Index>(),
        ) {
            let t = fleet(&per_region, channels, true);
            let n = t.nodes.len();
            let live = vec![true; n];
            let before = owners(&t, &live);
            let victim = victim_pick.index(n);
            let mut after_live = live.clone();
            after_live[victim] = false;
            let after = owners(&t, &after_live);
            for (b, a) in before.iter().zip(&after) {
                if b.map(|x| x.index()) != Some(victim) {
                    prop_assert_eq!(b, a, "a channel not on the victim moved");
                } else {
                    prop_assert_ne!(a.map(|x| x.index()), Some(victim));
                }
            }
        }

        #[test]
        fn owns_answers_as_owner_among_does(
            per_region in proptest::collection::vec(1usize..6, 1..4),
            channels in 1usize..300,
            live_bits in any::<u32>(),
        ) {
            let t = fleet(&per_region, channels, true);
            let live: Vec<bool> = (0..t.nodes.len()).map(|i| live_bits >> (i % 32) & 1 == 1).collect();
            let by_region = live_by_region(&t, &live);
            for c in t.channel_ids() {
                let owner = owner_among(&t, c, &by_region);
                for n in t.node_ids() {
                    prop_assert_eq!(owns(&t, c, &by_region, n), owner == Some(n));
                }
            }
        }

        #[test]
        fn rendezvous_is_the_heaviest_then_the_lowest_id(
            key in any::<u64>(),
            ids in proptest::collection::vec(0u32..64, 0..20),
        ) {
            let mut ids = ids;
            ids.sort_unstable();
            ids.dedup();
            let expected = ids.iter().copied().map(NodeId).max_by(|a, b| {
                weight(key, *a).cmp(&weight(key, *b)).then_with(|| b.0.cmp(&a.0))
            });
            prop_assert_eq!(rendezvous(key, ids.iter().copied().map(NodeId)), expected);
        }

        #[test]
        fn adding_a_node_moves_about_one_nth(
            nodes in 2usize..12,
            seed in any::<u64>(),
        ) {
            let channels = 3000;
            let t = fleet(&[nodes + 1], channels, false);
            let newcomer = (seed as usize) % (nodes + 1);
            let mut live = vec![true; nodes + 1];
            live[newcomer] = false;
            let before = owners(&t, &live);
            live[newcomer] = true;
            let after = owners(&t, &live);
            let mut moved = 0usize;
            for (b, a) in before.iter().zip(&after) {
                if b != a {
                    // Every move goes to the newcomer, never between old nodes.
                    prop_assert_eq!(a.map(|x| x.index()), Some(newcomer));
                    moved += 1;
                }
            }
            let expected = channels as f64 / (nodes + 1) as f64;
            // Binomial spread: well within 5 standard deviations.
            let sd = (channels as f64 * (1.0 / (nodes + 1) as f64) * (1.0 - 1.0 / (nodes + 1) as f64)).sqrt();
            prop_assert!((moved as f64 - expected).abs() < 5.0 * sd + 1.0,
                "moved {} expected about {}", moved, expected);
        }
    }
}
