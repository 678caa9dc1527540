//! Causing each fault for real, and ending it: signals to node processes
//! and etcd members, the admin RPC for the kill switch and pauses, the
//! emulator's knobs for API faults.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::etcd::EtcdCluster;
use super::fleet::{Fleet, ADMIN};
use super::net::Net;
use super::schedule::{Fault, FaultKind};
use crate::admin::client::AdminClient;
use crate::admin::proto::{Command, Target};
use crate::emulate::provider::ProviderEmulator;
use crate::emulate::youtube::{FaultRates, LostResponse, YoutubeEmulator};
use crate::live::runtime::addr_key;
use crate::live::transport::TlsIdentity;
use crate::store::any::AnyStore;
use crate::store::Store;

/// What happened to one scheduled fault.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    pub kind: &'static str,
    /// The node, etcd member or region it hit.
    pub target: String,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    /// For the kill switch: how long until every node held it, as the
    /// admin RPC answered.
    pub held_after_ms: Option<u64>,
    /// A fault that could not be caused (with why): the run goes on.
    pub error: Option<String>,
    /// What the fleet did about it, where the fault expects an answer (a
    /// node started an hour ahead must refuse to start), and whether that
    /// was the answer expected (`None`: said, not checked).
    pub outcome: Option<String>,
    pub outcome_ok: Option<bool>,
    /// The region it paused (`region-pause`), by index: for the stop check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<usize>,
}

/// Everything the runner breaks.
pub struct Rig<'a> {
    pub rt: &'a tokio::runtime::Runtime,
    pub fleet: &'a mut Fleet,
    pub etcd: &'a mut EtcdCluster,
    pub emu: &'a Arc<YoutubeEmulator>,
    pub provider: &'a ProviderEmulator,
    /// The fleet's namespaces and bridge (None: on loopback).
    pub net: Option<&'a Net>,
    pub store: &'a Arc<AnyStore>,
    pub admin: &'a TlsIdentity,
    /// The nftables rules of each network fault under way, so that ending
    /// one leaves the others' in place.
    pub cuts: BTreeMap<CutKey, String>,
}

