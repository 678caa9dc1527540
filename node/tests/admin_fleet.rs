//! The admin RPC across a fleet: `reelfleet up` (six nodes over QUIC on
//! redb) driven through `reelfleet ctl` with the admin certificate `up`
//! made. Checks each command's effect in the nodes' behaviour, not only
//! in its answer: GPUs and running jobs of every node through one node,
//! the kill switch holding on every node (and its jobs gone), a drained
//! node handing every channel away and an undrain lifting the request, a
//! backup through the RPC that verifies, and every change in the audit log.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `up` and returns it with its admin address and certificate folder.
fn start_up(data: &Path) -> (Up, String, PathBuf) {
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
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads every line, so that `up` never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("admin: reelfleet console ") {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    let up = Up(child);
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("up printed its admin line");
    let words: Vec<&str> = line.split_whitespace().collect();
    let arg = |flag: &str| {
        let i = words.iter().position(|w| *w == flag).expect("flag");
        words[i + 1].to_string()
    };
    (up, arg("--node"), PathBuf::from(arg("--cert")))
}

fn ctl(node: &str, certs: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reelfleet"))
        .args(["ctl", "--node", node, "--cert"])
        .arg(certs)
        .args(["--as", "admin", "--json"])
        .args(args)
        .output()
        .expect("run ctl")
}

fn json(o: Output) -> Value {
    assert!(
        o.status.success(),
        "ctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON")
}

/// Polls `ctl args` until `pred` holds, at most `secs`.
fn until(
    node: &str,
    certs: &Path,
    args: &[&str],
    secs: u64,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let t0 = Instant::now();
    loop {
        let v = json(ctl(node, certs, args));
        if pred(&v) {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "ctl {args:?}: not as expected after {secs} s: {v}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn owned_by(v: &Value, node: &str) -> u64 {
    v.as_array()
        .and_then(|rows| rows.iter().find(|r| r["node"] == node))
        .and_then(|r| r["channels"].as_u64())
        .unwrap_or(u64::MAX)
}

#[test]
fn gpus_jobs_killswitch_drain_and_backup_across_a_fleet() {
    let tmp = tempfile::tempdir().expect("dir");
    let data = tmp.path().join("data");
    let (_up, node, certs) = start_up(&data);
    check_gpus_and_jobs(&node, &certs);
    check_killswitch(&node, &certs);
    check_drain(&node, &certs);
    check_backup(&node, &certs, tmp.path());

    // Every change in the audit log, in order.
    let a = json(ctl(&node, &certs, &["audit"]));
    let cmds: Vec<&str> = a
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["command"]["cmd"].as_str())
        .collect();
    assert_eq!(
        cmds,
        ["killswitch", "killswitch", "drain", "undrain"],
        "{a}"
    );
}

/// Every node's GPUs and running jobs, through one node.
fn check_gpus_and_jobs(node: &str, certs: &Path) {
    let g = until(node, certs, &["gpus"], 30, |v| {
        v.as_array().is_some_and(|rows| {
            let mut nodes: Vec<&str> = rows.iter().filter_map(|r| r["node"].as_str()).collect();
            nodes.dedup();
            nodes.len() == 6
        })
    });
    assert!(g[0]["model"].is_string() && g[0]["healthy"] == true, "{g}");
    // Jobs running somewhere in the fleet.
    let j = until(node, certs, &["jobs"], 60, |v| {
        v.as_array().is_some_and(|rows| !rows.is_empty())
    });
    assert!(
        j[0]["stage"].is_string() && j[0]["channel"].is_string(),
        "{j}"
    );
}

/// The kill switch: held on every node, timed, and the jobs go.
fn check_killswitch(node: &str, certs: &Path) {
    let k = json(ctl(
        node,
        certs,
        &["killswitch", "on", "--reason", "fleet test"],
    ));
    assert_eq!(k["nodes"]["held_on_every_node"], true, "{k}");
    assert_eq!(k["nodes"]["held"].as_array().map(Vec::len), Some(6), "{k}");
    let held_ms = k["nodes"]["held_after_ms"].as_u64().expect("held_after_ms");
    println!("kill switch held on every node after {held_ms} ms");
    until(node, certs, &["jobs"], 30, |v| {
        v.as_array().is_some_and(|rows| rows.is_empty())
    });
    let k = json(ctl(
        node,
        certs,
        &["killswitch", "off", "--reason", "fleet test done"],
    ));
    assert_eq!(k["nodes"]["held_on_every_node"], true, "{k}");
}

/// A drained node hands every channel away; undrain lifts the request.
fn check_drain(node: &str, certs: &Path) {
    let nodes = json(ctl(node, certs, &["nodes"]));
    let victim = nodes
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .filter(|r| r["channels"].as_u64().unwrap_or(0) > 0)
                .filter_map(|r| r["node"].as_str())
                .next_back()
        })
        .expect("a node with channels")
        .to_string();
    json(ctl(node, certs, &["drain", &victim]));
    let after = until(node, certs, &["nodes"], 30, |v| owned_by(v, &victim) == 0);
    assert!(
        after.as_array().is_some_and(|rows| rows
            .iter()
            .any(|r| r["node"] == victim.as_str() && r["drain_requested"] == true)),
        "{after}"
    );
    json(ctl(node, certs, &["undrain", &victim]));
    let after = json(ctl(node, certs, &["nodes"]));
    assert!(
        after.as_array().is_some_and(|rows| rows
            .iter()
            .any(|r| r["node"] == victim.as_str() && r["drain_requested"] == false)),
        "{after}"
    );
    let e = ctl(node, certs, &["drain", "no-such-node"]);
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("no node"));
}

/// A backup through the RPC, checked whole.
fn check_backup(node: &str, certs: &Path, dir: &Path) {
    let out = dir.join("fleet.backup");
    let b = json(ctl(
        node,
        certs,
        &["backup", "--out", out.to_str().expect("path")],
    ));
    assert!(b["records"].as_u64().is_some_and(|n| n > 0), "{b}");
    let v = Command::new(env!("CARGO_BIN_EXE_reelfleet"))
        .args(["backup", "--verify"])
        .arg(&out)
        .output()
        .expect("verify");
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    assert!(!out.with_extension("partial").exists());
}
