//! `redb:///path`: the embedded default. One process owns the file (redb
//! locks it). Commits go through one writer thread that takes every commit
//! waiting and applies them in a single redb write transaction, in arrival
//! order, each with its own checks and its own version — so many concurrent
//! writers share one fsync (group commit). A commit is acknowledged only
//! after that transaction is durable, so an acknowledged commit survives
//! `kill -9`.
//!
//! Layout: table `kv` maps each key to its version (8 bytes, little endian)
//! followed by the value; table `meta` holds the store version.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use actors::store::{
    check_get, check_range, check_txn, Entry, Key, StoreError, Txn, Version, Write,
};
use redb::{Database, ReadableTable, TableDefinition};

use super::{BoxFuture, Snapshot, Store};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const VERSION_KEY: &str = "version";
/// redb's page cache.
pub const CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Most commits folded into one redb transaction.
pub const GROUP_COMMITS_MAX: usize = 256;

struct Request {
    txn: Txn,
    reply: tokio::sync::oneshot::Sender<Result<Version, StoreError>>,
}

pub struct RedbStore {
    db: Arc<Database>,
    writer: Option<mpsc::Sender<Request>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RedbStore {
    /// Lets the writer finish what it holds, so that the file is closed (and
    /// can be opened again) once the store is dropped.
    fn drop(&mut self) {
        self.writer.take();
        if let Some(t) = self.writer_thread.take() {
            let _ = t.join();
        }
    }
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redb: {e}"))
}

fn split_value(raw: &[u8], key: &[u8]) -> Result<(Version, Vec<u8>), StoreError> {
    if raw.len() < 8 {
        return Err(StoreError::Corrupt(format!(
            "redb value of key {} is {} bytes, shorter than its version",
            actors::store::printable_key(key),
            raw.len()
        )));
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&raw[..8]);
    Ok((u64::from_le_bytes(v), raw[8..].to_vec()))
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| io(format!("cannot create {}: {e}", dir.display())))?;
            }
        }
        let db = Database::create(path)
            .map_err(|e| io(format!("cannot open {}: {e}", path.display())))?;
        // Make sure the tables exist so that readers never race their creation.
        let w = db.begin_write().map_err(io)?;
        {
            w.open_table(KV).map_err(io)?;
            w.open_table(META).map_err(io)?;
        }
        w.commit().map_err(io)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel::<Request>();
        let writer_db = Arc::clone(&db);
        let thread = std::thread::Builder::new()
            .name("redb-group-commit".into())
            .spawn(move || group_commit_loop(&writer_db, &rx))
            .map_err(|e| io(format!("cannot start the writer thread: {e}")))?;
        Ok(RedbStore {
            db,
            writer: Some(tx),
            writer_thread: Some(thread),
        })
    }

    fn read_entry(
        table: &impl ReadableTable<&'static [u8], &'static [u8]>,
        key: &[u8],
    ) -> Result<Option<Entry>, StoreError> {
        match table.get(key).map_err(io)? {
            Some(raw) => {
                let (version, value) = split_value(raw.value(), key)?;
                Ok(Some(Entry {
                    key: actors::store::key(key),
                    value,
                    version,
                }))
            }
            None => Ok(None),
        }
    }
}

fn range_of(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    start: &[u8],
    end: &[u8],
    limit: usize,
) -> Result<Vec<Entry>, StoreError> {
    let mut out = Vec::new();
    if !end.is_empty() && start >= end {
        return Ok(out);
    }
    let iter = if end.is_empty() {
        table.range::<&[u8]>(start..).map_err(io)?
    } else {
        table.range::<&[u8]>(start..end).map_err(io)?
    };
    for item in iter.take(limit) {
        let (k, v) = item.map_err(io)?;
        let key = actors::store::key(k.value());
        let (version, value) = split_value(v.value(), &key)?;
        out.push(Entry {
            key,
            value,
            version,
        });
    }
    Ok(out)
}

/// The writer thread: takes what is waiting, applies it in one transaction,
/// answers everyone once it is durable.
fn group_commit_loop(db: &Database, rx: &mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMITS_MAX {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let results = apply_batch(db, &batch);
        for (req, result) in batch.into_iter().zip(results) {
            let _ = req.reply.send(result);
        }
    }
}

