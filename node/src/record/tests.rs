//! The recorder end to end in one process: real machines fed through
//! tapes, the files read back and replayed; then every kind of bad
//! recording refused with its offset, the cap kept, and a write error
//! stopping the recording without stopping its writers.

use std::path::Path;
use std::sync::Arc;

use actors::membership::{MembershipEffect, MembershipInput, MembershipMachine, MembershipParams};
use actors::store::MemStore;
use topology::{NodeId, Topology};

use super::format::{self, Built};
use super::read::{read_node, ReadError};
use super::replay::{replay_node, ReplayOptions, Verdict};
use super::{RecordConfig, Recorder};

const DEMO: &str = include_str!("../../../examples/demo.toml");

fn topo() -> Arc<Topology> {
    Arc::new(topology::config::parse_topology(DEMO).expect("demo config"))
}

/// Records one membership machine fed a start and `ticks` ticks 250 ms
/// apart, its store operations answered at once by the model store.
fn record_membership(cfg: &RecordConfig, ticks: u64, params: MembershipParams) {
    let rec = Recorder::start(cfg, "us-east-0", 0, DEMO).expect("recorder");
    let mut m = MembershipMachine::new(topo(), NodeId(0), params, 7);
    let mut tape = rec.tape(Built::Membership {
        node: NodeId(0),
        params,
        seed: 7,
    });
    let mut store = MemStore::new();
    let mut out = Vec::new();
    let mut feed = |m: &mut MembershipMachine, now: u64, first: MembershipInput| {
        let mut pending = vec![first];
        while let Some(input) = pending.pop() {
            out.clear();
            tape.before(now, &input);
            m.handle(now, input, &mut out);
            tape.after(&out);
            for e in out.drain(..) {
                if let MembershipEffect::Store { op_id, op } = e {
                    let reply = store.apply(&op);
                    pending.push(MembershipInput::StoreReply { op_id, reply });
                }
            }
        }
    };
    feed(&mut m, 1_000, MembershipInput::Start);
    for i in 1..=ticks {
        feed(&mut m, 1_000 + i * 250, MembershipInput::Tick);
    }
    drop(tape);
    rec.finish();
}

fn node_dir(root: &Path) -> std::path::PathBuf {
    root.join("us-east-0")
}

fn replay_all(dir: &Path, opts: &ReplayOptions) -> Vec<Verdict> {
    let rec = read_node(dir).expect("readable");
    replay_node(&rec, opts, &mut None)
        .expect("replayable")
        .into_iter()
        .map(|r| r.verdict)
        .collect()
}

