//! `reelfleet up` as a new user runs it: six nodes over QUIC in one
//! process, redb under the data folder. Ctrl-C (a real SIGINT) stops it
//! cleanly, and so does SIGTERM; run again, it resumes from the store, and across both runs no
//! video is lost or published twice and the ledgers agree.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reelfleet::publish::directory::PUBLISH_LOG;
use reelfleet::store::redb_store::RedbStore;

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

/// Runs `up` until `more` new videos are published, then sends it `signal`
/// (SIGINT as Ctrl-C, or SIGTERM as a service manager) and expects a
/// drain and a clean exit.
fn run_until(data: &Path, more: usize, signal: i32) -> String {
    let before = publish_log(data).len();
    let mut child = Command::new(env!("CARGO_BIN_EXE_reelfleet"))
        .args([
            "up",
            "--metrics",
            "127.0.0.1:0",
            "--admin",
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
        libc::kill(child.id() as i32, signal);
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
    let first = run_until(&data, 8, libc::SIGINT);
    assert!(
        first.contains("metrics: http://") && first.contains("admin: reelfleet console --node"),
        "{first}"
    );
    let after_first = publish_log(&data).len();
    run_until(&data, 8, libc::SIGTERM);
    let log = publish_log(&data);
    assert!(log.len() >= after_first + 8);

    let mut made: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, id) in &log {
        made.entry(k.clone()).or_default().push(id.clone());
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
    // Both runs ended with a drain: every upload is settled in the store.
    let a = common::audit::audit(&rt, &store, &topo, &made, false);
    eprintln!(
        "{} videos published once each over two runs; ledgers agree ({} units)",
        a.published, a.quota_units
    );
}

/// Every `reelfleet` command that `.ci/run` runs (the demo `up`, the
/// simulated day) is run here with the same arguments, shortened: a flag
/// renamed in the CLI but not in CI fails this test rather than CI's last
/// step after 25 minutes (as `up --console` once did).
#[test]
fn the_commands_ci_runs_are_accepted() {
    let ci = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/run"))
        .expect(".ci/run");
    let joined = ci.replace("\\\n", " ");
    let marker = "cargo run -p reelfleet -- ";
    let commands: Vec<Vec<String>> = joined
        .lines()
        .filter_map(|l| l.split_once(marker).map(|(_, rest)| rest))
        .map(|rest| {
            // The command ends where the shell's redirections and pipes begin.
            let end = rest.find(['|', '>', '<']).unwrap_or(rest.len());
            let end = rest[..end]
                .rfind(char::is_whitespace)
                .filter(|_| end < rest.len())
                .unwrap_or(end);
            rest[..end].split_whitespace().map(str::to_string).collect()
        })
        .collect();
    assert!(
        commands
            .iter()
            .any(|c| c.first().map(String::as_str) == Some("up")),
        "no `up` in .ci/run: {commands:?}"
    );
    let dir = tempfile::tempdir().expect("dir");
    for mut args in commands {
        let record = dir.path().join("record").display().to_string();
        for i in 1..args.len() {
            match args[i - 1].as_str() {
                "--data" => args[i] = dir.path().join("data").display().to_string(),
                "--run-s" => args[i] = "2".into(),
                "--record" | "replay" => args[i] = record.clone(),
                _ => {}
            }
        }
        let out = Command::new(env!("CARGO_BIN_EXE_reelfleet"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run reelfleet");
        assert!(
            out.status.success(),
            "`reelfleet {}` as .ci/run runs it failed ({:?}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
