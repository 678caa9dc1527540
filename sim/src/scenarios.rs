//! The built-in scenarios. Each reads as a script: a fleet, then the faults
//! in time order, one line each, and the bounds it is held to.

use std::sync::Arc;

use actors::rng::SeededRng;
use topology::*;

use crate::scenario::*;

pub const NAMES: [&str; 23] = [
    "steady",
    "node-kill",
    "node-flap",
    "owner-flap",
    "node-freeze",
    "region-outage",
    "region-partition",
    "one-way-partition",
    "store-outage",
    "commit-unknown-storm",
    "gpu-failure",
    "gpu-stragglers",
    "quota-exhaustion",
    "provider-outage",
    "budget-hard-limit",
    "kill-switch",
    "clock-skew",
    "rolling-restart",
    "fleet-drain",
    "scale-out",
    "swarm",
    "swarm-defaults",
    "capacity-10m",
];

pub fn describe(name: &str) -> &'static str {
    match name {
        "steady" => "3 regions, 6 nodes, 12 GPUs, 24 channels; no faults",
        "node-kill" => {
            "a node is SIGKILLed at 10 min and stays dead; its channels move within the RTO"
        }
        "node-flap" => "one node crashes and restarts five times, two minutes apart",
        "owner-flap" => {
            "a node is killed and restarted every 4 s for 15 min, a provider fails 5% of calls: its channels are taken over again and again"
        }
        "node-freeze" => "a node is frozen (SIGSTOP) for 30 s, then resumes on stale beliefs",
        "region-outage" => {
            "every node of one region dies; channels with failover move, the rest wait"
        }
        "region-partition" => "one region is cut off from the others and the store for 20 min",
        "one-way-partition" => "messages flow one way only between two region pairs for 20 min",
        "store-outage" => "the store is down for 30 s, then again for 90 s (longer than a lease)",
        "commit-unknown-storm" => "20% of commits answer 'result unknown' for 10 min",
        "gpu-failure" => "25% of GPU jobs fault mid-way for 35 min",
        "gpu-stragglers" => "15% of GPU jobs run 4x longer than normal (lease kills them)",
        "quota-exhaustion" => {
            "projects with 4 uploads a day: videos wait for the Pacific midnight reset"
        }
        "provider-outage" => "the voice provider is down for 15 min; breakers open and probe",
        "budget-hard-limit" => {
            "tight budgets: soft limits switch to cheap tiers, hard limits stop work"
        }
        "kill-switch" => {
            "the fleet-wide kill switch at 20 min; nothing starts after the stop bound"
        }
        "clock-skew" => "node clocks off by minutes and drifting by up to 500 ppm",
        "rolling-restart" => "every node drained and restarted in turn, one every 3 min",
        "fleet-drain" => "every node drained at the same moment, all restarted 2 min later",
        "scale-out" => "three more nodes join at 15 min; channels rebalance by handover",
        "swarm" => {
            "a random mix of every fault on a fleet and parameters drawn from the seed"
        }
        "swarm-defaults" => "the swarm's faults on the default fleet and parameters",
        "capacity-10m" => {
            "10M videos a month: 1,600 GPUs, 200 nodes, 4 regions, 5,000 channels, one day"
        }
        _ => "",
    }
}

const MIN: u64 = 60_000;

/// The shape of a generated fleet.
pub struct FleetShape {
    pub regions: usize,
    pub nodes_per_region: usize,
    pub gpus_per_node: usize,
    pub channels: usize,
    pub videos_per_day: u32,
    /// Every second channel may fail over to the other regions.
    pub failover: bool,
    pub budget: Budget,
    pub project: fn(usize) -> PublishingProject,
    /// How many channels share one publishing project.
    pub channels_per_project: usize,
}