#[test]
fn a_recorded_machine_replays_identically_and_a_changed_one_diverges_at_its_input() {
    let d = tempfile::tempdir().expect("tempdir");
    let cfg = RecordConfig::in_dir(d.path());
    record_membership(&cfg, 40, MembershipParams::default());
    let v = replay_all(&node_dir(d.path()), &ReplayOptions::default());
    let Verdict::Identical { inputs } = v[0] else {
        panic!("{v:?}");
    };
    assert!(inputs > 41, "store replies are inputs too: {inputs}");
    // --until stops early.
    let v = replay_all(
        &node_dir(d.path()),
        &ReplayOptions {
            until_ms: Some(2_000),
            ..ReplayOptions::default()
        },
    );
    assert!(
        matches!(v[..], [Verdict::Identical { inputs: n }] if n > 5 && n < inputs),
        "{v:?}"
    );
    // A renewal period that differs from the recorded one renews at other
    // ticks: the replay names the first tick where that shows.
    let v = replay_all(
        &node_dir(d.path()),
        &ReplayOptions {
            set: vec![("membership.renew_ms".into(), 1_500)],
            ..ReplayOptions::default()
        },
    );
    let Verdict::Diverged(div) = &v[0] else {
        panic!("expected a divergence, got {v:?}");
    };
    assert!(div.input_no > 1, "{div:?}");
    assert_eq!(div.input, "Tick");
    // A second run of the same node is recorded beside the first.
    record_membership(&cfg, 3, MembershipParams::default());
    let rec = read_node(&node_dir(d.path())).expect("readable");
    assert_eq!(rec.runs.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
}

fn only_segment(dir: &Path) -> std::path::PathBuf {
    dir.join(format::segment_name(1, 1))
}

fn refused(dir: &Path) -> ReadError {
    read_node(dir).expect_err("a bad recording is refused")
}

#[test]
fn bad_recordings_are_refused_with_offset_and_reason() {
    let d = tempfile::tempdir().expect("tempdir");
    let cfg = RecordConfig::in_dir(d.path());
    record_membership(&cfg, 20, MembershipParams::default());
    let dir = node_dir(d.path());
    let seg = only_segment(&dir);
    let good = std::fs::read(&seg).expect("segment");
    let (_, first) = super::read::read_header(&seg, &good).expect("header");

    // Corrupt: one byte of the second record's body flipped.
    let second =
        first + 8 + u32::from_le_bytes(good[first..first + 4].try_into().unwrap()) as usize;
    let mut bad = good.clone();
    bad[second + 12] ^= 0xFF;
    std::fs::write(&seg, &bad).expect("write");
    let e = refused(&dir);
    assert_eq!(e.offset, second as u64, "{e}");
    assert!(e.reason.contains("checksum"), "{e}");

    // Foreign: not a recording at all.
    std::fs::write(&seg, b"{\"not\": \"a recording\"}").expect("write");
    assert!(refused(&dir).reason.contains("not a reelfleet recording"));

    // Newer format.
    let mut newer = good.clone();
    newer[8] = 9;
    std::fs::write(&seg, &newer).expect("write");
    let e = refused(&dir);
    assert!(e.reason.contains("newer reelfleet"), "{e}");
    assert_eq!(e.offset, 8);

    // Other machines: a build whose machines differ.
    let mut other = good.clone();
    other[10] ^= 1;
    std::fs::write(&seg, &other).expect("write");
    let e = refused(&dir);
    assert!(e.reason.contains("machines differ"), "{e}");

    // A torn tail (a crash mid-write) in a run's last segment is read up
    // to it, with a note; the same cut in a segment followed by another of
    // its run is truncation, refused.
    std::fs::write(&seg, &good[..good.len() - 3]).expect("write");
    let rec = read_node(&dir).expect("a torn tail is readable");
    assert!(
        rec.runs[&1].notes.iter().any(|n| n.contains("torn")),
        "{:?}",
        rec.runs[&1].notes
    );
    let v = replay_all(&dir, &ReplayOptions::default());
    assert!(matches!(v[..], [Verdict::Identical { .. }]), "{v:?}");
    std::fs::write(dir.join(format::segment_name(1, 2)), &good).expect("second segment");
    let e = refused(&dir);
    assert!(e.reason.contains("truncated"), "{e}");
    assert_eq!(e.file, seg);
}

#[test]
fn the_recording_stays_under_its_cap_dropping_the_oldest_segments() {
    let d = tempfile::tempdir().expect("tempdir");
    let cfg = RecordConfig {
        segment_bytes: 4096,
        total_bytes_max: 16_384,
        ..RecordConfig::in_dir(d.path())
    };
    for _ in 0..3 {
        record_membership(&cfg, 3_000, MembershipParams::default());
    }
    let dir = node_dir(d.path());
    let segs = super::writer::segments(&dir).expect("segments");
    let total: u64 = segs
        .iter()
        .map(|(_, _, p)| std::fs::metadata(p).expect("size").len())
        .sum();
    assert!(
        total <= cfg.total_bytes_max,
        "{total} bytes in {} segments",
        segs.len()
    );
    assert!(segs.len() >= 3, "{segs:?}");
    // Only the last run is left; its first segments went, so its machine
    // is not replayable, and the reader says why.
    assert!(segs.iter().all(|(run, _, _)| *run == 3), "{segs:?}");
    let rec = read_node(&dir).expect("readable");
    assert!(rec.runs[&3]
        .notes
        .iter()
        .any(|n| n.contains("deleted to stay under the cap")));
    let v = replay_all(&dir, &ReplayOptions::default());
    assert!(matches!(&v[..], [Verdict::Skipped(_)]), "{v:?}");
}

#[test]
fn a_failing_disk_stops_the_recording_not_the_machines() {
    let d = tempfile::tempdir().expect("tempdir");
    let cfg = RecordConfig {
        segment_bytes: 4096,
        ..RecordConfig::in_dir(d.path())
    };
    let dir = node_dir(d.path());
    let rec = Recorder::start(&cfg, "us-east-0", 0, DEMO).expect("recorder");
    // The run's next segment is /dev/full: once the first fills, every
    // write fails with ENOSPC, as on a full disk.
    std::os::unix::fs::symlink("/dev/full", dir.join(format::segment_name(1, 2))).expect("symlink");
    let mut tape = rec.tape(Built::Membership {
        node: NodeId(0),
        params: MembershipParams::default(),
        seed: 7,
    });
    let mut m = MembershipMachine::new(topo(), NodeId(0), MembershipParams::default(), 7);
    let mut out = Vec::new();
    // Far more records than the queue holds: none of them waits on the
    // dead disk, and the machine goes on.
    for i in 0..200_000u64 {
        let input = if i == 0 {
            MembershipInput::Start
        } else {
            MembershipInput::Tick
        };
        out.clear();
        tape.before(i, &input);
        m.handle(i, input, &mut out);
        tape.after(&out);
    }
    assert!(rec.stopped(), "the recording stopped");
    drop(tape);
    rec.finish();
    // What was written before the failure is still a readable recording.
    std::fs::remove_file(dir.join(format::segment_name(1, 2))).expect("unlink");
    let v = replay_all(&dir, &ReplayOptions::default());
    assert!(
        matches!(&v[..], [Verdict::Identical { inputs }] if *inputs > 10),
        "{v:?}"
    );
}

/// Store keys became inline (`SmallVec`) after recordings were written
/// with `Vec<u8>` keys: both must encode to the same postcard bytes and
/// JSON, so that older recordings (and any serialised transaction) read
/// back as the same keys.
#[test]
fn a_store_key_encodes_as_a_byte_vector_did() {
    use actors::store::{Check, Key};
    for bytes in [
        &b""[..],
        b"k/all",
        b"va/\x00\x00\x00\x07/\x00\x00\x00\x00\x00\x00\x00\x2a",
        &[b'x'; 40],
    ] {
        let key = actors::store::key(bytes);
        let old = bytes.to_vec();
        let pc = postcard::to_allocvec(&key).expect("postcard");
        assert_eq!(pc, postcard::to_allocvec(&old).expect("postcard"));
        assert_eq!(postcard::from_bytes::<Key>(&pc).expect("decodes"), key);
        let js = serde_json::to_string(&key).expect("json");
        assert_eq!(js, serde_json::to_string(&old).expect("json"));
        let was = postcard::to_allocvec(&OldCheck::VersionIs(old.clone(), 9)).expect("postcard");
        let check: Check = postcard::from_bytes(&was).expect("a check with a Vec key decodes");
        assert_eq!(check, Check::VersionIs(key, 9));
    }
}

/// `Check` as it was declared while keys were `Vec<u8>`.
#[derive(serde::Serialize)]
#[allow(dead_code)]
enum OldCheck {
    Absent(Vec<u8>),
    Equals(Vec<u8>, Vec<u8>),
    VersionIs(Vec<u8>, u64),
}
