//! The store as a recording saw it at one moment. Every key a recorded
//! machine read (store replies are inputs) or committed (its commits are
//! effects, replayed; the reply says whether and at which version they
//! applied) is known at some version. The moment `at_ms` is turned into a
//! store version, the cut: the newest version any reply received by then
//! carried. The state is then each key at its newest version not after
//! the cut, taken from the whole recording: a commit answered after
//! `at_ms` but applied at or before the cut belongs to it, and a read
//! after `at_ms` that returns a value written at or before the cut shows
//! that value still held at the cut. With every node recorded (and no
//! reply lost with a killed process) this is the store at the cut for
//! every key the fleet touched; the simulator starts from it
//! (`reelfleet sim --from-recording DIR --at MS`).

use std::collections::BTreeMap;
use std::sync::Arc;

use actors::channel::{ChannelEffect, ChannelInput};
use actors::machine::Machine;
use actors::membership::{MembershipEffect, MembershipInput};
use actors::records::Key;
use actors::store::{Entry, Key as StoreKey, StoreOp, StoreReply, Write};
use serde::de::DeserializeOwned;
use topology::Topology;

use super::format::{Built, Rebuilt};
use super::read::{Fed, NodeRecording};

/// What the recording said about the store by `at_ms`.
#[derive(Debug, Default)]
pub struct StoreAt {
    /// The cluster config the machines ran against.
    pub cluster_text: String,
    /// Every key seen, at its newest version (deleted keys left out).
    pub entries: Vec<Entry>,
    /// The store version the state is taken at.
    pub cut: u64,
    /// Read entries and commits the state was taken from.
    pub reads: usize,
    pub commits: usize,
    pub nodes: Vec<String>,
}

/// Every read entry and applied commit of the recording, and the cut.
#[derive(Default)]
struct Seen {
    read: Vec<Entry>,
    committed: Vec<(u64, Vec<Write>)>,
    /// What reads showed absent: keys in `[start, end)` other than
    /// `present`, at a version of at least `at` (the newest entry in the
    /// same reply: a read's own version is not in its reply).
    absent: Vec<Absent>,
    /// The newest version a reply received at or before `at_ms` carried.
    cut: u64,
}

struct Absent {
    start: StoreKey,
    /// `None`: only the keys named (a point read's empty slots).
    end: Option<StoreKey>,
    named: Vec<StoreKey>,
    present: std::collections::BTreeSet<StoreKey>,
    at: u64,
}

