//! The store the live shells use: one async interface with the semantics of
//! `actors::store::MemStore` (ordered keys, range reads, atomic checks plus
//! writes, per-key versions, FoundationDB's size limits, and the error kinds
//! conflict / commit-unknown / unavailable / too-large / corrupt), and the
//! backends behind it, selected by URL:
//!
//! - `mem://` — the in-memory model itself, behind a lock;
//! - `redb:///path/to/file.redb` — the embedded default (group commit);
//! - `etcd://host:port[,host:port...]/prefix` — multi-process clusters;
//!
//! Architecture invariant: every backend checks an operation with
//! `actors::store::check_limits` before touching anything, so that the
//! limits and their errors are the same everywhere.

pub mod any;
pub mod backup;
pub mod etcd_store;
#[cfg(feature = "fdb")]
pub mod fdb_store;
pub mod mem;
pub mod redb_store;
pub mod url;

use std::future::Future;

use actors::store::{Entry, Key, StoreError, StoreOp, StoreReply, Txn, Version};

/// The store interface of the live shells. Futures are `Send` so that
/// actors on a multi-threaded runtime can await them.
pub trait Store: Send + Sync {
    /// Point reads, one slot per key.
    fn get(
        &self,
        keys: &[Key],
    ) -> impl Future<Output = Result<Vec<Option<Entry>>, StoreError>> + Send;
    /// Forward range `[start, end)` (empty `end`: to the end), at most `limit`.
    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Entry>, StoreError>> + Send;
    /// Checks then writes, all or nothing; the commit's version.
    fn commit(&self, txn: &Txn) -> impl Future<Output = Result<Version, StoreError>> + Send;
    /// `commit`, then point reads of `keys` after it. By default two
    /// calls, one after the other: reads that fail after the commit
    /// applied answer `CommitUnknown` (the caller cannot tell from a
    /// failure whether the commit went through). A backend with
    /// transactions that read as well as write does both in one.
    fn commit_get(
        &self,
        txn: &Txn,
        keys: &[Key],
    ) -> impl Future<Output = Result<(Version, Vec<Option<Entry>>), StoreError>> + Send {
        async move {
            let version = self.commit(txn).await?;
            match self.get(keys).await {
                Ok(entries) => Ok((version, entries)),
                Err(_) => Err(StoreError::CommitUnknown),
            }
        }
    }
    /// A consistent view for backups: every page is read at the same
    /// version.
    fn snapshot(&self) -> impl Future<Output = Result<Box<dyn Snapshot>, StoreError>> + Send;

    /// Answers a machine's `StoreOp` (the live shells' one entry point).
    fn apply(&self, op: &StoreOp) -> impl Future<Output = StoreReply> + Send {
        async move {
            if let Err(e) = actors::store::check_limits(op) {
                return StoreReply::Failed(e);
            }
            let r = match op {
                StoreOp::Get(keys) => self.get(keys).await.map(StoreReply::Got),
                StoreOp::Range { start, end, limit } => {
                    self.range(start, end, *limit).await.map(StoreReply::Range)
                }
                StoreOp::Commit(txn) => self.commit(txn).await.map(StoreReply::Committed),
                StoreOp::CommitGet { txn, keys } => self
                    .commit_get(txn, keys)
                    .await
                    .map(|(version, entries)| StoreReply::CommittedGot { version, entries }),
            };
            r.unwrap_or_else(StoreReply::Failed)
        }
    }
}

/// A boxed future, for the object-safe [`Snapshot`].
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The next page of `snap` from `start` (at most `limit` entries), with
/// `start` moved past its last key; empty once everything was read.
pub async fn next_page(
    snap: &mut dyn Snapshot,
    start: &mut Vec<u8>,
    limit: usize,
) -> Result<Vec<Entry>, StoreError> {
    let page = snap.page(start, limit).await?;
    if let Some(last) = page.last() {
        *start = last.key.to_vec();
        start.push(0); // the smallest key after the last one
    }
    Ok(page)
}

/// A read-only view at one version.
pub trait Snapshot: Send {
    /// The version the snapshot reads at.
    fn version(&self) -> Version;
    /// Up to `limit` entries with keys `>= start`, in key order.
    fn page<'a>(
        &'a mut self,
        start: &'a [u8],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Entry>, StoreError>>;
}
