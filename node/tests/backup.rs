//! Backup and restore: round trips between backends keep every key, value
//! and count; a corrupt or truncated file is refused before anything is
//! written; a non-empty target is refused without --force.

use actors::rng::SeededRng;
use actors::store::{Txn, Write};
use reelfleet::store::backup::{backup, restore, verify};
use reelfleet::store::mem::MemBackend;
use reelfleet::store::redb_store::RedbStore;
use reelfleet::store::Store;

async fn fill<S: Store>(s: &S, n: u64, seed: u64) {
    let mut rng = SeededRng::new(seed);
    let mut batch = Vec::new();
    for i in 0..n {
        let len = rng.below(300) as usize;
        let value: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        batch.push(Write::Put(
            actors::store::key(format!("key/{:016x}/{i}", rng.next_u64()).as_bytes()),
            value,
        ));
        if batch.len() == 500 {
            s.commit(&Txn {
                checks: vec![],
                writes: std::mem::take(&mut batch),
            })
            .await
            .expect("fill");
        }
    }
    s.commit(&Txn {
        checks: vec![],
        writes: batch,
    })
    .await
    .expect("fill");
}

async fn all<S: Store>(s: &S) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut start = Vec::new();
    loop {
        let page = s.range(&start, b"", 1000).await.expect("range");
        let Some(last) = page.last() else { break };
        start = last.key.to_vec();
        start.push(0);
        let n = page.len();
        out.extend(page.into_iter().map(|e| (e.key.to_vec(), e.value)));
        if n < 1000 {
            break;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_to_redb_and_back_keeps_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("a.rfbk");
    let source = MemBackend::new();
    fill(&source, 5_000, 1).await;
    let (count, _) = backup(&source, std::fs::File::create(&file).expect("create"))
        .await
        .expect("backup");
    assert_eq!(count, 5_000);
    assert_eq!(
        verify(std::fs::File::open(&file).expect("open"))
            .expect("verify")
            .0,
        5_000
    );
    let redb = RedbStore::open(&dir.path().join("r.redb")).expect("redb");
    let restored = restore(&redb, || std::fs::File::open(&file), false)
        .await
        .expect("restore");
    assert_eq!(restored, 5_000);
    assert_eq!(all(&redb).await, all(&source).await);
    // And back again, into a fresh in-memory store.
    let file2 = dir.path().join("b.rfbk");
    backup(&redb, std::fs::File::create(&file2).expect("create"))
        .await
        .expect("backup");
    let back = MemBackend::new();
    restore(&back, || std::fs::File::open(&file2), false)
        .await
        .expect("restore");
    assert_eq!(all(&back).await, all(&source).await);
    // A non-empty target needs --force.
    let e = restore(&back, || std::fs::File::open(&file2), false)
        .await
        .expect_err("refused");
    assert!(e.0.contains("not empty"), "{e}");
    restore(&back, || std::fs::File::open(&file2), true)
        .await
        .expect("forced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_backup_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("a.rfbk");
    let source = MemBackend::new();
    fill(&source, 300, 2).await;
    backup(&source, std::fs::File::create(&file).expect("create"))
        .await
        .expect("backup");
    let good = std::fs::read(&file).expect("read");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        ("checksum", {
            let mut b = good.clone();
            let mid = b.len() / 2;
            b[mid] ^= 0x40;
            b
        }),
        ("after its checksum", {
            let mut b = good.clone();
            b.push(7);
            b
        }),
        ("RFBACKUP", b"not a backup at all".to_vec()),
    ];
    for (expect, bytes) in cases {
        let bad = dir.path().join("bad.rfbk");
        std::fs::write(&bad, &bytes).expect("write");
        let e = verify(std::fs::File::open(&bad).expect("open")).expect_err("must be refused");
        let target = MemBackend::new();
        let r = restore(&target, || std::fs::File::open(&bad), false).await;
        assert!(r.is_err());
        assert!(
            all(&target).await.is_empty(),
            "{expect}: something was written"
        );
        // The message says what is wrong (any of the checks may catch a flip).
        assert!(
            e.0.contains(expect)
                || (expect == "checksum" && (e.0.contains("corrupt") || e.0.contains("truncated"))),
            "{expect}: {e}"
        );
    }
}
