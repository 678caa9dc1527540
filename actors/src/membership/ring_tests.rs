//! The watch ring: a region's nodes are watched from other regions, and a
//! node's place in the ring does not move when others leave.

use super::work::watch_ring;
use topology::{NodeId, Topology};

/// Three regions of three nodes, declared region by region (ids 0-2 in
/// r0, 3-5 in r1, 6-8 in r2), as fleets usually are.
fn topo() -> Topology {
    let mut t = String::new();
    for r in 0..3 {
        t.push_str(&format!("[[regions]]\nname = \"r{r}\"\n"));
    }
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        t.push_str(&format!(
            "[[latency]]\nbetween = [\"r{a}\", \"r{b}\"]\nms = 10\n"
        ));
    }
    for r in 0..3 {
        for i in 0..3 {
            t.push_str(&format!(
                "[[nodes]]\nname = \"r{r}n{i}\"\nregion = \"r{r}\"\n"
            ));
        }
    }
    t.push_str(
        "[[pipelines]]\nname = \"p\"\n[[pipelines.stages]]\nname = \"upload\"\n\
         kind = \"publish\"\nduration_ms = 10\n[[projects]]\nname = \"q\"\n\
         [[channels]]\nname = \"c\"\nhome_region = \"r0\"\nvideos_per_day = 1\n\
         pipeline = \"p\"\nproject = \"q\"\n",
    );
    topology::config::parse_topology(&t).expect("topology")
}

fn ids(v: &[u32]) -> Vec<NodeId> {
    v.iter().map(|n| NodeId(*n)).collect()
}

#[test]
fn the_ring_takes_the_regions_in_turn() {
    let t = topo();
    let all: Vec<NodeId> = (0..9).map(NodeId).collect();
    assert_eq!(watch_ring(&t, &all), ids(&[0, 3, 6, 1, 4, 7, 2, 5, 8]));
    // Whatever order the members record lists them in.
    let shuffled = ids(&[8, 1, 5, 0, 7, 3, 2, 6, 4]);
    assert_eq!(watch_ring(&t, &shuffled), ids(&[0, 3, 6, 1, 4, 7, 2, 5, 8]));
    // With two monitors, each node of r1 is watched by the two nodes just
    // before it in the ring: never by a node of r1.
    let ring = watch_ring(&t, &all);
    for (i, n) in ring.iter().enumerate() {
        let region = |n: NodeId| n.0 / 3;
        for back in 1..=2 {
            let w = ring[(i + ring.len() - back) % ring.len()];
            assert_ne!(
                region(w),
                region(*n),
                "{w:?} watches {n:?} in its own region"
            );
        }
    }
}

#[test]
fn removing_nodes_moves_no_other_node() {
    let t = topo();
    // r1's nodes removed one by one: the others keep their order, so
    // each keeps its watchers (no fresh lease to wait out).
    let mut members: Vec<NodeId> = (0..9).map(NodeId).collect();
    for gone in [3, 4, 5] {
        members.retain(|n| n.0 != gone);
        let ring = watch_ring(&t, &members);
        let full = watch_ring(&t, &(0..9).map(NodeId).collect::<Vec<_>>());
        let kept: Vec<NodeId> = full.into_iter().filter(|n| members.contains(n)).collect();
        assert_eq!(ring, kept);
    }
}

/// A region of four nodes and one of two: the large region's nodes are
/// spread among the small one's, so every node has a watcher in the other
/// region (in rank order the large region's last two would watch each
/// other alone).
#[test]
fn a_large_region_is_spread_among_the_small_ones() {
    let t = topology::config::parse_topology(
        "[[regions]]\nname = \"big\"\n[[regions]]\nname = \"small\"\n\
         [[latency]]\nbetween = [\"big\", \"small\"]\nms = 10\n\
         [[nodes]]\nname = \"b\"\nregion = \"big\"\ncount = 4\n\
         [[nodes]]\nname = \"s\"\nregion = \"small\"\ncount = 2\n\
         [[pipelines]]\nname = \"p\"\n[[pipelines.stages]]\nname = \"upload\"\n\
         kind = \"publish\"\nduration_ms = 10\n[[projects]]\nname = \"q\"\n\
         [[channels]]\nname = \"c\"\nhome_region = \"big\"\nvideos_per_day = 1\n\
         pipeline = \"p\"\nproject = \"q\"\n",
    )
    .expect("topology");
    let all: Vec<NodeId> = (0..6).map(NodeId).collect();
    let ring = watch_ring(&t, &all);
    // big at 1/8, 3/8, 5/8, 7/8; small at 1/4, 3/4.
    assert_eq!(ring, ids(&[0, 4, 1, 2, 5, 3]));
    let region = |n: NodeId| usize::from(n.0 >= 4);
    for (i, n) in ring.iter().enumerate() {
        let watchers = [1, 2].map(|back| ring[(i + ring.len() - back) % ring.len()]);
        assert!(
            watchers.iter().any(|w| region(*w) != region(*n)),
            "{n:?} is watched only from its own region: {watchers:?}"
        );
    }
}

/// `watched` walks the whole topology's ring and leaves out the nodes
/// that are not members; it must name exactly the peers that sorting the
/// members afresh would, for every set of members, every node and any
/// number of monitors.
#[test]
fn watching_from_the_whole_ring_equals_sorting_the_members() {
    let t = std::sync::Arc::new(topo());
    for monitors in 1..=4 {
        for me in 0..9u32 {
            let params = super::MembershipParams {
                monitors,
                ..super::MembershipParams::default()
            };
            let mut m = super::MembershipMachine::new(t.clone(), NodeId(me), params, 1);
            for set in 0u32..512 {
                m.members.nodes = (0..9).filter(|i| set & (1 << i) != 0).map(NodeId).collect();
                assert_eq!(
                    m.watched(),
                    m.watched_by_sorting(),
                    "node {me}, members {:?}, monitors {monitors}",
                    m.members.nodes
                );
            }
        }
    }
}
