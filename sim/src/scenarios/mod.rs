//! The built-in scenarios: one table of name, description and builder.
//! Each builder reads as a script: a fleet, then the faults in time order,
//! one line each, and the bounds it is held to.

use std::sync::Arc;

use topology::*;

use crate::scenario::*;

mod fleet;
mod swarm;

pub use fleet::{build_fleet, shorts_pipeline, FleetShape};

const MIN: u64 = 60_000;

/// A built-in scenario.
pub struct Builtin {
    pub name: &'static str,
    pub description: &'static str,
    /// Builds it; only the swarms use the seed.
    pub build: fn(u64) -> Scenario,
}

/// Every built-in scenario, in the order `reelfleet sim --list` shows them.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "steady",
        description: "3 regions, 6 nodes, 12 GPUs, 24 channels; no faults",
        build: steady,
    },
    Builtin {
        name: "node-kill",
        description: "a node is SIGKILLed at 10 min and stays dead; its channels move within the RTO",
        build: node_kill,
    },
    Builtin {
        name: "node-flap",
        description: "one node crashes and restarts five times, two minutes apart",
        build: node_flap,
    },
    Builtin {
        name: "owner-flap",
        description: "a node is killed and restarted every 4 s for 15 min, a provider fails 5% of calls: its channels are taken over again and again",
        build: owner_flap,
    },
    Builtin {
        name: "node-freeze",
        description: "a node is frozen (SIGSTOP) for 30 s, then resumes on stale beliefs",
        build: node_freeze,
    },
    Builtin {
        name: "region-outage",
        description: "every node of one region dies; channels with failover move, the rest wait",
        build: region_outage,
    },
    Builtin {
        name: "region-partition",
        description: "one region is cut off from the others and the store for 20 min",
        build: region_partition,
    },
    Builtin {
        name: "one-way-partition",
        description: "messages flow one way only between two region pairs for 20 min",
        build: one_way_partition,
    },
    Builtin {
        name: "store-outage",
        description: "the store is down for 30 s, then again for 90 s (longer than a lease)",
        build: store_outage,
    },
    Builtin {
        name: "commit-unknown-storm",
        description: "20% of commits answer 'result unknown' for 10 min",
        build: commit_unknown_storm,
    },
    Builtin {
        name: "gpu-failure",
        description: "25% of GPU jobs fault mid-way for 35 min",
        build: gpu_failure,
    },
    Builtin {
        name: "gpu-stragglers",
        description: "15% of GPU jobs run 4x longer than normal (lease kills them)",
        build: gpu_stragglers,
    },
    Builtin {
        name: "quota-exhaustion",
        description: "projects with 4 uploads a day: videos wait for the Pacific midnight reset",
        build: quota_exhaustion,
    },
    Builtin {
        name: "provider-outage",
        description: "the voice provider is down for 15 min; breakers open and probe",
        build: provider_outage,
    },
    Builtin {
        name: "budget-hard-limit",
        description: "tight budgets: soft limits switch to cheap tiers, hard limits stop work",
        build: budget_hard_limit,
    },
    Builtin {
        name: "kill-switch",
        description: "the fleet-wide kill switch at 20 min; nothing starts after the stop bound",
        build: kill_switch,
    },
    Builtin {
        name: "clock-skew",
        description: "node clocks off by minutes and drifting by up to 500 ppm",
        build: clock_skew,
    },
    Builtin {
        name: "rolling-restart",
        description: "every node drained and restarted in turn, one every 3 min",
        build: rolling_restart,
    },
    Builtin {
        name: "fleet-drain",
        description: "every node drained at the same moment, all restarted 2 min later",
        build: fleet_drain,
    },
    Builtin {
        name: "exclude",
        description: "an operator excludes a node (it restarts and stays excluded) and excludes and includes another",
        build: exclude,
    },
    Builtin {
        name: "maintenance",
        description: "a zone in a maintenance window: a node restarted inside it keeps its channels, one still down at its end fails over",
        build: maintenance,
    },
    Builtin {
        name: "live-limits",
        description: "an operator lowers and raises budgets and a project's quota while the fleet runs",
        build: live_limits,
    },
    Builtin {
        name: "scale-out",
        description: "three more nodes join at 15 min; channels rebalance by handover",
        build: scale_out,
    },
    Builtin {
        name: "flicker",
        description: "for 20 min a region drops off every 9 s, the store every 13 s, commits are unknown, a node restarts every 30 s",
        build: flicker,
    },
    Builtin {
        name: "dense-drain",
        description: "400 channels a node and 10-minute uploads: two nodes drained in turn with hundreds of uploads in flight",
        build: dense_drain,
    },
    Builtin {
        name: "swarm",
        description: "a random mix of every fault on a fleet and parameters drawn from the seed",
        build: swarm,
    },
    Builtin {
        name: "swarm-defaults",
        description: "the swarm's faults on the default fleet and parameters",
        build: swarm_defaults,
    },
    Builtin {
        name: "capacity-10m",
        description: "10M videos a month: 1,600 GPUs, 200 nodes, 4 regions, 5,000 channels, one day",
        build: capacity_10m,
    },
    Builtin {
        name: "capacity-10m-chaos",
        description: "capacity-10m's fleet and day with a region cut off for 30 min, 16 node crashes across regions, store latency spikes and API faults",
        build: capacity_10m_chaos,
    },
];

