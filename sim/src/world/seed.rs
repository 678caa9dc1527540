//! Starting from a state that already exists: a flight recording's store
//! at one moment (`reelfleet sim --from-recording DIR --at MS`). The store
//! holds it; the simulated API already shows what the store says was
//! published; the checks' running totals (quota ledgers, epoch owners,
//! when each video appeared) start from it, so that the invariants judge
//! what the run does from there, not the history before it.

use actors::records::{idempotency_key, Key, OwnerRecord, QuotaRecord, VideoStatus};
use actors::store::{Entry, MemStore};

use std::collections::BTreeMap;

use topology::{ChannelId, ProjectId};

use super::World;
use crate::api::Upload;

/// Ledger amounts the starting state holds beyond its videos.
#[derive(Clone, Debug, Default)]
pub struct Baseline {
    pub spend_micros: BTreeMap<ChannelId, i128>,
    pub quota_units: BTreeMap<ProjectId, i128>,
}

impl World {
    /// Replaces the empty store with `entries`. Nothing else about the run
    /// changes: with no entries it is a no-op.
    pub fn seed_state(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        self.store = MemStore::with_entries(entries);
        for (k, v, _) in self.store.scan(b"", &[]) {
            match Key::parse(&k) {
                Some(Key::Owner(ch)) => {
                    if let Ok(OwnerRecord {
                        node: Some(node),
                        epoch,
                        ..
                    }) = OwnerRecord::decode(v)
                    {
                        self.watch.epoch_owner.insert((ch, epoch), node);
                    }
                }
                Some(Key::Quota(project, _day)) => {
                    if let Ok(q) = QuotaRecord::decode(v) {
                        *self.watch.ledger_units.entry(project).or_default() +=
                            q.used.iter().sum::<u64>();
                    }
                }
                _ => {}
            }
        }
        let mut videos_spend = BTreeMap::<ChannelId, i128>::new();
        let mut videos_units = BTreeMap::<ProjectId, i128>::new();
        for (ch, rec) in self.video_records() {
            *videos_spend.entry(ch).or_default() += i128::from(rec.cost_micros);
            *videos_units
                .entry(self.topo.channel(ch).project)
                .or_default() += i128::from(rec.quota_units);
            self.watch.planned_at.insert((ch, rec.slot), self.now_ms);
            if let VideoStatus::Published { remote_id } = rec.status {
                let spec = self.topo.channel(ch);
                self.api.uploads.insert(
                    idempotency_key(&spec.name, rec.slot),
                    Upload {
                        remote_id,
                        channel: ch,
                        slot: rec.slot,
                        project: spec.project,
                        completed_ms: self.now_ms,
                    },
                );
            }
        }
        for ch in self.topo.channel_ids() {
            let spent = self
                .store
                .value(&actors::records::channel_key(ch))
                .and_then(|v| actors::records::ChannelRecord::decode(v).ok())
                .map_or(0, |r| i128::from(r.spent_total_micros));
            let videos = videos_spend.get(&ch).copied().unwrap_or(0);
            self.baseline.spend_micros.insert(ch, spent - videos);
        }
        for (p, units) in &self.watch.ledger_units {
            let videos = videos_units.get(p).copied().unwrap_or(0);
            self.baseline
                .quota_units
                .insert(*p, i128::from(*units) - videos);
        }
    }
}
