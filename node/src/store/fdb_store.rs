//! `fdb://[path/to/fdb.cluster]?prefix=NAME`: FoundationDB, for large
//! multi-region deployments. Built with the `fdb` cargo feature (it needs
//! FoundationDB's client library, `libfdb_c`, to link and run).
//!
//! Layout under the tuple-encoded subspace `("reelfleet", NAME)`: `("d",) +
//! key` holds the value, `("v",) + key` a versionstamp written by
//! `SetVersionstampedValue` at commit, whose first 8 bytes are the commit
//! version — a key's version is the version of the commit that last wrote
//! it, as in the model. Keys are appended raw after the prefix, so they
//! sort as the model sorts them.
//!
//! The retry loop retries what FoundationDB says is retryable (conflicts
//! among concurrent transactions, `transaction_too_old`, recoveries) by
//! re-reading and re-evaluating the checks, so a `Conflict` reaches the
//! caller only when a check really failed. `commit_unknown_result` is
//! never retried: it is surfaced as `CommitUnknown`.
//!
//! Limits: FoundationDB's key limit of 10,000 bytes includes the prefix,
//! so user keys may be up to 10,000 minus the prefix length; values and
//! transactions are checked by `actors::store::check_txn` exactly as elsewhere.

use actors::store::{
    check_get, check_range, check_txn, Entry, Key, StoreError, Txn, Version, Write,
};
use foundationdb::options::MutationType;
use foundationdb::{Database, FdbError, RangeOption, Transaction};

use super::{BoxFuture, Snapshot, Store};

/// Retries of one operation before it is reported unavailable.
const RETRIES_MAX: usize = 20;
const PAGE_LIMIT: usize = 1_000;

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("fdb: {e}"))
}

