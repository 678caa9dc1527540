//! The key layout of the store and the records kept under it.
//!
//! ```text
//! m                      MembersRecord: live nodes and a generation
//! l/<node>               LeaseRecord: renewed by its node
//! o/<channel>            OwnerRecord: node and epoch (the fence)
//! c/<channel>            ChannelRecord: plan cursor, spend ledger
//! va/<channel>/<slot>    VideoRecord of a video still in progress
//! vd/<channel>/<slot>    VideoRecord of a published or failed video
//! q/<project>/<day>      QuotaRecord: units reserved per bucket that day
//! k/gen                  control generation, bumped by every control write
//! k/all                  ControlRecord for the whole fleet (kill switch)
//! k/c/<channel>          ControlRecord for one channel
//! ```
//! Ids are big-endian so that keys sort by id.

use crate::codec::{DecodeError, Reader, Writer};
use crate::store::Key as StoreKey;
use topology::{Budget, ChannelId, NodeId, ProjectId};

pub const MEMBERS_KEY: &[u8] = b"m";
/// Most members (and draining or excluded nodes) a members record holds.
const MEMBERS_MAX: u32 = 100_000;
pub const CONTROL_GEN_KEY: &[u8] = b"k/gen";
pub const CONTROL_ALL_KEY: &[u8] = b"k/all";
/// The operator's maintenance window ([`MaintenanceRecord`]); under the
/// control prefix, so that membership reads it with the control records.
pub const MAINTENANCE_KEY: &[u8] = b"k/maint";

#[inline(always)]
fn key_u32(prefix: &[u8], id: u32) -> StoreKey {
    key_of(prefix, &[&id.to_be_bytes()])
}

