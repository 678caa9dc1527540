//! One conformance suite for every store backend, generic over the trait:
//! atomicity under concurrent conflicting writers, checks that fail write
//! nothing, ordering and limits of range reads, versions, size limits, and a
//! randomized differential test against the in-memory model.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use actors::rng::SeededRng;
use actors::store::*;
use reelfleet::store::Store;

fn put(k: &str, v: &str) -> Write {
    Write::Put(actors::store::key(k.as_bytes()), v.as_bytes().to_vec())
}

pub async fn checks_that_fail_write_nothing<S: Store>(s: &S) {
    let v1 = s
        .commit(&Txn {
            checks: vec![],
            writes: vec![put("a", "1")],
        })
        .await
        .expect("first write");
    let r = s
        .commit(&Txn {
            checks: vec![Check::VersionIs(actors::store::key(b"a"), v1 + 100)],
            writes: vec![put("b", "2"), put("a", "x")],
        })
        .await;
    // etcd cannot say which check failed; the others say check 0.
    assert!(
        matches!(
            r,
            Err(StoreError::Conflict {
                check_index: None | Some(0)
            })
        ),
        "{r:?}"
    );
    let got = s
        .get(&[actors::store::key(b"a"), actors::store::key(b"b")])
        .await
        .expect("get");
    assert_eq!(
        got[0].as_ref().map(|e| e.value.clone()),
        Some(b"1".to_vec())
    );
    assert_eq!(got[1], None);
    // Each kind of check, passing and failing.
    for (check, ok) in [
        (Check::Absent(actors::store::key(b"zz")), true),
        (Check::Absent(actors::store::key(b"a")), false),
        (Check::Equals(actors::store::key(b"a"), b"1".to_vec()), true),
        (
            Check::Equals(actors::store::key(b"a"), b"2".to_vec()),
            false,
        ),
        (Check::VersionIs(actors::store::key(b"a"), v1), true),
        (Check::VersionIs(actors::store::key(b"zz"), 0), true),
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

/// A commit with reads after it (`StoreOp::CommitGet`, a lease renewal
/// carrying its refresh): the reads see the commit's writes at its
/// version; a failed check or a read over the limits writes nothing.
pub async fn commit_then_reads<S: Store>(s: &S) {
    let k = |x: &str| actors::store::key(x.as_bytes());
    let v1 = s
        .commit(&Txn {
            checks: vec![],
            writes: vec![put("other", "o")],
        })
        .await
        .expect("first write");
    let renew = |value: &str, checks: Vec<Check>, keys: Vec<Key>| StoreOp::CommitGet {
        txn: Txn {
            checks,
            writes: vec![put("lease", value)],
        },
        keys: keys.into_boxed_slice(),
    };
    match s
        .apply(&renew(
            "1",
            vec![],
            vec![k("lease"), k("other"), k("absent")],
        ))
        .await
    {
        StoreReply::CommittedGot { version, entries } => {
            assert!(version > v1, "{version} after {v1}");
            assert_eq!(entries.len(), 3, "one slot per key");
            let lease = entries[0].as_ref().expect("the commit's own write is read");
            assert_eq!(
                (lease.value.as_slice(), lease.version),
                (&b"1"[..], version)
            );
            let other = entries[1].as_ref().expect("an older key is read");
            assert_eq!((other.value.as_slice(), other.version), (&b"o"[..], v1));
            assert_eq!(entries[2], None);
        }
        r => panic!("a commit with reads answered {r:?}"),
    }
    let lease_is_1 = |got: Vec<Option<Entry>>| {
        assert_eq!(
            got[0].as_ref().map(|e| e.value.clone()),
            Some(b"1".to_vec())
        )
    };
    // A failed check: nothing written, nothing read.
    let r = s
        .apply(&renew(
            "2",
            vec![Check::Absent(k("other"))],
            vec![k("lease")],
        ))
        .await;
    assert!(
        matches!(r, StoreReply::Failed(StoreError::Conflict { .. })),
        "{r:?}"
    );
    lease_is_1(s.get(&[k("lease")]).await.expect("get"));
    // A read over the limits: refused whole, the commit with it.
    let big = actors::store::key(&vec![b'x'; KEY_BYTES_MAX + 1]);
    let r = s.apply(&renew("3", vec![], vec![big])).await;
    assert!(
        matches!(r, StoreReply::Failed(StoreError::TooLarge(_))),
        "{r:?}"
    );
    lease_is_1(s.get(&[k("lease")]).await.expect("get"));
}

pub async fn ranges_are_ordered_and_limited<S: Store>(s: &S) {
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
            .map(|e| String::from_utf8(e.key.to_vec()).unwrap_or_default())
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

pub async fn versions_follow_the_last_write<S: Store>(s: &S) {
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
    let got = s
        .get(&[actors::store::key(b"v1"), actors::store::key(b"v2")])
        .await
        .expect("get");
    assert_eq!(got[0].as_ref().map(|e| e.version), Some(v2));
    assert_eq!(got[1].as_ref().map(|e| e.version), Some(v1));
    s.commit(&Txn {
        checks: vec![],
        writes: vec![Write::Delete(actors::store::key(b"v1"))],
    })
    .await
    .expect("delete");
    assert_eq!(
        s.get(&[actors::store::key(b"v1")]).await.expect("get")[0],
        None
    );
}

pub async fn oversize_is_refused_whole<S: Store>(s: &S) {
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
                Write::Put(actors::store::key(b"big"), vec![0; VALUE_BYTES_MAX + 1]),
            ],
        },
        Txn {
            checks: vec![],
            writes: vec![Write::Put(Key::from_elem(b'k', KEY_BYTES_MAX + 1), vec![])],
        },
        Txn {
            checks: vec![],
            writes: (0..120)
                .map(|i| {
                    Write::Put(
                        actors::store::key(format!("t{i}").as_bytes()),
                        vec![0; 99_000],
                    )
                })
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
            Key::from_elem(b'k', KEY_BYTES_MAX),
            vec![1; VALUE_BYTES_MAX],
        )],
    })
    .await
    .expect("at the limits");
}

