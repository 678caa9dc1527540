//! `reelfleet bench-store`: commits per second and commit latency of a
//! backend with N concurrent writers, and `--fill` to load keys for backup
//! and restore throughput. A benchmark, never a test: it reports, it does
//! not judge.

use std::sync::Arc;
use std::time::Instant;

use actors::store::{Txn, Write};
use clap::Args;
use reelfleet::store::any::AnyStore;
use reelfleet::store::url::StoreUrl;
use reelfleet::store::Store;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The store, e.g. redb:///tmp/bench.redb
    #[arg(long)]
    store: String,
    /// Concurrent writers.
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// Commits per writer.
    #[arg(long, default_value_t = 200)]
    commits: usize,
    /// Instead: write this many keys (100-byte values) in batches, for
    /// backup benchmarks.
    #[arg(long)]
    fill: Option<u64>,
}

/// A benchmark's outcome: its line on stdout (status 0) or its error on
/// stderr (status 1).
pub fn report(outcome: Result<String, String>) -> i32 {
    match outcome {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// `--data` for a benchmark that starts from nothing: absent or empty.
pub fn fresh_data_dir(dir: &std::path::Path) -> Result<(), String> {
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!(
            "--data {}: not empty (the bench starts from nothing; give a new directory)",
            dir.display()
        ));
    }
    Ok(())
}

pub fn run(args: BenchArgs) -> i32 {
    let url: StoreUrl = match args.store.parse() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 2;
        }
    };
    let result = rt.block_on(async {
        let store = Arc::new(
            AnyStore::open(&url)
                .await
                .map_err(|e| format!("cannot open the store: {e}"))?,
        );
        if let Some(n) = args.fill {
            return fill(&store, n).await;
        }
        commits(store, args.writers, args.commits).await
    });
    report(result)
}

async fn fill(store: &AnyStore, n: u64) -> Result<String, String> {
    let started = Instant::now();
    let mut batch = Vec::new();
    for i in 0..n {
        batch.push(Write::Put(
            actors::store::key(format!("bench/{i:012}").as_bytes()),
            vec![(i % 251) as u8; 100],
        ));
        if batch.len() == 5_000 || i + 1 == n {
            store
                .commit(&Txn {
                    checks: vec![],
                    writes: std::mem::take(&mut batch),
                })
                .await
                .map_err(|e| format!("fill: {e}"))?;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(format!(
        "filled {n} keys in {secs:.2} s ({:.0} keys/s)",
        n as f64 / secs
    ))
}

async fn commits(store: Arc<AnyStore>, writers: usize, each: usize) -> Result<String, String> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(each);
            for i in 0..each {
                let t = Instant::now();
                // Each writer its own key: no conflicts, only commit cost.
                let key = actors::store::key(format!("bench/w{w:04}/{i:08}").as_bytes());
                store
                    .commit(&Txn {
                        checks: vec![],
                        writes: vec![Write::Put(key, vec![7; 100])],
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                latencies.push(t.elapsed().as_micros() as u64);
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    Ok(format!(
        "{writers} writers x {each} commits: {:.0} commits/s, p50 {:.2} ms, p99 {:.2} ms",
        all.len() as f64 / secs,
        pct(0.5) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0
    ))
}