/// The names of the built-in scenarios.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|b| b.name)
}

/// What a built-in scenario does, in a line ("" if there is none).
pub fn describe(name: &str) -> &'static str {
    BUILTINS
        .iter()
        .find(|b| b.name == name)
        .map(|b| b.description)
        .unwrap_or("")
}

/// Builds a built-in scenario; `seed` only matters for the swarms.
pub fn builtin(name: &str, seed: u64) -> Option<Scenario> {
    let b = BUILTINS.iter().find(|b| b.name == name)?;
    let mut s = (b.build)(seed);
    s.name = b.name.to_string();
    s.description = b.description.to_string();
    Some(s)
}

fn fleet() -> Topology {
    build_fleet(&FleetShape::default())
}

fn base(name: &str, topo: Topology) -> Scenario {
    Scenario {
        name: name.into(),
        description: describe(name).into(),
        topology: Arc::new(topo),
        start_utc_ms: EPOCH_2027_MS + 9 * 60 * MIN,
        duration_ms: 60 * MIN,
        world: WorldParams::default(),
        machines: MachineParams::default(),
        faults: Vec::new(),
        bounds: Bounds {
            liveness_ms: 25 * MIN,
            ..Bounds::default()
        },
    }
}

fn at(min: f64, fault: Fault) -> TimedFault {
    TimedFault {
        at_ms: (min * MIN as f64) as u64,
        fault,
    }
}

/// The recovery bound for the default 2 s lease: expiry, one refresh to
/// notice, one to see the removal, the claim and the load, with slack.
pub const RECOVERY_BOUND_MS: u64 = 6_000;

fn steady(_seed: u64) -> Scenario {
    base("steady", fleet())
}

fn node_kill(_seed: u64) -> Scenario {
    let mut s = base("node-kill", fleet());
    s.faults = vec![at(10.0, Fault::CrashNode(NodeId(1)))]; // us-east-1 dies
    s.bounds.recovery_ms = Some(RECOVERY_BOUND_MS);
    s
}

fn node_flap(_seed: u64) -> Scenario {
    let mut s = base("node-flap", fleet());
    for i in 0..5 {
        let t = 8.0 + 2.0 * i as f64;
        s.faults.push(at(t, Fault::CrashNode(NodeId(2))));
        s.faults.push(at(t + 1.0, Fault::StartNode(NodeId(2))));
    }
    s
}

fn owner_flap(_seed: u64) -> Scenario {
    let mut s = base("owner-flap", fleet());
    // us-east-1 dies every 4 s and is back 1.5 s later: each time
    // it rejoins as a new incarnation and claims its channels
    // again under a new epoch, while what it ran is lost.
    for i in 0..225 {
        let t = 8.0 + f64::from(i) * 4.0 / 60.0;
        s.faults.push(at(t, Fault::CrashNode(NodeId(1))));
        s.faults
            .push(at(t + 1.5 / 60.0, Fault::StartNode(NodeId(1))));
    }
    // Real failures happen too, and must still be counted: one in
    // twenty provider calls fails.
    s.world.provider_error_ppm = 50_000;
    s
}

fn node_freeze(_seed: u64) -> Scenario {
    let mut s = base("node-freeze", fleet());
    s.faults = vec![
        at(10.0, Fault::FreezeNode(NodeId(4))), // frozen, not dead
        at(10.5, Fault::ThawNode(NodeId(4))),   // back, fenced out
    ];
    s.bounds.recovery_ms = Some(RECOVERY_BOUND_MS);
    s
}

