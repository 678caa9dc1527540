//! The etcd backend against a real 3-member etcd cluster on loopback: the
//! conformance suite, then failures: commits go on with one member killed;
//! with two killed, calls fail with a clear error within a bound and nothing
//! is corrupted; after a restart everything acknowledged is there.

mod common;

use std::time::{Duration, Instant};

use actors::store::{StoreError, Txn, Write};
use common::etcd_cluster::{etcd_available, EtcdCluster};
use reelfleet::store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_backend_conforms() {
    if !etcd_available() {
        return;
    }
    let cluster = EtcdCluster::start(3);
    let n = std::sync::atomic::AtomicU64::new(0);
    let cluster = &cluster;
    common::conformance::suite(|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move { cluster.store(&format!("/conformance/{i}")).await }
    })
    .await;
}

async fn commit_retrying_unknown<S: Store>(s: &S, i: u64) -> Result<(), StoreError> {
    // An unknown outcome is settled by reading, as the machines do.
    let key = actors::store::key(format!("k{i:05}").as_bytes());
    for _ in 0..20 {
        match s
            .commit(&Txn {
                checks: vec![],
                writes: vec![Write::Put(key.clone(), i.to_le_bytes().to_vec())],
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::CommitUnknown) | Err(StoreError::Unavailable(_)) => {
                if let Ok(got) = s.get(std::slice::from_ref(&key)).await {
                    if got[0].is_some() {
                        return Ok(());
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Unavailable("gave up".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_rides_out_one_member_and_fails_clearly_without_quorum() {
    if !etcd_available() {
        return;
    }
    let mut cluster = EtcdCluster::start(3);
    let s = cluster.store("/failover").await;
    for i in 0..100 {
        commit_retrying_unknown(&s, i)
            .await
            .expect("healthy cluster");
    }
    // One member dies: commits go on.
    cluster.kill_member(0);
    for i in 100..200 {
        commit_retrying_unknown(&s, i)
            .await
            .expect("two of three members");
    }
    // A second one dies: no quorum. Calls fail with a clear error, in time.
    cluster.kill_member(1);
    let started = Instant::now();
    let r = s.get(&[actors::store::key(b"k00000")]).await;
    let elapsed = started.elapsed();
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    assert!(
        elapsed < Duration::from_secs(10),
        "failed after {elapsed:?}"
    );
    let started = Instant::now();
    let c = s
        .commit(&Txn {
            checks: vec![],
            writes: vec![Write::Put(actors::store::key(b"during-outage"), vec![1])],
        })
        .await;
    assert!(
        matches!(
            c,
            Err(StoreError::CommitUnknown) | Err(StoreError::Unavailable(_))
        ),
        "{c:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // Back: everything acknowledged is there, and nothing else changed.
    cluster.start_member(0);
    cluster.start_member(1);
    cluster.wait_healthy(Duration::from_secs(30));
    let s = cluster.store("/failover").await;
    // While the members catch up a call may still be refused: retry, bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    let all = loop {
        match s.range(b"k", b"l", 1_000).await {
            Ok(all) => break all,
            Err(StoreError::Unavailable(e)) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("range after restart: {e}"),
        }
    };
    assert_eq!(all.len(), 200);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.value, (i as u64).to_le_bytes().to_vec(), "key {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_round_trip_redb_to_etcd_and_back() {
    use reelfleet::store::backup::{backup, restore};
    use reelfleet::store::redb_store::RedbStore;
    if !etcd_available() {
        return;
    }
    let cluster = EtcdCluster::start(3);
    let dir = tempfile::tempdir().expect("temp dir");
    let source = RedbStore::open(&dir.path().join("src.redb")).expect("redb");
    let mut writes = Vec::new();
    for i in 0..3_000u64 {
        writes.push(Write::Put(
            actors::store::key(format!("r/{i:06}").as_bytes()),
            vec![(i % 251) as u8; (i % 97) as usize],
        ));
        if writes.len() == 500 {
            source
                .commit(&Txn {
                    checks: vec![],
                    writes: std::mem::take(&mut writes),
                })
                .await
                .expect("fill");
        }
    }
    let one = dir.path().join("one.rfbk");
    backup(&source, std::fs::File::create(&one).expect("create"))
        .await
        .expect("backup redb");
    let etcd = cluster.store("/roundtrip").await;
    assert_eq!(
        restore(&etcd, || std::fs::File::open(&one), false)
            .await
            .expect("into etcd"),
        3_000
    );
    let two = dir.path().join("two.rfbk");
    backup(&etcd, std::fs::File::create(&two).expect("create"))
        .await
        .expect("backup etcd");
    let back = RedbStore::open(&dir.path().join("back.redb")).expect("redb");
    restore(&back, || std::fs::File::open(&two), false)
        .await
        .expect("into redb");
    let a = source.range(b"", b"", 10_000).await.expect("range");
    let b = back.range(b"", b"", 10_000).await.expect("range");
    assert_eq!(a.len(), 3_000);
    let strip =
        |v: Vec<actors::store::Entry>| v.into_iter().map(|e| (e.key, e.value)).collect::<Vec<_>>();
    assert_eq!(strip(a), strip(b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_cannot_connect_is_unavailable_not_unknown() {
    if !etcd_available() {
        return;
    }
    let mut cluster = EtcdCluster::start(1);
    let s = cluster.store("/refused").await;
    commit_retrying_unknown(&s, 1).await.expect("healthy");
    cluster.kill_member(0);
    // The member is gone: its port refuses connections, so a commit
    // certainly applied nothing, and says so with the member and cause.
    let mut last = None;
    for _ in 0..5 {
        let r = s
            .commit(&Txn {
                checks: vec![],
                writes: vec![Write::Put(actors::store::key(b"k"), b"v".to_vec())],
            })
            .await;
        match r {
            Err(StoreError::Unavailable(m)) => {
                assert!(m.contains("nothing was applied"), "{m}");
                assert!(m.contains("127.0.0.1:"), "no member named: {m}");
                assert!(!m.contains("Status {"), "Rust debug output: {m}");
                return;
            }
            other => last = Some(other),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("a refused connection was not reported as unavailable: {last:?}");
}

/// 150 keys `v/NNN`, 65 keys `x/NN` (the 64th as long as a key may be:
/// the page after a batch's first page of 64 starts one byte past it),
/// `a` and `b`.
async fn seed_for_batched_reads(s: &reelfleet::store::etcd_store::EtcdStore) {
    let mut writes: Vec<Write> = (0..150)
        .map(|i| {
            Write::Put(
                actors::store::key(format!("v/{i:03}").as_bytes()),
                vec![i as u8; 40],
            )
        })
        .collect();
    for i in 0..65 {
        let mut k = actors::store::key(format!("x/{i:02}").as_bytes());
        if i == 63 {
            k.resize(actors::store::KEY_BYTES_MAX, b'z');
        }
        writes.push(Write::Put(k, b"x".to_vec()));
    }
    writes.push(Write::Put(actors::store::key(b"a"), b"1".to_vec()));
    writes.push(Write::Put(actors::store::key(b"b"), b"2".to_vec()));
    s.commit(&Txn {
        checks: vec![],
        writes,
    })
    .await
    .expect("seeded");
}

/// Reads answered together in one transaction (`EtcdStore::read_many`)
/// answer exactly as each read alone: gets with shared and missing keys,
/// ranges past the batch's first page, empty and refused reads; and a
/// batch etcd refuses whole (more operations than its `--max-txn-ops`) is
/// answered read by read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_together_answer_as_each_read_alone() {
    use actors::store::{StoreOp, StoreReply};
    if !etcd_available() {
        return;
    }
    let cluster = EtcdCluster::start(3);
    let s = cluster.store("/batched").await;
    seed_for_batched_reads(&s).await;
    let get = |keys: &[&str]| {
        StoreOp::Get(
            keys.iter()
                .map(|k| actors::store::key(k.as_bytes()))
                .collect(),
        )
    };
    let range = |start: &str, end: &str, limit: usize| StoreOp::Range {
        start: actors::store::key(start.as_bytes()),
        end: actors::store::key(end.as_bytes()),
        limit,
    };
    let reads = vec![
        get(&["a", "b", "missing"]),
        range("v/", "v0", 200),
        get(&["b", "a"]),
        range("v/", "v0", 100),
        range("v/050", "", 3),
        range("v/", "v/", 5),
        range("v/", "v0", 0),
        get(&["a"]),
        range("x/", "x0", 100),
    ];
    let together = s.read_many(&reads).await;
    assert_eq!(together.len(), reads.len());
    for (op, got) in reads.iter().zip(&together) {
        let alone = s.apply(op).await;
        assert!(
            got == &alone,
            "{op:?} answered differently together than alone"
        );
    }
    assert!(
        matches!(&together[1], StoreReply::Range(r) if r.len() == 150),
        "a range is read on past its first page"
    );
    assert!(matches!(
        &together[6],
        StoreReply::Failed(StoreError::TooLarge(_))
    ));
    assert!(
        matches!(&together[8], StoreReply::Range(r) if r.len() == 65),
        "a page after a key of the longest size"
    );
    // Two reads of 10,001 keys: 20,002 operations, past the cluster's
    // `--max-txn-ops 20000`, so etcd refuses the batch; each alone is fine.
    let many = |from: usize| {
        StoreOp::Get(
            (from..from + 10_001)
                .map(|i| actors::store::key(format!("k/{i}").as_bytes()))
                .collect(),
        )
    };
    let big = vec![many(0), many(20_000)];
    for got in s.read_many(&big).await {
        assert!(
            matches!(&got, StoreReply::Got(e) if e.len() == 10_001),
            "{:?}",
            std::mem::discriminant(&got)
        );
    }
}

fn demo_topology() -> topology::Topology {
    topology::config::parse_topology(include_str!("../../examples/demo.toml"))
        .expect("the demo topology")
}

/// A node's store port on `store`, for the demo fleet's first node.
fn port_on(
    store: reelfleet::store::any::AnyStore,
) -> std::sync::Arc<reelfleet::live::store_port::StorePort> {
    use std::sync::Arc;
    let topo = demo_topology();
    Arc::new(reelfleet::live::store_port::StorePort {
        store: Arc::new(store),
        metrics: Arc::new(reelfleet::live::metrics::Metrics::new("n0", "r0")),
        topo: Arc::new(topo),
        me: topology::NodeId(0),
        name: "n0".into(),
        channel_reads: Arc::new(tokio::sync::Semaphore::new(1)),
        batched_reads: Default::default(),
    })
}

/// A node's channel reads on etcd go through the batcher: hundreds of
/// machines reading at once each get their own reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batched_channel_read_gets_its_own_reply() {
    use actors::store::{StoreOp, StoreReply};
    use reelfleet::live::shell::{Mailbox, ShellMsg};
    use reelfleet::live::store_port::Fence;
    use reelfleet::store::any::AnyStore;
    use topology::ChannelId;
    if !etcd_available() {
        return;
    }
    let cluster = EtcdCluster::start(3);
    let s = cluster.store("/port").await;
    let writes = (0..500)
        .map(|i| {
            Write::Put(
                actors::store::key(format!("c/{i:03}").as_bytes()),
                format!("{i}").into_bytes(),
            )
        })
        .collect();
    s.commit(&Txn {
        checks: vec![],
        writes,
    })
    .await
    .expect("seeded");
    let port = port_on(AnyStore::Etcd(Box::new(s)));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let fence = Fence {
        channel: ChannelId(0),
        epoch: 1,
        incarnation: 1,
    };
    for i in 0..500usize {
        let tx = tx.clone();
        let to = Mailbox::from_fn(move |m: ShellMsg<(usize, StoreReply)>| {
            if let ShellMsg::Input(r) = m {
                let _ = tx.send(r);
            }
        });
        let op = match i % 2 {
            0 => StoreOp::Get(vec![
                actors::store::key(format!("c/{i:03}").as_bytes()),
                actors::store::key(b"shared"),
            ]),
            _ => StoreOp::Range {
                start: actors::store::key(format!("c/{i:03}").as_bytes()),
                end: actors::store::key(b"c0"),
                limit: 2,
            },
        };
        port.spawn(op, Some(fence), to, move |r| (i, r));
    }
    drop(tx);
    let mut seen = vec![false; 500];
    while let Ok(Some((i, r))) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
        let own = format!("{i}").into_bytes();
        let ok = match r {
            StoreReply::Got(e) => e.len() == 2 && e[0].as_ref().is_some_and(|e| e.value == own),
            StoreReply::Range(e) => !e.is_empty() && e[0].value == own,
            _ => false,
        };
        assert!(ok, "read {i} got someone else's reply or none");
        assert!(!seen[i], "read {i} answered twice");
        seen[i] = true;
    }
    assert!(seen.iter().all(|s| *s), "every read answered");
}

/// The audit (the chaos runner's last step) waits out a store that is
/// unavailable for a while, taking its snapshot again, instead of failing
/// the run: here a cluster without quorum, whole again a few seconds later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_waits_out_a_store_without_quorum() {
    if !etcd_available() {
        return;
    }
    let mut cluster = EtcdCluster::start(3);
    let s = cluster.store("/audited").await;
    cluster.kill_member(0);
    cluster.kill_member(1);
    // How long a read takes to fail without quorum: the members come back
    // only after the audit's first snapshot has failed as this one did.
    let started = Instant::now();
    let r = s.get(&[actors::store::key(b"k")]).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let back_after = started.elapsed() + Duration::from_secs(1);
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(back_after);
        cluster.start_member(0);
        cluster.start_member(1);
        cluster
    });
    let topo = demo_topology();
    let made = std::collections::BTreeMap::new();
    let input = reelfleet::audit::AuditInput {
        topo: &topo,
        made: &made,
        in_flight_ok: false,
        must_have_ended: None,
    };
    let started = Instant::now();
    let report = reelfleet::audit::audit(&s, &input).await;
    let waited = started.elapsed();
    let _cluster = restarter.join().expect("members restarted");
    let report = report.expect("the audit waited for the store");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert!(
        waited >= back_after,
        "it read a store without quorum in {waited:?}"
    );
}