/// `prefix` then `parts`, held inline (no allocation) when they fit, as
/// every key below does; keys are built on every commit of the
/// simulator's hot path. Always inlined (a hint was not taken), so that
/// the lengths are constants: the copies into the fixed buffer become
/// stores of known length, where `SmallVec::extend_from_slice` was a call
/// and a call to `memcpy` per part (about 6 % of a steady capacity-10m
/// hour's instructions, measured and replaced).
#[inline(always)]
fn key_of(prefix: &[u8], parts: &[&[u8]]) -> StoreKey {
    let len = prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut buf = [0u8; crate::store::KEY_INLINE_BYTES];
    if len > buf.len() {
        let mut k = Vec::with_capacity(len);
        k.extend_from_slice(prefix);
        for p in parts {
            k.extend_from_slice(p);
        }
        return StoreKey::from_vec(k);
    }
    let mut at = prefix.len();
    buf[..at].copy_from_slice(prefix);
    for p in parts {
        buf[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    debug_assert_eq!(at, len);
    StoreKey::from_buf_and_len(buf, len)
}

pub fn lease_key(node: NodeId) -> StoreKey {
    key_u32(b"l/", node.0)
}
pub fn owner_key(ch: ChannelId) -> StoreKey {
    key_u32(b"o/", ch.0)
}
pub fn channel_key(ch: ChannelId) -> StoreKey {
    key_u32(b"c/", ch.0)
}
pub fn control_key(ch: ChannelId) -> StoreKey {
    key_u32(b"k/c/", ch.0)
}
pub fn active_prefix(ch: ChannelId) -> StoreKey {
    key_of(b"va/", &[&ch.0.to_be_bytes(), b"/"])
}
pub fn done_prefix(ch: ChannelId) -> StoreKey {
    key_of(b"vd/", &[&ch.0.to_be_bytes(), b"/"])
}
pub fn active_key(ch: ChannelId, slot: u64) -> StoreKey {
    key_of(b"va/", &[&ch.0.to_be_bytes(), b"/", &slot.to_be_bytes()])
}
pub fn done_key(ch: ChannelId, slot: u64) -> StoreKey {
    key_of(b"vd/", &[&ch.0.to_be_bytes(), b"/", &slot.to_be_bytes()])
}
/// The channel of an active or done video key (`va/…`, `vd/…`).
pub fn channel_of_video_key(k: &[u8]) -> Option<ChannelId> {
    match Key::parse(k)? {
        Key::ActiveVideo(ch, _) | Key::DoneVideo(ch, _) => Some(ch),
        _ => None,
    }
}

/// A key of the layout above, parsed: the one place keys are read back
/// (everything else builds them with the functions above).
#[derive(
    serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum Key {
    Members,
    Lease(NodeId),
    Owner(ChannelId),
    Channel(ChannelId),
    ActiveVideo(ChannelId, u64),
    DoneVideo(ChannelId, u64),
    Quota(ProjectId, u64),
    ControlGen,
    ControlAll,
    Control(ChannelId),
    Maintenance,
    Budget(ChannelId),
    QuotaLimits(ProjectId),
}

impl Key {
    /// The key `k` names, or `None` if it is not one of the layout's
    /// (another prefix, a wrong length).
    pub fn parse(k: &[u8]) -> Option<Key> {
        fn exact(rest: &[u8], n: usize) -> Option<&[u8]> {
            (rest.len() == n).then_some(rest)
        }
        let id32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let id64 = |b: &[u8]| u64::from_be_bytes(b[..8].try_into().unwrap_or([0; 8]));
        let video = |rest: &[u8]| {
            let r = exact(rest, 13).filter(|r| r[4] == b'/')?;
            Some((ChannelId(id32(r)), id64(&r[5..])))
        };
        if k == MEMBERS_KEY {
            return Some(Key::Members);
        } else if k == CONTROL_GEN_KEY {
            return Some(Key::ControlGen);
        } else if k == CONTROL_ALL_KEY {
            return Some(Key::ControlAll);
        } else if k == MAINTENANCE_KEY {
            return Some(Key::Maintenance);
        }
        let (prefix, rest) = split_prefix(k)?;
        Some(match prefix {
            "l/" => Key::Lease(NodeId(id32(exact(rest, 4)?))),
            "o/" => Key::Owner(ChannelId(id32(exact(rest, 4)?))),
            "c/" => Key::Channel(ChannelId(id32(exact(rest, 4)?))),
            "k/c/" => Key::Control(ChannelId(id32(exact(rest, 4)?))),
            "k/b/" => Key::Budget(ChannelId(id32(exact(rest, 4)?))),
            "k/q/" => {
                let r = exact(rest, 2)?;
                Key::QuotaLimits(ProjectId(u16::from_be_bytes([r[0], r[1]])))
            }
            "va/" => {
                let (ch, slot) = video(rest)?;
                Key::ActiveVideo(ch, slot)
            }
            "vd/" => {
                let (ch, slot) = video(rest)?;
                Key::DoneVideo(ch, slot)
            }
            "q/" => {
                let r = exact(rest, 11).filter(|r| r[2] == b'/')?;
                Key::Quota(ProjectId(u16::from_be_bytes([r[0], r[1]])), id64(&r[3..]))
            }
            _ => return None,
        })
    }

    /// The key's bytes (the inverse of [`Key::parse`]).
    pub fn encode(self) -> StoreKey {
        match self {
            Key::Members => crate::store::key(MEMBERS_KEY),
            Key::Lease(n) => lease_key(n),
            Key::Owner(ch) => owner_key(ch),
            Key::Channel(ch) => channel_key(ch),
            Key::ActiveVideo(ch, slot) => active_key(ch, slot),
            Key::DoneVideo(ch, slot) => done_key(ch, slot),
            Key::Quota(p, day) => quota_key(p, day),
            Key::ControlGen => crate::store::key(CONTROL_GEN_KEY),
            Key::ControlAll => crate::store::key(CONTROL_ALL_KEY),
            Key::Control(ch) => control_key(ch),
            Key::Maintenance => crate::store::key(MAINTENANCE_KEY),
            Key::Budget(ch) => budget_key(ch),
            Key::QuotaLimits(p) => quota_limits_key(p),
        }
    }
}

/// The longest layout prefix `k` starts with, and the rest.
fn split_prefix(k: &[u8]) -> Option<(&'static str, &[u8])> {
    const PREFIXES: [&str; 9] = ["k/c/", "k/b/", "k/q/", "va/", "vd/", "l/", "o/", "c/", "q/"];
    PREFIXES
        .iter()
        .find_map(|p| k.strip_prefix(p.as_bytes()).map(|rest| (*p, rest)))
}
/// A channel's budget as an operator set it (`budget CHANNEL ...`), in
/// place of the cluster config's.
pub fn budget_key(ch: ChannelId) -> StoreKey {
    key_u32(b"k/b/", ch.0)
}
/// A project's daily quota per bucket as an operator set it (`quota
/// PROJECT BUCKET ...`), in place of the cluster config's.
pub fn quota_limits_key(project: ProjectId) -> StoreKey {
    key_of(b"k/q/", &[&project.0.to_be_bytes()])
}
pub fn quota_key(project: ProjectId, day: u64) -> StoreKey {
    key_of(b"q/", &[&project.0.to_be_bytes(), b"/", &day.to_be_bytes()])
}
pub fn quota_prefix(project: ProjectId) -> StoreKey {
    key_of(b"q/", &[&project.0.to_be_bytes(), b"/"])
}

/// The idempotency key of a video: stable across owners and retries, and
/// stored in the published video's metadata so a lookup can find it.
pub fn idempotency_key(channel_name: &str, slot: u64) -> String {
    format!("{channel_name}/{slot}")
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnerRecord {
    /// `None` once released by a graceful handover.
    pub node: Option<NodeId>,
    pub epoch: u64,
    /// The owner's incarnation when it claimed: a record naming an earlier
    /// incarnation of a live node belongs to a process that is gone.
    pub incarnation: u64,
}

impl OwnerRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_tag(b'O');
        w.u32(self.node.map(|n| n.0 + 1).unwrap_or(0))
            .u64(self.epoch)
            .u64(self.incarnation);
        w.finish()
    }
    pub fn decode(b: &[u8]) -> Result<OwnerRecord, DecodeError> {
        let mut r = Reader::expect_tag(b, b'O', "owner tag")?;
        let node = r.u32("owner node")?;
        let epoch = r.u64("owner epoch")?;
        let incarnation = r.u64("owner incarnation")?;
        r.end("owner record end")?;
        Ok(OwnerRecord {
            node: node.checked_sub(1).map(NodeId),
            epoch,
            incarnation,
        })
    }
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct ChannelRecord {
    /// Bumped by every commit of the owner; read back to settle a commit
    /// whose result was unknown.
    pub write_seq: u64,
    /// The next schedule slot to plan.
    pub next_slot: u64,
    /// The budget day `spent_day_micros` belongs to.
    pub spend_day: u64,
    pub spent_day_micros: u64,
    /// Sum of every video's `cost_micros`, all days.
    pub spent_total_micros: u64,
}

impl ChannelRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_tag(b'C');
        w.u64(self.write_seq)
            .u64(self.next_slot)
            .u64(self.spend_day)
            .u64(self.spent_day_micros)
            .u64(self.spent_total_micros);
        w.finish()
    }
    pub fn decode(b: &[u8]) -> Result<ChannelRecord, DecodeError> {
        let mut r = Reader::expect_tag(b, b'C', "channel tag")?;
        let rec = ChannelRecord {
            write_seq: r.u64("write_seq")?,
            next_slot: r.u64("next_slot")?,
            spend_day: r.u64("spend_day")?,
            spent_day_micros: r.u64("spent_day_micros")?,
            spent_total_micros: r.u64("spent_total_micros")?,
        };
        r.end("channel record end")?;
        Ok(rec)
    }
}

