//! `etcd://host:port[,host:port...]/prefix`: for multi-process clusters.
//!
//! Keys live under `<prefix>d/`; every commit that writes also bumps
//! `<prefix>m`, so that each such commit gets its own etcd revision (a txn
//! that only deletes absent keys would otherwise leave the revision where it
//! was). A key's version is its `mod_revision`; a commit's version is the
//! revision it created.
//!
//! Checks map to etcd Txn compares (absent: `version == 0`; equals: `value
//! ==`; version: `mod_revision ==`). Ranges are read in chunks. A commit
//! that fails after it may have reached the cluster (timeout, leader
//! change, connection lost mid-call) is "commit result unknown"; reads that
//! fail are "unavailable". Every call has a deadline, so a cluster that has
//! lost its quorum answers with a clear error within that bound.

use std::time::Duration;

use actors::store::{
    check_get, check_range, check_txn, Check, Entry, Key, StoreError, Txn, Version, Write,
};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn as EtcdTxn, TxnOp};

mod batch;
pub use batch::{BatchOps, READ_BATCH_OPS_MAX};

use super::url::{EtcdOptions, Password};
use super::{BoxFuture, Snapshot, Store};

/// One change in the store's history (`EtcdStore::history`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The etcd revision that made it (a commit's version).
    pub revision: u64,
    /// The key, without the store's prefix.
    pub key: Key,
    /// The value written; `None`: deleted.
    pub value: Option<Vec<u8>>,
}

/// How long the history's watch may be quiet before it is taken as
/// caught up (historical events come at once; only new ones wait).
const HISTORY_QUIET: Duration = Duration::from_secs(2);

/// Most keys one etcd range call returns.
const RANGE_CHUNK: i64 = 1_000;

#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: Vec<u8>,
    call_timeout: Duration,
    /// The members dialled, for error messages.
    endpoints: String,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("etcd: {e}"))
}

/// A transaction's reply with fewer responses than it asked for.
fn answered_short() -> StoreError {
    StoreError::Corrupt("etcd answered fewer reads than asked".into())
}

/// Whether a failed call certainly never reached a member: the connection
/// itself could not be made (refused, unreachable, no address). Such a
/// commit applied nothing; any other failure of a commit may have applied.
fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::InvalidUri(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            let m = s.message().to_ascii_lowercase();
            s.code() == tonic::Code::Unavailable
                && (m.contains("error trying to connect")
                    || m.contains("tcp connect error")
                    || m.contains("connection refused"))
        }
        _ => false,
    }
}

/// TLS settings from the URL's files, read now (a missing file is named).
fn tls_options(how: &EtcdOptions) -> Result<Option<etcd_client::TlsOptions>, StoreError> {
    let Some(ca) = &how.ca else {
        return Ok(None);
    };
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read(p).map_err(|e| unavailable(format!("{what} {}: {e}", p.display())))
    };
    let mut tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(ca, "ca")?));
    if let (Some(cert), Some(key)) = (&how.cert, &how.key) {
        tls = tls.identity(etcd_client::Identity::from_pem(
            read(cert, "cert")?,
            read(key, "key")?,
        ));
    }
    Ok(Some(tls))
}

/// What to check when a first call over TLS fails.
fn tls_hint(how: &EtcdOptions, e: &etcd_client::Error) -> &'static str {
    let m = cause(e).to_ascii_lowercase();
    if how.ca.is_none() {
        return "";
    }
    if m.contains("certificate")
        || m.contains("unknownissuer")
        || m.contains("tls")
        || m.contains("transport error")
    {
        " (TLS: is ca= the CA that signed the members' certificates, and is cert= one they trust?)"
    } else {
        ""
    }
}

/// A gRPC error as one line: its code and message, not Rust debug output.
fn cause(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    }
}

/// Operations in the transaction `connect_with` reads with: more than a
/// claim of `MembershipParams::claim_batch` (256) channels takes (512).
pub const TXN_OPS_PROBE: usize = 1_024;

