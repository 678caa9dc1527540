//! The run's life: faults as the schedule applies them, the heal, the
//! recovery probe, and the checks at the end of the liveness phase.

use std::collections::BTreeSet;

use actors::channel::Phase;
use actors::membership::MembershipInput;
use actors::records::*;
use actors::store::{prefix_end, Txn, Write};
use topology::{placement, ChannelId, NodeId};

use actors::node::Local;

use super::events::Msg;
use super::World;
use crate::checks::{Failover, Invariant, Violation};
use crate::scenario::Fault;

impl World {
    pub(crate) fn apply_fault(&mut self, f: Fault) {
        for i in self.pending_failovers.clone() {
            self.stats.failovers[i].disturbed = true;
        }
        match f {
            Fault::CrashNode(n) => {
                self.begin_failover(format!("crash {}", self.topo.node(n).name), &[n]);
                self.crash_node(n);
            }
            Fault::StartNode(n) => {
                self.thaw(n);
                self.start_node(n);
            }
            Fault::FreezeNode(n) => {
                if self.nodes[n.index()].alive && !self.faults.frozen[n.index()] {
                    self.begin_failover(format!("freeze {}", self.topo.node(n).name), &[n]);
                    self.faults.frozen[n.index()] = true;
                }
            }
            Fault::ThawNode(n) => self.thaw(n),
            Fault::DrainNode(n) => {
                let inc = self.nodes[n.index()].inc;
                if self.nodes[n.index()].alive {
                    let now = self.now;
                    self.drains_pending.entry(n).or_insert((inc, now));
                }
                let drain = Local::Membership(MembershipInput::Drain);
                self.deliver_now(n, Some(inc), Msg::Local(drain));
            }
            Fault::PartitionRegion(r) => {
                let nodes: Vec<NodeId> = self.topo.nodes_in(r).collect();
                self.begin_failover(format!("partition {}", self.topo.region(r).name), &nodes);
                self.faults.partitioned[r.index()] = true;
            }
            Fault::HealRegion(r) => self.faults.partitioned[r.index()] = false,
            Fault::OneWay { from, to } => {
                self.faults.one_way.insert((from, to));
            }
            Fault::HealOneWay { from, to } => {
                self.faults.one_way.remove(&(from, to));
            }
            Fault::StoreOutage(on) => {
                self.faults.store_outage = on;
                if !on {
                    for f in std::mem::take(&mut self.faults.deferred_controls) {
                        self.apply_fault(f);
                    }
                }
            }
            Fault::CommitUnknown(ppm) => self.faults.unknown_ppm = ppm,
            Fault::GpuFailures(ppm) => self.faults.gpu_fail_ppm = ppm,
            Fault::Stragglers(ppm) => self.faults.straggler_ppm = ppm,
            Fault::ProviderOutage { provider, down } => {
                if down {
                    self.faults.providers_down.insert(provider);
                } else {
                    self.faults.providers_down.remove(&provider);
                }
            }
            Fault::ApiFaults {
                error_5xx,
                rate_limited,
                lost_response,
            } => {
                self.api.faults.error_5xx_ppm = error_5xx;
                self.api.faults.rate_limited_ppm = rate_limited;
                self.api.faults.lost_response_ppm = lost_response;
            }
            // The operator's console cannot write while the store is down:
            // the command takes effect (and its stop bound starts) once it can.
            f @ (Fault::KillSwitch | Fault::Pause(_) | Fault::Resume(_))
                if self.faults.store_outage =>
            {
                self.faults.deferred_controls.push(f);
            }
            Fault::KillSwitch => {
                self.operator_control(
                    None,
                    ControlRecord {
                        paused: false,
                        killed: true,
                    },
                );
                self.stopped_since.entry(None).or_insert(self.now);
            }
            Fault::Pause(ch) => {
                self.operator_control(
                    Some(ch),
                    ControlRecord {
                        paused: true,
                        killed: false,
                    },
                );
                self.stopped_since.entry(Some(ch)).or_insert(self.now);
            }
            Fault::Resume(ch) => {
                self.operator_control(Some(ch), ControlRecord::default());
                self.stopped_since.remove(&Some(ch));
            }
            Fault::ClockSkew {
                node,
                offset_ms,
                drift_ppm,
            } => {
                let now = self.now;
                let c = &mut self.nodes[node.index()].clock;
                c.offset_ms = offset_ms;
                c.drift_ppm = drift_ppm;
                c.anchor_ms = now;
            }
            Fault::Network {
                loss,
                duplicate,
                reorder,
            } => {
                self.faults.loss_ppm = loss;
                self.faults.dup_ppm = duplicate;
                self.faults.reorder_ppm = reorder;
            }
        }
    }