/// Why a video ended without being published.
#[derive(
    serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum FailReason {
    /// A stage failed more than the retry limit allows.
    StageRetriesExhausted,
    /// The channel's daily hard budget would be exceeded.
    DailyBudget,
    /// The video's own hard budget would be exceeded.
    VideoBudget,
    /// The channel was killed.
    Killed,
    /// The publishing project had no quota before the video's deadline.
    QuotaExhausted,
    /// A stage failed in a way retrying cannot fix (the executor said so).
    StageFailed,
    /// The stage's jobs were lost (never reached a GPU, or went down with
    /// their node) more often than `ChannelParams::jobs_lost_max`: the fleet
    /// could not run it, though nothing the stage did failed.
    JobsLost,
}

impl FailReason {
    pub const ALL: [FailReason; 7] = [
        FailReason::StageRetriesExhausted,
        FailReason::DailyBudget,
        FailReason::VideoBudget,
        FailReason::Killed,
        FailReason::QuotaExhausted,
        FailReason::StageFailed,
        FailReason::JobsLost,
    ];
    pub fn code(self) -> u8 {
        self as u8
    }
    pub fn from_code(c: u8) -> Option<FailReason> {
        FailReason::ALL.get(c as usize).copied()
    }
    pub fn name(self) -> &'static str {
        match self {
            FailReason::StageRetriesExhausted => "stage-retries-exhausted",
            FailReason::DailyBudget => "daily-budget",
            FailReason::VideoBudget => "video-budget",
            FailReason::Killed => "killed",
            FailReason::QuotaExhausted => "quota-exhausted",
            FailReason::StageFailed => "stage-failed",
            FailReason::JobsLost => "jobs-lost",
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum VideoStatus {
    Active,
    Published { remote_id: String },
    Failed(FailReason),
}

/// The video record's tag: `W` since the failure counters, `V` before.
const VIDEO_TAG: u8 = b'W';
const VIDEO_TAG_V1: u8 = b'V';

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VideoRecord {
    pub slot: u64,
    pub status: VideoStatus,
    /// The stage to run next (or running); `stages.len()` past the end.
    pub stage: u16,
    /// Jobs started for `stage` so far, by any owner: part of each job's
    /// id, never a reason to give up.
    pub attempt: u32,
    /// Real failures of `stage`: an executor, provider or GPU reported the
    /// job failed, or it ran past its lease on a live GPU. Only these spend
    /// the stage's retry budget (`stage_attempts_max`; for the publish stage
    /// `publish_attempts_max`, counting definite upload failures).
    pub stage_failures: u32,
    /// Jobs of `stage` lost without failing: never reached a GPU, went down
    /// with their node, or were left behind by a takeover. Bounded on their
    /// own (`jobs_lost_max`), with their own reason.
    pub jobs_lost: u32,
    /// Money charged to this video, as the ledger has it.
    pub cost_micros: u64,
    /// Part of `cost_micros` reserved for the stage now running (its upper
    /// bound), settled to the actual cost when the stage ends.
    pub held_micros: u64,
    /// The budget day `held_micros` was charged to.
    pub held_day: u64,
    /// A publish was reserved and may be in flight: the next owner must look
    /// the idempotency key up before publishing again.
    pub publish_intent: bool,
    /// The quota day of the outstanding publish reservation.
    pub quota_day: u64,
    /// Quota units reserved for this video and not refunded, all buckets
    /// and days together (uploads, thumbnails, lookups).
    pub quota_units: u64,
}

impl VideoRecord {
    pub fn new(slot: u64) -> VideoRecord {
        VideoRecord {
            slot,
            status: VideoStatus::Active,
            stage: 0,
            attempt: 0,
            stage_failures: 0,
            jobs_lost: 0,
            cost_micros: 0,
            held_micros: 0,
            held_day: 0,
            publish_intent: false,
            quota_day: 0,
            quota_units: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        !matches!(self.status, VideoStatus::Active)
    }

    pub fn encode(&self) -> Vec<u8> {
        let remote_id_bytes = match &self.status {
            VideoStatus::Published { remote_id } => 4 + remote_id.len(),
            _ => 1,
        };
        // Tag, slot, status, 4 u32s, 5 u64s and a flag.
        let mut w =
            Writer::with_tag_and_capacity(VIDEO_TAG, 1 + 8 + 1 + 16 + 40 + 1 + remote_id_bytes);
        w.u64(self.slot);
        match &self.status {
            VideoStatus::Active => {
                w.u8(0);
            }
            VideoStatus::Published { remote_id } => {
                w.u8(1).bytes(remote_id.as_bytes());
            }
            VideoStatus::Failed(r) => {
                w.u8(2).u8(r.code());
            }
        }
        w.u32(u32::from(self.stage))
            .u32(self.attempt)
            .u32(self.stage_failures)
            .u32(self.jobs_lost)
            .u64(self.cost_micros)
            .u64(self.held_micros)
            .u64(self.held_day)
            .u8(u8::from(self.publish_intent))
            .u64(self.quota_day)
            .u64(self.quota_units);
        w.finish()
    }

    /// Decodes the current format and the first one (tag `V`, before the
    /// failure counters; its videos start with none counted).
    pub fn decode(b: &[u8]) -> Result<VideoRecord, DecodeError> {
        let v1 = b.first() == Some(&VIDEO_TAG_V1);
        let tag = if v1 { VIDEO_TAG_V1 } else { VIDEO_TAG };
        let mut r = Reader::expect_tag(b, tag, "video tag")?;
        let slot = r.u64("slot")?;
        let status = match r.u8("status")? {
            0 => VideoStatus::Active,
            1 => {
                let id = r.bytes("remote id")?;
                let remote_id = String::from_utf8(id.to_vec()).map_err(|_| DecodeError {
                    what: "remote id utf-8",
                    offset: 0,
                })?;
                VideoStatus::Published { remote_id }
            }
            2 => {
                let code = r.u8("fail reason")?;
                VideoStatus::Failed(FailReason::from_code(code).ok_or(DecodeError {
                    what: "fail reason code",
                    offset: 0,
                })?)
            }
            _ => {
                return Err(DecodeError {
                    what: "status code",
                    offset: 9,
                })
            }
        };
        let stage = r.u32("stage")?;
        let rec = VideoRecord {
            slot,
            status,
            stage: u16::try_from(stage).map_err(|_| DecodeError {
                what: "stage index",
                offset: 0,
            })?,
            attempt: r.u32("attempt")?,
            stage_failures: if v1 { 0 } else { r.u32("stage failures")? },
            jobs_lost: if v1 { 0 } else { r.u32("jobs lost")? },
            cost_micros: r.u64("cost")?,
            held_micros: r.u64("held")?,
            held_day: r.u64("held day")?,
            publish_intent: r.u8("intent")? != 0,
            quota_day: r.u64("quota day")?,
            quota_units: r.u64("quota units")?,
        };
        r.end("video record end")?;
        Ok(rec)
    }
}

/// Units reserved in each bucket of one project on one quota day.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct QuotaRecord {
    pub used: Vec<u64>,
}

impl QuotaRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_tag(b'Q');
        w.u32(self.used.len() as u32);
        for u in &self.used {
            w.u64(*u);
        }
        w.finish()
    }
    pub fn decode(b: &[u8]) -> Result<QuotaRecord, DecodeError> {
        let mut r = Reader::expect_tag(b, b'Q', "quota tag")?;
        let n = r.u32("bucket count")?;
        if n > 64 {
            return Err(DecodeError {
                what: "bucket count over 64",
                offset: 1,
            });
        }
        let mut used = Vec::with_capacity(n as usize);
        for _ in 0..n {
            used.push(r.u64("bucket units")?);
        }
        r.end("quota record end")?;
        Ok(QuotaRecord { used })
    }
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub incarnation: u64,
    pub renewals: u64,
}

