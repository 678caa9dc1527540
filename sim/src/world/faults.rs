//! Faults as the schedule applies them: to nodes (crash, start, freeze,
//! thaw, drain), to the network, to the store, GPUs, providers and API,
//! and the operator's commands (the kill switch, pause, resume).

use std::collections::BTreeSet;

use actors::membership::MembershipInput;
use actors::node::Local;
use actors::records::{
    budget_key, control_key, decode_budget, encode_budget, quota_limits_key, ControlRecord,
    MaintenanceRecord, MembersRecord, QuotaLimitsRecord, CONTROL_ALL_KEY, CONTROL_GEN_KEY,
    MAINTENANCE_KEY, MEMBERS_KEY,
};
use actors::store::{Check, Txn, Write};
use topology::{ChannelId, NodeId};

use super::events::Msg;
use super::World;
use crate::checks::{Failover, Invariant, MaintenanceWatch, Violation};
use crate::scenario::Fault;

impl World {
    pub(crate) fn apply_fault(&mut self, f: Fault) {
        // A failover still pending when another fault strikes is no longer
        // held to the recovery bound.
        for i in self.pending_failovers.clone() {
            self.stats.failovers[i].disturbed = true;
        }
        match f {
            Fault::CrashNode(_)
            | Fault::StartNode(_)
            | Fault::FreezeNode(_)
            | Fault::ThawNode(_)
            | Fault::DrainNode(_)
            | Fault::ClockSkew { .. } => self.node_fault(f),
            Fault::KillSwitch | Fault::Pause(_) | Fault::Resume(_) => self.operator_command(f),
            Fault::Exclude(n) | Fault::Include(n) => {
                self.operator_exclude(n, matches!(f, Fault::Exclude(_)))
            }
            Fault::Maintenance { .. } | Fault::MaintenanceOff => self.operator_maintenance(f),
            Fault::Budget { .. } | Fault::QuotaLimit { .. } => self.operator_limits(f),
            other => self.world_fault(other),
        }
    }