/// Many writers increment one counter with check-and-set; every commit that
/// succeeded is counted exactly once.
pub async fn concurrent_writers_are_atomic<S: Store + 'static>(s: Arc<S>) {
    const WRITERS: u64 = 16;
    const EACH: u64 = 25;
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            let mut conflicts = 0u64;
            while done < EACH {
                let cur = s
                    .get(&[actors::store::key(b"counter")])
                    .await
                    .expect("get")
                    .remove(0);
                let (n, version) = cur
                    .map(|e| {
                        (
                            u64::from_le_bytes(e.value.try_into().unwrap_or([0; 8])),
                            e.version,
                        )
                    })
                    .unwrap_or((0, 0));
                let txn = Txn {
                    checks: vec![Check::VersionIs(actors::store::key(b"counter"), version)],
                    writes: vec![Write::Put(
                        actors::store::key(b"counter"),
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
        .get(&[actors::store::key(b"counter")])
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
pub async fn differential_against_the_model<S: Store>(s: &S, seed: u64, ops: usize) {
    let mut model = MemStore::new();
    let mut rng = SeededRng::new(seed);
    let mut versions = Versions::default();
    let key = |rng: &mut SeededRng| actors::store::key(format!("k{:02}", rng.below(40)).as_bytes());
    for i in 0..ops {
        let op = match rng.below(10) {
            0..=2 => StoreOp::Get((0..1 + rng.below(4)).map(|_| key(&mut rng)).collect()),
            3 => {
                let (a, b) = (key(&mut rng), key(&mut rng));
                StoreOp::Range {
                    start: a.min(b.clone()),
                    end: if rng.below(4) == 0 { Key::new() } else { b },
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
                        // Absent, or a version no key can have.
                        _ => Check::VersionIs(
                            k,
                            if rng.below(2) == 0 {
                                0
                            } else {
                                NO_SUCH_VERSION
                            },
                        ),
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
        let got = s.apply(&versions.to_backend(&op)).await;
        let writes = matches!(&op, StoreOp::Commit(t) if !t.writes.is_empty());
        assert_eq!(
            normalize(got, writes, &mut versions, true),
            normalize(expected, writes, &mut versions, false),
            "op {i} of seed {seed}: {op:?}"
        );
    }
}

/// Backends number versions their own way (etcd's revisions are shared by
/// every prefix of a cluster): a backend's versions must map one-to-one onto
/// the model's, in the same order. Conflicts compare without the index of
/// the failed check (etcd does not say which).
#[derive(Default)]
pub struct Versions {
    backend_to_model: BTreeMap<u64, u64>,
    model_to_backend: BTreeMap<u64, u64>,
    pending: Vec<u64>,
}

/// A version no key ever has, on any backend.
pub const NO_SUCH_VERSION: u64 = u64::MAX / 2;

impl Versions {
    /// The op as the backend must see it: model versions in checks replaced
    /// by the backend's.
    fn to_backend(&self, op: &StoreOp) -> StoreOp {
        match op {
            StoreOp::Commit(t) => StoreOp::Commit(Txn {
                checks: t
                    .checks
                    .iter()
                    .map(|c| match c {
                        Check::VersionIs(k, v) if *v != 0 && *v != NO_SUCH_VERSION => {
                            Check::VersionIs(
                                k.clone(),
                                self.model_to_backend
                                    .get(v)
                                    .copied()
                                    .unwrap_or(NO_SUCH_VERSION),
                            )
                        }
                        other => other.clone(),
                    })
                    .collect(),
                writes: t.writes.clone(),
            }),
            other => other.clone(),
        }
    }

    fn pair(&mut self, backend: u64, model: u64) {
        let a = *self.backend_to_model.entry(backend).or_insert(model);
        let b = *self.model_to_backend.entry(model).or_insert(backend);
        assert!(
            a == model && b == backend,
            "backend version {backend} and model version {model} do not correspond"
        );
    }
}

fn normalize(reply: StoreReply, writes: bool, v: &mut Versions, backend: bool) -> StoreReply {
    let norm_entry = |e: Entry, v: &mut Versions| {
        if backend {
            v.pending.push(e.version);
        } else if let Some(b) = v.pending.first().copied() {
            v.pending.remove(0);
            if e.version != 0 || b != 0 {
                v.pair(b, e.version);
            }
        }
        Entry { version: 0, ..e }
    };
    match reply {
        StoreReply::Got(es) => StoreReply::Got(
            es.into_iter()
                .map(|e| e.map(|e| norm_entry(e, v)))
                .collect(),
        ),
        StoreReply::Range(es) => {
            StoreReply::Range(es.into_iter().map(|e| norm_entry(e, v)).collect())
        }
        StoreReply::Committed(ver) => {
            if writes {
                if backend {
                    v.pending.push(ver);
                } else if let Some(b) = v.pending.pop() {
                    v.pair(b, ver);
                }
            }
            StoreReply::Committed(0)
        }
        StoreReply::Failed(StoreError::Conflict { .. }) => {
            StoreReply::Failed(StoreError::Conflict { check_index: None })
        }
        other => other,
    }
}

/// The whole suite against fresh stores from `fresh`.
pub async fn suite<S, F, Fut>(fresh: F)
where
    S: Store + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    checks_that_fail_write_nothing(&fresh().await).await;
    commit_then_reads(&fresh().await).await;
    ranges_are_ordered_and_limited(&fresh().await).await;
    versions_follow_the_last_write(&fresh().await).await;
    oversize_is_refused_whole(&fresh().await).await;
    concurrent_writers_are_atomic(Arc::new(fresh().await)).await;
    for seed in 1..=3 {
        differential_against_the_model(&fresh().await, seed, 2_000).await;
    }
}