impl LeaseRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_tag(b'L');
        w.u64(self.incarnation).u64(self.renewals);
        w.finish()
    }
    pub fn decode(b: &[u8]) -> Result<LeaseRecord, DecodeError> {
        let mut r = Reader::expect_tag(b, b'L', "lease tag")?;
        let rec = LeaseRecord {
            incarnation: r.u64("incarnation")?,
            renewals: r.u64("renewals")?,
        };
        r.end("lease record end")?;
        Ok(rec)
    }
}

/// The nodes the cluster considers live, sorted by id. A node is added by
/// itself when it joins and removed by a peer that saw its lease expire (or
/// by itself when it drains).
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct MembersRecord {
    pub generation: u64,
    pub nodes: Vec<NodeId>,
    /// Each member's current incarnation, parallel to `nodes`.
    pub incarnations: Vec<u64>,
    /// Members handing their channels away: placement skips them, and their
    /// channels are claimed only once released.
    pub draining: Vec<NodeId>,
    /// Nodes an operator excluded (`exclude NODE`): placement skips them
    /// whether or not they are members, so an excluded node hosts no
    /// channel and no dispatcher even while it holds its lease. Kept across
    /// the node's deaths and rejoins until `include NODE`. Sorted.
    pub excluded: Vec<NodeId>,
}

