//! An acknowledged commit survives `kill -9`: a child process writes keys
//! in a loop and prints each acknowledgement; the parent SIGKILLs it
//! mid-loop, reopens the file, and finds every acknowledged key.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use actors::store::{Txn, Write};
use reelfleet::store::redb_store::RedbStore;
use reelfleet::store::Store;

const CHILD_ENV: &str = "REELFLEET_KILL9_CHILD_DB";

fn key(i: u64) -> actors::store::Key {
    actors::store::key(format!("ack/{i:08}").as_bytes())
}

/// The child's life: write until killed, acknowledging each commit.
fn child(path: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let s = std::sync::Arc::new(RedbStore::open(std::path::Path::new(path)).expect("open"));
        // Eight concurrent writers, so acknowledgements come from group commits.
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let s = std::sync::Arc::clone(&s);
            tasks.push(tokio::spawn(async move {
                for n in 0..1_000_000u64 {
                    let i = n * 8 + w;
                    s.commit(&Txn {
                        checks: vec![],
                        writes: vec![Write::Put(key(i), i.to_le_bytes().to_vec())],
                    })
                    .await
                    .expect("commit");
                    println!("ack {i}");
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn acknowledged_commits_survive_kill_9() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(&path);
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kill9.redb");
    let exe = std::env::current_exe().expect("test binary");
    let mut proc = Command::new(exe)
        .args([
            "--exact",
            "acknowledged_commits_survive_kill_9",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the writer");
    let stdout = proc.stdout.take().expect("stdout");
    let mut acked = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(n) = line
            .strip_prefix("ack ")
            .and_then(|n| n.parse::<u64>().ok())
        {
            acked.push(n);
            if acked.len() == 600 {
                // Mid-loop, with commits in flight: SIGKILL.
                proc.kill().expect("kill -9");
                break;
            }
        }
    }
    let _ = proc.wait();
    assert_eq!(
        acked.len(),
        600,
        "the writer acknowledged fewer commits than expected"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let s = RedbStore::open(&path).expect("reopen after kill -9");
        let keys: Vec<actors::store::Key> = acked.iter().map(|i| key(*i)).collect();
        for chunk in keys.chunks(100) {
            let got = s.get(chunk).await.expect("read back");
            for (k, e) in chunk.iter().zip(got) {
                assert!(
                    e.is_some(),
                    "acknowledged key {} lost",
                    String::from_utf8_lossy(k)
                );
            }
        }
    });
}