fn region_outage(_seed: u64) -> Scenario {
    let mut s = base("region-outage", fleet());
    // Region 1 (eu-west) loses both nodes at once; they stay down.
    s.faults = vec![
        at(10.0, Fault::CrashNode(NodeId(2))),
        at(10.0, Fault::CrashNode(NodeId(3))),
    ];
    s.bounds.recovery_ms = Some(RECOVERY_BOUND_MS);
    s
}

fn region_partition(_seed: u64) -> Scenario {
    let mut s = base("region-partition", fleet());
    s.faults = vec![
        at(10.0, Fault::PartitionRegion(RegionId(2))), // us-west cut off
        at(30.0, Fault::HealRegion(RegionId(2))),      // and back
    ];
    s.bounds.recovery_ms = Some(RECOVERY_BOUND_MS);
    s
}

fn one_way_partition(_seed: u64) -> Scenario {
    let mut s = base("one-way-partition", fleet());
    let (a, b, c) = (RegionId(0), RegionId(1), RegionId(2));
    s.faults = vec![
        at(10.0, Fault::OneWay { from: b, to: c }), // eu-west cannot reach us-west
        at(10.0, Fault::OneWay { from: c, to: a }), // us-west cannot reach us-east
        at(30.0, Fault::HealOneWay { from: b, to: c }),
        at(30.0, Fault::HealOneWay { from: c, to: a }),
    ];
    s
}

fn store_outage(_seed: u64) -> Scenario {
    let mut s = base("store-outage", fleet());
    s.faults = vec![
        at(10.0, Fault::StoreOutage(true)), // 30 s: leases survive
        at(10.5, Fault::StoreOutage(false)),
        at(20.0, Fault::StoreOutage(true)), // 90 s: every lease runs out
        at(21.5, Fault::StoreOutage(false)),
    ];
    s
}

fn commit_unknown_storm(_seed: u64) -> Scenario {
    let mut s = base("commit-unknown-storm", fleet());
    s.faults = vec![
        at(10.0, Fault::CommitUnknown(200_000)),
        at(20.0, Fault::CommitUnknown(0)),
    ];
    s
}

fn gpu_failure(_seed: u64) -> Scenario {
    let mut s = base("gpu-failure", fleet());
    s.faults = vec![
        at(5.0, Fault::GpuFailures(250_000)),
        at(40.0, Fault::GpuFailures(0)),
    ];
    s
}

fn gpu_stragglers(_seed: u64) -> Scenario {
    let mut s = base("gpu-stragglers", fleet());
    s.faults = vec![
        at(5.0, Fault::Stragglers(150_000)),
        at(40.0, Fault::Stragglers(0)),
    ];
    s
}

fn quota_exhaustion(_seed: u64) -> Scenario {
    let shape = FleetShape {
        project: |i| {
            let mut p = PublishingProject::youtube_default(&format!("yt-small-{i}"));
            p.buckets[0].units_per_day = 4;
            p
        },
        channels_per_project: 3,
        ..FleetShape::default()
    };
    let mut s = base("quota-exhaustion", build_fleet(&shape));
    // 07:00 UTC is 23:00 Pacific: the reset comes an hour in.
    s.start_utc_ms = EPOCH_2027_MS + 7 * 60 * MIN;
    s.duration_ms = 50 * MIN;
    // A video that cannot get quota within 20 min of its slot fails
    // (quota-exhausted) rather than wait for tomorrow's.
    s.machines.channel.publish_grace_ms = 20 * MIN;
    s.bounds.liveness_ms = 60 * MIN;
    s
}

fn provider_outage(_seed: u64) -> Scenario {
    let mut s = base("provider-outage", fleet());
    let voice = "tts-main".to_string();
    s.faults = vec![
        at(
            10.0,
            Fault::ProviderOutage {
                provider: voice.clone(),
                down: true,
            },
        ),
        at(
            25.0,
            Fault::ProviderOutage {
                provider: voice,
                down: false,
            },
        ),
    ];
    s
}

fn budget_hard_limit(_seed: u64) -> Scenario {
    // A video costs about $0.06: the soft limits switch scripts to
    // the cheap tier early, the daily hard limit stops a channel
    // after three or four videos.
    let shape = FleetShape {
        budget: Budget {
            daily_soft_micros: 100_000,
            daily_hard_micros: 250_000,
            per_video_soft_micros: 40_000,
            per_video_hard_micros: 150_000,
        },
        ..FleetShape::default()
    };
    base("budget-hard-limit", build_fleet(&shape))
}