impl MembersRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_tag(b'M');
        w.u64(self.generation).u32(self.nodes.len() as u32);
        for (i, n) in self.nodes.iter().enumerate() {
            w.u32(n.0)
                .u64(self.incarnations.get(i).copied().unwrap_or(0));
        }
        w.u32(self.draining.len() as u32);
        for n in &self.draining {
            w.u32(n.0);
        }
        // Written only when someone is excluded: without exclusions the
        // record is byte for byte what nodes of the previous version write
        // and read, so that a rolling upgrade does not leave the old ones
        // unable to read the members (their decoding is strict). Exclude
        // nodes once the upgrade is done.
        if !self.excluded.is_empty() {
            w.u32(self.excluded.len() as u32);
            for n in &self.excluded {
                w.u32(n.0);
            }
        }
        w.finish()
    }
    pub fn decode(b: &[u8]) -> Result<MembersRecord, DecodeError> {
        let mut r = Reader::expect_tag(b, b'M', "members tag")?;
        let generation = r.u64("generation")?;
        let n = r.u32("member count")?;
        if n > MEMBERS_MAX {
            return Err(DecodeError {
                what: "member count over 100000",
                offset: 9,
            });
        }
        let mut nodes = Vec::with_capacity(n as usize);
        let mut incarnations = Vec::with_capacity(n as usize);
        for _ in 0..n {
            nodes.push(NodeId(r.u32("member id")?));
            incarnations.push(r.u64("member incarnation")?);
        }
        let d = r.u32("draining count")?;
        if d > n {
            return Err(DecodeError {
                what: "more draining nodes than members",
                offset: 0,
            });
        }
        let mut draining = Vec::with_capacity(d as usize);
        for _ in 0..d {
            draining.push(NodeId(r.u32("draining id")?));
        }
        // Written before exclusion existed: nobody is excluded.
        let mut excluded = Vec::new();
        if !r.at_end() {
            let x = r.u32("excluded count")?;
            if x > MEMBERS_MAX {
                return Err(DecodeError {
                    what: "excluded count over 100000",
                    offset: 0,
                });
            }
            excluded.reserve(x as usize);
            for _ in 0..x {
                excluded.push(NodeId(r.u32("excluded id")?));
            }
        }
        r.end("members record end")?;
        // Every writer keeps the three lists sorted, and every reader
        // searches them by bisection: a list out of order would be
        // misread (a member not found), so it is refused as corrupt.
        for (list, what) in [
            (&nodes, "member ids out of order"),
            (&draining, "draining ids out of order"),
            (&excluded, "excluded ids out of order"),
        ] {
            if !list.windows(2).all(|w| w[0] < w[1]) {
                return Err(DecodeError { what, offset: 0 });
            }
        }
        Ok(MembersRecord {
            generation,
            nodes,
            incarnations,
            draining,
            excluded,
        })
    }
    pub fn incarnation_of(&self, n: NodeId) -> Option<u64> {
        let i = self.nodes.binary_search(&n).ok()?;
        self.incarnations.get(i).copied()
    }
    /// Adds `n` (or updates its incarnation), keeping the lists sorted.
    pub fn join(&mut self, n: NodeId, incarnation: u64) {
        match self.nodes.binary_search(&n) {
            Ok(i) => {
                if let Some(slot) = self.incarnations.get_mut(i) {
                    *slot = incarnation;
                }
            }
            Err(i) => {
                self.nodes.insert(i, n);
                self.incarnations
                    .insert(i.min(self.incarnations.len()), incarnation);
            }
        }
        self.draining.retain(|d| *d != n);
    }
    pub fn remove(&mut self, n: NodeId) {
        if let Ok(i) = self.nodes.binary_search(&n) {
            self.nodes.remove(i);
            if i < self.incarnations.len() {
                self.incarnations.remove(i);
            }
        }
        self.draining.retain(|d| *d != n);
    }
    pub fn contains(&self, n: NodeId) -> bool {
        self.nodes.binary_search(&n).is_ok()
    }
    pub fn is_draining(&self, n: NodeId) -> bool {
        self.draining.binary_search(&n).is_ok()
    }
    pub fn is_excluded(&self, n: NodeId) -> bool {
        self.excluded.binary_search(&n).is_ok()
    }
    /// Excludes `n` (`on`) or includes it again; true if that changed
    /// anything.
    pub fn set_excluded(&mut self, n: NodeId, on: bool) -> bool {
        match (self.excluded.binary_search(&n), on) {
            (Err(i), true) => {
                self.excluded.insert(i, n);
                true
            }
            (Ok(i), false) => {
                self.excluded.remove(i);
                true
            }
            _ => false,
        }
    }
    /// Nodes placement may use: members that are neither draining nor
    /// excluded.
    pub fn placeable(&self, n: NodeId) -> bool {
        self.contains(n) && !self.is_draining(n) && !self.is_excluded(n)
    }
}

