//! The fault schedule: what breaks, where, when and for how long, drawn
//! from a seed (or read from the chaos config's `[[faults]]`). Names match
//! the simulator's scenario faults where the fault is the same
//! (`node-kill`, `node-freeze`, `store-outage`, `kill-switch`).

use serde::{Deserialize, Serialize};

/// A fault the runner can cause for real.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL a node, start it again when the fault ends.
    NodeKill,
    /// SIGSTOP a node (longer than its lease), SIGCONT when it ends.
    NodeFreeze,
    /// SIGTERM a node: it drains; started again when the fault ends.
    NodeRestart,
    /// SIGKILL one etcd member; it rejoins when the fault ends.
    StoreMemberKill,
    /// SIGKILL two of three etcd members: no quorum until it ends.
    StoreOutage,
    /// The fleet's kill switch on through the admin RPC, off at the end.
    KillSwitch,
    /// Every channel of a region paused through the admin RPC.
    RegionPause,
    /// The YouTube API answers 503 to the next requests.
    ApiErrors,
    /// The answer to a completed upload is lost, then 503s.
    ApiLostResponse,
    /// The YouTube quota is exhausted until the fault ends.
    ApiQuota,
    /// A node's wall clock jumps an hour ahead while it runs (libfaketime),
    /// and the node is restarted under it; restarted true at the end.
    NodeClockJump,
    /// A node restarted with a clock that runs 1.5 times too fast
    /// (libfaketime, monotonic clock included); restarted true at the end.
    NodeClockDrift,
    /// A node freezes itself at the fault point right after the
    /// publisher's guard and before the request that makes a video visible
    /// (`--allow-faults`), and is held there until the fault ends. Never
    /// drawn: a time-based guard's residual window, asked for by name in a
    /// config's schedule (README, "The window a guard cannot close").
    PublishStall,
    /// The model server behind the script stage (the `http` executor)
    /// answers 503 until the fault ends.
    ProviderErrors,
    /// The render stage's model server (the GPU) takes four times as long.
    GpuSlow,
    /// Region `target` and the next cannot reach each other (nftables
    /// between their nodes' namespaces); both still reach the store.
    RegionPartition,
    /// Region `target` cannot reach the next; the next still reaches it.
    OneWayPartition,
    /// A node cannot reach the store; its peers still reach it.
    StoreCut,
    /// The simulator's `partition-region`: region `target` cut off from
    /// every other region and from the store. From schedule files only.
    PartitionRegion,
    /// The simulator's `api-faults`: the API fails requests and loses
    /// answers with the per-million chances in `rates`. Files only.
    ApiFaults,
    /// The simulator's `pause`: one channel (`channel`) paused through
    /// the admin RPC, resumed when it ends. Files only.
    ChannelPause,
    /// The simulator's `exclude-node`: the operator's exclude through the
    /// admin RPC; `include` when it ends. Files only.
    ExcludeNode,
}

