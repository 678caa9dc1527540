//! `reelfleet up` as a new user runs it: six nodes over QUIC in one
//! process, redb under the data folder. Ctrl-C (a real SIGINT) stops it
//! cleanly; run again, it resumes from the store, and across both runs no
//! video is lost or published twice and the ledgers agree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actors::records::{channel_key, ChannelRecord, QuotaRecord, VideoRecord, VideoStatus};
use actors::store::prefix_end;
use reelfleet::publish::directory::PUBLISH_LOG;
use reelfleet::store::redb_store::RedbStore;
use reelfleet::store::Store;

fn publish_log(data: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(data.join("published").join(PUBLISH_LOG))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut f = l.split('\t');
            (
                f.next().unwrap_or_default().to_string(),
                f.next().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Runs `up` until `more` new videos are published, then SIGINTs it and
/// expects a clean exit.
fn run_until(data: &Path, more: usize) -> String {
    let before = publish_log(data).len();
    let mut child = Command::new(env!("CARGO_BIN_EXE_reelfleet"))
        .args([
            "up",
            "--metrics",
            "127.0.0.1:0",
            "--console",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start reelfleet up");
    let t0 = Instant::now();
    while publish_log(data).len() < before + more {
        if t0.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!(
                "up published {} of {more} videos in 90 s",
                publish_log(data).len() - before
            );
        }
        assert!(child.try_wait().expect("wait").is_none(), "up exited early");
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().expect("up output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "up did not exit cleanly: {:?}\n{stdout}",
        out.status
    );
    assert!(stdout.contains("drained 6 of 6 nodes"), "{stdout}");
    stdout
}

#[test]
fn up_stops_on_ctrl_c_and_resumes_without_losing_or_repeating_a_video() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let first = run_until(&data, 8);
    assert!(
        first.contains("metrics: http://") && first.contains("console: "),
        "{first}"
    );
    let after_first = publish_log(&data).len();
    run_until(&data, 8);
    let log = publish_log(&data);
    assert!(log.len() >= after_first + 8);

    let mut seen = BTreeMap::new();
    for (k, id) in &log {
        assert!(
            seen.insert(k.clone(), id.clone()).is_none(),
            "{k} published twice"
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = RedbStore::open(&data.join("store.redb")).expect("the store");
    let topo = topology::config::parse_topology(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo.toml"),
        )
        .expect("demo config"),
    )
    .expect("demo config parses");
    let mut recorded = BTreeSet::new();
    let mut cost: BTreeMap<u32, u64> = BTreeMap::new();
    let mut units = 0u64;
    let mut slots: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for prefix in [b"va/".as_slice(), b"vd/".as_slice()] {
        for e in rt
            .block_on(store.range(prefix, &prefix_end(prefix), 10_000))
            .expect("videos")
        {
            let ch = u32::from_be_bytes(e.key[3..7].try_into().expect("key"));
            let v = VideoRecord::decode(&e.value).expect("video record");
            let key = actors::records::idempotency_key(&topo.channels[ch as usize].name, v.slot);
            *cost.entry(ch).or_default() += v.cost_micros;
            units += v.quota_units;
            slots.entry(ch).or_default().insert(v.slot);
            if let VideoStatus::Published { remote_id } = &v.status {
                assert_eq!(
                    seen.get(&key),
                    Some(remote_id),
                    "{key}: store and publisher disagree"
                );
                recorded.insert(key);
            }
        }
    }
    for k in seen.keys() {
        assert!(
            recorded.contains(k),
            "{k} was published but the store lost it"
        );
    }
    for (i, _) in topo.channels.iter().enumerate() {
        let rec = rt
            .block_on(store.get(&[channel_key(topology::ChannelId(i as u32))]))
            .expect("channel")
            .into_iter()
            .next()
            .flatten()
            .map(|e| ChannelRecord::decode(&e.value).expect("channel record"))
            .unwrap_or_default();
        let s = slots.get(&(i as u32)).cloned().unwrap_or_default();
        if let Some(first) = s.iter().next().copied() {
            let missing: Vec<u64> = (first..rec.next_slot).filter(|x| !s.contains(x)).collect();
            assert!(missing.is_empty(), "channel {i}: slots {missing:?} lost");
        }
        assert_eq!(
            rec.spent_total_micros,
            cost.get(&(i as u32)).copied().unwrap_or(0)
        );
    }
    let q = b"q/".as_slice();
    let ledger: u64 = rt
        .block_on(store.range(q, &prefix_end(q), 10_000))
        .expect("quota")
        .iter()
        .map(|e| {
            QuotaRecord::decode(&e.value)
                .expect("quota record")
                .used
                .iter()
                .sum::<u64>()
        })
        .sum();
    assert_eq!(ledger, units);
    eprintln!(
        "{} videos published once each over two runs; ledgers agree",
        seen.len()
    );
}
