//! The conformance suite (tests/common/conformance.rs) against the
//! in-memory and redb backends.

mod common;

use actors::store::*;
use reelfleet::store::mem::MemBackend;
use reelfleet::store::redb_store::RedbStore;
use reelfleet::store::Store;

fn put(k: &str, v: &str) -> Write {
    Write::Put(actors::store::key(k.as_bytes()), v.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_backend_conforms() {
    common::conformance::suite(|| async { MemBackend::new() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_backend_conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n = std::sync::atomic::AtomicU64::new(0);
    common::conformance::suite(|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = dir.path().join(format!("s{i}.redb"));
        async move { RedbStore::open(&path).expect("open redb") }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_keeps_everything_across_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("reopen.redb");
    {
        let s = RedbStore::open(&path).expect("open");
        for i in 0..50 {
            s.commit(&Txn {
                checks: vec![],
                writes: vec![put(&format!("k{i:03}"), &format!("v{i}"))],
            })
            .await
            .expect("write");
        }
    }
    let s = RedbStore::open(&path).expect("reopen");
    let all = s.range(b"", b"", 1000).await.expect("range");
    assert_eq!(all.len(), 50);
    assert_eq!(all[49].version, 50, "versions survive too");
}