impl FaultKind {
    pub const ALL: [FaultKind; 22] = [
        FaultKind::NodeKill,
        FaultKind::NodeFreeze,
        FaultKind::StoreMemberKill,
        FaultKind::ApiErrors,
        FaultKind::KillSwitch,
        FaultKind::NodeRestart,
        FaultKind::ApiLostResponse,
        FaultKind::StoreOutage,
        FaultKind::RegionPause,
        FaultKind::ApiQuota,
        FaultKind::NodeClockJump,
        FaultKind::NodeClockDrift,
        FaultKind::PublishStall,
        FaultKind::ProviderErrors,
        FaultKind::GpuSlow,
        FaultKind::RegionPartition,
        FaultKind::OneWayPartition,
        FaultKind::StoreCut,
        FaultKind::PartitionRegion,
        FaultKind::ApiFaults,
        FaultKind::ChannelPause,
        FaultKind::ExcludeNode,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::NodeKill => "node-kill",
            FaultKind::NodeFreeze => "node-freeze",
            FaultKind::NodeRestart => "node-restart",
            FaultKind::StoreMemberKill => "store-member-kill",
            FaultKind::StoreOutage => "store-outage",
            FaultKind::KillSwitch => "kill-switch",
            FaultKind::RegionPause => "region-pause",
            FaultKind::ApiErrors => "api-errors",
            FaultKind::ApiLostResponse => "api-lost-response",
            FaultKind::ApiQuota => "api-quota",
            FaultKind::NodeClockJump => "node-clock-jump",
            FaultKind::NodeClockDrift => "node-clock-drift",
            FaultKind::PublishStall => "publish-stall",
            FaultKind::ProviderErrors => "provider-errors",
            FaultKind::GpuSlow => "gpu-slow",
            FaultKind::RegionPartition => "region-partition",
            FaultKind::OneWayPartition => "one-way-partition",
            FaultKind::StoreCut => "store-cut",
            FaultKind::PartitionRegion => "partition-region",
            FaultKind::ApiFaults => "api-faults",
            FaultKind::ChannelPause => "pause",
            FaultKind::ExcludeNode => "exclude-node",
        }
    }

    /// Whether a seed's schedule may draw it (one that is expected to
    /// break an invariant is asked for by name only; the simulator's kinds
    /// that the drawn kinds already cover come from schedule files).
    pub fn drawn(self) -> bool {
        !matches!(
            self,
            FaultKind::PublishStall
                | FaultKind::PartitionRegion
                | FaultKind::ApiFaults
                | FaultKind::ChannelPause
                | FaultKind::ExcludeNode
        )
    }

    /// Whether it can cost a node its lease (the next fault waits for the
    /// takeover).
    pub fn touches_leases(self) -> bool {
        self.on_node() || matches!(self, FaultKind::StoreMemberKill | FaultKind::StoreOutage)
    }

    /// Whether it needs the fleet in network namespaces.
    pub fn needs_net(self) -> bool {
        matches!(
            self,
            FaultKind::RegionPartition
                | FaultKind::OneWayPartition
                | FaultKind::StoreCut
                | FaultKind::PartitionRegion
        )
    }

    /// Whether it needs libfaketime (Debian's `faketime`).
    pub fn needs_faketime(self) -> bool {
        matches!(self, FaultKind::NodeClockJump | FaultKind::NodeClockDrift)
    }

    /// Whether it targets one node (the others act on the fleet, the store
    /// or the API).
    pub fn on_node(self) -> bool {
        matches!(
            self,
            FaultKind::NodeKill
                | FaultKind::NodeFreeze
                | FaultKind::NodeRestart
                | FaultKind::NodeClockJump
                | FaultKind::NodeClockDrift
                | FaultKind::PublishStall
                | FaultKind::StoreCut
                | FaultKind::ExcludeNode
        )
    }
}

/// One fault: from `at_ms` after the start, for `for_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub kind: FaultKind,
    pub at_ms: u64,
    pub for_ms: u64,
    /// A node's index (node faults), an etcd member's, or a region's.
    #[serde(default)]
    pub target: usize,
    /// The other region of a partition between two (`target` cannot reach
    /// it; both ways for `region-partition`); drawn: the next region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<usize>,
    /// The paused channel (`pause`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// `api-faults`: per-million chances of a 5xx, a 429, a lost answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rates_ppm: Option<[u32; 3]>,
}

impl Fault {
    /// A fault on `target` with nothing else to say.
    pub fn new(kind: FaultKind, at_ms: u64, for_ms: u64, target: usize) -> Fault {
        Fault {
            kind,
            at_ms,
            for_ms,
            target,
            to: None,
            channel: None,
            rates_ppm: None,
        }
    }

    /// The region a region-to-region partition cuts `target` from.
    pub fn to_region(&self, regions: usize) -> usize {
        self.to.unwrap_or(self.target + 1) % regions.max(1)
    }
}

/// splitmix64: a small, well-known generator; the schedule is a function
/// of the seed alone.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the drawn schedule needs to know about the fleet.
pub struct Shape {
    /// Whether clock faults can be caused (libfaketime is installed).
    pub clocks: bool,
    /// Whether network faults can be caused (the fleet is namespaced).
    pub net: bool,
    /// The stages that run on the model-server emulator (`script` for
    /// provider errors, `render` for slow GPUs).
    pub provider_stages: Vec<&'static str>,
    pub nodes: usize,
    pub regions: usize,
    pub store_members: usize,
    pub lease_ms: u64,
    pub duration_ms: u64,
}

