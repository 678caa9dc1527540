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
    let mut recorded = BTreeSet::new();
    let mut active = BTreeSet::new();
    let mut cost_by_channel: BTreeMap<ChannelId, u64> = BTreeMap::new();
    let mut quota_units = 0u64;
    let mut slots: BTreeMap<ChannelId, BTreeSet<u64>> = BTreeMap::new();
    for (ch, v) in &videos {
        let key = idempotency_key(&topo.channel(*ch).name, v.slot);
        *cost_by_channel.entry(*ch).or_default() += v.cost_micros;
        quota_units += v.quota_units;
        slots.entry(*ch).or_default().insert(v.slot);
        match &v.status {
            VideoStatus::Published { remote_id } => {
                let ids = made.get(&key);
                assert_eq!(
                    ids.map(|i| i.as_slice()),
                    Some(std::slice::from_ref(remote_id)),
                    "video {key} is recorded as published as {remote_id} but the publisher has {ids:?}"
                );
                recorded.insert(key);
            }
            VideoStatus::Active => {
                active.insert(key);
            }
            VideoStatus::Failed(_) => {}
        }
    }
    for (key, ids) in made {
        assert!(
            recorded.contains(key) || (in_flight_ok && active.contains(key)),
            "video {key} ({ids:?}) is on the publisher but the store does not know it"
        );
    }
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
        let s = slots.get(&ch).cloned().unwrap_or_default();
        if let Some(first) = s.iter().next().copied() {
            let missing: Vec<u64> = (first..rec.next_slot).filter(|x| !s.contains(x)).collect();
            assert!(
                missing.is_empty(),
                "channel {}: planned slots {missing:?} have no record",
                chan.name
            );
        }
        let videos_cost = cost_by_channel.get(&ch).copied().unwrap_or(0);
        assert_eq!(
            rec.spent_total_micros, videos_cost,
            "channel {}: budget ledger {} micros, its videos {videos_cost}",
            chan.name, rec.spent_total_micros
        );
    }
    let q = b"q/".as_slice();
    let ledger: u64 = rt
        .block_on(store.range(q, &prefix_end(q), 10_000))
        .expect("read quota")
        .iter()
        .map(|e| {
            QuotaRecord::decode(&e.value)
                .expect("quota record")
                .used
                .iter()
                .sum::<u64>()
        })
        .sum();
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