    fn node_fault(&mut self, f: Fault) {
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
                    let now = self.now_ms;
                    self.drains_pending.entry(n).or_insert((inc, now));
                }
                let drain = Local::Membership(MembershipInput::Drain);
                self.deliver_now(n, inc, Msg::Local(drain));
            }
            Fault::ClockSkew {
                node,
                offset_ms,
                drift_ppm,
            } => {
                let now = self.now_ms;
                let n = &mut self.nodes[node.index()];
                if n.clock.step(now, offset_ms, drift_ppm, n.alive) {
                    self.watch.jumped_ahead_ms.insert(node, now);
                }
            }
            other => unreachable!("not a node fault: {other:?}"),
        }
    }

    /// Faults of the network, the store, GPUs, providers and the API.
    fn world_fault(&mut self, f: Fault) {
        let faults = &mut self.faults;
        match f {
            Fault::PartitionRegion(r) => {
                let nodes: Vec<NodeId> = self.topo.nodes_in(r).collect();
                self.begin_failover(format!("partition {}", self.topo.region(r).name), &nodes);
                self.faults.partitioned[r.index()] = true;
            }
            Fault::HealRegion(r) => faults.partitioned[r.index()] = false,
            Fault::OneWay { from, to } => {
                faults.one_way.insert((from, to));
            }
            Fault::HealOneWay { from, to } => {
                faults.one_way.remove(&(from, to));
            }
            Fault::StoreOutage(on) => {
                faults.store_outage = on;
                if !on {
                    for f in std::mem::take(&mut self.faults.deferred_controls) {
                        self.apply_fault(f);
                    }
                }
            }
            Fault::StoreSlow(ms) => faults.store_slow_ms = u64::from(ms),
            Fault::CommitUnknown(ppm) => faults.unknown_ppm = ppm,
            Fault::GpuFailures(ppm) => faults.gpu_fail_ppm = ppm,
            Fault::Stragglers(ppm) => faults.straggler_ppm = ppm,
            Fault::ProviderOutage { provider, down } => {
                if down {
                    faults.providers_down.insert(provider);
                } else {
                    faults.providers_down.remove(&provider);
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
            Fault::QuotaUsedElsewhere { units } => {
                for (p, spec) in self.topo.projects.iter().enumerate() {
                    let p = topology::ProjectId(p as u16);
                    let day = spec.quota_day(self.now_ms);
                    self.api.used_elsewhere(p, spec, day, u64::from(units));
                }
            }
            Fault::Network {
                loss,
                duplicate,
                reorder,
            } => {
                faults.loss_ppm = loss;
                faults.dup_ppm = duplicate;
                faults.reorder_ppm = reorder;
            }
            other => unreachable!("not a world fault: {other:?}"),
        }
    }

    /// The operator's console cannot write while the store is down: the
    /// command takes effect (and its stop bound starts) once it can.
    fn operator_command(&mut self, f: Fault) {
        if self.faults.store_outage {
            self.faults.deferred_controls.push(f);
            return;
        }
        let (ch, record) = match f {
            Fault::KillSwitch => (
                None,
                ControlRecord {
                    paused: false,
                    killed: true,
                },
            ),
            Fault::Pause(ch) => (
                Some(ch),
                ControlRecord {
                    paused: true,
                    killed: false,
                },
            ),
            Fault::Resume(ch) => (Some(ch), ControlRecord::default()),
            other => unreachable!("not an operator command: {other:?}"),
        };
        self.operator_control(ch, record);
        if record.paused || record.killed {
            self.stopped_since_ms.entry(ch).or_insert(self.now_ms);
        } else {
            self.stopped_since_ms.remove(&ch);
        }
    }

    /// What `maintenance ...` / `maintenance off` do: the window record
    /// and a bump of the control generation (the nodes read it with the
    /// control records), in one transaction; the store down, it waits.
    fn operator_maintenance(&mut self, f: Fault) {
        if self.faults.store_outage {
            self.faults.deferred_controls.push(f);
            return;
        }
        let gen = self.store.version() + 1;
        let gen_write = Write::Put(
            actors::store::key(CONTROL_GEN_KEY),
            gen.to_le_bytes().to_vec(),
        );
        let (write, watch, span) = match f {
            Fault::Maintenance { nodes, duration_ms } => {
                let mut nodes = nodes;
                nodes.sort_unstable();
                nodes.dedup();
                let record = MaintenanceRecord {
                    nodes: nodes.clone(),
                    duration_ms,
                };
                // Every node has read it within a few refreshes and a
                // store round trip; the first window can end a little
                // early on a fast clock (drift up to 1 %: 2 % kept).
                let m = &self.sc.machines.membership;
                let read_ms = 4 * m.renew_ms + m.lease_ms + 2_000;
                let watch = MaintenanceWatch {
                    nodes: nodes.into_iter().collect(),
                    set_ms: self.now_ms,
                    from_ms: self.now_ms + read_ms,
                    until_ms: self.now_ms + duration_ms - duration_ms / 50,
                };
                // Nodes may hold it that long after the command.
                let span = (watch.nodes.clone(), self.now_ms + duration_ms + read_ms);
                let put = Write::Put(actors::store::key(MAINTENANCE_KEY), record.encode());
                (put, Some(watch), Some(span))
            }
            _ => (
                Write::Delete(actors::store::key(MAINTENANCE_KEY)),
                None,
                None,
            ),
        };
        let txn = Txn {
            checks: vec![],
            writes: vec![write, gen_write],
        };
        if let Err(e) = self.store.commit(&txn) {
            self.fail(Violation::new(
                Invariant::NoLostVideo,
                format!("operator maintenance write failed: {e}"),
                self.rel_ms(),
            ));
        }
        self.maintenance = span;
        self.watch.maintenance = watch;
    }

    /// What `budget ...` and `quota ...` do: the operator's record, in
    /// place of the config's (the store down, it waits). The API grants
    /// a quota set this way; the budget's ceiling over the run is kept for
    /// the check of what really ran.
    fn operator_limits(&mut self, f: Fault) {
        if self.faults.store_outage {
            self.faults.deferred_controls.push(f);
            return;
        }
        let write = match f {
            Fault::Budget {
                channel,
                daily_hard_micros,
            } => {
                let key = budget_key(channel);
                let mut b = self
                    .store
                    .value(&key)
                    .and_then(|v| decode_budget(v).ok())
                    .unwrap_or(self.topo.channel(channel).budget);
                b.daily_hard_micros = daily_hard_micros;
                b.daily_soft_micros = b.daily_soft_micros.min(daily_hard_micros);
                let ceiling = self
                    .truth
                    .budget_ceiling
                    .entry(channel)
                    .or_insert(self.topo.channel(channel).budget);
                ceiling.daily_hard_micros = ceiling.daily_hard_micros.max(daily_hard_micros);
                Write::Put(key, encode_budget(&b))
            }
            Fault::QuotaLimit {
                project,
                bucket,
                units_per_day,
            } => {
                let key = quota_limits_key(project);
                let spec = self.topo.project(project);
                let mut q = self
                    .store
                    .value(&key)
                    .and_then(|v| QuotaLimitsRecord::decode(v).ok())
                    .unwrap_or_else(|| QuotaLimitsRecord {
                        units_per_day: spec.buckets.iter().map(|b| b.units_per_day).collect(),
                    });
                q.units_per_day.resize(spec.buckets.len(), 0);
                if let Some(u) = q.units_per_day.get_mut(bucket) {
                    *u = units_per_day;
                }
                self.api.limits.insert(project, q.units_per_day.clone());
                Write::Put(key, q.encode())
            }
            other => unreachable!("not a limit: {other:?}"),
        };
        // With a bump of the control generation: the nodes read it with
        // the control records and tell their channels.
        let gen = self.store.version() + 1;
        let txn = Txn {
            checks: vec![],
            writes: vec![
                write,
                Write::Put(
                    actors::store::key(CONTROL_GEN_KEY),
                    gen.to_le_bytes().to_vec(),
                ),
            ],
        };
        if let Err(e) = self.store.commit(&txn) {
            self.fail(Violation::new(
                Invariant::NoLostVideo,
                format!("operator limit write failed: {e}"),
                self.rel_ms(),
            ));
        }
    }

    /// Whether node `n` is inside the operator's maintenance window now
    /// (as the world knows it: from the command to its full length).
    pub(super) fn in_maintenance(&self, n: NodeId) -> bool {
        self.maintenance
            .as_ref()
            .is_some_and(|(nodes, until)| self.now_ms < *until && nodes.contains(&n))
    }

    /// What `exclude NODE` / `include NODE` do: the node's place in the
    /// members record's excluded list, against the record's version (the
    /// store is down: it waits, as the console's write would).
    fn operator_exclude(&mut self, n: NodeId, on: bool) {
        if self.faults.store_outage {
            let f = if on {
                Fault::Exclude(n)
            } else {
                Fault::Include(n)
            };
            self.faults.deferred_controls.push(f);
            return;
        }
        let (mut members, version) = match self.store.get(MEMBERS_KEY) {
            Some(e) => (
                MembersRecord::decode(&e.value).unwrap_or_default(),
                e.version,
            ),
            None => (MembersRecord::default(), 0),
        };
        if !members.set_excluded(n, on) {
            return;
        }
        members.generation += 1;
        let txn = Txn {
            checks: vec![Check::VersionIs(actors::store::key(MEMBERS_KEY), version)],
            writes: vec![Write::Put(
                actors::store::key(MEMBERS_KEY),
                members.encode(),
            )],
        };
        if let Err(e) = self.store.commit(&txn) {
            self.fail(Violation::new(
                Invariant::NoLostVideo,
                format!("operator exclude write failed: {e}"),
                self.rel_ms(),
            ));
        }
        if on {
            self.excluded.insert(n);
        } else {
            self.excluded.remove(&n);
        }
    }

    /// What an operator's console does: write the control record and bump
    /// the control generation, in one transaction.
    fn operator_control(&mut self, ch: Option<ChannelId>, record: ControlRecord) {
        let key = match ch {
            Some(c) => control_key(c),
            None => actors::store::key(CONTROL_ALL_KEY),
        };
        let gen = self.store.version() + 1;
        let txn = Txn {
            checks: vec![],
            writes: vec![
                Write::Put(key, record.encode()),
                Write::Put(
                    actors::store::key(CONTROL_GEN_KEY),
                    gen.to_le_bytes().to_vec(),
                ),
            ],
        };
        if let Err(e) = self.store.commit(&txn) {
            self.fail(Violation::new(
                Invariant::NoLostVideo,
                format!("operator control write failed: {e}"),
                self.rel_ms(),
            ));
        }
    }

    /// Delivers everything that waited for a frozen node, in order.
    pub(super) fn thaw(&mut self, n: NodeId) {
        if !self.faults.frozen[n.index()] {
            return;
        }
        self.faults.frozen[n.index()] = false;
        for ev in std::mem::take(&mut self.faults.frozen_events[n.index()]) {
            self.push(self.now_ms, ev);
        }
    }

    /// Starts timing the recovery of the channels `nodes` host.
    fn begin_failover(&mut self, what: String, nodes: &[NodeId]) {
        let mut channels = BTreeSet::new();
        // Inside a maintenance window a node's channels wait for it.
        for n in nodes.iter().filter(|n| !self.in_maintenance(**n)) {
            channels.extend(self.nodes[n.index()].channels.keys().copied());
        }
        if channels.is_empty() {
            return;
        }
        self.stats.failovers.push(Failover {
            what,
            at_ms: self.rel_ms(),
            channels,
            recovered_ms: None,
            disturbed: false,
        });
        self.pending_failovers.push(self.stats.failovers.len() - 1);
    }
}