fn kill_switch(_seed: u64) -> Scenario {
    let mut s = base("kill-switch", fleet());
    s.faults = vec![
        at(12.0, Fault::Pause(ChannelId(3))),  // one channel paused
        at(15.0, Fault::Resume(ChannelId(3))), // and resumed
        at(20.0, Fault::KillSwitch),           // then the whole fleet stops
    ];
    s
}

fn clock_skew(_seed: u64) -> Scenario {
    let mut s = base("clock-skew", fleet());
    s.faults = vec![
        at(
            0.0,
            Fault::ClockSkew {
                node: NodeId(0),
                offset_ms: 5 * MIN as i64,
                drift_ppm: 500,
            },
        ),
        at(
            0.0,
            Fault::ClockSkew {
                node: NodeId(3),
                offset_ms: -2 * MIN as i64,
                drift_ppm: -500,
            },
        ),
        at(
            0.0,
            Fault::ClockSkew {
                node: NodeId(4),
                offset_ms: 37_000,
                drift_ppm: 200,
            },
        ),
        at(10.0, Fault::CrashNode(NodeId(0))), // the fast clock's node dies
        at(12.0, Fault::StartNode(NodeId(0))),
    ];
    s
}

fn rolling_restart(_seed: u64) -> Scenario {
    let mut s = base("rolling-restart", fleet());
    for i in 0..6u32 {
        let t = 5.0 + 3.0 * f64::from(i);
        s.faults.push(at(t, Fault::DrainNode(NodeId(i))));
        s.faults.push(at(t + 1.5, Fault::StartNode(NodeId(i))));
    }
    s
}

fn fleet_drain(_seed: u64) -> Scenario {
    // Drains race on the members record: each must see the others'
    // marks before it can write its own.
    let mut s = base("fleet-drain", fleet());
    for i in 0..6u32 {
        s.faults.push(at(5.0, Fault::DrainNode(NodeId(i))));
        s.faults.push(at(7.0, Fault::StartNode(NodeId(i))));
    }
    s
}

fn exclude(_seed: u64) -> Scenario {
    let mut s = base("exclude", fleet());
    s.faults = vec![
        // Excluded while running: its channels move to its region's other
        // node; restarted, it rejoins still excluded and takes nothing.
        at(5.0, Fault::Exclude(NodeId(1))),
        at(8.0, Fault::CrashNode(NodeId(1))),
        at(9.0, Fault::StartNode(NodeId(1))),
        // Excluded and included again: its channels come back.
        at(10.0, Fault::Exclude(NodeId(4))),
        at(14.0, Fault::Include(NodeId(4))),
        // Asked while the store is down: it waits for the store.
        at(20.0, Fault::StoreOutage(true)),
        at(20.5, Fault::Exclude(NodeId(2))),
        at(21.0, Fault::StoreOutage(false)),
        at(25.0, Fault::Include(NodeId(2))),
    ];
    s
}

fn maintenance(_seed: u64) -> Scenario {
    let topo = fleet();
    // Zone "a": the first node of every region.
    let zone_a: Vec<NodeId> = topo
        .node_ids()
        .filter(|n| topo.node(*n).zone == "a")
        .collect();
    let (first, second) = (zone_a[0], zone_a[1]);
    let other = topo
        .node_ids()
        .find(|n| topo.node(*n).zone != "a")
        .expect("a node outside zone a");
    let mut s = base("maintenance", topo);
    s.faults = vec![
        at(
            5.0,
            Fault::Maintenance {
                nodes: zone_a,
                duration_ms: 10 * MIN,
            },
        ),
        // Restarted inside the window: it keeps its channels.
        at(7.0, Fault::CrashNode(first)),
        at(9.0, Fault::StartNode(first)),
        // Still down when the window ends: its channels fail over then.
        at(8.0, Fault::CrashNode(second)),
        at(22.0, Fault::StartNode(second)),
        // A window ended early: the frozen node is removed at once.
        at(
            25.0,
            Fault::Maintenance {
                nodes: vec![other],
                duration_ms: 30 * MIN,
            },
        ),
        at(26.0, Fault::FreezeNode(other)),
        at(28.0, Fault::MaintenanceOff),
        at(31.0, Fault::ThawNode(other)),
    ];
    s
}

