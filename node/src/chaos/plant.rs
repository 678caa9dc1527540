//! Violations planted behind the fleet's back, right before the audit, to
//! show that the audit catches what it is for (`reelfleet chaos --plant`):
//! a second upload of a key already published, made through the real
//! publisher client, a quota ledger raised past its bucket's limit,
//! written straight into the store, a panic's line in a node's log, and a
//! channel write tagged with a superseded owner.

use std::collections::BTreeMap;
use std::sync::Arc;

use actors::records::{Key as RecordKey, OwnerRecord, QuotaRecord};
use actors::store::{prefix_end, Txn, Write};
use serde::Deserialize;

use crate::emulate::youtube::YoutubeEmulator;
use crate::live::writer_tag::{writer_key, WriterTag};
use crate::publish::youtube::YoutubePublisher;
use crate::publish::{Publisher, Upload};
use crate::store::any::AnyStore;
use crate::store::Store;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Plant {
    /// Publish a published key a second time.
    DuplicatePublish,
    /// Raise a quota ledger past its bucket's limit.
    QuotaOverLimit,
    /// A panic's line in the first node's log, as the panic hook writes
    /// it.
    NodePanic,
    /// A channel write accepted from a superseded owner: the writer tag of
    /// a channel, written straight into the store, names another node at
    /// an epoch before the owner's (what a broken epoch fence would leave).
    SupersededWrite,
}

/// Plants `what`; a description of what was planted, for the log.
pub async fn plant(
    what: Plant,
    store: &AnyStore,
    topo: &topology::Topology,
    emu: &Arc<YoutubeEmulator>,
    dir: &std::path::Path,
) -> Result<String, String> {
    match what {
        Plant::DuplicatePublish => duplicate(emu, dir).await,
        Plant::QuotaOverLimit => quota(store, topo).await,
        Plant::NodePanic => panic_line(dir),
        Plant::SupersededWrite => superseded(store, topo).await,
    }
}

fn panic_line(dir: &std::path::Path) -> Result<String, String> {
    use std::io::Write as _;
    let log = dir.join("logs").join("n0.log");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    writeln!(
        f,
        "thread 'tokio-runtime-worker' panicked at node/src/planted.rs:1:1:\nplanted by reelfleet chaos --plant node-panic"
    )
    .map_err(|e| format!("cannot write {}: {e}", log.display()))?;
    Ok(format!("a panic's line appended to {}", log.display()))
}

async fn duplicate(emu: &Arc<YoutubeEmulator>, dir: &std::path::Path) -> Result<String, String> {
    let mut keys: BTreeMap<String, usize> = BTreeMap::new();
    for v in emu.videos() {
        if let Some(k) = v
            .description
            .lines()
            .find_map(|l| l.strip_prefix("reelfleet-key: "))
        {
            *keys.entry(k.trim_end().to_string()).or_default() += 1;
        }
    }
    let key = keys
        .into_keys()
        .next()
        .ok_or("nothing was published: no key to publish twice")?;
    let video = dir.join("planted-duplicate.bin");
    std::fs::write(&video, b"a second copy, planted")
        .map_err(|e| format!("cannot write {}: {e}", video.display()))?;
    let publisher = YoutubePublisher::new(emu.publisher_config(), None).map_err(|e| e.reason)?;
    let up = Upload {
        idempotency_key: key.clone(),
        video,
        title: "planted duplicate".into(),
        description: String::new(),
        metadata: serde_json::json!({}),
    };
    let out = publisher.publish(&up, Arc::new(|| true)).await;
    Ok(format!("published {key} a second time: {out:?}"))
}

async fn quota(store: &AnyStore, topo: &topology::Topology) -> Result<String, String> {
    let q = b"q/".as_slice();
    let rows = store
        .range(q, &prefix_end(q), 1)
        .await
        .map_err(|e| format!("the store: {e}"))?;
    let e = rows.into_iter().next().ok_or("no quota ledger to raise")?;
    let mut rec = QuotaRecord::decode(&e.value).map_err(|err| format!("quota record: {err:?}"))?;
    let limit = topo
        .projects
        .first()
        .and_then(|p| p.buckets.first())
        .map(|b| b.units_per_day)
        .ok_or("no project")?;
    if let Some(u) = rec.used.first_mut() {
        *u = limit + 1;
    }
    let txn = Txn {
        checks: vec![],
        writes: vec![Write::Put(e.key.clone(), rec.encode())],
    };
    store
        .commit(&txn)
        .await
        .map_err(|err| format!("the store: {err}"))?;
    Ok(format!(
        "raised quota ledger {:?} to {} units",
        String::from_utf8_lossy(&e.key),
        limit + 1
    ))
}

async fn superseded(store: &AnyStore, topo: &topology::Topology) -> Result<String, String> {
    let o = b"o/".as_slice();
    let rows = store
        .range(o, &prefix_end(o), 1)
        .await
        .map_err(|e| format!("the store: {e}"))?;
    let e = rows.into_iter().next().ok_or("no owner record")?;
    let Some(RecordKey::Owner(ch)) = RecordKey::parse(&e.key) else {
        return Err("an owner record under a key that is not an owner's".into());
    };
    let owner = OwnerRecord::decode(&e.value).map_err(|err| format!("owner record: {err:?}"))?;
    let other = (0..topo.nodes.len())
        .find(|i| owner.node.map(|n| n.index()) != Some(*i))
        .map(|i| &topo.nodes[i])
        .ok_or("one node only: no other owner to plant")?;
    let tag = WriterTag {
        node: other.name.clone(),
        epoch: owner.epoch.saturating_sub(1),
        incarnation: owner.incarnation,
    };
    let txn = Txn {
        checks: vec![],
        writes: vec![Write::Put(writer_key(ch), tag.encode())],
    };
    store
        .commit(&txn)
        .await
        .map_err(|err| format!("the store: {err}"))?;
    Ok(format!(
        "a write to {} tagged {} at epoch {}",
        topo.channel(ch).name,
        tag.node,
        tag.epoch
    ))
}