impl Default for FleetShape {
    fn default() -> Self {
        FleetShape {
            regions: 3,
            nodes_per_region: 2,
            gpus_per_node: 2,
            channels: 24,
            videos_per_day: 96,
            failover: true,
            budget: Budget {
                daily_soft_micros: 40_000_000,
                daily_hard_micros: 50_000_000,
                per_video_soft_micros: 1_000_000,
                per_video_hard_micros: 2_000_000,
            },
            project: |i| PublishingProject::youtube_default(&format!("yt-{i}")),
            channels_per_project: 1,
        }
    }
}

const REGION_NAMES: [&str; 4] = ["us-east", "eu-west", "us-west", "ap-south"];
/// One-way latency between the regions above, in ms.
const LATENCY_MS: [[u32; 4]; 4] = [
    [1, 40, 35, 110],
    [40, 1, 70, 60],
    [35, 70, 1, 120],
    [110, 60, 120, 1],
];

pub fn shorts_pipeline() -> Pipeline {
    let stage = |name: &str, kind, gib: u64, mean_ms, jitter_ms, fixed, cheap| Stage {
        name: name.into(),
        kind,
        gpu_memory_bytes: gib * GIB,
        duration: DurationModel { mean_ms, jitter_ms },
        cost: CostModel {
            fixed_micros: fixed,
            cheap_fixed_micros: cheap,
        },
    };
    let external = |p: &str, c: Option<&str>| StageKind::External {
        provider: p.into(),
        cheap_provider: c.map(Into::into),
    };
    Pipeline {
        name: "shorts".into(),
        stages: vec![
            stage(
                "script",
                external("llm-main", Some("llm-lite")),
                0,
                3_000,
                1_000,
                20_000,
                5_000,
            ),
            stage(
                "voice",
                external("tts-main", None),
                0,
                5_000,
                2_000,
                10_000,
                10_000,
            ),
            stage("images", StageKind::Gpu, 8, 20_000, 5_000, 0, 0),
            stage("render", StageKind::Gpu, 16, 45_000, 10_000, 0, 0),
            stage("upload", StageKind::Publish, 0, 10_000, 0, 0, 0),
        ],
    }
}