fn live_limits(_seed: u64) -> Scenario {
    // Budgets about ten videos a day; quotas of 8 uploads a day.
    let shape = FleetShape {
        budget: Budget {
            daily_soft_micros: 400_000,
            daily_hard_micros: 600_000,
            per_video_soft_micros: 100_000,
            per_video_hard_micros: 200_000,
        },
        project: |i| {
            let mut p = PublishingProject::youtube_default(&format!("yt-live-{i}"));
            p.buckets[0].units_per_day = 8;
            p
        },
        channels_per_project: 4,
        ..FleetShape::default()
    };
    let mut s = base("live-limits", build_fleet(&shape));
    // A video that cannot get quota within 20 min of its slot fails
    // (quota-exhausted) rather than wait for tomorrow's.
    s.machines.channel.publish_grace_ms = 20 * MIN;
    s.bounds.liveness_ms = 60 * MIN;
    let budget = |ch: u32, usd_cents: u64| Fault::Budget {
        channel: ChannelId(ch),
        daily_hard_micros: usd_cents * 10_000,
    };
    let quota = |p: u16, units_per_day: u64| Fault::QuotaLimit {
        project: ProjectId(p),
        bucket: 0,
        units_per_day,
    };
    s.faults = vec![
        // Lowered under what is already spent: nothing more today.
        at(6.0, budget(0, 5)),
        // Raised: the channel goes on past the config's limit.
        at(6.0, budget(1, 500)),
        // A project's uploads raised, another's lowered to none.
        at(8.0, quota(0, 40)),
        at(8.0, quota(1, 0)),
        // Set while the store is down: it takes effect when it is back.
        at(20.0, Fault::StoreOutage(true)),
        at(20.2, budget(2, 1)),
        at(21.0, Fault::StoreOutage(false)),
        at(30.0, quota(1, 8)),
    ];
    s
}

fn scale_out(_seed: u64) -> Scenario {
    let shape = FleetShape {
        nodes_per_region: 3,
        ..FleetShape::default()
    };
    let mut s = base("scale-out", build_fleet(&shape));
    // The third node of each region starts late.
    s.world.late_nodes = vec![NodeId(2), NodeId(5), NodeId(8)];
    s.faults = vec![
        at(15.0, Fault::StartNode(NodeId(2))),
        at(15.0, Fault::StartNode(NodeId(5))),
        at(15.0, Fault::StartNode(NodeId(8))),
    ];
    s
}

/// More channels a node than it releases at once (400 against
/// `RELEASES_IN_FLIGHT_MAX`, 256), and uploads long enough that a drain
/// meets hundreds in flight: each waits for its upload before it
/// releases, and must neither hold the node's other channels back nor
/// keep its machine awake meanwhile. Two nodes are drained in turn, each
/// restarted 20 minutes later (the drain ends when the last upload does).
fn dense_drain(_seed: u64) -> Scenario {
    let shape = FleetShape {
        regions: 2,
        nodes_per_region: 2,
        gpus_per_node: 24,
        channels: 1_600,
        videos_per_day: 96,
        ..FleetShape::default()
    };
    let mut s = base("dense-drain", build_fleet(&shape));
    s.duration_ms = 90 * MIN;
    s.bounds.liveness_ms = 40 * MIN;
    s.world.upload_ms = 10 * MIN;
    s.machines.channel.publish_timeout_ms = 15 * MIN;
    s.faults = vec![
        at(15.0, Fault::DrainNode(NodeId(0))),
        at(35.0, Fault::StartNode(NodeId(0))),
        at(45.0, Fault::DrainNode(NodeId(3))),
        at(65.0, Fault::StartNode(NodeId(3))),
    ];
    s
}

fn flicker(_seed: u64) -> Scenario {
    let mut s = base("flicker", fleet());
    let (eu_west, eu_west_1) = (RegionId(1), NodeId(3));
    s.faults.push(at(8.0, Fault::CommitUnknown(200_000)));
    for i in 0..133 {
        // eu-west is cut off for 5 s (longer than a lease) every 9 s.
        let t = 8.0 + f64::from(i) * 9.0 / 60.0;
        s.faults.push(at(t, Fault::PartitionRegion(eu_west)));
        s.faults
            .push(at(t + 5.0 / 60.0, Fault::HealRegion(eu_west)));
    }
    for i in 0..92 {
        // The store drops out for a second every 13 s.
        let t = 8.1 + f64::from(i) * 13.0 / 60.0;
        s.faults.push(at(t, Fault::StoreOutage(true)));
        s.faults.push(at(t + 1.0 / 60.0, Fault::StoreOutage(false)));
    }
    for i in 0..40 {
        // eu-west-1 restarts every 30 s: its claims meet the cuts.
        let t = 8.2 + f64::from(i) * 0.5;
        s.faults.push(at(t, Fault::CrashNode(eu_west_1)));
        s.faults
            .push(at(t + 2.0 / 60.0, Fault::StartNode(eu_west_1)));
    }
    s.faults.push(at(28.0, Fault::CommitUnknown(0)));
    s.faults.sort_by_key(|f| f.at_ms);
    s
}

