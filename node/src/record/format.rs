//! The recording's bytes: segment files, each a versioned header and then
//! checksummed records.
//!
//! ```text
//! segment := magic "RFRECORD" | format u16 | machines_version u64
//!            | header_len u32 | header (postcard) | header_crc u32
//!            | record*
//! record  := body_len u32 | body_crc u32 | body
//! body    := 0 | postcard(Built entry)                      a machine is made
//!          | 1 | machine u64 | now_ms u64 | effects u32 | digest u64
//!              | postcard(input)                           one input fed
//!          | 2 | machine u64                               its actor stopped
//! ```
//!
//! All integers outside postcard are little-endian. A record is framed by
//! its length and a CRC-32 of its body, so that a torn tail (a crash in
//! the middle of a write) is told apart from corruption further in.

use serde::{Deserialize, Serialize};

use actors::channel::ChannelParams;
use actors::dispatch::DispatchParams;
use actors::gpu::GpuParams;
use actors::membership::MembershipParams;
use topology::{ChannelId, GpuId, NodeId, RegionId};

pub const MAGIC: &[u8; 8] = b"RFRECORD";
/// The layout above. A reader refuses a newer one by name.
pub const FORMAT_VERSION: u16 = 1;
/// No single record is this large (a channel's load of a few thousand
/// videos is well under 1 MiB); a longer length is corruption.
pub const RECORD_BYTES_MAX: usize = 64 << 20;
/// The fixed part of a segment header, before its postcard body.
pub const HEADER_FIXED_BYTES: usize = 8 + 2 + 8 + 4;

pub const TAG_BUILT: u8 = 0;
pub const TAG_FED: u8 = 1;
pub const TAG_STOPPED: u8 = 2;
/// tag + machine + now_ms + effects + digest.
pub const FED_FIXED_BYTES: usize = 1 + 8 + 8 + 4 + 8;

/// Who wrote a segment, and where it sits in the node's recording.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentHeader {
    pub node: String,
    pub node_id: u32,
    /// One per process start: a restarted node records a new run.
    pub run: u64,
    pub segment: u64,
    pub started_unix_ms: u64,
}

/// How a machine was made: everything its constructor took beyond the
/// cluster config (which the run keeps beside its segments).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Built {
    Channel {
        channel: ChannelId,
        node: NodeId,
        epoch: u64,
        incarnation: u64,
        params: ChannelParams,
        seed: u64,
    },
    Gpu {
        gpu: GpuId,
        memory_bytes: u64,
        cost_per_hour_micros: u64,
        params: GpuParams,
    },
    Dispatch {
        region: RegionId,
        params: DispatchParams,
    },
    Membership {
        node: NodeId,
        params: MembershipParams,
        seed: u64,
    },
}

/// A machine rebuilt from its [`Built`].
pub enum Rebuilt {
    Channel(actors::channel::ChannelMachine),
    Gpu(actors::gpu::GpuMachine),
    Dispatch(actors::dispatch::DispatchMachine),
    Membership(actors::membership::MembershipMachine),
}

impl Built {
    /// The machine as its constructor made it, against `topo` (the
    /// cluster config it ran beside).
    pub fn build(&self, topo: &std::sync::Arc<topology::Topology>) -> Rebuilt {
        let t = std::sync::Arc::clone(topo);
        match self.clone() {
            Built::Channel {
                channel,
                node,
                epoch,
                incarnation,
                params,
                seed,
            } => Rebuilt::Channel(actors::channel::ChannelMachine::new(
                t,
                channel,
                node,
                epoch,
                incarnation,
                params,
                seed,
            )),
            Built::Gpu {
                gpu,
                memory_bytes,
                cost_per_hour_micros,
                params,
            } => Rebuilt::Gpu(actors::gpu::GpuMachine::new(
                gpu,
                memory_bytes,
                cost_per_hour_micros,
                params,
            )),
            Built::Dispatch { region, params } => {
                Rebuilt::Dispatch(actors::dispatch::DispatchMachine::new(t, region, params))
            }
            Built::Membership { node, params, seed } => Rebuilt::Membership(
                actors::membership::MembershipMachine::new(t, node, params, seed),
            ),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BuiltEntry {
    pub machine: u64,
    pub built: Built,
}

/// A segment header's bytes.
pub fn encode_header(h: &SegmentHeader, machines_version: u64) -> Vec<u8> {
    let body = postcard::to_allocvec(h).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_FIXED_BYTES + body.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&machines_version.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out
}

pub fn built_body(e: &BuiltEntry) -> Vec<u8> {
    let mut body = vec![TAG_BUILT];
    // Serialising plain data into a Vec cannot fail.
    postcard::to_io(e, &mut body).ok();
    body
}

pub fn stopped_body(machine: u64) -> Vec<u8> {
    let mut body = vec![TAG_STOPPED];
    body.extend_from_slice(&machine.to_le_bytes());
    body
}

/// The digest of the effects one input produced: xxh3 of their postcard
/// encoding (the whole list, in order).
pub fn digest<E: Serialize>(effects: &[E], scratch: &mut Vec<u8>) -> u64 {
    scratch.clear();
    let buf = std::mem::take(scratch);
    let buf = postcard::to_extend(effects, buf).unwrap_or_default();
    let d = xxhash_rust::xxh3::xxh3_64(&buf);
    *scratch = buf;
    d
}

/// A segment's file name: runs and segments sort by name.
pub fn segment_name(run: u64, segment: u64) -> String {
    format!("run-{run:06}-seg-{segment:06}.rfr")
}

/// `(run, segment)` from a segment's file name.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("run-")?.strip_suffix(".rfr")?;
    let (run, seg) = rest.split_once("-seg-")?;
    Some((run.parse().ok()?, seg.parse().ok()?))
}

/// The cluster config a run's machines were built against.
pub fn cluster_name(run: u64) -> String {
    format!("cluster-run-{run:06}.toml")
}