/// An operator's maintenance window (`maintenance ZONE|NODE SECONDS`): the
/// nodes in it may stop and restart without their channels moving away
/// for `duration_ms`, counted by each node from when it reads the record
/// (on its own clock: no two clocks are compared). A node still down when
/// the window ends is removed as usual. Absent: no window.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct MaintenanceRecord {
    /// Sorted.
    pub nodes: Vec<NodeId>,
    pub duration_ms: u64,
}

/// The longest maintenance window: a day.
pub const MAINTENANCE_MS_MAX: u64 = 86_400_000;

impl MaintenanceRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_tag(b'N');
        w.u64(self.duration_ms).u32(self.nodes.len() as u32);
        for n in &self.nodes {
            w.u32(n.0);
        }
        w.finish()
    }
    pub fn decode(b: &[u8]) -> Result<MaintenanceRecord, DecodeError> {
        let mut r = Reader::expect_tag(b, b'N', "maintenance tag")?;
        let duration_ms = r.u64("maintenance duration")?;
        if duration_ms > MAINTENANCE_MS_MAX {
            return Err(DecodeError {
                what: "maintenance longer than a day",
                offset: 1,
            });
        }
        let n = r.u32("maintenance node count")?;
        if n > MEMBERS_MAX {
            return Err(DecodeError {
                what: "maintenance node count over 100000",
                offset: 9,
            });
        }
        let mut nodes = Vec::with_capacity(n as usize);
        for _ in 0..n {
            nodes.push(NodeId(r.u32("maintenance node")?));
        }
        r.end("maintenance record end")?;
        Ok(MaintenanceRecord { nodes, duration_ms })
    }
}

