//! A store chosen at run time by URL. The `Store` trait is not object safe
//! (its futures are `impl Future`), so this enum forwards to the backend.

use std::time::Duration;

use actors::store::{Entry, Key, StoreError, StoreOp, StoreReply, Txn, Version};

use super::etcd_store::EtcdStore;
use super::mem::MemBackend;
use super::redb_store::RedbStore;
use super::url::StoreUrl;
use super::{Snapshot, Store};

/// How long one etcd call may take before it counts as failed.
pub const ETCD_CALL_TIMEOUT: Duration = Duration::from_secs(3);

pub enum AnyStore {
    Mem(MemBackend),
    Redb(RedbStore),
    Etcd(Box<EtcdStore>),
    #[cfg(feature = "fdb")]
    Fdb(Box<super::fdb_store::FdbStore>),
}

impl AnyStore {
    /// Opens a store that must already exist (for reading it, as a backup
    /// does): a redb path with no file is an error, never a new store.
    pub async fn open_existing(url: &StoreUrl) -> Result<AnyStore, StoreError> {
        if let StoreUrl::Redb(path) = url {
            if !path.is_file() {
                return Err(StoreError::Unavailable(format!(
                    "no redb store at {} (a store opened for reading is never created)",
                    path.display()
                )));
            }
        }
        AnyStore::open(url).await
    }

    /// The backend's name, as metrics label it.
    pub fn backend(&self) -> &'static str {
        match self {
            AnyStore::Mem(_) => "mem",
            AnyStore::Redb(_) => "redb",
            AnyStore::Etcd(_) => "etcd",
            #[cfg(feature = "fdb")]
            AnyStore::Fdb(_) => "fdb",
        }
    }

    /// Whether reads go faster together (`read_many`): etcd, where each
    /// request has a cost of its own; the embedded stores read in place.
    pub fn batches_reads(&self) -> bool {
        matches!(self, AnyStore::Etcd(_))
    }

    /// Answers `reads` (gets and ranges) as `apply` answers each: on etcd
    /// in one transaction, elsewhere one after another.
    pub async fn read_many(&self, reads: &[StoreOp]) -> Vec<StoreReply> {
        if let AnyStore::Etcd(s) = self {
            return s.read_many(reads).await;
        }
        let mut out = Vec::with_capacity(reads.len());
        for op in reads {
            out.push(self.apply(op).await);
        }
        out
    }

    pub async fn open(url: &StoreUrl) -> Result<AnyStore, StoreError> {
        Ok(match url {
            StoreUrl::Mem => AnyStore::Mem(MemBackend::new()),
            StoreUrl::Redb(path) => AnyStore::Redb(RedbStore::open(path)?),
            StoreUrl::Etcd {
                endpoints,
                prefix,
                options,
            } => AnyStore::Etcd(Box::new(
                EtcdStore::connect_with(endpoints, prefix, options, ETCD_CALL_TIMEOUT).await?,
            )),
            #[cfg(feature = "fdb")]
            StoreUrl::Fdb {
                cluster_file,
                prefix,
            } => {
                let path = cluster_file
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned());
                AnyStore::Fdb(Box::new(super::fdb_store::FdbStore::open(
                    path.as_deref(),
                    prefix,
                )?))
            }
            #[cfg(not(feature = "fdb"))]
            StoreUrl::Fdb { .. } => {
                return Err(StoreError::Unavailable(
                    "this build has no FoundationDB support: rebuild with --features fdb".into(),
                ))
            }
        })
    }
}

macro_rules! forward {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Mem($s) => $e,
            AnyStore::Redb($s) => $e,
            AnyStore::Etcd($s) => $e,
            #[cfg(feature = "fdb")]
            AnyStore::Fdb($s) => $e,
        }
    };
}

impl Store for AnyStore {
    async fn get(&self, keys: &[Key]) -> Result<Vec<Option<Entry>>, StoreError> {
        forward!(self, s => s.get(keys).await)
    }
    async fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        forward!(self, s => s.range(start, end, limit).await)
    }
    async fn commit(&self, txn: &Txn) -> Result<Version, StoreError> {
        forward!(self, s => s.commit(txn).await)
    }
    async fn commit_get(
        &self,
        txn: &Txn,
        keys: &[Key],
    ) -> Result<(Version, Vec<Option<Entry>>), StoreError> {
        forward!(self, s => s.commit_get(txn, keys).await)
    }
    async fn snapshot(&self) -> Result<Box<dyn Snapshot>, StoreError> {
        forward!(self, s => s.snapshot().await)
    }
}