/// A network fault under way, by what it is.
pub type CutKey = (u64, &'static str, usize, Option<usize>);

fn cut_key(f: &Fault) -> CutKey {
    (f.at_ms, f.kind.name(), f.target, f.to)
}

/// How fast a drifting node's clock runs (the safe direction: a fast clock
/// makes a node give up its lease early, never late).
const CLOCK_RATE: f64 = 1.5;

/// How many times slower a slow GPU renders (0.7 s becomes 2.8 s: a
/// straggler, inside the executor's 5 s timeout).
const GPU_SLOW_FACTOR: u64 = 4;

/// How long a publish stall waits for an upload to reach its fault point.
const STALL_WAIT_MAX: Duration = Duration::from_secs(30);

/// How far a jumping node's wall clock goes ahead.
const CLOCK_JUMP_S: i64 = 3_600;

/// How long a node started an hour ahead may take to refuse (a start on
/// a loaded machine, two rounds of clock probes).
const CLOCK_REFUSAL_WITHIN: Duration = Duration::from_secs(20);

/// `reelfleet node`'s exit status when its clock is too far off.
const CLOCK_EXIT: i32 = 3;

/// How long an admin command may take (the kill switch waits for every
/// node to confirm, at most three leases plus 5 s).
const ADMIN_DEADLINE: Duration = Duration::from_secs(30);

impl Rig<'_> {
    fn region_name(&self, r: usize) -> String {
        let regions = &self.fleet.topo.regions;
        regions[r % regions.len().max(1)].name.clone()
    }

    fn target_name(&self, f: &Fault) -> String {
        let regions = self.fleet.topo.regions.len();
        match f.kind {
            k if k.on_node() => self.fleet.nodes[f.target % self.fleet.nodes.len()]
                .name
                .clone(),
            FaultKind::StoreMemberKill | FaultKind::StoreOutage => format!("etcd m{}", f.target),
            FaultKind::RegionPause | FaultKind::PartitionRegion => self.region_name(f.target),
            FaultKind::RegionPartition | FaultKind::OneWayPartition => {
                let arrow = if f.kind == FaultKind::RegionPartition {
                    "<->"
                } else {
                    "->"
                };
                format!(
                    "{} {arrow} {}",
                    self.region_name(f.target),
                    self.region_name(f.to_region(regions))
                )
            }
            FaultKind::KillSwitch => "fleet".into(),
            FaultKind::ChannelPause => f.channel.clone().unwrap_or_default(),
            FaultKind::ProviderErrors => "model server /script".into(),
            FaultKind::GpuSlow => "model server /render".into(),
            FaultKind::ApiFaults => {
                let [a, b, c] = f.rates_ppm.unwrap_or_default();
                format!("youtube api (ppm: 5xx {a}, 429 {b}, lost {c})")
            }
            _ => "youtube api".into(),
        }
    }

    /// A clock fault on node `i` begins (`on`) or ends: the node runs on
    /// its wrong clock, or is restarted on the true one. A node restarted
    /// an hour ahead must refuse to start (its peers' clocks disagree); one
    /// on a fast clock stops itself once it is too far off (said, not
    /// checked: the fault may end first).
    fn clock_fault(
        &mut self,
        kind: FaultKind,
        i: usize,
        on: bool,
        rec: &mut FaultRecord,
    ) -> Result<(), String> {
        match (kind, on) {
            (FaultKind::NodeClockJump, true) => {
                // The running node's wall clock jumps (its calendar does
                // not: it reads the wall clock once); then it is restarted,
                // to start with a calendar an hour ahead.
                self.fleet.set_clock_offset(i, CLOCK_JUMP_S)?;
                std::thread::sleep(Duration::from_millis(1_500));
                self.fleet.kill(i);
                self.fleet.start(i)?;
                let exit = self.fleet.wait_exit(i, CLOCK_REFUSAL_WITHIN);
                let name = &self.fleet.nodes[i].name;
                rec.outcome_ok = Some(exit == Some(CLOCK_EXIT));
                rec.outcome = Some(match exit {
                    Some(code) => format!(
                        "{name} refused to start (exit {code}): {}",
                        self.fleet.last_error(i).unwrap_or_default()
                    ),
                    None => format!(
                        "{name} started an hour ahead and was still running after {} s",
                        CLOCK_REFUSAL_WITHIN.as_secs()
                    ),
                });
                return Ok(());
            }
            (_, true) => {
                self.fleet.kill(i);
                self.fleet.nodes[i].drift = Some(CLOCK_RATE);
            }
            (_, false) => {
                if kind == FaultKind::NodeClockDrift {
                    let name = self.fleet.nodes[i].name.clone();
                    rec.outcome = Some(match self.fleet.exit_code(i) {
                        Some(code) => format!(
                            "{name} stopped itself (exit {code}): {}",
                            self.fleet.last_error(i).unwrap_or_default()
                        ),
                        None => {
                            format!("{name} ran on a {CLOCK_RATE}x clock until the fault ended")
                        }
                    });
                }
                self.fleet.kill(i);
                self.fleet.nodes[i].drift = None;
                self.fleet.set_clock_offset(i, 0)?;
            }
        }
        self.fleet.start(i)
    }

    /// The nodes of region `r`.
    fn region_nodes(&self, r: usize) -> Vec<usize> {
        let regions = self.fleet.topo.regions.len().max(1);
        (0..self.fleet.nodes.len())
            .filter(|i| self.fleet.nodes[*i].region == r % regions)
            .collect()
    }

    /// A cut link, as nftables rules: between region `target` and `to`
    /// (both ways, or one way), a node cut from the store, or a region cut
    /// from every other region and the store.
    fn net_fault(&mut self, f: &Fault) -> Result<(), String> {
        let net = self
            .net
            .ok_or("no network namespaces here: the fleet runs on loopback")?;
        let ports: Vec<u16> = self.etcd.members.iter().map(|m| m.client_port).collect();
        let nodes = self.fleet.nodes.len();
        let script = match f.kind {
            FaultKind::StoreCut => net.store_rules(f.target % nodes, &ports),
            FaultKind::PartitionRegion => {
                let inside = self.region_nodes(f.target);
                let outside: Vec<usize> = (0..nodes).filter(|i| !inside.contains(i)).collect();
                let mut s = net.cut_rules(&inside, &outside);
                s.push_str(&net.cut_rules(&outside, &inside));
                for i in &inside {
                    s.push_str(&net.store_rules(*i, &ports));
                }
                s
            }
            kind => {
                let to = f.to_region(self.fleet.topo.regions.len());
                let (a, b) = (self.region_nodes(f.target), self.region_nodes(to));
                let mut s = net.cut_rules(&a, &b);
                if kind == FaultKind::RegionPartition {
                    s.push_str(&net.cut_rules(&b, &a));
                }
                s
            }
        };
        net.apply(&script)?;
        self.cuts.insert(cut_key(f), script);
        Ok(())
    }

    /// Ends one network fault: the rules of the others stay.
    fn net_heal(&mut self, f: &Fault) -> Result<(), String> {
        self.cuts.remove(&cut_key(f));
        match self.net {
            Some(net) => net.reset(self.cuts.values()),
            None => Ok(()),
        }
    }

    /// An API fault through the emulator's knobs.
    fn api_fault(&self, f: &Fault) {
        match f.kind {
            FaultKind::ApiErrors => self.emu.fail_next(1_000_000, 503),
            FaultKind::ApiLostResponse => self.emu.lose_final_response(LostResponse::Close, 3),
            FaultKind::ApiFaults => {
                let [error_5xx, rate_limited, lost_response] = f.rates_ppm.unwrap_or_default();
                self.emu.set_fault_rates(FaultRates {
                    error_5xx,
                    rate_limited,
                    lost_response,
                });
            }
            _ => self.emu.set_quota_exhausted(true),
        }
    }

    /// The record of `f`, begun at `now_ms`, before anything came of it.
    fn record(&self, f: &Fault, now_ms: u64) -> FaultRecord {
        FaultRecord {
            kind: f.kind.name(),
            target: self.target_name(f),
            started_ms: now_ms,
            ended_ms: None,
            held_after_ms: None,
            error: None,
            outcome: None,
            outcome_ok: None,
            region: (f.kind == FaultKind::RegionPause)
                .then(|| f.target % self.fleet.topo.regions.len().max(1)),
        }
    }

    /// Causes `f`; what came of it.
    pub fn begin(&mut self, f: &Fault, now_ms: u64) -> FaultRecord {
        let began = std::time::Instant::now();
        let mut rec = self.record(f, now_ms);
        let nodes = self.fleet.nodes.len();
        let members = self.etcd.members.len();
        let result: Result<(), String> = match f.kind {
            FaultKind::NodeKill => {
                self.fleet.kill(f.target % nodes);
                Ok(())
            }
            FaultKind::NodeFreeze => {
                self.fleet.freeze(f.target % nodes);
                Ok(())
            }
            FaultKind::NodeRestart => {
                self.fleet
                    .terminate(f.target % nodes, Duration::from_secs(20));
                Ok(())
            }
            FaultKind::StoreMemberKill => {
                self.etcd.kill_member(f.target % members);
                Ok(())
            }
            FaultKind::StoreOutage => {
                self.etcd.kill_member(f.target % members);
                self.etcd.kill_member((f.target + 1) % members);
                Ok(())
            }
            FaultKind::KillSwitch => self
                .admin_fault(f, true)
                .map(|v| rec.held_after_ms = v["nodes"]["held_after_ms"].as_u64()),
            FaultKind::RegionPause | FaultKind::ChannelPause | FaultKind::ExcludeNode => {
                self.admin_fault(f, true).map(|_| ())
            }
            FaultKind::ApiErrors
            | FaultKind::ApiLostResponse
            | FaultKind::ApiQuota
            | FaultKind::ApiFaults => {
                self.api_fault(f);
                Ok(())
            }
            FaultKind::RegionPartition
            | FaultKind::OneWayPartition
            | FaultKind::StoreCut
            | FaultKind::PartitionRegion => self.net_fault(f),
            FaultKind::ProviderErrors => self.provider.set_failing("script", Some(503)),
            FaultKind::GpuSlow => self.provider.set_slow("render", GPU_SLOW_FACTOR),
            FaultKind::NodeClockJump | FaultKind::NodeClockDrift => {
                self.clock_fault(f.kind, f.target % nodes, true, &mut rec)
            }
            FaultKind::PublishStall => self.fleet.stall_at(
                f.target % nodes,
                crate::live::fault_points::PUBLISH_AFTER_GUARD,
                STALL_WAIT_MAX,
            ),
        };
        if f.kind == FaultKind::PublishStall && result.is_ok() {
            // The fault began when an upload reached the point, not when
            // the point was armed.
            rec.started_ms = now_ms + began.elapsed().as_millis() as u64;
        }
        rec.error = result.err();
        rec
    }

    /// Ends `f` (`rec`: its record, for what the fleet did meanwhile).
    pub fn end(&mut self, f: &Fault, rec: &mut FaultRecord) -> Result<(), String> {
        let nodes = self.fleet.nodes.len();
        let members = self.etcd.members.len();
        match f.kind {
            FaultKind::NodeKill | FaultKind::NodeRestart => self.fleet.start(f.target % nodes),
            FaultKind::NodeFreeze | FaultKind::PublishStall => {
                self.fleet.thaw(f.target % nodes);
                Ok(())
            }
            FaultKind::StoreMemberKill => self.etcd.start_member(f.target % members),
            FaultKind::StoreOutage => {
                self.etcd.start_member(f.target % members)?;
                self.etcd.start_member((f.target + 1) % members)
            }
            FaultKind::KillSwitch
            | FaultKind::RegionPause
            | FaultKind::ChannelPause
            | FaultKind::ExcludeNode => self.admin_fault(f, false).map(|_| ()),
            FaultKind::ApiFaults => {
                self.emu.set_fault_rates(FaultRates::default());
                Ok(())
            }
            FaultKind::NodeClockJump | FaultKind::NodeClockDrift => {
                self.clock_fault(f.kind, f.target % nodes, false, rec)
            }
            FaultKind::ProviderErrors | FaultKind::GpuSlow => {
                self.provider.clear_faults();
                Ok(())
            }
            FaultKind::RegionPartition
            | FaultKind::OneWayPartition
            | FaultKind::StoreCut
            | FaultKind::PartitionRegion => self.net_heal(f),
            FaultKind::ApiErrors | FaultKind::ApiLostResponse | FaultKind::ApiQuota => {
                self.emu.clear_faults();
                self.emu.set_quota_exhausted(false);
                Ok(())
            }
        }
    }

    /// An operator's command that begins (`on`) or ends `f`, through the
    /// admin RPC: the kill switch, a pause, an exclude.
    fn admin_fault(&self, f: &Fault, on: bool) -> Result<serde_json::Value, String> {
        let node = || {
            self.fleet.nodes[f.target % self.fleet.nodes.len()]
                .name
                .clone()
        };
        let target = match f.kind {
            FaultKind::RegionPause => Target::Region(self.region_name(f.target)),
            _ => Target::Channel(f.channel.clone().unwrap_or_default()),
        };
        let cmd = match (f.kind, on) {
            (FaultKind::KillSwitch, on) => Command::Killswitch {
                on,
                reason: if on { "chaos" } else { "chaos: fault over" }.into(),
            },
            (FaultKind::ExcludeNode, true) => Command::Exclude { node: node() },
            (FaultKind::ExcludeNode, false) => Command::Include { node: node() },
            (_, true) => Command::Pause { target },
            (_, false) => Command::Resume { target },
        };
        self.admin(cmd)
    }

    /// Runs an admin command through the first node that is up.
    pub fn admin(&self, cmd: Command) -> Result<serde_json::Value, String> {
        let mut last = "no node is running".to_string();
        for n in self.fleet.nodes.iter().filter(|n| n.running() && !n.frozen) {
            let got = self.rt.block_on(async {
                let e = self
                    .store
                    .get(&[addr_key(&n.name)])
                    .await
                    .map_err(|e| format!("the store: {e}"))?;
                let addr: std::net::SocketAddr = e
                    .into_iter()
                    .next()
                    .flatten()
                    .and_then(|e| String::from_utf8(e.value).ok())
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("{} has no address in the store", n.name))?;
                let call = async {
                    let mut c = AdminClient::connect(addr, "localhost", self.admin).await?;
                    c.call(cmd.clone()).await
                };
                tokio::time::timeout(ADMIN_DEADLINE, call)
                    .await
                    .map_err(|_| format!("{}: no answer within {ADMIN_DEADLINE:?}", n.name))?
            });
            match got {
                Ok(a) if a.ok => return Ok(a.result.unwrap_or_default()),
                Ok(a) => last = format!("{}: {}", n.name, a.error.unwrap_or_default()),
                Err(e) => last = e,
            }
        }
        Err(format!("admin {} failed: {last}", ADMIN))
    }
}
