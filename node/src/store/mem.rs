//! `mem://`: the reference model behind a lock, for tests and single-process
//! demos. A snapshot is a copy (the data is in memory already).

use std::sync::Mutex;

use actors::store::{
    check_get, check_range, Entry, Key, MemStore, StoreError, Txn, Version, Write,
};

use super::{BoxFuture, Snapshot, Store};

#[derive(Default)]
pub struct MemBackend {
    inner: Mutex<MemStore>,
}

impl MemBackend {
    pub fn new() -> MemBackend {
        MemBackend::default()
    }

    /// A copy of everything `snap` sees, read page by page at its one
    /// version: for checks that compare records written by different
    /// transactions of a fleet that is still running (the audit).
    pub async fn copy_of(snap: &mut dyn Snapshot) -> Result<MemBackend, StoreError> {
        const PAGE: usize = 10_000;
        let mut store = MemStore::new();
        let mut start: Vec<u8> = Vec::new();
        loop {
            let page = super::next_page(snap, &mut start, PAGE).await?;
            let full = page.len() == PAGE;
            let writes = page.into_iter().map(|e| Write::Put(e.key, e.value));
            store.commit_checked(&Txn {
                checks: Vec::new(),
                writes: writes.collect(),
            })?;
            if !full {
                return Ok(MemBackend {
                    inner: Mutex::new(store),
                });
            }
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, MemStore>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Unavailable("mem store lock poisoned by a panic".into()))
    }
}

impl Store for MemBackend {
    async fn get(&self, keys: &[Key]) -> Result<Vec<Option<Entry>>, StoreError> {
        check_get(keys)?;
        let s = self.lock()?;
        Ok(keys.iter().map(|k| s.get(k)).collect())
    }

    async fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        check_range(start, end, limit)?;
        Ok(self.lock()?.range(start, end, limit))
    }

    async fn commit(&self, txn: &Txn) -> Result<Version, StoreError> {
        self.lock()?.commit(txn)
    }

    async fn snapshot(&self) -> Result<Box<dyn Snapshot>, StoreError> {
        let copy = self.lock()?.clone();
        Ok(Box::new(MemSnapshot { store: copy }))
    }
}

struct MemSnapshot {
    store: MemStore,
}

impl Snapshot for MemSnapshot {
    fn version(&self) -> Version {
        self.store.version()
    }
    fn page<'a>(
        &'a mut self,
        start: &'a [u8],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Entry>, StoreError>> {
        Box::pin(async move { Ok(self.store.range(start, b"", limit)) })
    }
}
