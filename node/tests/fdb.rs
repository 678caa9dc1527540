//! The conformance suite against FoundationDB, where `FDB_CLUSTER_FILE`
//! names a reachable cluster; skipped with a printed reason otherwise.
//! Built only with `--features fdb` (CI type-checks it; running needs
//! FoundationDB's `libfdb_c`).

#![cfg(feature = "fdb")]

mod common;

use reelfleet::store::fdb_store::{boot, FdbStore};

#[test]
fn fdb_backend_conforms() {
    let Ok(cluster_file) = std::env::var("FDB_CLUSTER_FILE") else {
        eprintln!(
            "skipped: FDB_CLUSTER_FILE is not set (point it at a cluster file to run these tests)"
        );
        return;
    };
    // Safety: once in this process, and the guard outlives every store.
    let network = unsafe { boot() };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let run = std::process::id();
    let n = std::sync::atomic::AtomicU64::new(0);
    rt.block_on(common::conformance::suite(|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let store = FdbStore::open(Some(&cluster_file), &format!("conformance-{run}-{i}"))
            .expect("open fdb");
        async move { store }
    }));
    drop(network);
}