    /// What an operator's console does: write the control record and bump
    /// the control generation, in one transaction.
    fn operator_control(&mut self, ch: Option<ChannelId>, record: ControlRecord) {
        let key = match ch {
            Some(c) => control_key(c),
            None => CONTROL_ALL_KEY.to_vec(),
        };
        let gen = self.store.version() + 1;
        let txn = Txn {
            checks: vec![],
            writes: vec![
                Write::Put(key, record.encode()),
                Write::Put(CONTROL_GEN_KEY.to_vec(), gen.to_le_bytes().to_vec()),
            ],
        };
        if let Err(e) = self.store.commit(&txn) {
            self.fail(Violation::new(
                Invariant::NoLostVideo,
                format!("operator control write failed: {e}"),
                self.rel(),
            ));
        }
    }

    fn healthy(&self, n: NodeId) -> bool {
        let node = &self.nodes[n.index()];
        node.alive
            && !self.faults.frozen[n.index()]
            && self.store_reachable(n)
            && !self.faults.partitioned[node.region.index()]
    }

    /// Delivers everything that waited for a frozen node, in order.
    fn thaw(&mut self, n: NodeId) {
        if !self.faults.frozen[n.index()] {
            return;
        }
        self.faults.frozen[n.index()] = false;
        for ev in std::mem::take(&mut self.faults.frozen_events[n.index()]) {
            self.push(self.now, ev);
        }
    }

    fn begin_failover(&mut self, what: String, nodes: &[NodeId]) {
        let mut channels = BTreeSet::new();
        for n in nodes {
            channels.extend(self.nodes[n.index()].channels.keys().copied());
        }
        if channels.is_empty() {
            return;
        }
        self.stats.failovers.push(Failover {
            what,
            at_ms: self.rel(),
            channels,
            recovered_ms: None,
            disturbed: false,
        });
        self.pending_failovers.push(self.stats.failovers.len() - 1);
    }

