//! The store interface every backend implements, and [`MemStore`], its
//! in-memory reference model.
//!
//! The store offers ordered byte keys, range reads and atomic
//! mini-transactions: a list of checks (key absent, key equals, key version
//! equals) and a list of writes, applied all-or-nothing. Each key carries a
//! version: the store-wide commit counter of the commit that last wrote it.
//!
//! Machines never call a store: they emit [`StoreOp`]s as effects and get a
//! [`StoreReply`] back as an input. The simulator answers from a `MemStore`
//! with injected faults; the live shell answers from a real backend.
//!
//! Architecture invariant: every backend enforces FoundationDB's limits
//! exactly as `MemStore` does (key 10 kB, value 100 kB, transaction 10 MB),
//! and an oversize request is refused whole, writing nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use crate::packed_key::PackedKey;

pub const KEY_BYTES_MAX: usize = 10_000;
pub const VALUE_BYTES_MAX: usize = 100_000;
pub const TXN_BYTES_MAX: usize = 10_000_000;
/// Most entries one range read returns; callers page with the last key.
pub const RANGE_LIMIT_MAX: usize = 10_000;

/// A key: up to 16 bytes (every key the machines write: `records.rs`)
/// held inline, a longer one on the heap. Inline, a key costs no
/// allocation to build, to move into a transaction or into the in-memory
/// store's indexes, and a lookup or a B-tree comparison reads it where it
/// already is (BENCHMARKS.md, capacity-10m, ninth and eleventh sessions).
/// Serialised as a sequence of bytes, as `Vec<u8>` is.
pub type Key = smallvec::SmallVec<[u8; KEY_INLINE_BYTES]>;

/// The longest key held inline.
pub const KEY_INLINE_BYTES: usize = 16;

/// A key holding a copy of `bytes`. Inlined, so that a constant's copy
/// into the fixed buffer is a few stores, not a call to `memcpy`.
#[inline(always)]
pub fn key(bytes: &[u8]) -> Key {
    let mut buf = [0u8; KEY_INLINE_BYTES];
    match buf.get_mut(..bytes.len()) {
        Some(head) => {
            head.copy_from_slice(bytes);
            Key::from_buf_and_len(buf, bytes.len())
        }
        None => Key::from_slice(bytes),
    }
}
pub type Value = Vec<u8>;
/// 0 means "absent"; a present key's version is always > 0.
pub type Version = u64;

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Check {
    Absent(Key),
    Equals(Key, Value),
    VersionIs(Key, Version),
}

impl Check {
    /// Whether the check holds for the key's current state: its value and
    /// version, or `None` when absent. Every backend decides with this.
    pub fn holds(&self, current: Option<(&[u8], Version)>) -> bool {
        match self {
            Check::Absent(_) => current.is_none(),
            Check::Equals(_, v) => current.map(|(x, _)| x) == Some(v.as_slice()),
            Check::VersionIs(_, ver) => current.map(|(_, x)| x).unwrap_or(0) == *ver,
        }
    }