/// A channel's budget set by an operator (key [`budget_key`]): it replaces
/// the cluster config's from the moment it commits, since every write of
/// the channel checks its version.
pub fn encode_budget(b: &Budget) -> Vec<u8> {
    let mut w = Writer::with_tag(b'B');
    w.u64(b.daily_soft_micros)
        .u64(b.daily_hard_micros)
        .u64(b.per_video_soft_micros)
        .u64(b.per_video_hard_micros);
    w.finish()
}
pub fn decode_budget(b: &[u8]) -> Result<Budget, DecodeError> {
    let mut r = Reader::expect_tag(b, b'B', "budget tag")?;
    let budget = Budget {
        daily_soft_micros: r.u64("daily soft")?,
        daily_hard_micros: r.u64("daily hard")?,
        per_video_soft_micros: r.u64("per-video soft")?,
        per_video_hard_micros: r.u64("per-video hard")?,
    };
    r.end("budget record end")?;
    Ok(budget)
}

/// A project's daily units per bucket, set by an operator (key
/// [`quota_limits_key`]), in the order of the project's buckets.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct QuotaLimitsRecord {
    pub units_per_day: Vec<u64>,
}

impl QuotaLimitsRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_tag(b'U');
        w.u32(self.units_per_day.len() as u32);
        for u in &self.units_per_day {
            w.u64(*u);
        }
        w.finish()
    }
    pub fn decode(b: &[u8]) -> Result<QuotaLimitsRecord, DecodeError> {
        let mut r = Reader::expect_tag(b, b'U', "quota limits tag")?;
        let n = r.u32("bucket count")?;
        if n > 64 {
            return Err(DecodeError {
                what: "more than 64 quota buckets",
                offset: 1,
            });
        }
        let mut units_per_day = Vec::with_capacity(n as usize);
        for _ in 0..n {
            units_per_day.push(r.u64("units per day")?);
        }
        r.end("quota limits record end")?;
        Ok(QuotaLimitsRecord { units_per_day })
    }
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ControlRecord {
    pub paused: bool,
    pub killed: bool,
}

