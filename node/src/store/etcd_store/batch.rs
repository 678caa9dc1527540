//! Several reads in one etcd transaction. A node that claims thousands of
//! channels starts as many machines, each reading its records (a get of a
//! few keys, then a range of its videos); as separate calls they cost etcd
//! one request each, and on a busy cluster the per-request work, not the
//! keys read, is what limits a takeover. The shell gathers the reads
//! waiting at one moment (`live::read_batch`) and asks for them here
//! together: one request, every read at the same revision.
//!
//! Each read is answered as `Store::apply` would answer it alone. A range
//! takes its first page in the transaction and any more as `range` does
//! (in pages, as a single range already is). If etcd refuses the
//! transaction itself (a member with a lower `--max-txn-ops`, a reply past
//! the message limit), each read is asked again on its own; if it does not
//! answer in time, every read gets that error, as each would have alone.

use std::collections::{HashMap, HashSet};

use etcd_client::{GetOptions, Txn as EtcdTxn, TxnOp, TxnOpResponse};

use actors::store::{check_limits, Key, StoreError, StoreOp, StoreReply};

use super::{answered_short, EtcdStore};
use crate::store::Store;

/// Most operations in one batched read (a get counts its keys, a range
/// one): etcd's default `--max-txn-ops`.
pub const READ_BATCH_OPS_MAX: usize = 128;

/// Entries of a range read in the transaction itself; a channel's active
/// videos are a handful, and the limit keeps the reply of a full batch
/// well under gRPC's message limit for records of ordinary size.
const RANGE_FIRST_PAGE: usize = 64;

/// The operations a batched read being formed will take (a key asked
/// twice is asked once).
#[derive(Default)]
pub struct BatchOps {
    keys: HashSet<Key>,
    ranges: usize,
}

impl BatchOps {
    pub fn len(&self) -> usize {
        self.keys.len() + self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes `op` in if the batch stays within [`READ_BATCH_OPS_MAX`]
    /// operations with it, or if the batch is empty (an op too large
    /// alone goes alone, and is refused or answered as it would be).
    pub fn take(&mut self, op: &StoreOp) -> bool {
        let new_keys: Vec<&Key> = match op {
            StoreOp::Get(keys) => keys.iter().filter(|k| !self.keys.contains(*k)).collect(),
            StoreOp::Range { .. } | StoreOp::Commit(_) | StoreOp::CommitGet { .. } => Vec::new(),
        };
        let ranges = usize::from(!matches!(op, StoreOp::Get(_)));
        let fits = self.len() + new_keys.len() + ranges <= READ_BATCH_OPS_MAX;
        if !fits && !self.is_empty() {
            return false;
        }
        self.keys.extend(new_keys.into_iter().cloned());
        self.ranges += ranges;
        true
    }
}

/// What each read put into the transaction.
enum Asked {
    /// A get: where each key's response is.
    Get(Vec<usize>),
    /// A range: its response, its page size, and where it goes on if the
    /// page was full.
    Range {
        at: usize,
        page: usize,
        end: Key,
        limit: usize,
    },
    /// Answered without etcd (a refused or empty read, or not a read).
    Answered(StoreReply),
}

impl EtcdStore {
    /// Answers `reads` in one transaction (see the module's comment).
    pub async fn read_many(&self, reads: &[StoreOp]) -> Vec<StoreReply> {
        let mut ops = Vec::new();
        let mut asked = Vec::with_capacity(reads.len());
        let mut keys_at = HashMap::new();
        for op in reads {
            asked.push(self.ask(op, &mut ops, &mut keys_at));
        }
        if ops.is_empty() {
            return asked.into_iter().map(answered).collect();
        }
        let mut kv = self.client.kv_client();
        let call = kv.txn(EtcdTxn::new().and_then(ops));
        let resp = match tokio::time::timeout(self.call_timeout, call).await {
            Err(_) => {
                let e = self.read_timed_out();
                return reads
                    .iter()
                    .map(|_| StoreReply::Failed(e.clone()))
                    .collect();
            }
            Ok(Err(_)) => return self.one_by_one(reads).await,
            Ok(Ok(resp)) => resp,
        };
        let got = resp.op_responses();
        let mut out = Vec::with_capacity(reads.len());
        for a in asked {
            let reply = match a {
                Asked::Answered(r) => r,
                Asked::Get(at) => self.got(&got, &at),
                Asked::Range {
                    at,
                    page,
                    end,
                    limit,
                } => match got.get(at) {
                    Some(r) => self.ranged(r, page, &end, limit).await,
                    None => StoreReply::Failed(answered_short()),
                },
            };
            out.push(reply);
        }
        out
    }

