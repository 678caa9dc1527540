//! Reading a recording folder back: each node's runs, each run's machines
//! with how they were made and every input they were fed.
//!
//! Strict, with the offset of whatever is wrong: a file that is not a
//! recording, a newer format, a recording from a build whose machines
//! differ, a bad checksum, a length past the end. One thing is expected
//! and read past: the last segment of a run may end in a torn record (the
//! process was killed in the middle of a write); everything before it is
//! read, and the run says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::format::{self, Built, BuiltEntry, SegmentHeader};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    pub file: PathBuf,
    pub offset: u64,
    pub reason: String,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at byte {}: {}",
            self.file.display(),
            self.offset,
            self.reason
        )
    }
}

/// One input as recorded: its time, its bytes (decoded by the machine's
/// kind), and the effects it produced, as count and digest.
#[derive(Debug, Clone)]
pub struct Fed {
    pub now_ms: u64,
    pub input: Vec<u8>,
    pub effects: u32,
    pub digest: u64,
}

#[derive(Debug, Clone, Default)]
pub struct MachineTape {
    /// `None`: made in a segment since deleted by the cap.
    pub built: Option<Built>,
    pub fed: Vec<Fed>,
    pub stopped: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Run {
    pub cluster_text: Option<String>,
    pub machines: BTreeMap<u64, MachineTape>,
    /// Things worth saying that are not errors (a torn tail, segments
    /// dropped by the cap).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct NodeRecording {
    pub node: String,
    pub node_id: u32,
    pub runs: BTreeMap<u64, Run>,
}

/// The node folders of a recording folder (`DIR/<node>/`), or `DIR` itself
/// when it is one node's folder.
pub fn node_dirs(dir: &Path) -> Result<Vec<PathBuf>, String> {
    if !super::writer::segments(dir)?.is_empty() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && !super::writer::segments(&p)?.is_empty() {
            out.push(p);
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(format!(
            "{}: no recording here (no run-*-seg-*.rfr files in it or its folders)",
            dir.display()
        ));
    }
    Ok(out)
}

/// Reads one node's folder.
pub fn read_node(node_dir: &Path) -> Result<NodeRecording, ReadError> {
    let segs = super::writer::segments(node_dir).map_err(|reason| ReadError {
        file: node_dir.to_path_buf(),
        offset: 0,
        reason,
    })?;
    let mut rec = NodeRecording::default();
    for (i, (run, seg, path)) in segs.iter().enumerate() {
        let last_of_run = segs.get(i + 1).is_none_or(|(r, _, _)| r != run);
        let bytes = std::fs::read(path).map_err(|e| ReadError {
            file: path.clone(),
            offset: 0,
            reason: format!("cannot read: {e}"),
        })?;
        let first_of_run = i == 0 || segs[i - 1].0 != *run;
        let r = rec.runs.entry(*run).or_default();
        if first_of_run {
            r.cluster_text =
                std::fs::read_to_string(node_dir.join(format::cluster_name(*run))).ok();
            if *seg != 1 {
                r.notes.push(format!(
                    "segments 1..{seg} of run {run} were deleted to stay under the cap: \
                     machines made in them are not replayed"
                ));
            }
        }
        let Some(header) = read_segment(path, &bytes, last_of_run, r)? else {
            continue;
        };
        if header.run != *run || header.segment != *seg {
            return Err(ReadError {
                file: path.clone(),
                offset: 0,
                reason: format!(
                    "the header says run {} segment {}, the file name run {run} segment {seg}",
                    header.run, header.segment
                ),
            });
        }
        rec.node = header.node;
        rec.node_id = header.node_id;
    }
    Ok(rec)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// Checks a segment's header and returns it with the offset of its first
/// record.
pub fn read_header(path: &Path, bytes: &[u8]) -> Result<(SegmentHeader, usize), ReadError> {
    let err = |offset: usize, reason: String| ReadError {
        file: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    if bytes.len() < format::MAGIC.len() && format::MAGIC.starts_with(bytes) {
        return Err(err(bytes.len(), "truncated in the segment header".into()));
    }
    if bytes.len() < format::MAGIC.len() || &bytes[..8] != format::MAGIC {
        return Err(err(
            0,
            "not a reelfleet recording (no RFRECORD magic)".into(),
        ));
    }
    if bytes.len() < format::HEADER_FIXED_BYTES {
        return Err(err(bytes.len(), "truncated in the segment header".into()));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version > format::FORMAT_VERSION {
        return Err(err(
            8,
            format!(
                "written by a newer reelfleet (recording format {version}; this build reads up to {})",
                format::FORMAT_VERSION
            ),
        ));
    }
    if version == 0 {
        return Err(err(8, "recording format 0 does not exist".into()));
    }
    let machines = le_u64(&bytes[10..18]);
    if machines != actors::MACHINES_VERSION {
        return Err(err(
            10,
            format!(
                "recorded by a build whose machines differ (machines version {machines:016x}, \
                 this build {:016x}): its inputs would not mean the same to these machines; \
                 replay it with the reelfleet build that recorded it",
                actors::MACHINES_VERSION
            ),
        ));
    }
    let len = le_u32(&bytes[18..22]) as usize;
    let body_at = format::HEADER_FIXED_BYTES;
    if len > format::RECORD_BYTES_MAX || bytes.len() < body_at + len + 4 {
        return Err(err(
            18,
            format!("truncated or corrupt segment header (length {len})"),
        ));
    }
    let body = &bytes[body_at..body_at + len];
    if crc32fast::hash(body) != le_u32(&bytes[body_at + len..]) {
        return Err(err(body_at, "segment header checksum mismatch".into()));
    }
    let h: SegmentHeader =
        postcard::from_bytes(body).map_err(|e| err(body_at, format!("segment header: {e}")))?;
    Ok((h, body_at + len + 4))
}

/// Reads one segment's records into `run`.
fn read_segment(
    path: &Path,
    bytes: &[u8],
    last_of_run: bool,
    run: &mut Run,
) -> Result<Option<SegmentHeader>, ReadError> {
    let err = |offset: usize, reason: String| ReadError {
        file: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let (header, mut at) = match read_header(path, bytes) {
        // A segment begun just before a crash may have no whole header.
        Err(e) if last_of_run && e.reason.starts_with("truncated") => {
            run.notes
                .push(format!("{}: torn at its start (a crash)", path.display()));
            return Ok(None);
        }
        other => other?,
    };
    while at < bytes.len() {
        let torn = |why: &str| format!("{}: {why} at byte {at}", path.display());
        if bytes.len() - at < 8 {
            if last_of_run {
                run.notes
                    .push(torn("ends in a torn record (a crash); read up to it"));
                break;
            }
            return Err(err(at, "truncated record frame".into()));
        }
        let len = le_u32(&bytes[at..]) as usize;
        let crc = le_u32(&bytes[at + 4..]);
        let end = at + 8 + len;
        if len > format::RECORD_BYTES_MAX {
            return Err(err(
                at,
                format!("record length {len} is past the largest record"),
            ));
        }
        if end > bytes.len() {
            if last_of_run {
                run.notes
                    .push(torn("ends in a torn record (a crash); read up to it"));
                break;
            }
            return Err(err(
                at,
                format!("truncated: a {len}-byte record runs past the end"),
            ));
        }
        let body = &bytes[at + 8..end];
        if crc32fast::hash(body) != crc {
            if last_of_run && end == bytes.len() {
                run.notes
                    .push(torn("ends in a torn record (a crash); read up to it"));
                break;
            }
            return Err(err(at, "record checksum mismatch (corrupt)".into()));
        }
        take_record(body)
            .map_err(|reason| err(at, reason))?
            .apply(run);
        at = end;
    }
    Ok(Some(header))
}

enum Record {
    Built(BuiltEntry),
    Fed(u64, Fed),
    Stopped(u64),
}

impl Record {
    fn apply(self, run: &mut Run) {
        match self {
            Record::Built(b) => {
                run.machines.entry(b.machine).or_default().built = Some(b.built);
            }
            Record::Fed(m, f) => run.machines.entry(m).or_default().fed.push(f),
            Record::Stopped(m) => run.machines.entry(m).or_default().stopped = true,
        }
    }
}

fn take_record(body: &[u8]) -> Result<Record, String> {
    match body.first() {
        Some(&format::TAG_BUILT) => postcard::from_bytes(&body[1..])
            .map(Record::Built)
            .map_err(|e| format!("a machine's construction: {e}")),
        Some(&format::TAG_FED) if body.len() >= format::FED_FIXED_BYTES => Ok(Record::Fed(
            le_u64(&body[1..]),
            Fed {
                now_ms: le_u64(&body[9..]),
                effects: le_u32(&body[17..]),
                digest: le_u64(&body[21..]),
                input: body[format::FED_FIXED_BYTES..].to_vec(),
            },
        )),
        Some(&format::TAG_STOPPED) if body.len() == 9 => Ok(Record::Stopped(le_u64(&body[1..]))),
        Some(t) => Err(format!("unknown record kind {t} or short record")),
        None => Err("empty record".into()),
    }
}
