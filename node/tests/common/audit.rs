//! The end-of-run audit of a live fleet: the store against what the
//! publisher says it made. No video published twice, every published
//! record matching the publisher's id and back, no planned slot without a
//! record, each channel's budget ledger equal to its videos' costs, and the
//! quota ledgers equal to the units the videos hold.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use actors::records::{
    channel_key, channel_of_video_key, idempotency_key, ChannelRecord, QuotaRecord, VideoRecord,
    VideoStatus,
};
use actors::store::prefix_end;
use reelfleet::store::Store;
use topology::{ChannelId, Topology};

pub struct Audit {
    pub videos: usize,
    pub published: usize,
    pub quota_units: u64,
}

/// Every video record of the store, with its channel.
pub fn videos<S: Store>(rt: &tokio::runtime::Runtime, store: &S) -> Vec<(ChannelId, VideoRecord)> {
    let mut out = Vec::new();
    for prefix in [b"va/".as_slice(), b"vd/".as_slice()] {
        let rows = rt
            .block_on(store.range(prefix, &prefix_end(prefix), 10_000))
            .expect("read videos");
        for e in rows {
            let ch = channel_of_video_key(&e.key).expect("a video key");
            out.push((
                ch,
                VideoRecord::decode(&e.value).expect("a valid video record"),
            ));
        }
    }
    out
}

/// `made`: every video the publisher made visible, by idempotency key.
/// `in_flight_ok`: a video the publisher made may still be active in the
/// store (the run ended with SIGKILL, before the owner recorded it).
pub fn audit<S: Store>(
    rt: &tokio::runtime::Runtime,
    store: &S,
    topo: &Topology,
    made: &BTreeMap<String, Vec<String>>,
    in_flight_ok: bool,
) -> Audit {
    let twice: Vec<_> = made.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "published twice: {twice:?}");
    let videos = videos(rt, store);
    let tally = Tally::of(topo, &videos, made);
    for (key, ids) in made {
        assert!(
            tally.recorded.contains(key) || (in_flight_ok && tally.active.contains(key)),
            "video {key} ({ids:?}) is on the publisher but the store does not know it"
        );
    }
    assert_channel_ledgers(rt, store, topo, &tally);
    let ledger = quota_ledger(rt, store);
    let quota_units = tally.quota_units;
    assert_eq!(
        ledger, quota_units,
        "quota ledger {ledger} units, videos hold {quota_units}"
    );
    assert!(!made.is_empty(), "nothing was published at all");
    Audit {
        videos: videos.len(),
        published: made.len(),
        quota_units,
    }
}

/// What the store's video records add up to.
#[derive(Default)]
struct Tally {
    /// Keys of the videos recorded as published.
    recorded: BTreeSet<String>,
    /// Keys of the videos still active.
    active: BTreeSet<String>,
    cost_by_channel: BTreeMap<ChannelId, u64>,
    quota_units: u64,
    /// The slots each channel has a record for.
    slots: BTreeMap<ChannelId, BTreeSet<u64>>,
}

impl Tally {
    /// Adds up `videos`, checking on the way that every one recorded as
    /// published has the one id the publisher made for it.
    fn of(
        topo: &Topology,
        videos: &[(ChannelId, VideoRecord)],
        made: &BTreeMap<String, Vec<String>>,
    ) -> Tally {
        let mut t = Tally::default();
        for (ch, v) in videos {
            let key = idempotency_key(&topo.channel(*ch).name, v.slot);
            *t.cost_by_channel.entry(*ch).or_default() += v.cost_micros;
            t.quota_units += v.quota_units;
            t.slots.entry(*ch).or_default().insert(v.slot);
            match &v.status {
                VideoStatus::Published { remote_id } => {
                    let ids = made.get(&key);
                    assert_eq!(
                        ids.map(|i| i.as_slice()),
                        Some(std::slice::from_ref(remote_id)),
                        "video {key} is recorded as published as {remote_id} but the publisher has {ids:?}"
                    );
                    t.recorded.insert(key);
                }
                VideoStatus::Active => {
                    t.active.insert(key);
                }
                VideoStatus::Failed(_) => {}
            }
        }
        t
    }
}

/// Every channel has a record for each slot it planned (from its first
/// recorded one on), and a budget ledger equal to its videos' costs.
fn assert_channel_ledgers<S: Store>(
    rt: &tokio::runtime::Runtime,
    store: &S,
    topo: &Topology,
    tally: &Tally,
) {
    for (i, chan) in topo.channels.iter().enumerate() {
        let ch = ChannelId(i as u32);
        let rec = rt
            .block_on(store.get(&[channel_key(ch)]))
            .expect("read channel")
            .into_iter()
            .next()
            .flatten()
            .map(|e| ChannelRecord::decode(&e.value).expect("channel record"))
            .unwrap_or_default();
        let s = tally.slots.get(&ch).cloned().unwrap_or_default();
        if let Some(first) = s.iter().next().copied() {
            let missing: Vec<u64> = (first..rec.next_slot).filter(|x| !s.contains(x)).collect();
            assert!(
                missing.is_empty(),
                "channel {}: planned slots {missing:?} have no record",
                chan.name
            );
        }
        let videos_cost = tally.cost_by_channel.get(&ch).copied().unwrap_or(0);
        assert_eq!(
            rec.spent_total_micros, videos_cost,
            "channel {}: budget ledger {} micros, its videos {videos_cost}",
            chan.name, rec.spent_total_micros
        );
    }
}

/// The quota units the store's quota ledgers say were used, all buckets.
fn quota_ledger<S: Store>(rt: &tokio::runtime::Runtime, store: &S) -> u64 {
    let q = b"q/".as_slice();
    rt.block_on(store.range(q, &prefix_end(q), 10_000))
        .expect("read quota")
        .iter()
        .map(|e| {
            QuotaRecord::decode(&e.value)
                .expect("quota record")
                .used
                .iter()
                .sum::<u64>()
        })
        .sum()
}
