//! One conformance suite for every store backend, generic over the trait:
//! atomicity under concurrent conflicting writers, checks that fail write
//! nothing, ordering and limits of range reads, versions, size limits, and a
//! randomized differential test against the in-memory model.

use std::sync::Arc;

use actors::rng::SeededRng;
use actors::store::*;
use reelfleet::store::mem::MemBackend;
use reelfleet::store::redb_store::RedbStore;
use reelfleet::store::Store;

fn put(k: &str, v: &str) -> Write {
    Write::Put(k.as_bytes().to_vec(), v.as_bytes().to_vec())
}

async fn checks_that_fail_write_nothing<S: Store>(s: &S) {
    let v1 = s
        .commit(&Txn {
            checks: vec![],
            writes: vec![put("a", "1")],
        })
        .await
        .expect("first write");
    let r = s
        .commit(&Txn {
            checks: vec![Check::VersionIs(b"a".to_vec(), v1 + 100)],
            writes: vec![put("b", "2"), put("a", "x")],
        })
        .await;
    assert_eq!(
        r,
        Err(StoreError::Conflict {
            check_index: Some(0)
        })
    );
    let got = s.get(&[b"a".to_vec(), b"b".to_vec()]).await.expect("get");
    assert_eq!(
        got[0].as_ref().map(|e| e.value.clone()),
        Some(b"1".to_vec())
    );
    assert_eq!(got[1], None);
    // Each kind of check, passing and failing.
    for (check, ok) in [
        (Check::Absent(b"zz".to_vec()), true),
        (Check::Absent(b"a".to_vec()), false),
        (Check::Equals(b"a".to_vec(), b"1".to_vec()), true),
        (Check::Equals(b"a".to_vec(), b"2".to_vec()), false),
        (Check::VersionIs(b"a".to_vec(), v1), true),
        (Check::VersionIs(b"zz".to_vec(), 0), true),
    ] {
        let r = s
            .commit(&Txn {
                checks: vec![check.clone()],
                writes: vec![],
            })
            .await;
        assert_eq!(r.is_ok(), ok, "{check:?}");
    }
}

async fn ranges_are_ordered_and_limited<S: Store>(s: &S) {
    let writes = ["r/d", "r/a", "r/c", "r/b", "r/e", "q", "s"]
        .iter()
        .map(|k| put(k, k))
        .collect();
    s.commit(&Txn {
        checks: vec![],
        writes,
    })
    .await
    .expect("write");
    let keys = |v: Vec<Entry>| {
        v.into_iter()
            .map(|e| String::from_utf8(e.key).unwrap_or_default())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(s.range(b"r/", b"r0", 10).await.expect("range")),
        ["r/a", "r/b", "r/c", "r/d", "r/e"]
    );
    assert_eq!(
        keys(s.range(b"r/", b"r0", 2).await.expect("range")),
        ["r/a", "r/b"]
    );
    assert_eq!(
        keys(s.range(b"r/b", b"r/d", 10).await.expect("range")),
        ["r/b", "r/c"]
    );
    assert!(s.range(b"r/d", b"r/b", 10).await.expect("empty").is_empty());
    assert!(matches!(
        s.range(b"", b"", 0).await,
        Err(StoreError::TooLarge(_))
    ));
}

async fn versions_follow_the_last_write<S: Store>(s: &S) {
    let v1 = s
        .commit(&Txn {
            checks: vec![],
            writes: vec![put("v1", "a"), put("v2", "a")],
        })
        .await
        .expect("write");
    let v2 = s
        .commit(&Txn {
            checks: vec![],
            writes: vec![put("v1", "b")],
        })
        .await
        .expect("write");
    assert!(v2 > v1);
    let got = s.get(&[b"v1".to_vec(), b"v2".to_vec()]).await.expect("get");
    assert_eq!(got[0].as_ref().map(|e| e.version), Some(v2));
    assert_eq!(got[1].as_ref().map(|e| e.version), Some(v1));
    s.commit(&Txn {
        checks: vec![],
        writes: vec![Write::Delete(b"v1".to_vec())],
    })
    .await
    .expect("delete");
    assert_eq!(s.get(&[b"v1".to_vec()]).await.expect("get")[0], None);
}