impl ControlRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_tag(b'K');
        w.u8(u8::from(self.paused)).u8(u8::from(self.killed));
        w.finish()
    }
    pub fn decode(b: &[u8]) -> Result<ControlRecord, DecodeError> {
        let mut r = Reader::expect_tag(b, b'K', "control tag")?;
        let rec = ControlRecord {
            paused: r.u8("paused")? != 0,
            killed: r.u8("killed")? != 0,
        };
        r.end("control record end")?;
        Ok(rec)
    }
    /// The channel's effective control: the fleet switch and its own.
    pub fn merge(self, other: ControlRecord) -> ControlRecord {
        ControlRecord {
            paused: self.paused || other.paused,
            killed: self.killed || other.killed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key the machines write is held inline, at the largest ids:
    /// a longer layout would still work, but would allocate on every
    /// commit again (BENCHMARKS.md, capacity-10m, eleventh session).
    #[test]
    fn every_key_of_the_layout_fits_inline() {
        let (n, ch, p, big) = (
            NodeId(u32::MAX),
            ChannelId(u32::MAX),
            ProjectId(u16::MAX),
            u64::MAX,
        );
        let keys = [
            Key::Members,
            Key::Lease(n),
            Key::Owner(ch),
            Key::Channel(ch),
            Key::ActiveVideo(ch, big),
            Key::DoneVideo(ch, big),
            Key::Quota(p, big),
            Key::ControlGen,
            Key::ControlAll,
            Key::Control(ch),
            Key::Maintenance,
            Key::Budget(ch),
            Key::QuotaLimits(p),
        ];
        for k in keys {
            let bytes = k.encode();
            assert!(!bytes.spilled(), "{k:?} takes {} bytes", bytes.len());
            assert_eq!(Key::parse(&bytes), Some(k));
        }
        for prefix in [active_prefix(ch), done_prefix(ch), quota_prefix(p)] {
            assert!(!prefix.spilled());
        }
    }

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let v = VideoRecord {
            status: VideoStatus::Published {
                remote_id: "yt-42".into(),
            },
            cost_micros: 17,
            ..VideoRecord::new(9)
        };
        assert_eq!(VideoRecord::decode(&v.encode()), Ok(v.clone()));
        let mut bytes = v.encode();
        bytes.push(0);
        assert!(VideoRecord::decode(&bytes).is_err());
        assert!(VideoRecord::decode(&bytes[..5]).is_err());
        let m = two_members();
        assert_eq!(MembersRecord::decode(&m.encode()), Ok(m.clone()));
        // Without exclusions the record is the previous version's, byte
        // for byte (it ends with the draining list), and reads back as
        // nobody excluded; one cut inside the excluded list is refused.
        let none = MembersRecord {
            excluded: vec![],
            ..m.clone()
        };
        let old = none.encode();
        assert_eq!(old.len(), m.encode().len() - 8);
        assert_eq!(&old[old.len() - 4..], &4u32.to_le_bytes());
        let read = MembersRecord::decode(&old).expect("an older record");
        assert!(read.excluded.is_empty() && read.draining == m.draining);
        assert!(MembersRecord::decode(&m.encode()[..m.encode().len() - 2]).is_err());
        let mut x = m.clone();
        assert!(x.placeable(NodeId(1)) && !x.placeable(NodeId(4)));
        assert!(x.set_excluded(NodeId(1), true) && !x.placeable(NodeId(1)));
        assert!(!x.set_excluded(NodeId(1), true));
        x.remove(NodeId(1));
        x.join(NodeId(1), 9);
        assert!(x.is_excluded(NodeId(1)), "exclusion outlives a rejoin");
        assert!(x.set_excluded(NodeId(1), false) && x.placeable(NodeId(1)));
        let w = MaintenanceRecord {
            nodes: vec![NodeId(0), NodeId(3)],
            duration_ms: 600_000,
        };
        assert_eq!(MaintenanceRecord::decode(&w.encode()), Ok(w.clone()));
        let long = MaintenanceRecord {
            duration_ms: MAINTENANCE_MS_MAX + 1,
            ..w
        };
        assert!(MaintenanceRecord::decode(&long.encode()).is_err());
        assert!(OwnerRecord::decode(b"Xjunk").is_err());
        let o = OwnerRecord {
            node: None,
            epoch: 5,
            incarnation: 2,
        };
        assert_eq!(OwnerRecord::decode(&o.encode()), Ok(o));
    }

    /// Two members, one draining, one other node excluded.
    fn two_members() -> MembersRecord {
        MembersRecord {
            generation: 3,
            nodes: vec![NodeId(1), NodeId(4)],
            incarnations: vec![1, 3],
            draining: vec![NodeId(4)],
            excluded: vec![NodeId(2)],
        }
    }

    /// Lists out of order (or repeated) would be misread by bisection:
    /// refused, naming the list.
    #[test]
    fn members_lists_out_of_order_are_refused() {
        let m = two_members();
        assert_eq!(MembersRecord::decode(&m.encode()), Ok(m.clone()));
        for (bad, what) in [
            (
                MembersRecord {
                    nodes: vec![NodeId(4), NodeId(1)],
                    ..m.clone()
                },
                "member ids out of order",
            ),
            (
                MembersRecord {
                    draining: vec![NodeId(4), NodeId(1)],
                    ..m.clone()
                },
                "draining ids out of order",
            ),
            (
                MembersRecord {
                    excluded: vec![NodeId(2), NodeId(2)],
                    ..m.clone()
                },
                "excluded ids out of order",
            ),
        ] {
            assert_eq!(
                MembersRecord::decode(&bad.encode()).map_err(|e| e.what),
                Err(what)
            );
        }
    }

    #[test]
    fn every_key_parses_back_to_itself_and_strangers_do_not() {
        let keys = [
            Key::Members,
            Key::Lease(NodeId(7)),
            Key::Owner(ChannelId(300)),
            Key::Channel(ChannelId(0)),
            Key::ActiveVideo(ChannelId(5), 1_998_665),
            Key::DoneVideo(ChannelId(u32::MAX), u64::MAX),
            Key::Quota(ProjectId(2), 20_819),
            Key::ControlGen,
            Key::ControlAll,
            Key::Maintenance,
            Key::Budget(ChannelId(12)),
            Key::QuotaLimits(ProjectId(3)),
            Key::Control(ChannelId(9)),
        ];
        for k in keys {
            assert_eq!(Key::parse(&k.encode()), Some(k), "{k:?}");
            let mut long = k.encode();
            long.push(0);
            assert_eq!(Key::parse(&long), None, "{k:?} with a byte more");
        }
        for stranger in [
            &b"x/addr/n1"[..],
            b"o/\x00",
            b"va/\x00\x00\x00\x01",
            b"",
            b"q/",
        ] {
            assert_eq!(Key::parse(stranger), None, "{stranger:?}");
        }
        assert_eq!(
            channel_of_video_key(&done_key(ChannelId(3), 9)),
            Some(ChannelId(3))
        );
        assert_eq!(channel_of_video_key(&owner_key(ChannelId(3))), None);
    }

    #[test]
    fn keys_sort_by_id() {
        assert!(active_key(ChannelId(1), 300) < active_key(ChannelId(2), 0));
        assert!(active_key(ChannelId(1), 2) < active_key(ChannelId(1), 256));
        assert!(owner_key(ChannelId(255)) < owner_key(ChannelId(256)));
    }
}