/// A schedule from `seed`: every kind at least once (in a seeded order),
/// then more drawn at random, one fault at a time with a gap after each
/// for the fleet to recover, all ending before `duration_ms`.
pub fn draw(seed: u64, shape: &Shape) -> Vec<Fault> {
    let mut rng = Rng(seed);
    let all: Vec<FaultKind> = FaultKind::ALL
        .iter()
        .copied()
        .filter(|k| k.drawn() && (shape.clocks || !k.needs_faketime()))
        .filter(|k| shape.net || !k.needs_net())
        .filter(|k| match k {
            FaultKind::ProviderErrors => shape.provider_stages.contains(&"script"),
            FaultKind::GpuSlow => shape.provider_stages.contains(&"render"),
            _ => true,
        })
        .filter(|k| {
            shape.regions > 1
                || !matches!(k, FaultKind::RegionPartition | FaultKind::OneWayPartition)
        })
        .collect();
    let mut kinds = all.clone();
    for i in (1..kinds.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        kinds.swap(i, j);
    }
    let mut out = Vec::new();
    let mut at_ms = 3_000;
    let mut i = 0;
    loop {
        let kind = if i < kinds.len() {
            kinds[i]
        } else {
            all[rng.below(all.len() as u64) as usize]
        };
        let for_ms = match kind {
            // A freeze outlasts the lease, or it is not a freeze.
            FaultKind::NodeFreeze => shape.lease_ms * 2 + rng.below(shape.lease_ms * 2),
            FaultKind::StoreOutage => 2_000 + rng.below(3_000),
            // Long enough that the stop bound (held everywhere, plus an
            // upload in flight) leaves a window to check.
            FaultKind::KillSwitch | FaultKind::RegionPause => 10_000 + rng.below(2_000),
            _ => 2_000 + rng.below(1_500),
        };
        let target = match kind {
            k if k.on_node() => rng.below(shape.nodes as u64) as usize,
            FaultKind::StoreMemberKill | FaultKind::StoreOutage => {
                rng.below(shape.store_members as u64) as usize
            }
            FaultKind::RegionPause | FaultKind::RegionPartition | FaultKind::OneWayPartition => {
                rng.below(shape.regions as u64) as usize
            }
            _ => 0,
        };
        // After each fault, room for publishing to pick up again before
        // the next, and for a takeover after one that touched leases.
        let gap_ms = if kind.touches_leases() {
            shape.lease_ms + 2_000
        } else {
            2_000
        };
        if at_ms + for_ms + gap_ms > shape.duration_ms && i >= kinds.len() {
            break;
        }
        if at_ms + for_ms > shape.duration_ms {
            break;
        }
        out.push(Fault::new(kind, at_ms, for_ms, target));
        at_ms += for_ms + gap_ms;
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(duration_ms: u64) -> Shape {
        Shape {
            clocks: true,
            net: true,
            provider_stages: vec!["script", "render"],
            nodes: 6,
            regions: 3,
            store_members: 3,
            lease_ms: 2_000,
            duration_ms,
        }
    }

    #[test]
    fn a_seed_draws_the_same_schedule_and_two_minutes_hold_every_kind() {
        let a = draw(7, &shape(120_000));
        assert_eq!(a, draw(7, &shape(120_000)));
        assert_ne!(a, draw(8, &shape(120_000)));
        for k in FaultKind::ALL {
            assert_eq!(a.iter().any(|f| f.kind == k), k.drawn(), "{k:?}: {a:?}");
        }
        // Not one lucky seed: every seed's two and a half minutes hold
        // every kind (two minutes hold most seeds' all, seed 7's above).
        for seed in 0..200 {
            let s = draw(seed, &shape(150_000));
            let drawn = FaultKind::ALL.iter().filter(|k| k.drawn());
            for k in drawn {
                assert!(s.iter().any(|f| f.kind == *k), "seed {seed}: {k:?} missing");
            }
        }
        assert!(a.iter().all(|f| f.at_ms + f.for_ms <= 120_000));
        assert!(a.windows(2).all(|w| w[0].at_ms + w[0].for_ms < w[1].at_ms));
        let freeze = a
            .iter()
            .find(|f| f.kind == FaultKind::NodeFreeze)
            .map(|f| f.for_ms);
        assert!(freeze.is_some_and(|ms| ms > 2_000), "{freeze:?}");
    }
}