/// Keeps FoundationDB's network thread running; drop it at exit.
pub struct Network(#[allow(dead_code)] foundationdb::api::NetworkAutoStop);

/// Starts FoundationDB's client network. Call once per process, before
/// [`FdbStore::open`], and keep the guard alive.
///
/// # Safety
/// As `foundationdb::boot`: once per process, and the guard must be dropped
/// before the process exits.
pub unsafe fn boot() -> Network {
    Network(foundationdb::boot())
}

pub struct FdbStore {
    db: std::sync::Arc<Database>,
    data: Vec<u8>,
    versions: Vec<u8>,
}

impl FdbStore {
    /// Opens the cluster named by `cluster_file` (the default cluster file
    /// when `None`) with keys under the subspace `("reelfleet", prefix)`.
    pub fn open(cluster_file: Option<&str>, prefix: &str) -> Result<FdbStore, StoreError> {
        let db = Database::new(cluster_file).map_err(unavailable)?;
        Ok(FdbStore {
            db: std::sync::Arc::new(db),
            data: foundationdb::tuple::pack(&("reelfleet", prefix, "d")),
            versions: foundationdb::tuple::pack(&("reelfleet", prefix, "v")),
        })
    }

    fn data_key(&self, key: &[u8]) -> Vec<u8> {
        [self.data.as_slice(), key].concat()
    }

    fn version_key(&self, key: &[u8]) -> Vec<u8> {
        [self.versions.as_slice(), key].concat()
    }

    fn trx(&self) -> Result<Transaction, StoreError> {
        self.db.create_trx().map_err(unavailable)
    }

    async fn read_entry(&self, trx: &Transaction, key: &[u8]) -> Result<Option<Entry>, FdbError> {
        let Some(value) = trx.get(&self.data_key(key), false).await? else {
            return Ok(None);
        };
        let stamp = trx.get(&self.version_key(key), false).await?;
        Ok(Some(Entry {
            key: actors::store::key(key),
            value: value.to_vec(),
            version: stamp.map(|s| version_of_stamp(&s)).unwrap_or(0),
        }))
    }

    async fn range_in(
        &self,
        trx: &Transaction,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, FdbError> {
        let begin = self.data_key(start);
        let stop = if end.is_empty() {
            [self.data.as_slice(), &[0xff]].concat()
        } else {
            self.data_key(end)
        };
        let opt = RangeOption {
            limit: Some(limit),
            ..RangeOption::from((begin, stop))
        };
        // Copied out first: the range's buffers are not `Send`.
        let pairs: Vec<(actors::store::Key, Vec<u8>)> = {
            let values = trx.get_range(&opt, 1, false).await?;
            values
                .iter()
                .map(|kv| {
                    (
                        actors::store::key(&kv.key()[self.data.len()..]),
                        kv.value().to_vec(),
                    )
                })
                .collect()
        };
        let mut out = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            let stamp = trx.get(&self.version_key(&key), false).await?;
            out.push(Entry {
                value,
                version: stamp.map(|s| version_of_stamp(&s)).unwrap_or(0),
                key,
            });
        }
        Ok(out)
    }

    /// Runs `body` in a retry loop for reads.
    async fn read<T, F>(&self, body: F) -> Result<T, StoreError>
    where
        F: for<'a> Fn(&'a FdbStore, &'a Transaction) -> BoxFuture<'a, Result<T, FdbError>>,
    {
        let mut trx = self.trx()?;
        for _ in 0..RETRIES_MAX {
            match body(self, &trx).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() => {
                    trx = trx.on_error(e).await.map_err(unavailable)?;
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(unavailable("too many retries"))
    }
}

/// The commit version in a versionstamp (its first 8 bytes, big endian).
fn version_of_stamp(stamp: &[u8]) -> Version {
    let mut v = [0u8; 8];
    if stamp.len() >= 8 {
        v.copy_from_slice(&stamp[..8]);
    }
    u64::from_be_bytes(v)
}

impl Store for FdbStore {
    async fn get(&self, keys: &[Key]) -> Result<Vec<Option<Entry>>, StoreError> {
        check_get(keys)?;
        let keys = keys.to_vec();
        self.read(move |s, trx| {
            let keys = keys.clone();
            Box::pin(async move {
                let mut out = Vec::with_capacity(keys.len());
                for k in &keys {
                    out.push(s.read_entry(trx, k).await?);
                }
                Ok(out)
            })
        })
        .await
    }

    async fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        check_range(start, end, limit)?;
        if !end.is_empty() && start >= end {
            return Ok(Vec::new());
        }
        let (start, end) = (start.to_vec(), end.to_vec());
        self.read(move |s, trx| {
            let (start, end) = (start.clone(), end.clone());
            Box::pin(async move { s.range_in(trx, &start, &end, limit).await })
        })
        .await
    }

    async fn commit(&self, txn: &Txn) -> Result<Version, StoreError> {
        check_txn(txn)?;
        let mut trx = self.trx()?;
        for _ in 0..RETRIES_MAX {
            // Checks read inside the transaction: a concurrent change to a
            // checked key makes the commit conflict, and the retry
            // re-evaluates the checks on fresh reads.
            let mut failed = None;
            for (i, c) in txn.checks.iter().enumerate() {
                let current = match self.read_entry(&trx, c.key()).await {
                    Ok(c) => c,
                    Err(e) if e.is_retryable() => {
                        failed = Some(Err(e));
                        break;
                    }
                    Err(e) => return Err(unavailable(e)),
                };
                let ok = c.holds(current.as_ref().map(|e| (e.value.as_slice(), e.version)));
                if !ok {
                    failed = Some(Ok(i));
                    break;
                }
            }
            match failed {
                Some(Ok(i)) => {
                    return Err(StoreError::Conflict {
                        check_index: Some(i),
                    })
                }
                Some(Err(e)) => {
                    trx = trx.on_error(e).await.map_err(unavailable)?;
                    continue;
                }
                None => {}
            }
            if txn.writes.is_empty() {
                let v = trx.get_read_version().await.map_err(unavailable)?;
                return Ok(u64::try_from(v).unwrap_or(0));
            }
            for w in &txn.writes {
                match w {
                    Write::Put(k, v) => {
                        trx.set(&self.data_key(k), v);
                        // 10 placeholder bytes, then the offset (0) of the
                        // versionstamp in the value.
                        let mut param = vec![0u8; 10];
                        param.extend_from_slice(&0u32.to_le_bytes());
                        trx.atomic_op(
                            &self.version_key(k),
                            &param,
                            MutationType::SetVersionstampedValue,
                        );
                    }
                    Write::Delete(k) => {
                        trx.clear(&self.data_key(k));
                        trx.clear(&self.version_key(k));
                    }
                }
            }
            match trx.commit().await {
                Ok(committed) => {
                    let v = committed.committed_version().map_err(unavailable)?;
                    return Ok(u64::try_from(v).unwrap_or(0));
                }
                Err(e) if e.is_maybe_committed() => return Err(StoreError::CommitUnknown),
                Err(e) if e.is_retryable() => {
                    trx = e.on_error().await.map_err(unavailable)?;
                }
                Err(e) => return Err(unavailable(*e)),
            }
        }
        Err(unavailable("too many retries"))
    }

    async fn snapshot(&self) -> Result<Box<dyn Snapshot>, StoreError> {
        let trx = self.trx()?;
        let version = trx.get_read_version().await.map_err(unavailable)?;
        Ok(Box::new(FdbSnapshot {
            store: FdbStore {
                db: std::sync::Arc::clone(&self.db),
                data: self.data.clone(),
                versions: self.versions.clone(),
            },
            read_version: version,
        }))
    }
}

/// Pages read at one read version. FoundationDB keeps old versions for
/// about five seconds: a backup that takes longer fails with
/// `transaction_too_old` and must be retried (or use `fdbbackup`).
struct FdbSnapshot {
    store: FdbStore,
    read_version: i64,
}

impl Snapshot for FdbSnapshot {
    fn version(&self) -> Version {
        u64::try_from(self.read_version).unwrap_or(0)
    }
    fn page<'a>(
        &'a mut self,
        start: &'a [u8],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Entry>, StoreError>> {
        Box::pin(async move {
            let trx = self.store.trx()?;
            trx.set_read_version(self.read_version);
            self.store
                .range_in(&trx, start, b"", limit.min(PAGE_LIMIT))
                .await
                .map_err(unavailable)
        })
    }
}