fn swarm(seed: u64) -> Scenario {
    swarm::swarm(seed, true)
}

fn swarm_defaults(seed: u64) -> Scenario {
    swarm::swarm(seed, false)
}

/// capacity-10m's nodes per region: node `i` of region `r` is
/// `NodeId(r * 50 + i)` (the fleet is built region by region).
const CAPACITY_NODES_PER_REGION: usize = 50;

/// 10 million videos a month: 333,334 a day on 1,600 GPUs in 4 regions,
/// 5,000 channels, one simulated day.
fn capacity_10m(_seed: u64) -> Scenario {
    let shape = FleetShape {
        regions: 4,
        nodes_per_region: CAPACITY_NODES_PER_REGION,
        gpus_per_node: 8,
        channels: 5_000,
        // 5,000 x 67 = 335,000 videos a day.
        videos_per_day: 67,
        budget: Budget::UNLIMITED,
        ..FleetShape::default()
    };
    let mut s = base("capacity-10m", build_fleet(&shape));
    s.start_utc_ms = EPOCH_2027_MS;
    s.duration_ms = 24 * 60 * MIN;
    s.bounds.liveness_ms = 60 * MIN;
    // A fleet this size renews leases less often: 200 nodes at 500 ms
    // would spend more store operations on leases than on videos.
    s.machines.membership.lease_ms = 30_000;
    s.machines.membership.renew_ms = 10_000;
    s.machines.membership.drift_margin_ms = 3_000;
    s.world.provider_error_ppm = 0;
    s
}

/// capacity-10m under the faults a day of a large fleet meets: region 2
/// cut off from the others and the store for 30 minutes, 16 node crashes
/// (four per region, each back after 10 minutes), store latency spikes
/// (2 minutes at +500 ms, one at +2 s), and an hour of API errors,
/// throttling and lost responses. Every video planned before the last
/// fault ends must end, and each failover is held to its bound.
fn capacity_10m_chaos(seed: u64) -> Scenario {
    let mut s = capacity_10m(seed);
    s.name = "capacity-10m-chaos".into();
    let node = |r: usize, i: usize| NodeId((r * CAPACITY_NODES_PER_REGION + i) as u32);
    let h = 60.0;
    // Region 2: its channels may fail over (the fleet gives failover
    // regions to even channels, and region 2's are all even), and the
    // store is elsewhere (region 0: cutting that off cuts every node off).
    s.faults
        .push(at(6.0 * h, Fault::PartitionRegion(RegionId(2))));
    s.faults.push(at(6.5 * h, Fault::HealRegion(RegionId(2))));
    for k in 0..16_usize {
        let (r, i) = (k % 4, (7 + 3 * k) % CAPACITY_NODES_PER_REGION);
        let t = 2.0 * h + 45.0 * k as f64;
        s.faults.push(at(t, Fault::CrashNode(node(r, i))));
        s.faults.push(at(t + 10.0, Fault::StartNode(node(r, i))));
    }
    for (t, ms) in [
        (3.0 * h, 500),
        (9.0 * h, 500),
        (12.0 * h, 2_000),
        (15.0 * h, 500),
    ] {
        s.faults.push(at(t, Fault::StoreSlow(ms)));
        s.faults.push(at(t + 2.0, Fault::StoreSlow(0)));
    }
    s.faults.push(at(
        10.0 * h,
        Fault::ApiFaults {
            error_5xx: 20_000,
            rate_limited: 20_000,
            lost_response: 5_000,
        },
    ));
    s.faults.push(at(
        11.0 * h,
        Fault::ApiFaults {
            error_5xx: 0,
            rate_limited: 0,
            lost_response: 0,
        },
    ));
    s.faults.sort_by_key(|f| f.at_ms);
    // A takeover waits out the 30 s lease, up to two refreshes (10 s
    // each) and the drift margin (3 s), then claims: 63 s, and the claims
    // and first commits of a few hundred channels on top.
    s.bounds.recovery_ms = Some(75_000);
    s
}