    /// Puts `op`'s reads into `ops`; a key already asked for (a project's
    /// records, read by each of its channels) is asked once.
    fn ask(
        &self,
        op: &StoreOp,
        ops: &mut Vec<TxnOp>,
        keys_at: &mut HashMap<Vec<u8>, usize>,
    ) -> Asked {
        if let Err(e) = check_limits(op) {
            return Asked::Answered(StoreReply::Failed(e));
        }
        match op {
            StoreOp::Get(keys) => {
                let at = keys
                    .iter()
                    .map(|k| {
                        *keys_at.entry(self.data_key(k)).or_insert_with_key(|key| {
                            ops.push(TxnOp::get(key.clone(), None));
                            ops.len() - 1
                        })
                    })
                    .collect();
                Asked::Get(at)
            }
            StoreOp::Range { start, end, limit } => {
                if !end.is_empty() && start >= end {
                    return Asked::Answered(StoreReply::Range(Vec::new()));
                }
                let to = if end.is_empty() {
                    self.data_end()
                } else {
                    self.data_key(end)
                };
                let page = (*limit).min(RANGE_FIRST_PAGE);
                let opts = GetOptions::new().with_range(to).with_limit(page as i64);
                ops.push(TxnOp::get(self.data_key(start), Some(opts)));
                Asked::Range {
                    at: ops.len() - 1,
                    page,
                    end: end.clone(),
                    limit: *limit,
                }
            }
            StoreOp::Commit(_) | StoreOp::CommitGet { .. } => Asked::Answered(StoreReply::Failed(
                StoreError::Corrupt("a commit was put into a batch of reads".into()),
            )),
        }
    }

    /// A get's reply from its keys' responses.
    fn got(&self, got: &[TxnOpResponse], at: &[usize]) -> StoreReply {
        let one = |i: &usize| match got.get(*i) {
            Some(r) => self.got_one(r),
            None => Err(answered_short()),
        };
        match at.iter().map(one).collect() {
            Ok(entries) => StoreReply::Got(entries),
            Err(e) => StoreReply::Failed(e),
        }
    }

    /// A range's reply from its first page, read on from there if full.
    async fn ranged(&self, r: &TxnOpResponse, page: usize, end: &[u8], limit: usize) -> StoreReply {
        let TxnOpResponse::Get(g) = r else {
            return StoreReply::Failed(StoreError::Corrupt(
                "etcd answered a range with something else".into(),
            ));
        };
        let mut out = Vec::with_capacity(g.kvs().len());
        for kv in g.kvs() {
            match self.entry(kv) {
                Ok(e) => out.push(e),
                Err(e) => return StoreReply::Failed(e),
            }
        }
        let full = out.len() == page && g.more() && page < limit;
        if let (true, Some(last)) = (full, out.last()) {
            let mut from = last.key.clone();
            // The smallest key after the last one. It may be one byte past
            // the longest key a read may name, so the page is read with
            // `range_at`, which takes a page's next start as it is.
            from.push(0);
            match self.range_at(&from, end, limit - out.len(), None).await {
                Ok(rest) => out.extend(rest),
                Err(e) => return StoreReply::Failed(e),
            }
        }
        StoreReply::Range(out)
    }

    /// Each read on its own, all at once.
    async fn one_by_one(&self, reads: &[StoreOp]) -> Vec<StoreReply> {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, op) in reads.iter().enumerate() {
            let (store, op) = (self.clone(), op.clone());
            tasks.spawn(async move { (i, store.apply(&op).await) });
        }
        let mut out: Vec<StoreReply> = reads
            .iter()
            .map(|_| StoreReply::Failed(answered_short()))
            .collect();
        while let Some(done) = tasks.join_next().await {
            if let Ok((i, reply)) = done {
                out[i] = reply;
            }
        }
        out
    }
}

fn answered(a: Asked) -> StoreReply {
    match a {
        Asked::Answered(r) => r,
        Asked::Get(_) | Asked::Range { .. } => StoreReply::Failed(answered_short()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(keys: &[&str]) -> StoreOp {
        StoreOp::Get(
            keys.iter()
                .map(|k| actors::store::key(k.as_bytes()))
                .collect(),
        )
    }

    fn range() -> StoreOp {
        StoreOp::Range {
            start: actors::store::key(b"v/"),
            end: actors::store::key(b"v0"),
            limit: 10,
        }
    }

    #[test]
    fn a_batch_counts_a_shared_key_once_and_stops_at_the_limit() {
        let mut b = BatchOps::default();
        assert!(b.take(&get(&["o/1", "c/1", "project"])));
        assert!(b.take(&get(&["o/2", "c/2", "project"])));
        assert_eq!(b.len(), 5, "the project's key is asked once");
        assert!(b.take(&range()));
        assert_eq!(b.len(), 6);
        for i in 6..READ_BATCH_OPS_MAX {
            assert!(b.take(&range()), "op {i} fits");
        }
        assert_eq!(b.len(), READ_BATCH_OPS_MAX);
        assert!(
            !b.take(&range()),
            "one past the limit waits for the next batch"
        );
        assert!(
            b.take(&get(&["project"])),
            "a key already asked costs nothing"
        );
    }

    #[test]
    fn an_op_larger_than_a_batch_goes_alone() {
        let keys: Vec<String> = (0..=READ_BATCH_OPS_MAX).map(|i| format!("k{i}")).collect();
        let big = StoreOp::Get(
            keys.iter()
                .map(|k| actors::store::key(k.as_bytes()))
                .collect(),
        );
        let mut alone = BatchOps::default();
        assert!(alone.take(&big), "taken into an empty batch");
        assert!(!alone.take(&range()), "and nothing after it");
        let mut after = BatchOps::default();
        assert!(after.take(&range()));
        assert!(!after.take(&big), "not into a batch with something in it");
    }
}