impl EtcdStore {
    /// Connects to `endpoints` (host:port) in plain text, without auth;
    /// keys live under `prefix`.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        call_timeout: Duration,
    ) -> Result<EtcdStore, StoreError> {
        Self::connect_with(endpoints, prefix, &EtcdOptions::default(), call_timeout).await
    }

    /// Connects with TLS and auth as `how` says. A call is made before
    /// this returns, so that a wrong CA, a refused client certificate or
    /// bad credentials fail here, with the cause named.
    pub async fn connect_with(
        endpoints: &[String],
        prefix: &str,
        how: &EtcdOptions,
        call_timeout: Duration,
    ) -> Result<EtcdStore, StoreError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(call_timeout)
            .with_timeout(call_timeout)
            .with_keep_alive(Duration::from_secs(2), call_timeout);
        if let Some(tls) = tls_options(how)? {
            options = options.with_tls(tls);
        }
        if let Some(user) = &how.user {
            let password = match &how.password {
                Some(Password::Inline(p)) => p.clone(),
                Some(Password::File(f)) => std::fs::read_to_string(f)
                    .map_err(|e| unavailable(format!("password_file {}: {e}", f.display())))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
                None => String::new(),
            };
            options = options.with_user(user.clone(), password);
        }
        let shown = endpoints.join(",");
        let client =
            tokio::time::timeout(call_timeout * 2, Client::connect(endpoints, Some(options)))
                .await
                .map_err(|_| {
                    unavailable(format!(
                        "no member of {shown} answered within {call_timeout:?}"
                    ))
                })?
                .map_err(|e| unavailable(format!("cannot connect to {shown}: {}", cause(&e))))?;
        // tonic connects lazily: one read proves the TLS handshake and the
        // credentials now, not at the first commit. It is a transaction of
        // `TXN_OPS_PROBE` reads, so that members left at etcd's default
        // `--max-txn-ops` (128) are named here: a node's claims take 512
        // operations, and a refused claim would leave its channels unowned.
        let mut kv = client.kv_client();
        let reads: Vec<TxnOp> = (0..TXN_OPS_PROBE)
            .map(|_| TxnOp::get(prefix.as_bytes().to_vec(), None))
            .collect();
        let probe = tokio::time::timeout(call_timeout, kv.txn(EtcdTxn::new().and_then(reads)))
            .await
            .map_err(|_| {
                unavailable(format!(
                    "no member of {shown} answered within {call_timeout:?}"
                ))
            })?;
        if let Err(e) = probe {
            if cause(&e).contains("too many operations") {
                return Err(StoreError::TooLarge(format!(
                    "{shown} refuses a transaction of {TXN_OPS_PROBE} operations ({}): start every \
                     member with --max-txn-ops 20000 --max-request-bytes 11000000 (README, \"Stores\")",
                    cause(&e)
                )));
            }
            return Err(unavailable(format!(
                "{shown}: {}{}",
                cause(&e),
                tls_hint(how, &e)
            )));
        }
        let mut prefix = prefix.as_bytes().to_vec();
        if !prefix.ends_with(b"/") {
            prefix.push(b'/');
        }
        Ok(EtcdStore {
            client,
            prefix,
            call_timeout,
            endpoints: shown,
        })
    }

    /// Every change to the keys in `[start, end)` from etcd's first
    /// revision to now, in revision order: etcd keeps every revision until
    /// it is compacted (reelfleet never compacts; an operator's compaction
    /// makes this an error that says so). For audits, never for the
    /// machines.
    pub async fn history(&self, start: &[u8], end: &[u8]) -> Result<Vec<Change>, StoreError> {
        let mut client = self.client.clone();
        let now = client
            .get(self.meta_key(), None)
            .await
            .map_err(|e| self.failed(&e))?
            .header()
            .map(|h| h.revision())
            .unwrap_or(0);
        let opts = etcd_client::WatchOptions::new()
            .with_range(self.data_key(end))
            .with_start_revision(1);
        let (_watcher, mut stream) = client
            .watch(self.data_key(start), Some(opts))
            .await
            .map_err(|e| self.failed(&e))?;
        let mut out = Vec::new();
        loop {
            let Ok(msg) = tokio::time::timeout(HISTORY_QUIET, stream.message()).await else {
                break;
            };
            let Some(resp) = msg.map_err(|e| self.failed(&e))? else {
                break;
            };
            if resp.compact_revision() > 0 || resp.canceled() {
                return Err(unavailable(format!(
                    "the history is gone: compacted up to revision {} ({})",
                    resp.compact_revision(),
                    resp.cancel_reason()
                )));
            }
            let mut caught_up = false;
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                if kv.mod_revision() > now {
                    caught_up = true;
                    continue;
                }
                let e = self.entry(kv)?;
                let value = match ev.event_type() {
                    etcd_client::EventType::Put => Some(e.value),
                    etcd_client::EventType::Delete => None,
                };
                out.push(Change {
                    revision: e.version,
                    key: e.key,
                    value,
                });
            }
            if caught_up || out.last().is_some_and(|c| c.revision >= now as u64) {
                break;
            }
        }
        Ok(out)
    }

    /// A failed call as the machines see it: unavailable, with the members
    /// and the gRPC code and message (not Rust debug output).
    fn failed(&self, e: &etcd_client::Error) -> StoreError {
        unavailable(format!("{} (members {})", cause(e), self.endpoints))
    }

    fn data_key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(b"d/");
        k.extend_from_slice(key);
        k
    }

    fn data_start(&self) -> Vec<u8> {
        self.data_key(b"")
    }

    /// The end of the data keys: `<prefix>d0` (`'0'` follows `'/'`).
    fn data_end(&self) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(b"d0");
        k
    }

    fn meta_key(&self) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.push(b'm');
        k
    }

    /// The entry a transaction's get of one key found, if any.
    fn got_one(&self, r: &etcd_client::TxnOpResponse) -> Result<Option<Entry>, StoreError> {
        match r {
            etcd_client::TxnOpResponse::Get(g) => {
                g.kvs().first().map(|kv| self.entry(kv)).transpose()
            }
            _ => Err(StoreError::Corrupt(
                "etcd answered a read with something else".into(),
            )),
        }
    }

    fn read_timed_out(&self) -> StoreError {
        unavailable(format!("read timed out after {:?}", self.call_timeout))
    }

    fn entry(&self, kv: &etcd_client::KeyValue) -> Result<Entry, StoreError> {
        let key = kv
            .key()
            .strip_prefix(self.data_start().as_slice())
            .ok_or_else(|| {
                StoreError::Corrupt("etcd returned a key outside the store's prefix".into())
            })?;
        Ok(Entry {
            key: actors::store::key(key),
            value: kv.value().to_vec(),
            version: u64::try_from(kv.mod_revision())
                .map_err(|_| StoreError::Corrupt("negative revision".into()))?,
        })
    }

    async fn range_at(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        revision: Option<i64>,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        if !end.is_empty() && start >= end {
            return Ok(out);
        }
        let mut from = self.data_key(start);
        let to = if end.is_empty() {
            self.data_end()
        } else {
            self.data_key(end)
        };
        while out.len() < limit {
            let want = (limit - out.len()).min(RANGE_CHUNK as usize) as i64;
            let mut opts = GetOptions::new().with_range(to.clone()).with_limit(want);
            if let Some(r) = revision {
                opts = opts.with_revision(r);
            }
            let mut kv = self.client.kv_client();
            let resp = tokio::time::timeout(self.call_timeout, kv.get(from.clone(), Some(opts)))
                .await
                .map_err(|_| {
                    unavailable(format!(
                        "range read timed out after {:?}",
                        self.call_timeout
                    ))
                })?
                .map_err(|e| self.failed(&e))?;
            let kvs = resp.kvs();
            for kv in kvs {
                out.push(self.entry(kv)?);
            }
            match kvs.last() {
                Some(last) if kvs.len() as i64 == want && resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// A transaction's checks as etcd compares.
    fn compares(&self, txn: &Txn) -> Vec<Compare> {
        txn.checks
            .iter()
            .map(|c| match c {
                Check::Absent(k) => Compare::version(self.data_key(k), CompareOp::Equal, 0),
                Check::Equals(k, v) => {
                    Compare::value(self.data_key(k), CompareOp::Equal, v.clone())
                }
                Check::VersionIs(k, 0) => Compare::version(self.data_key(k), CompareOp::Equal, 0),
                Check::VersionIs(k, v) => Compare::mod_revision(
                    self.data_key(k),
                    CompareOp::Equal,
                    i64::try_from(*v).unwrap_or(i64::MAX),
                ),
            })
            .collect()
    }

    /// A transaction's writes as etcd ops, and whether it writes at all.
    fn write_ops(&self, txn: &Txn) -> (Vec<TxnOp>, bool) {
        // etcd refuses a txn that writes one key twice; applied in order,
        // only the last write of each key counts, so send just that one.
        let mut last: std::collections::BTreeMap<&[u8], &Write> = std::collections::BTreeMap::new();
        for w in &txn.writes {
            last.insert(w.key(), w);
        }
        let mut ops: Vec<TxnOp> = last
            .values()
            .map(|w| match w {
                Write::Put(k, v) => TxnOp::put(self.data_key(k), v.clone(), None),
                Write::Delete(k) => TxnOp::delete(self.data_key(k), None),
            })
            .collect();
        let writes = !ops.is_empty();
        if writes {
            ops.push(TxnOp::put(self.meta_key(), Vec::new(), None));
        } else {
            // etcd counts a txn whose branches hold no op that is not a
            // serializable range as serializable, and an empty branch holds
            // none: a check-only txn would then be answered from the local
            // member's state, which may be behind (seen: 6 of 12 conformance
            // runs under load judged a check against a version one write
            // old). One linearizable read makes the whole txn linearizable.
            ops.push(TxnOp::get(self.meta_key(), None));
        }
        (ops, writes)
    }

    /// Checks then writes, all or nothing, and then point reads of `reads`
    /// in the same transaction (none for a plain commit); the commit's
    /// version and what was read.
    async fn commit_reading(
        &self,
        txn: &Txn,
        reads: &[Key],
    ) -> Result<(Version, Vec<Option<Entry>>), StoreError> {
        check_txn(txn)?;
        let compares = self.compares(txn);
        let (mut ops, writes) = self.write_ops(txn);
        ops.extend(reads.iter().map(|k| TxnOp::get(self.data_key(k), None)));
        let mut kv = self.client.kv_client();
        let call = kv.txn(EtcdTxn::new().when(compares).and_then(ops));
        let resp = match tokio::time::timeout(self.call_timeout, call).await {
            Err(_) if writes => return Err(StoreError::CommitUnknown),
            Err(_) => {
                return Err(unavailable(format!(
                    "commit timed out after {:?}",
                    self.call_timeout
                )))
            }
            // A failed call that writes may still have been applied (a
            // leader change mid-call, a proposal that commits once a quorum
            // returns): only a read can tell.
            Ok(Err(e)) if writes && !never_sent(&e) => {
                tracing::warn!(
                    endpoints = %self.endpoints,
                    cause = %cause(&e),
                    "etcd commit failed after it may have been sent: outcome unknown"
                );
                return Err(StoreError::CommitUnknown);
            }
            Ok(Err(e)) => {
                return Err(unavailable(format!(
                    "{} (members {}): nothing was applied",
                    cause(&e),
                    self.endpoints
                )))
            }
            Ok(Ok(r)) => r,
        };
        if !resp.succeeded() {
            return Err(StoreError::Conflict { check_index: None });
        }
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let version =
            u64::try_from(revision).map_err(|_| StoreError::Corrupt("negative revision".into()))?;
        // The reads are the branch's last answers, one per key.
        let answers = resp.op_responses();
        let Some(first_read) = answers.len().checked_sub(reads.len()) else {
            return Err(StoreError::CommitUnknown);
        };
        let entries = answers[first_read..]
            .iter()
            .map(|r| self.got_one(r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((version, entries))
    }
}

impl Store for EtcdStore {
    async fn get(&self, keys: &[Key]) -> Result<Vec<Option<Entry>>, StoreError> {
        check_get(keys)?;
        // One transaction of range reads: all keys at one revision.
        let ops: Vec<TxnOp> = keys
            .iter()
            .map(|k| TxnOp::get(self.data_key(k), None))
            .collect();
        let mut kv = self.client.kv_client();
        let resp = tokio::time::timeout(self.call_timeout, kv.txn(EtcdTxn::new().and_then(ops)))
            .await
            .map_err(|_| self.read_timed_out())?
            .map_err(|e| self.failed(&e))?;
        let out = resp
            .op_responses()
            .iter()
            .map(|r| self.got_one(r))
            .collect::<Result<Vec<_>, _>>()?;
        if out.len() != keys.len() {
            return Err(answered_short());
        }
        Ok(out)
    }

    async fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        check_range(start, end, limit)?;
        self.range_at(start, end, limit, None).await
    }

    async fn commit(&self, txn: &Txn) -> Result<Version, StoreError> {
        self.commit_reading(txn, &[])
            .await
            .map(|(version, _)| version)
    }

    /// The commit and the reads after it in one etcd transaction: the
    /// reads go last in its success branch, so they see the writes.
    async fn commit_get(
        &self,
        txn: &Txn,
        keys: &[Key],
    ) -> Result<(Version, Vec<Option<Entry>>), StoreError> {
        check_get(keys)?;
        self.commit_reading(txn, keys).await
    }

    async fn snapshot(&self) -> Result<Box<dyn Snapshot>, StoreError> {
        // Pin the current revision: every page is read at it.
        let mut kv = self.client.kv_client();
        let resp = tokio::time::timeout(self.call_timeout, kv.get(self.meta_key(), None))
            .await
            .map_err(|_| unavailable("snapshot timed out"))?
            .map_err(|e| self.failed(&e))?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok(Box::new(EtcdSnapshot {
            store: self.clone(),
            revision,
        }))
    }
}

struct EtcdSnapshot {
    store: EtcdStore,
    revision: i64,
}

impl Snapshot for EtcdSnapshot {
    fn version(&self) -> Version {
        u64::try_from(self.revision).unwrap_or(0)
    }
    fn page<'a>(
        &'a mut self,
        start: &'a [u8],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Entry>, StoreError>> {
        Box::pin(async move {
            self.store
                .range_at(start, b"", limit, Some(self.revision))
                .await
        })
    }
}