    pub(super) fn probe(&mut self) {
        if self.pending_failovers.is_empty() {
            return;
        }
        let healthy: Vec<bool> = self.topo.node_ids().map(|n| self.healthy(n)).collect();
        let mut running: BTreeSet<ChannelId> = BTreeSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if !healthy[i] {
                continue;
            }
            for (ch, h) in &n.channels {
                if h.m.phase() == Phase::Running {
                    running.insert(*ch);
                }
            }
        }
        let rel = self.rel();
        let mut still = Vec::new();
        for i in std::mem::take(&mut self.pending_failovers) {
            let f = &mut self.stats.failovers[i];
            let waiting = f
                .channels
                .iter()
                .filter(|c| placement::owner_of(&self.topo, **c, &healthy).is_some())
                .filter(|c| !running.contains(c))
                .count();
            if waiting == 0 {
                f.recovered_ms = Some(rel - f.at_ms);
                continue;
            }
            if let Some(bound) = self.sc.bounds.recovery_ms {
                if !f.disturbed && rel - f.at_ms > bound {
                    let what = f.what.clone();
                    let since = rel - f.at_ms;
                    self.fail(Violation::new(
                        Invariant::RecoveryWithinBound,
                        format!("after {what}: {waiting} channels still not running elsewhere after {since} ms (bound {bound} ms)"),
                        rel,
                    ));
                    return;
                }
            }
            still.push(i);
        }
        self.pending_failovers = still;
    }

    pub(super) fn heal(&mut self) {
        for p in &mut self.faults.partitioned {
            *p = false;
        }
        self.faults.one_way.clear();
        self.faults.store_outage = false;
        for f in std::mem::take(&mut self.faults.deferred_controls) {
            self.apply_fault(f);
        }
        self.faults.unknown_ppm = 0;
        self.faults.gpu_fail_ppm = 0;
        self.faults.straggler_ppm = 0;
        self.faults.providers_down.clear();
        self.api.faults = Default::default();
        self.faults.loss_ppm = 0;
        self.faults.dup_ppm = 0;
        self.faults.reorder_ppm = 0;
        for n in self.topo.node_ids() {
            self.thaw(n);
            if !self.nodes[n.index()].alive {
                self.start_node(n);
            }
        }
        // Paused channels resume so that their videos can finish; killed
        // channels stay killed (their videos end as failed: killed).
        let paused: Vec<ChannelId> = self.stopped_since.keys().filter_map(|c| *c).collect();
        for ch in paused {
            self.apply_fault(Fault::Resume(ch));
        }
        let start = b"va/".to_vec();
        let end = prefix_end(&start);
        self.must_finish = self
            .store
            .scan(&start, &end)
            .filter_map(|(k, v, _)| {
                Some((channel_of_video_key(k)?, VideoRecord::decode(v).ok()?.slot))
            })
            .collect();
    }

    pub(super) fn final_checks(&mut self) {
        let rel = self.rel();
        // A drain ends in Drained, unless the node died first (a crash
        // starts a new incarnation, which owes nothing).
        let stuck: Vec<(NodeId, u64)> = self
            .drains_pending
            .iter()
            .filter(|(n, (inc, _))| {
                let node = &self.nodes[n.index()];
                node.alive && node.inc == *inc
            })
            .map(|(n, (_, at))| (*n, *at))
            .collect();
        if let Some((n, at)) = stuck.first() {
            self.fail(Violation::new(
                Invariant::DrainsFinish,
                format!(
                    "the drain of {} asked {} ms after the start never finished",
                    self.topo.node(*n).name,
                    at - self.sc.start_utc_ms
                ),
                rel,
            ));
            return;
        }
        for (ch, slot) in self.must_finish.clone() {
            if let Some(v) = self.store.value(&active_key(ch, slot)) {
                let rec = VideoRecord::decode(v)
                    .map(|r| format!("{r:?}"))
                    .unwrap_or_default();
                let hosted: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|n| n.channels.contains_key(&ch))
                    .map(|n| format!("{}", n.id))
                    .collect();
                self.fail(Violation::new(
                    Invariant::NoLostVideo,
                    format!(
                        "video {}/{slot} planned before the heal did not finish within {} ms after it: {rec}; hosted on {hosted:?}",
                        self.topo.channel(ch).name,
                        self.sc.bounds.liveness_ms
                    ),
                    rel,
                ));
                return;
            }
        }
        // Everything on the API is recorded as published, and back.
        for (key, up) in &self.api.uploads {
            let rec = self
                .store
                .value(&done_key(up.channel, up.slot))
                .and_then(|v| VideoRecord::decode(v).ok());
            let ok = matches!(&rec, Some(VideoRecord { status: VideoStatus::Published { remote_id }, .. }) if *remote_id == up.remote_id);
            if !ok && self.store.value(&active_key(up.channel, up.slot)).is_none() {
                self.fail(Violation::new(
                    Invariant::NoLostVideo,
                    format!("video {key} is on the API but the store says {rec:?}"),
                    rel,
                ));
                return;
            }
        }
        let start = b"vd/".to_vec();
        let end = prefix_end(&start);
        let mut cost_by_channel = std::collections::BTreeMap::<ChannelId, u64>::new();
        let mut quota_by_project = std::collections::BTreeMap::<topology::ProjectId, u64>::new();
        let mut bad = None;
        for prefix in [b"va/".to_vec(), start] {
            let end = if prefix == b"va/" {
                prefix_end(b"va/")
            } else {
                end.clone()
            };
            for (k, v, _) in self.store.scan(&prefix, &end) {
                let (Some(ch), Ok(rec)) = (channel_of_video_key(k), VideoRecord::decode(v)) else {
                    continue;
                };
                *cost_by_channel.entry(ch).or_default() += rec.cost_micros;
                *quota_by_project
                    .entry(self.topo.channel(ch).project)
                    .or_default() += rec.quota_units;
                if let VideoStatus::Published { .. } = rec.status {
                    let key = idempotency_key(&self.topo.channel(ch).name, rec.slot);
                    if !self.api.uploads.contains_key(&key) && bad.is_none() {
                        bad = Some(Violation::new(
                            Invariant::NoLostVideo,
                            format!("video {key} recorded as published but not on the API"),
                            rel,
                        ));
                    }
                }
            }
        }
        if let Some(v) = bad {
            self.fail(v);
            return;
        }
        for ch in self.topo.channel_ids() {
            let rec = self
                .store
                .value(&channel_key(ch))
                .and_then(|v| ChannelRecord::decode(v).ok())
                .unwrap_or_default();
            let videos = cost_by_channel.get(&ch).copied().unwrap_or(0);
            let truth = self.truth.cost_by_channel.get(&ch).copied().unwrap_or(0);
            if rec.spent_total_micros != videos || truth > rec.spent_total_micros {
                self.fail(Violation::new(
                    Invariant::LedgersMatchReality,
                    format!(
                        "channel {}: ledger {} micros, its videos {} micros, really spent {} micros",
                        self.topo.channel(ch).name,
                        rec.spent_total_micros,
                        videos,
                        truth
                    ),
                    rel,
                ));
                return;
            }
        }
        for (p, spec) in self.topo.projects.iter().enumerate() {
            let p = topology::ProjectId(p as u16);
            let ledger = self.watch.ledger_units.get(&p).copied().unwrap_or(0);
            let videos = quota_by_project.get(&p).copied().unwrap_or(0);
            let charged = self.api.charged_total.get(&p).copied().unwrap_or(0);
            if ledger != videos || charged > ledger {
                self.fail(Violation::new(
                    Invariant::LedgersMatchReality,
                    format!(
                        "project {}: ledger {ledger} units, videos {videos}, API charged {charged}",
                        spec.name
                    ),
                    rel,
                ));
                return;
            }
        }
    }
}