    pub fn key(&self) -> &[u8] {
        match self {
            Check::Absent(k) | Check::Equals(k, _) | Check::VersionIs(k, _) => k,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Put(Key, Value),
    Delete(Key),
}

impl Write {
    pub fn key(&self) -> &[u8] {
        match self {
            Write::Put(k, _) | Write::Delete(k) => k,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub checks: Vec<Check>,
    pub writes: Vec<Write>,
}

impl Txn {
    /// Bytes the transaction sends, as FoundationDB counts them (keys and
    /// values of checks and writes).
    pub fn size_bytes(&self) -> usize {
        let checks: usize = self
            .checks
            .iter()
            .map(|c| match c {
                Check::Equals(k, v) => k.len() + v.len(),
                other => other.key().len() + 8,
            })
            .sum();
        let writes: usize = self
            .writes
            .iter()
            .map(|w| match w {
                Write::Put(k, v) => k.len() + v.len(),
                Write::Delete(k) => k.len(),
            })
            .sum();
        checks + writes
    }
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Key,
    pub value: Value,
    pub version: Version,
}

/// What a machine asks of the store.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// Point reads; the reply has one slot per key, `None` when absent.
    Get(Vec<Key>),
    /// Forward range `[start, end)`, at most `limit` entries.
    Range {
        start: Key,
        end: Key,
        limit: usize,
    },
    Commit(Txn),
    /// A commit, then point reads of `keys` once it has applied (one slot
    /// per key): one round trip where two went. The membership machine's
    /// lease renewal carries its refresh this way when both are due
    /// (`membership::lease`). A reply of `Failed` means the reads did not
    /// come back; as for any commit, `CommitUnknown` may have applied.
    ///
    /// The keys are a boxed slice, not a `Vec`, to keep `StoreOp` at 64
    /// bytes, and the simulator's events within 128 (`sim` world events).
    CommitGet {
        txn: Txn,
        keys: Box<[Key]>,
    },
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// A check failed; nothing was written.
    Conflict { check_index: Option<usize> },
    /// The commit may or may not have been applied.
    CommitUnknown,
    /// The store could not be reached or refused service; nothing happened.
    Unavailable(String),
    /// A key, value or transaction over the limits; nothing was written.
    TooLarge(String),
    /// Stored bytes that do not decode; names what was being read.
    Corrupt(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Conflict {
                check_index: Some(i),
            } => write!(f, "conflict: check {i} failed, nothing written"),
            StoreError::Conflict { check_index: None } => {
                write!(f, "conflict: a check failed, nothing written")
            }
            StoreError::CommitUnknown => write!(f, "commit result unknown"),
            StoreError::Unavailable(why) => write!(f, "store unavailable: {why}"),
            StoreError::TooLarge(why) => write!(f, "too large: {why}"),
            StoreError::Corrupt(why) => write!(f, "corrupt: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum StoreReply {
    Got(Vec<Option<Entry>>),
    Range(Vec<Entry>),
    /// The commit's version: every key it wrote now has this version.
    Committed(Version),
    /// A `CommitGet` applied at `version`, and its reads after it.
    CommittedGot {
        version: Version,
        entries: Vec<Option<Entry>>,
    },
    Failed(StoreError),
}

/// Checks an op against the limits before anything is touched.
pub fn check_limits(op: &StoreOp) -> Result<(), StoreError> {
    match op {
        StoreOp::Get(keys) => check_get(keys),
        StoreOp::Range { start, end, limit } => check_range(start, end, *limit),
        StoreOp::Commit(txn) => check_txn(txn),
        StoreOp::CommitGet { txn, keys } => {
            check_txn(txn)?;
            check_get(keys)
        }
    }
}

fn check_key(k: &[u8]) -> Result<(), StoreError> {
    if k.len() > KEY_BYTES_MAX {
        Err(StoreError::TooLarge(format!(
            "key of {} bytes exceeds the {KEY_BYTES_MAX}-byte limit",
            k.len()
        )))
    } else {
        Ok(())
    }
}

/// The limits of a point read (key sizes).
pub fn check_get(keys: &[Key]) -> Result<(), StoreError> {
    keys.iter().try_for_each(|k| check_key(k))
}

/// The limits of a range read (key sizes, `1..=RANGE_LIMIT_MAX` entries).
pub fn check_range(start: &[u8], end: &[u8], limit: usize) -> Result<(), StoreError> {
    check_key(start)?;
    check_key(end)?;
    if limit == 0 || limit > RANGE_LIMIT_MAX {
        return Err(StoreError::TooLarge(format!(
            "range limit {limit} outside 1..={RANGE_LIMIT_MAX}"
        )));
    }
    Ok(())
}

/// The limits of a transaction (key and value sizes, total size).
pub fn check_txn(txn: &Txn) -> Result<(), StoreError> {
    for c in &txn.checks {
        check_key(c.key())?;
    }
    for w in &txn.writes {
        check_key(w.key())?;
        if let Write::Put(_, v) = w {
            if v.len() > VALUE_BYTES_MAX {
                return Err(StoreError::TooLarge(format!(
                    "value of {} bytes for key {} exceeds the {VALUE_BYTES_MAX}-byte limit",
                    v.len(),
                    printable_key(w.key())
                )));
            }
        }
    }
    let size = txn.size_bytes();
    if size > TXN_BYTES_MAX {
        return Err(StoreError::TooLarge(format!(
            "transaction of {size} bytes exceeds the {TXN_BYTES_MAX}-byte limit"
        )));
    }
    Ok(())
}

/// A key shown for humans: printable ASCII as is, other bytes as `\xNN`.
pub fn printable_key(key: &[u8]) -> String {
    let mut s = String::with_capacity(key.len());
    for &b in key.iter().take(120) {
        if (0x20..0x7f).contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    if key.len() > 120 {
        s.push_str("...");
    }
    s
}

/// The in-memory reference model. Single-threaded and exact: the simulator
/// wraps it with latency and faults, and the conformance suite compares every
/// real backend with it.
///
/// Two indexes of the same entries, because a fleet-size simulation holds
/// hundreds of thousands of keys (375,201 at the end of a capacity-10m
/// day) and most of its operations name keys one by one:
/// point reads, checks and writes of a key already present go to the
/// hashed index alone; only ranges, new keys and deletes touch the ordered
/// one (BENCHMARKS.md: capacity-10m). Both hold keys of up to 16 bytes
/// (every key the machines write) packed into words ([`PackedKey`]):
/// hashed and compared as integers, in byte order. Longer keys (the
/// node's own records) are few and live in one ordered map of their own;
/// a range merges the two. The hasher (rustc-hash's Fx) has no random
/// seed, and nothing iterates the hashed index, so no order leaks out of
/// it.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    /// Every entry of a key that packs.
    entries: HashMap<PackedKey, (Value, Version), rustc_hash::FxBuildHasher>,
    /// The same keys in order, for ranges. Invariant: exactly the keys of
    /// `entries`.
    order: BTreeSet<PackedKey>,
    /// Every entry of a longer key, in order.
    long: BTreeMap<Key, (Value, Version)>,
    version: Version,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// The version of the last commit.
    pub fn version(&self) -> Version {
        self.version
    }

    /// A store holding exactly `entries`, each at its own version; the
    /// store's version is the newest of them (a starting state rebuilt
    /// from elsewhere: a flight recording).
    pub fn with_entries(entries: impl IntoIterator<Item = Entry>) -> MemStore {
        let mut s = MemStore::new();
        for e in entries {
            s.version = s.version.max(e.version);
            s.put(e.key, e.value, e.version);
        }
        s
    }

    pub fn len(&self) -> usize {
        debug_assert_eq!(self.entries.len(), self.order.len());
        self.entries.len() + self.long.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry of `key`: the hashed index for a key that packs.
    #[inline]
    fn entry(&self, key: &[u8]) -> Option<&(Value, Version)> {
        match PackedKey::of(key) {
            Some(k) => self.entries.get(&k),
            None => self.long.get(key),
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        self.entry(key).map(|(v, ver)| Entry {
            key: crate::store::key(key),
            value: v.clone(),
            version: *ver,
        })
    }

    pub fn value(&self, key: &[u8]) -> Option<&[u8]> {
        self.entry(key).map(|(v, _)| v.as_slice())
    }

    /// Forward range `[start, end)` visiting entries in key order: the
    /// packed keys' and the long keys' ranges, merged.
    pub fn scan<'a>(
        &'a self,
        start: &[u8],
        end: &[u8],
    ) -> impl Iterator<Item = (Key, &'a Value, Version)> + 'a {
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        let short = self
            .order
            .range((PackedKey::lower_bound(start), PackedKey::upper_bound(end)))
            .map(|k| {
                let (v, ver) = self
                    .entries
                    .get(k)
                    .expect("the ordered index holds exactly the hashed index's keys");
                (k.bytes(), v, *ver)
            })
            .peekable();
        let long = self
            .long
            .range::<[u8], _>((Bound::Included(start), upper))
            .map(|(k, (v, ver))| (k.clone(), v, *ver))
            .peekable();
        Merged { short, long }
    }

    fn put(&mut self, key: Key, value: Value, version: Version) {
        let Some(k) = PackedKey::of(&key) else {
            self.long.insert(key, (value, version));
            return;
        };
        if let Some(slot) = self.entries.get_mut(&k) {
            *slot = (value, version);
            return;
        }
        self.order.insert(k);
        self.entries.insert(k, (value, version));
    }

    fn delete(&mut self, key: &[u8]) {
        match PackedKey::of(key) {
            Some(k) => {
                if self.entries.remove(&k).is_some() {
                    self.order.remove(&k);
                }
            }
            None => {
                self.long.remove(key);
            }
        }
    }

    pub fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<Entry> {
        if !end.is_empty() && start >= end {
            return Vec::new();
        }
        self.scan(start, end)
            .take(limit)
            .map(|(key, v, version)| Entry {
                key,
                value: v.clone(),
                version,
            })
            .collect()
    }

    /// Evaluates the checks without writing: `Err(index)` of the first that
    /// fails.
    pub fn evaluate(&self, checks: &[Check]) -> Result<(), usize> {
        for (i, c) in checks.iter().enumerate() {
            let ok = c.holds(self.entry(c.key()).map(|(v, ver)| (v.as_slice(), *ver)));
            if !ok {
                return Err(i);
            }
        }
        Ok(())
    }

    /// Applies a transaction all-or-nothing.
    pub fn commit(&mut self, txn: &Txn) -> Result<Version, StoreError> {
        check_txn(txn)?;
        self.commit_checked(txn)
    }

    /// `commit` for a transaction whose limits were already checked.
    pub fn commit_checked(&mut self, txn: &Txn) -> Result<Version, StoreError> {
        self.check(&txn.checks)?;
        Ok(self.write_all(txn.writes.clone()))
    }

    /// `evaluate` as a commit answers it: the first failed check is a
    /// conflict naming its index.
    pub fn check(&self, checks: &[Check]) -> Result<(), StoreError> {
        self.evaluate(checks).map_err(|i| StoreError::Conflict {
            check_index: Some(i),
        })
    }

    /// Writes a transaction whose checks were just evaluated and hold
    /// (`check`), without evaluating them again: the simulator shows
    /// such a commit to its invariant checks between the two. It takes
    /// the transaction, so that its values move into the store rather
    /// than being copied (0.5 % of a steady capacity-10m hour's
    /// instructions).
    pub fn write_evaluated(&mut self, txn: Txn) -> Version {
        debug_assert!(self.evaluate(&txn.checks).is_ok());
        self.write_all(txn.writes)
    }

    fn write_all(&mut self, writes: Vec<Write>) -> Version {
        if writes.is_empty() {
            return self.version;
        }
        self.version += 1;
        let version = self.version;
        for w in writes {
            match w {
                Write::Put(k, v) => self.put(k, v, version),
                Write::Delete(k) => self.delete(&k),
            }
        }
        version
    }

    /// Answers one op exactly, with no faults.
    pub fn apply(&mut self, op: &StoreOp) -> StoreReply {
        if let Err(e) = check_limits(op) {
            return StoreReply::Failed(e);
        }
        match op {
            StoreOp::Get(keys) => StoreReply::Got(keys.iter().map(|k| self.get(k)).collect()),
            StoreOp::Range { start, end, limit } => {
                StoreReply::Range(self.range(start, end, *limit))
            }
            StoreOp::Commit(txn) => match self.commit_checked(txn) {
                Ok(v) => StoreReply::Committed(v),
                Err(e) => StoreReply::Failed(e),
            },
            StoreOp::CommitGet { txn, keys } => match self.commit_checked(txn) {
                Ok(version) => StoreReply::CommittedGot {
                    version,
                    entries: keys.iter().map(|k| self.get(k)).collect(),
                },
                Err(e) => StoreReply::Failed(e),
            },
        }
    }
}

/// Two ranges in key order, merged: the packed keys' and the long keys'
/// (no key is in both).
struct Merged<S: Iterator, L: Iterator> {
    short: std::iter::Peekable<S>,
    long: std::iter::Peekable<L>,
}

impl<'a, S, L> Iterator for Merged<S, L>
where
    S: Iterator<Item = (Key, &'a Value, Version)>,
    L: Iterator<Item = (Key, &'a Value, Version)>,
{
    type Item = (Key, &'a Value, Version);

    fn next(&mut self) -> Option<Self::Item> {
        let short_first = match (self.short.peek(), self.long.peek()) {
            (Some((s, ..)), Some((l, ..))) => s < l,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if short_first {
            self.short.next()
        } else {
            self.long.next()
        }
    }
}

/// The smallest key greater than every key starting with `prefix`; empty
/// when there is none (all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Key {
    let mut end = key(prefix);
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Key::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Write {
        Write::Put(key(k.as_bytes()), v.as_bytes().to_vec())
    }

    #[test]
    fn failed_check_writes_nothing() {
        let mut s = MemStore::new();
        s.commit(&Txn {
            checks: vec![],
            writes: vec![put("a", "1")],
        })
        .expect("first commit");
        let before = s.version();
        let r = s.commit(&Txn {
            checks: vec![Check::Absent(key(b"a"))],
            writes: vec![put("b", "2")],
        });
        assert_eq!(
            r,
            Err(StoreError::Conflict {
                check_index: Some(0)
            })
        );
        assert_eq!(s.get(b"b"), None);
        assert_eq!(s.version(), before);
    }

    #[test]
    fn versions_track_the_last_write() {
        let mut s = MemStore::new();
        let v1 = s
            .commit(&Txn {
                checks: vec![],
                writes: vec![put("a", "1"), put("b", "1")],
            })
            .expect("commit");
        let v2 = s
            .commit(&Txn {
                checks: vec![Check::VersionIs(key(b"a"), v1)],
                writes: vec![put("a", "2")],
            })
            .expect("commit");
        assert!(v2 > v1);
        assert_eq!(s.get(b"a").map(|e| e.version), Some(v2));
        assert_eq!(s.get(b"b").map(|e| e.version), Some(v1));
        // A stale version check fails.
        assert!(s
            .commit(&Txn {
                checks: vec![Check::VersionIs(key(b"a"), v1)],
                writes: vec![put("a", "3")],
            })
            .is_err());
    }

    /// Keys held inline (up to 16 bytes) and on the heap (longer) sort,
    /// read, overwrite and delete alike, side by side.
    #[test]
    fn short_and_long_keys_alike() {
        let mut s = MemStore::new();
        let keys = [
            "k/",
            "k/0123456789abcd",   // 16 bytes: the longest inline
            "k/0123456789abcd/a", // shares the inline one's bytes
            "k/0123456789abcde",  // 17: the shortest on the heap
            "k/zz-a-key-much-longer-than-any-the-machines-write",
        ];
        for (i, k) in keys.iter().rev().enumerate() {
            s.commit(&Txn {
                checks: vec![],
                writes: vec![put(k, &i.to_string())],
            })
            .expect("commit");
        }
        let got: Vec<Key> = s.range(b"k/", b"", 10).into_iter().map(|e| e.key).collect();
        let want: Vec<Key> = keys.iter().map(|k| key(k.as_bytes())).collect();
        assert_eq!(got, want, "every key, in byte order");
        s.commit(&Txn {
            checks: vec![Check::Equals(key(keys[2].as_bytes()), b"2".to_vec())],
            writes: vec![put(keys[2], "new"), Write::Delete(key(keys[1].as_bytes()))],
        })
        .expect("commit");
        assert_eq!(s.value(keys[2].as_bytes()), Some(&b"new"[..]));
        assert_eq!(s.get(keys[1].as_bytes()), None);
        assert_eq!(s.len(), keys.len() - 1);
        assert_eq!(s.range(b"k/0", b"k/1", 10).len(), 2);
    }

    #[test]
    fn ranges_are_ordered_and_limited() {
        let mut s = MemStore::new();
        let writes = ["d", "a", "c", "b", "e"]
            .iter()
            .map(|k| put(k, k))
            .collect();
        s.commit(&Txn {
            checks: vec![],
            writes,
        })
        .expect("commit");
        let keys: Vec<_> = s.range(b"b", b"e", 2).into_iter().map(|e| e.key).collect();
        assert_eq!(keys, vec![key(b"b"), key(b"c")]);
        assert!(s.range(b"e", b"b", 10).is_empty());
    }

    #[test]
    fn oversize_is_refused_whole() {
        let mut s = MemStore::new();
        let big = Txn {
            checks: vec![],
            writes: vec![
                put("ok", "1"),
                Write::Put(key(b"v"), vec![0; VALUE_BYTES_MAX + 1]),
            ],
        };
        assert!(matches!(s.commit(&big), Err(StoreError::TooLarge(_))));
        assert!(s.is_empty());
        let long_key = Txn {
            checks: vec![],
            writes: vec![Write::Put(Key::from_elem(b'k', KEY_BYTES_MAX + 1), vec![])],
        };
        assert!(matches!(s.commit(&long_key), Err(StoreError::TooLarge(_))));
        let many: Vec<Write> = (0..120)
            .map(|i| Write::Put(key(format!("k{i}").as_bytes()), vec![0; 99_000]))
            .collect();
        assert!(matches!(
            s.commit(&Txn {
                checks: vec![],
                writes: many
            }),
            Err(StoreError::TooLarge(_))
        ));
        assert!(s.is_empty());
    }

    /// The indexes hold the same entries through puts, overwrites and
    /// deletes: every point read and every range agrees with one ordered
    /// map given the same writes. Half the keys pack and half are longer,
    /// interleaved in order (`k/07` < `k/07/and-more` < `k/08`), and so
    /// are the ranges' bounds.
    #[test]
    fn both_indexes_agree_with_an_ordered_map() {
        let mut rng = crate::rng::SeededRng::new(7);
        let mut s = MemStore::new();
        let mut model: std::collections::BTreeMap<Key, Value> = Default::default();
        let key = |n: u64| {
            let k = if n.is_multiple_of(2) {
                format!("k/{:02}", n / 2)
            } else {
                format!("k/{:02}/and-more-bytes", n / 2)
            };
            key(k.as_bytes())
        };
        for round in 0..2_000u64 {
            let writes: Vec<Write> = (0..1 + rng.below(4))
                .map(|_| {
                    let k = key(rng.below(40));
                    if rng.chance(300_000) {
                        Write::Delete(k)
                    } else {
                        Write::Put(k, round.to_be_bytes().to_vec())
                    }
                })
                .collect();
            for w in &writes {
                match w {
                    Write::Put(k, v) => model.insert(k.clone(), v.clone()),
                    Write::Delete(k) => model.remove(k),
                };
            }
            s.commit(&Txn {
                checks: vec![],
                writes,
            })
            .expect("commit");
            assert_eq!(s.len(), model.len());
            let probe = key(rng.below(40));
            assert_eq!(s.value(&probe), model.get(&probe).map(Vec::as_slice));
            let (a, b) = (key(rng.below(40)), key(rng.below(40)));
            let got: Vec<(Key, Value)> = s
                .range(&a, &b, 100)
                .into_iter()
                .map(|e| (e.key, e.value))
                .collect();
            let want: Vec<(Key, Value)> = if a < b {
                model
                    .range(a.clone()..b.clone())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            } else {
                Vec::new()
            };
            assert_eq!(got, want, "range {a:?}..{b:?} after round {round}");
        }
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), key(b"ac"));
        assert_eq!(prefix_end(b"a\xff"), key(b"b"));
        assert_eq!(prefix_end(b"\xff\xff"), Key::new());
    }
}