async fn oversize_is_refused_whole<S: Store>(s: &S) {
    let before = s
        .range(b"", b"", RANGE_LIMIT_MAX)
        .await
        .expect("range")
        .len();
    for txn in [
        Txn {
            checks: vec![],
            writes: vec![
                put("ok", "1"),
                Write::Put(b"big".to_vec(), vec![0; VALUE_BYTES_MAX + 1]),
            ],
        },
        Txn {
            checks: vec![],
            writes: vec![Write::Put(vec![b'k'; KEY_BYTES_MAX + 1], vec![])],
        },
        Txn {
            checks: vec![],
            writes: (0..120)
                .map(|i| Write::Put(format!("t{i}").into_bytes(), vec![0; 99_000]))
                .collect(),
        },
    ] {
        assert!(matches!(s.commit(&txn).await, Err(StoreError::TooLarge(_))));
    }
    let after = s
        .range(b"", b"", RANGE_LIMIT_MAX)
        .await
        .expect("range")
        .len();
    assert_eq!(before, after, "nothing written");
    // Exactly at the limits is fine.
    s.commit(&Txn {
        checks: vec![],
        writes: vec![Write::Put(
            vec![b'k'; KEY_BYTES_MAX],
            vec![1; VALUE_BYTES_MAX],
        )],
    })
    .await
    .expect("at the limits");
}

/// Many writers increment one counter with check-and-set; every commit that
/// succeeded is counted exactly once.
async fn concurrent_writers_are_atomic<S: Store + 'static>(s: Arc<S>) {
    const WRITERS: u64 = 16;
    const EACH: u64 = 25;
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            let mut conflicts = 0u64;
            while done < EACH {
                let cur = s.get(&[b"counter".to_vec()]).await.expect("get").remove(0);
                let (n, version) = cur
                    .map(|e| {
                        (
                            u64::from_le_bytes(e.value.try_into().unwrap_or([0; 8])),
                            e.version,
                        )
                    })
                    .unwrap_or((0, 0));
                let txn = Txn {
                    checks: vec![Check::VersionIs(b"counter".to_vec(), version)],
                    writes: vec![Write::Put(
                        b"counter".to_vec(),
                        (n + 1).to_le_bytes().to_vec(),
                    )],
                };
                match s.commit(&txn).await {
                    Ok(_) => done += 1,
                    Err(StoreError::Conflict { .. }) => conflicts += 1,
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.expect("task");
    }
    let v = s
        .get(&[b"counter".to_vec()])
        .await
        .expect("get")
        .remove(0)
        .expect("counter");
    assert_eq!(
        u64::from_le_bytes(v.value.try_into().unwrap_or([0; 8])),
        WRITERS * EACH
    );
    eprintln!("{} commits, {conflicts} conflicts retried", WRITERS * EACH);
}

/// Thousands of random operations, answered by the backend and by the
/// model; every answer must be the same.
async fn differential_against_the_model<S: Store>(s: &S, seed: u64, ops: usize) {
    let mut model = MemStore::new();
    let mut rng = SeededRng::new(seed);
    let key = |rng: &mut SeededRng| format!("k{:02}", rng.below(40)).into_bytes();
    for i in 0..ops {
        let op = match rng.below(10) {
            0..=2 => StoreOp::Get((0..1 + rng.below(4)).map(|_| key(&mut rng)).collect()),
            3 => {
                let (a, b) = (key(&mut rng), key(&mut rng));
                StoreOp::Range {
                    start: a.min(b.clone()),
                    end: if rng.below(4) == 0 { Vec::new() } else { b },
                    limit: 1 + rng.below(20) as usize,
                }
            }
            _ => {
                let mut checks = Vec::new();
                for _ in 0..rng.below(3) {
                    let k = key(&mut rng);
                    let current = model.get(&k);
                    checks.push(match rng.below(4) {
                        0 => Check::Absent(k),
                        1 => Check::Equals(
                            k,
                            current.map(|e| e.value).unwrap_or_else(|| b"?".to_vec()),
                        ),
                        2 => Check::VersionIs(k, current.map(|e| e.version).unwrap_or(0)),
                        _ => Check::VersionIs(k, rng.below(5)),
                    });
                }
                let writes = (0..rng.below(4))
                    .map(|_| {
                        let k = key(&mut rng);
                        if rng.below(4) == 0 {
                            Write::Delete(k)
                        } else {
                            Write::Put(k, format!("v{}", rng.below(1000)).into_bytes())
                        }
                    })
                    .collect();
                StoreOp::Commit(Txn { checks, writes })
            }
        };
        let expected = model.apply(&op);
        let got = s.apply(&op).await;
        assert_eq!(got, expected, "op {i} of seed {seed}: {op:?}");
    }
}

async fn suite<S: Store + 'static>(fresh: impl Fn() -> S) {
    checks_that_fail_write_nothing(&fresh()).await;
    ranges_are_ordered_and_limited(&fresh()).await;
    versions_follow_the_last_write(&fresh()).await;
    oversize_is_refused_whole(&fresh()).await;
    concurrent_writers_are_atomic(Arc::new(fresh())).await;
    for seed in 1..=3 {
        differential_against_the_model(&fresh(), seed, 2_000).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_backend_conforms() {
    suite(MemBackend::new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_backend_conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n = std::sync::atomic::AtomicU64::new(0);
    suite(|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        RedbStore::open(&dir.path().join(format!("s{i}.redb"))).expect("open redb")
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