fn apply_batch(db: &Database, batch: &[Request]) -> Vec<Result<Version, StoreError>> {
    let fail_all = |e: StoreError| batch.iter().map(|_| Err(e.clone())).collect();
    let w = match db.begin_write() {
        Ok(w) => w,
        Err(e) => return fail_all(io(e)),
    };
    let mut results = Vec::with_capacity(batch.len());
    let outcome: Result<(), StoreError> = (|| {
        let mut kv = w.open_table(KV).map_err(io)?;
        let mut meta = w.open_table(META).map_err(io)?;
        let mut version = meta
            .get(VERSION_KEY)
            .map_err(io)?
            .map(|v| v.value())
            .unwrap_or(0);
        for req in batch {
            results.push(apply_one(&mut kv, &mut version, &req.txn)?);
        }
        meta.insert(VERSION_KEY, version).map_err(io)?;
        Ok(())
    })();
    if let Err(e) = outcome {
        return fail_all(e);
    }
    match w.commit() {
        Ok(()) => results,
        // The commit may have reached the disk or not.
        Err(_) => batch
            .iter()
            .map(|_| Err(StoreError::CommitUnknown))
            .collect(),
    }
}

/// One commit inside the group's transaction. The inner result is this
/// commit's answer (its checks failed: nothing of it was written); the outer
/// error is a failure while writing, which abandons the whole group.
fn apply_one(
    kv: &mut redb::Table<&[u8], &[u8]>,
    version: &mut u64,
    txn: &Txn,
) -> Result<Result<Version, StoreError>, StoreError> {
    if let Err(e) = check_txn(txn) {
        return Ok(Err(e));
    }
    for (i, c) in txn.checks.iter().enumerate() {
        let current = match RedbStore::read_entry(kv, c.key()) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let ok = c.holds(current.as_ref().map(|e| (e.value.as_slice(), e.version)));
        if !ok {
            return Ok(Err(StoreError::Conflict {
                check_index: Some(i),
            }));
        }
    }
    if txn.writes.is_empty() {
        return Ok(Ok(*version));
    }
    *version += 1;
    let prefix = version.to_le_bytes();
    for w in &txn.writes {
        match w {
            Write::Put(k, v) => {
                let mut raw = Vec::with_capacity(8 + v.len());
                raw.extend_from_slice(&prefix);
                raw.extend_from_slice(v);
                kv.insert(k.as_slice(), raw.as_slice()).map_err(io)?;
            }
            Write::Delete(k) => {
                kv.remove(k.as_slice()).map_err(io)?;
            }
        }
    }
    Ok(Ok(*version))
}

impl Store for RedbStore {
    async fn get(&self, keys: &[Key]) -> Result<Vec<Option<Entry>>, StoreError> {
        check_get(keys)?;
        let r = self.db.begin_read().map_err(io)?;
        let t = r.open_table(KV).map_err(io)?;
        keys.iter().map(|k| RedbStore::read_entry(&t, k)).collect()
    }

    async fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        check_range(start, end, limit)?;
        let r = self.db.begin_read().map_err(io)?;
        let t = r.open_table(KV).map_err(io)?;
        range_of(&t, start, end, limit)
    }

    async fn commit(&self, txn: &Txn) -> Result<Version, StoreError> {
        // Refused whole before it reaches the writer.
        check_txn(txn)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.writer
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("redb store is closing".into()))?
            .send(Request {
                txn: txn.clone(),
                reply,
            })
            .map_err(|_| StoreError::Unavailable("redb writer thread has stopped".into()))?;
        answer.await.map_err(|_| StoreError::CommitUnknown)?
    }

    async fn snapshot(&self) -> Result<Box<dyn Snapshot>, StoreError> {
        let read = self.db.begin_read().map_err(io)?;
        let version = {
            let meta = read.open_table(META).map_err(io)?;
            let v = meta
                .get(VERSION_KEY)
                .map_err(io)?
                .map(|v| v.value())
                .unwrap_or(0);
            v
        };
        Ok(Box::new(RedbSnapshot { read, version }))
    }
}

struct RedbSnapshot {
    read: redb::ReadTransaction,
    version: Version,
}

impl Snapshot for RedbSnapshot {
    fn version(&self) -> Version {
        self.version
    }
    fn page<'a>(
        &'a mut self,
        start: &'a [u8],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Entry>, StoreError>> {
        Box::pin(async move {
            let t = self.read.open_table(KV).map_err(io)?;
            range_of(&t, start, b"", limit)
        })
    }
}