pub fn build_fleet(shape: &FleetShape) -> Topology {
    let mut t = Topology::default();
    for r in 0..shape.regions {
        t.regions.push(Region {
            name: REGION_NAMES[r % 4].to_string()
                + &if r >= 4 {
                    format!("-{r}")
                } else {
                    String::new()
                },
        });
    }
    t.latency_ms = (0..shape.regions)
        .map(|a| {
            (0..shape.regions)
                .map(|b| LATENCY_MS[a % 4][b % 4])
                .collect()
        })
        .collect();
    for r in 0..shape.regions {
        for i in 0..shape.nodes_per_region {
            let node = NodeId(t.nodes.len() as u32);
            let mut gpus = Vec::new();
            for g in 0..shape.gpus_per_node {
                let big = (i + g) % 2 == 1;
                gpus.push(GpuId(t.gpus.len() as u32));
                t.gpus.push(Gpu {
                    node,
                    model: if big { "A100-80G" } else { "L4" }.into(),
                    memory_bytes: if big { 80 * GIB } else { 24 * GIB },
                    cost_per_hour_micros: if big { 2_500_000 } else { 800_000 },
                });
            }
            t.nodes.push(Node {
                name: format!("{}-{i}", t.regions[r].name),
                region: RegionId(r as u16),
                zone: format!("{}", (b'a' + (i % 3) as u8) as char),
                gpus,
            });
        }
    }
    t.pipelines.push(shorts_pipeline());
    let projects = shape.channels.div_ceil(shape.channels_per_project);
    for p in 0..projects {
        t.projects.push((shape.project)(p));
    }
    for c in 0..shape.channels {
        let home = RegionId((c % shape.regions) as u16);
        let failover_regions = if shape.failover && c % 2 == 0 {
            (1..shape.regions)
                .map(|d| RegionId(((home.index() + d) % shape.regions) as u16))
                .collect()
        } else {
            vec![]
        };
        t.channels.push(Channel {
            name: format!("ch-{c:04}"),
            home_region: home,
            failover_regions,
            videos_per_day: shape.videos_per_day,
            window: PublishWindow::ALL_DAY,
            pipeline: PipelineId(0),
            priority: (c % 3) as u8,
            budget: shape.budget,
            project: ProjectId((c / shape.channels_per_project) as u16),
        });
    }
    t
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

/// Builds a built-in scenario; `seed` only matters for `swarm`.
pub fn builtin(name: &str, seed: u64) -> Option<Scenario> {
    let fleet = || build_fleet(&FleetShape::default());
    let mut s = match name {
        "steady" => base(name, fleet()),
        "node-kill" => {
            let mut s = base(name, fleet());
            s.faults = vec![at(10.0, Fault::CrashNode(NodeId(1)))]; // us-east-1 dies
            s.bounds.recovery_ms = Some(RECOVERY_BOUND_MS);
            s
        }
        "node-flap" => {
            let mut s = base(name, fleet());
            for i in 0..5 {
                let t = 8.0 + 2.0 * i as f64;
                s.faults.push(at(t, Fault::CrashNode(NodeId(2))));
                s.faults.push(at(t + 1.0, Fault::StartNode(NodeId(2))));
            }
            s
        }
        "owner-flap" => {
            let mut s = base(name, fleet());
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
        "node-freeze" => {
            let mut s = base(name, fleet());
            s.faults = vec![
                at(10.0, Fault::FreezeNode(NodeId(4))), // frozen, not dead
                at(10.5, Fault::ThawNode(NodeId(4))),   // back, fenced out
            ];
            s.bounds.recovery_ms = Some(RECOVERY_BOUND_MS);
            s
        }
        "region-outage" => {
            let mut s = base(name, fleet());
            // Region 1 (eu-west) loses both nodes at once; they stay down.
            s.faults = vec![
                at(10.0, Fault::CrashNode(NodeId(2))),
                at(10.0, Fault::CrashNode(NodeId(3))),
            ];
            s.bounds.recovery_ms = Some(RECOVERY_BOUND_MS);
            s
        }
        "region-partition" => {
            let mut s = base(name, fleet());
            s.faults = vec![
                at(10.0, Fault::PartitionRegion(RegionId(2))), // us-west cut off
                at(30.0, Fault::HealRegion(RegionId(2))),      // and back
            ];
            s.bounds.recovery_ms = Some(RECOVERY_BOUND_MS);
            s
        }
        "one-way-partition" => {
            let mut s = base(name, fleet());
            let (a, b, c) = (RegionId(0), RegionId(1), RegionId(2));
            s.faults = vec![
                at(10.0, Fault::OneWay { from: b, to: c }), // eu-west cannot reach us-west
                at(10.0, Fault::OneWay { from: c, to: a }), // us-west cannot reach us-east
                at(30.0, Fault::HealOneWay { from: b, to: c }),
                at(30.0, Fault::HealOneWay { from: c, to: a }),
            ];
            s
        }
        "store-outage" => {
            let mut s = base(name, fleet());
            s.faults = vec![
                at(10.0, Fault::StoreOutage(true)), // 30 s: leases survive
                at(10.5, Fault::StoreOutage(false)),
                at(20.0, Fault::StoreOutage(true)), // 90 s: every lease runs out
                at(21.5, Fault::StoreOutage(false)),
            ];
            s
        }
        "commit-unknown-storm" => {
            let mut s = base(name, fleet());
            s.faults = vec![
                at(10.0, Fault::CommitUnknown(200_000)),
                at(20.0, Fault::CommitUnknown(0)),
            ];
            s
        }
        "gpu-failure" => {
            let mut s = base(name, fleet());
            s.faults = vec![
                at(5.0, Fault::GpuFailures(250_000)),
                at(40.0, Fault::GpuFailures(0)),
            ];
            s
        }
        "gpu-stragglers" => {
            let mut s = base(name, fleet());
            s.faults = vec![
                at(5.0, Fault::Stragglers(150_000)),
                at(40.0, Fault::Stragglers(0)),
            ];
            s
        }
        "quota-exhaustion" => {
            let shape = FleetShape {
                project: |i| {
                    let mut p = PublishingProject::youtube_default(&format!("yt-small-{i}"));
                    p.buckets[0].units_per_day = 4;
                    p
                },
                channels_per_project: 3,
                ..FleetShape::default()
            };
            let mut s = base(name, build_fleet(&shape));
            // 07:00 UTC is 23:00 Pacific: the reset comes an hour in.
            s.start_utc_ms = EPOCH_2027_MS + 7 * 60 * MIN;
            s.duration_ms = 50 * MIN;
            // A video that cannot get quota within 20 min of its slot fails
            // (quota-exhausted) rather than wait for tomorrow's.
            s.machines.channel.publish_grace_ms = 20 * MIN;
            s.bounds.liveness_ms = 60 * MIN;
            s
        }
        "provider-outage" => {
            let mut s = base(name, fleet());
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
        "budget-hard-limit" => {
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
            base(name, build_fleet(&shape))
        }
        "kill-switch" => {
            let mut s = base(name, fleet());
            s.faults = vec![
                at(12.0, Fault::Pause(ChannelId(3))),  // one channel paused
                at(15.0, Fault::Resume(ChannelId(3))), // and resumed
                at(20.0, Fault::KillSwitch),           // then the whole fleet stops
            ];
            s
        }
        "clock-skew" => {
            let mut s = base(name, fleet());
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
        "rolling-restart" => {
            let mut s = base(name, fleet());
            for i in 0..6u32 {
                let t = 5.0 + 3.0 * f64::from(i);
                s.faults.push(at(t, Fault::DrainNode(NodeId(i))));
                s.faults.push(at(t + 1.5, Fault::StartNode(NodeId(i))));
            }
            s
        }
        "fleet-drain" => {
            // Drains race on the members record: each must see the others'
            // marks before it can write its own.
            let mut s = base(name, fleet());
            for i in 0..6u32 {
                s.faults.push(at(5.0, Fault::DrainNode(NodeId(i))));
                s.faults.push(at(7.0, Fault::StartNode(NodeId(i))));
            }
            s
        }
        "scale-out" => {
            let shape = FleetShape {
                nodes_per_region: 3,
                ..FleetShape::default()
            };
            let mut s = base(name, build_fleet(&shape));
            // The third node of each region starts late.
            s.world.late_nodes = vec![NodeId(2), NodeId(5), NodeId(8)];
            s.faults = vec![
                at(15.0, Fault::StartNode(NodeId(2))),
                at(15.0, Fault::StartNode(NodeId(5))),
                at(15.0, Fault::StartNode(NodeId(8))),
            ];
            s
        }
        "swarm" => swarm(seed, true),
        "swarm-defaults" => swarm(seed, false),
        "capacity-10m" => capacity_10m(),
        _ => return None,
    };
    s.description = describe(name).into();
    Some(s)
}

/// A random mix of every fault, each healed later, on a fleet and with
/// parameters drawn from the seed (see [`crate::variation`]).
fn swarm(seed: u64, vary_params: bool) -> Scenario {
    let mut rng = SeededRng::new(seed ^ 0x5A4B_3C2D);
    let mut s = if vary_params {
        let mut vary = SeededRng::new(seed ^ 0xB0_661F);
        let (shape, tiny_quota) = crate::variation::fleet(&mut vary);
        let mut s = base("swarm", build_fleet(&shape));
        crate::variation::params(&mut s, &mut vary, tiny_quota);
        s
    } else {
        base("swarm-defaults", build_fleet(&FleetShape::default()))
    };
    let nodes = s.topology.nodes.len() as u64;
    let regions = s.topology.regions.len() as u64;
    let faults_count = 4 + rng.below(8);
    for _ in 0..faults_count {
        let start = 2.0 + rng.below(45) as f64 + rng.below(60) as f64 / 60.0;
        let len = 0.5 + rng.below(8) as f64;
        let node = NodeId(rng.below(nodes) as u32);
        let region = RegionId(rng.below(regions) as u16);
        let other = RegionId(((region.0 as u64 + 1 + rng.below(regions - 1)) % regions) as u16);
        let (on, off) = match rng.below(15) {
            0 => (Fault::CrashNode(node), Some(Fault::StartNode(node))),
            1 => (Fault::DrainNode(node), Some(Fault::StartNode(node))),
            2 => (
                Fault::PartitionRegion(region),
                Some(Fault::HealRegion(region)),
            ),
            3 => (
                Fault::OneWay {
                    from: region,
                    to: other,
                },
                Some(Fault::HealOneWay {
                    from: region,
                    to: other,
                }),
            ),
            4 => (Fault::StoreOutage(true), Some(Fault::StoreOutage(false))),
            5 => (
                Fault::CommitUnknown(50_000 + rng.below(250_000) as u32),
                Some(Fault::CommitUnknown(0)),
            ),
            6 => (
                Fault::GpuFailures(50_000 + rng.below(150_000) as u32),
                Some(Fault::GpuFailures(0)),
            ),
            7 => (
                Fault::Stragglers(50_000 + rng.below(200_000) as u32),
                Some(Fault::Stragglers(0)),
            ),
            8 => {
                let p = if rng.below(2) == 0 {
                    "tts-main"
                } else {
                    "llm-main"
                }
                .to_string();
                (
                    Fault::ProviderOutage {
                        provider: p.clone(),
                        down: true,
                    },
                    Some(Fault::ProviderOutage {
                        provider: p,
                        down: false,
                    }),
                )
            }
            9 => (
                Fault::ApiFaults {
                    error_5xx: rng.below(200_000) as u32,
                    rate_limited: rng.below(100_000) as u32,
                    lost_response: rng.below(300_000) as u32,
                },
                Some(Fault::ApiFaults {
                    error_5xx: 0,
                    rate_limited: 0,
                    lost_response: 0,
                }),
            ),
            10 => {
                let ch = ChannelId(rng.below(s.topology.channels.len() as u64) as u32);
                (Fault::Pause(ch), Some(Fault::Resume(ch)))
            }
            11 => (
                Fault::ClockSkew {
                    node,
                    offset_ms: rng.below(600_000) as i64 - 300_000,
                    drift_ppm: rng.below(1_000) as i32 - 500,
                },
                None,
            ),
            12 => (
                Fault::Network {
                    loss: rng.below(100_000) as u32,
                    duplicate: rng.below(50_000) as u32,
                    reorder: rng.below(200_000) as u32,
                },
                Some(Fault::Network {
                    loss: 0,
                    duplicate: 0,
                    reorder: 0,
                }),
            ),
            13 => (Fault::FreezeNode(node), Some(Fault::ThawNode(node))),
            _ => (Fault::CrashNode(node), Some(Fault::StartNode(node))),
        };
        s.faults.push(at(start, on));
        if let Some(off) = off {
            s.faults.push(at(start + len, off));
        }
    }
    if rng.below(5) == 0 {
        let t = 5.0 + rng.below(50) as f64;
        s.faults.push(at(t, Fault::KillSwitch));
    }
    s.faults.sort_by_key(|f| f.at_ms);
    s
}

/// 10 million videos a month: 333,334 a day on 1,600 GPUs in 4 regions,
/// 5,000 channels, one simulated day.
fn capacity_10m() -> Scenario {
    let shape = FleetShape {
        regions: 4,
        nodes_per_region: 50,
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