impl Seen {
    /// Point reads of `keys` and what came back: each entry read, and
    /// the keys found absent; the newest version among the entries.
    fn got(&mut self, keys: &[StoreKey], slots: &[Option<Entry>]) -> u64 {
        let mut newest = 0;
        for e in slots.iter().flatten() {
            newest = newest.max(e.version);
            self.read.push(e.clone());
        }
        let named: Vec<StoreKey> = keys
            .iter()
            .zip(slots)
            .filter(|(_, e)| e.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        if newest > 0 && !named.is_empty() {
            self.absent.push(Absent {
                start: StoreKey::new(),
                end: None,
                named,
                present: Default::default(),
                at: newest,
            });
        }
        newest
    }

    /// An operation `op` and its reply, received at `now_ms`.
    fn answered(&mut self, op: &StoreOp, reply: &StoreReply, by_at: bool) {
        let mut newest = 0;
        match (op, reply) {
            (StoreOp::Get(keys), StoreReply::Got(slots)) => newest = self.got(keys, slots),
            (StoreOp::Range { start, end, limit }, StoreReply::Range(entries)) => {
                for e in entries {
                    newest = newest.max(e.version);
                    self.read.push(e.clone());
                }
                // A full page covers the range only up to its last key.
                let end = match entries.last() {
                    Some(last) if entries.len() >= *limit => {
                        let mut after = last.key.clone();
                        after.push(0);
                        after
                    }
                    _ => end.clone(),
                };
                if newest > 0 {
                    self.absent.push(Absent {
                        start: start.clone(),
                        end: Some(end),
                        named: Vec::new(),
                        present: entries.iter().map(|e| e.key.clone()).collect(),
                        at: newest,
                    });
                }
            }
            (StoreOp::Commit(txn), StoreReply::Committed(version)) => {
                newest = *version;
                self.committed.push((*version, txn.writes.clone()));
            }
            // A renewal that carried a refresh: the commit, then its reads.
            (StoreOp::CommitGet { txn, keys }, StoreReply::CommittedGot { version, entries }) => {
                self.committed.push((*version, txn.writes.clone()));
                newest = self.got(keys, entries).max(*version);
            }
            _ => {}
        }
        if by_at {
            self.cut = self.cut.max(newest);
        }
    }

    /// Each key at its newest version not after the cut (deleted keys
    /// left out), and how many reads and commits that took.
    fn state(self) -> (Vec<Entry>, usize, usize) {
        let cut = self.cut;
        let mut keys: BTreeMap<StoreKey, (u64, Option<Vec<u8>>)> = BTreeMap::new();
        let mut note = |key: StoreKey, version: u64, value: Option<Vec<u8>>| {
            if version <= cut && keys.get(&key).is_none_or(|(v, _)| version > *v) {
                keys.insert(key, (version, value));
            }
        };
        let (mut reads, mut commits) = (0, 0);
        for e in self.read {
            reads += usize::from(e.version <= cut);
            note(e.key, e.version, Some(e.value));
        }
        for (version, writes) in self.committed {
            commits += usize::from(version <= cut);
            for w in writes {
                match w {
                    Write::Put(k, v) => note(k, version, Some(v)),
                    Write::Delete(k) => note(k, version, None),
                }
            }
        }
        // A key a read did not find was gone by that read: any write seen
        // before the newest entry of that reply is superseded (a deletion
        // whose commit reply the recording lost, with a killed process).
        for a in &self.absent {
            if a.at > cut {
                continue;
            }
            let gone: Vec<StoreKey> = match &a.end {
                None => a.named.clone(),
                Some(end) => keys
                    .range(a.start.clone()..end.clone())
                    .map(|(k, _)| k.clone())
                    .filter(|k| !a.present.contains(k))
                    .collect(),
            };
            for k in gone {
                if keys.get(&k).is_some_and(|(v, _)| *v < a.at) {
                    keys.insert(k, (a.at, None));
                }
            }
        }
        // A read shows what is there, never what was deleted: a video's move
        // from active to done (one commit) whose reply the recording lost
        // (a killed process) leaves the done record seen by a later read
        // and the active one never seen deleted. A done video supersedes
        // its active record.
        let done: std::collections::BTreeSet<(u32, u64)> = keys
            .keys()
            .filter_map(|k| match Key::parse(k) {
                Some(Key::DoneVideo(ch, slot)) => Some((ch.0, slot)),
                _ => None,
            })
            .collect();
        keys.retain(|k, _| {
            !matches!(Key::parse(k), Some(Key::ActiveVideo(ch, slot)) if done.contains(&(ch.0, slot)))
        });
        let entries = keys
            .into_iter()
            .filter_map(|(key, (version, value))| {
                value.map(|value| Entry {
                    key,
                    value,
                    version,
                })
            })
            .collect();
        (entries, reads, commits)
    }
}

/// Feeds `m` its inputs up to `at_ms`, pairing its store operations with
/// their replies.
fn observe<M>(
    mut m: M,
    fed: &[Fed],
    at_ms: u64,
    op_of: impl Fn(&M::Effect) -> Option<(u64, &StoreOp)>,
    reply_of: impl Fn(&M::Input) -> Option<(u64, &StoreReply)>,
    seen: &mut Seen,
) where
    M: Machine,
    M::Input: DeserializeOwned,
{
    let mut pending: BTreeMap<u64, StoreOp> = BTreeMap::new();
    let mut out = Vec::new();
    for f in fed {
        let Ok(input) = postcard::from_bytes::<M::Input>(&f.input) else {
            return;
        };
        if let Some((op_id, reply)) = reply_of(&input) {
            if let Some(op) = pending.remove(&op_id) {
                seen.answered(&op, reply, f.now_ms <= at_ms);
            }
        }
        out.clear();
        m.handle(f.now_ms, input, &mut out);
        for e in &out {
            if let Some((op_id, op)) = op_of(e) {
                pending.insert(op_id, op.clone());
            }
        }
    }
}

/// The cluster config every run that had begun by `at_ms` ran against.
fn cluster_before(recs: &[NodeRecording], at_ms: u64) -> Result<String, String> {
    let mut cluster: Option<String> = None;
    for rec in recs {
        for (run, r) in &rec.runs {
            let started = r
                .machines
                .values()
                .filter_map(|t| t.fed.first())
                .map(|f| f.now_ms)
                .min();
            let Some(text) = r
                .cluster_text
                .as_ref()
                .filter(|_| started.is_some_and(|s| s <= at_ms))
            else {
                continue;
            };
            match &cluster {
                Some(c) if c != text => {
                    return Err(format!(
                        "{} run {run} ran another cluster config than the other runs before --at",
                        rec.node
                    ))
                }
                _ => cluster = Some(text.clone()),
            }
        }
    }
    cluster
        .ok_or_else(|| format!("the recording has no machine that ran at or before --at {at_ms}"))
}

/// The store as the recorded nodes saw it at `at_ms` (their clocks).
pub fn store_at(recs: &[NodeRecording], at_ms: u64) -> Result<StoreAt, String> {
    let cluster_text = cluster_before(recs, at_ms)?;
    let topo = Arc::new(
        topology::config::parse_topology(&cluster_text)
            .map_err(|e| format!("the recording's cluster config: {e}"))?,
    );
    let mut seen = Seen::default();
    let mut nodes = Vec::new();
    for rec in recs {
        nodes.push(rec.node.clone());
        // Runs on another cluster config (one changed later) say nothing
        // about this fleet's store.
        for r in rec.runs.values() {
            if r.cluster_text.as_deref() == Some(cluster_text.as_str()) {
                for tape in r.machines.values() {
                    observe_tape(&topo, tape.built.as_ref(), &tape.fed, at_ms, &mut seen);
                }
            }
        }
    }
    let cut = seen.cut;
    let (entries, reads, commits) = seen.state();
    Ok(StoreAt {
        cluster_text,
        entries,
        cut,
        reads,
        commits,
        nodes,
    })
}

fn observe_tape(
    topo: &Arc<Topology>,
    built: Option<&Built>,
    fed: &[Fed],
    at_ms: u64,
    seen: &mut Seen,
) {
    match built.map(|b| b.build(topo)) {
        Some(Rebuilt::Channel(m)) => observe(
            m,
            fed,
            at_ms,
            |e| match e {
                ChannelEffect::Store { op_id, op } => Some((*op_id, op)),
                _ => None,
            },
            |i| match i {
                ChannelInput::StoreReply { op_id, reply } => Some((*op_id, reply)),
                _ => None,
            },
            seen,
        ),
        Some(Rebuilt::Membership(m)) => observe(
            m,
            fed,
            at_ms,
            |e| match e {
                MembershipEffect::Store { op_id, op } => Some((*op_id, op)),
                _ => None,
            },
            |i| match i {
                MembershipInput::StoreReply { op_id, reply } => Some((*op_id, reply)),
                _ => None,
            },
            seen,
        ),
        // GPUs and dispatchers never touch the store; a machine made in a
        // deleted segment cannot be rebuilt.
        _ => {}
    }
}
