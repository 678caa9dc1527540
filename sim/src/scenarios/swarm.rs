//! The swarm: a random mix of every fault, each healed later, on a fleet
//! and with parameters drawn from the seed (see [`crate::variation`]); or,
//! as `swarm-defaults`, the same faults on the default fleet.

use actors::rng::SeededRng;
use topology::{ChannelId, NodeId, RegionId};

use super::fleet::{build_fleet, FleetShape};
use super::{at, base};
use crate::scenario::{Fault, Scenario};

/// Where a drawn fault may strike.
struct Targets {
    node: NodeId,
    region: RegionId,
    /// Another region than `region` (for one-way cuts).
    other: RegionId,
    channels: u64,
}

pub(super) fn swarm(seed: u64, vary_params: bool) -> Scenario {
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
    assert!(nodes > 0 && regions > 0, "a swarm needs a fleet");
    // The varied swarm has kinds of its own (the defaults keep the old
    // seeds' schedules).
    let kinds = if vary_params { 17 } else { 15 };
    let faults_count = 4 + rng.below(8);
    for _ in 0..faults_count {
        let start = 2.0 + rng.below(45) as f64 + rng.below(60) as f64 / 60.0;
        let len = 0.5 + rng.below(8) as f64;
        // The draws keep their order: a seed names the same schedule as
        // it always did.
        let node = NodeId(rng.below(nodes) as u32);
        let region = RegionId(rng.below(regions) as u16);
        let other = RegionId(((region.0 as u64 + 1 + rng.below(regions - 1)) % regions) as u16);
        let t = Targets {
            node,
            region,
            other,
            channels: s.topology.channels.len() as u64,
        };
        let (on, off, off_after) = match rng.below(kinds) {
            15 => {
                // Another tool uses a few units of every project's quota
                // today: enough to exhaust a tiny quota (whose videos then
                // fail late as quota-exhausted), not a full day's.
                let units = 1 + rng.below(10) as u32;
                (Fault::QuotaUsedElsewhere { units }, None, len)
            }
            // A node asked to drain while it is still (re)joining.
            16 => (Fault::StartNode(node), Some(Fault::DrainNode(node)), 0.001),
            kind => {
                let (on, off) = draw_fault(&mut rng, &t, kind);
                (on, off, len)
            }
        };
        s.faults.push(at(start, on));
        if let Some(off) = off {
            s.faults.push(at(start + off_after, off));
        }
    }
    if rng.below(5) == 0 {
        let t = 5.0 + rng.below(50) as f64;
        s.faults.push(at(t, Fault::KillSwitch));
    }
    // Drawn last: the faults above stay what each seed always drew.
    operator_draws(&mut rng, &mut s, nodes);
    s.faults.sort_by_key(|f| f.at_ms);
    s
}

/// One fault of `kind` and (for most) the fault that undoes it.
fn draw_fault(rng: &mut SeededRng, t: &Targets, kind: u64) -> (Fault, Option<Fault>) {
    let (node, region, other) = (t.node, t.region, t.other);
    match kind {
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
        k => draw_other_fault(rng, t, k),
    }
}

fn draw_other_fault(rng: &mut SeededRng, t: &Targets, kind: u64) -> (Fault, Option<Fault>) {
    match kind {
        8 => {
            let p = if rng.below(2) == 0 {
                "tts-main"
            } else {
                "llm-main"
            };
            let down = |down| Fault::ProviderOutage {
                provider: p.to_string(),
                down,
            };
            (down(true), Some(down(false)))
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
            let ch = ChannelId(rng.below(t.channels) as u32);
            (Fault::Pause(ch), Some(Fault::Resume(ch)))
        }
        11 => (
            Fault::ClockSkew {
                node: t.node,
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
        13 => (Fault::FreezeNode(t.node), Some(Fault::ThawNode(t.node))),
        _ => (Fault::CrashNode(t.node), Some(Fault::StartNode(t.node))),
    }
}

/// An operator's commands, each drawn with one chance in four: a node
/// excluded for a while, a maintenance window (ended early or not), a
/// channel's budget and a project's quota changed.
fn operator_draws(rng: &mut SeededRng, s: &mut Scenario, nodes: u64) {
    if rng.below(4) == 0 {
        let node = NodeId(rng.below(nodes) as u32);
        let t = 2.0 + rng.below(45) as f64;
        let len = 0.5 + rng.below(8) as f64;
        s.faults.push(at(t, Fault::Exclude(node)));
        s.faults.push(at(t + len, Fault::Include(node)));
    }
    // A maintenance window on a node, ended early or not.
    if rng.below(4) == 0 {
        let node = NodeId(rng.below(nodes) as u32);
        let t = 2.0 + rng.below(45) as f64;
        let minutes = 1 + rng.below(10);
        s.faults.push(at(
            t,
            Fault::Maintenance {
                nodes: vec![node],
                duration_ms: minutes * 60_000,
            },
        ));
        if rng.below(2) == 0 {
            s.faults.push(at(
                t + rng.below(minutes * 60) as f64 / 60.0,
                Fault::MaintenanceOff,
            ));
        }
    }
    // An operator changes a channel's budget or a project's quota.
    if rng.below(4) == 0 {
        let t = 2.0 + rng.below(45) as f64;
        let channel = ChannelId(rng.below(s.topology.channels.len() as u64) as u32);
        // From a cent to $20 a day.
        let daily_hard_micros = 10_000 * (1 + rng.below(2_000));
        s.faults.push(at(
            t,
            Fault::Budget {
                channel,
                daily_hard_micros,
            },
        ));
    }
    if rng.below(4) == 0 {
        let t = 2.0 + rng.below(45) as f64;
        let p = rng.below(s.topology.projects.len() as u64) as usize;
        let bucket = rng.below(s.topology.projects[p].buckets.len() as u64) as usize;
        // Raised (the API granted more): a quota lowered under what the
        // day's videos need makes them wait for tomorrow, past any
        // liveness bound (`live-limits` lowers one, with its bounds).
        let config = s.topology.projects[p].buckets[bucket].units_per_day;
        let units_per_day = config.saturating_mul(1 + rng.below(4));
        s.faults.push(at(
            t,
            Fault::QuotaLimit {
                project: topology::ProjectId(p as u16),
                bucket,
                units_per_day,
            },
        ));
    }
}
