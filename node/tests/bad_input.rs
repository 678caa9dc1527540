//! Bad input on the operator's surfaces fails clearly and writes nothing:
//! `node` with a misspelt executor stage, a node name not in the cluster
//! or a busy port; `backup` of a mistyped store; `restore` of a corrupt
//! backup; `up` with more nodes than one process runs; and the directory
//! publisher cleaning up after a process killed mid-publish; `bench-dispatch`
//! and `bench-quic` with impossible arguments; a swarm of no seeds or of
//! zero threads.

use std::path::Path;
use std::process::{Command, Output};

use reelfleet::certs::{self, Role};

fn reelfleet(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reelfleet"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run reelfleet")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The ffmpeg example's cluster (one node "workstation", stages script,
/// voice, render, upload) and a node config with `extra` appended.
fn node_setup(dir: &Path, node: &str, extra: &str) {
    let cluster = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ffmpeg.toml"),
    )
    .expect("example cluster");
    std::fs::write(dir.join("cluster.toml"), cluster).expect("write");
    if !dir.join("certs").exists() {
        certs::init(&dir.join("certs"), "bad-input").expect("CA");
        certs::issue(&dir.join("certs"), Role::Node, "workstation").expect("cert");
    }
    std::fs::write(
        dir.join("node.toml"),
        format!(
            "node = \"{node}\"\ncluster = \"cluster.toml\"\nstore = \"redb://data/store.redb\"\n\
             listen = \"127.0.0.1:0\"\ncerts = \"certs\"\ndata_dir = \"data\"\n{extra}"
        ),
    )
    .expect("write");
}

fn assert_refused_and_nothing_written(dir: &Path, out: &Output, says: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "accepted: {err}");
    for s in says {
        assert!(err.contains(s), "expected {s:?} in: {err}");
    }
    assert!(
        !dir.join("data").exists(),
        "wrote {}",
        dir.join("data").display()
    );
}

#[test]
fn a_misspelt_executor_stage_is_an_error_naming_the_stages() {
    let dir = tempfile::tempdir().expect("dir");
    node_setup(
        dir.path(),
        "workstation",
        "[executors.rendr]\nkind = \"command\"\nprogram = \"true\"\n",
    );
    let out = reelfleet(&["node", "--config", "node.toml"], dir.path());
    assert_refused_and_nothing_written(
        dir.path(),
        &out,
        &["[executors.rendr]", "script, upload, voice"],
    );
}

#[test]
fn a_node_not_in_the_cluster_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("dir");
    node_setup(dir.path(), "workstaton", "");
    let out = reelfleet(&["node", "--config", "node.toml"], dir.path());
    assert_refused_and_nothing_written(dir.path(), &out, &["\"workstaton\"", "workstation"]);
}

#[test]
fn busy_ports_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("dir");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let busy_udp = udp.local_addr().expect("addr");
    node_setup(dir.path(), "workstation", "");
    let toml = std::fs::read_to_string(dir.path().join("node.toml")).expect("read");
    std::fs::write(
        dir.path().join("node.toml"),
        toml.replace("127.0.0.1:0", &busy_udp.to_string()),
    )
    .expect("write");
    let out = reelfleet(&["node", "--config", "node.toml"], dir.path());
    assert_refused_and_nothing_written(dir.path(), &out, &["listen", &busy_udp.to_string()]);

    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
    let busy_tcp = tcp.local_addr().expect("addr");
    node_setup(
        dir.path(),
        "workstation",
        &format!("metrics = \"{busy_tcp}\"\n"),
    );
    let out = reelfleet(&["node", "--config", "node.toml"], dir.path());
    assert_refused_and_nothing_written(dir.path(), &out, &["metrics", &busy_tcp.to_string()]);
}

#[test]
fn a_backup_of_a_mistyped_store_creates_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let store = dir.path().join("mistyped").join("store.redb");
    let url = format!("redb://{}", store.display());
    let out = reelfleet(&["backup", "--store", &url, "--out", "b.rfb"], dir.path());
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no redb store at"), "{err}");
    assert!(!store.exists() && !dir.path().join("mistyped").exists());
    assert!(!dir.path().join("b.rfb").exists() && !dir.path().join("b.partial").exists());
}

#[test]
fn a_restore_of_a_corrupt_backup_does_not_create_its_target() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("bad.rfb"), b"not a backup at all").expect("write");
    let target = dir.path().join("new").join("store.redb");
    let url = format!("redb://{}", target.display());
    let out = reelfleet(&["restore", "--store", &url, "--in", "bad.rfb"], dir.path());
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("bad.rfb"), "{err}");
    assert!(!target.exists() && !dir.path().join("new").exists());
}

#[test]
fn up_refuses_more_nodes_than_one_process_runs() {
    let dir = tempfile::tempdir().expect("dir");
    let demo = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo.toml"),
    )
    .expect("demo");
    // The first region's node group grows from 2 to 200.
    let big = demo.replacen("count = 2\n", "count = 200\n", 1);
    assert_ne!(big, demo);
    std::fs::write(dir.path().join("big.toml"), big).expect("write");
    let out = reelfleet(
        &[
            "up",
            "--config",
            "big.toml",
            "--data",
            "data",
            "--metrics",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ],
        dir.path(),
    );
    assert_refused_and_nothing_written(
        dir.path(),
        &out,
        &["at most 64 nodes", "the config has 204"],
    );
}

#[test]
fn unfinished_publishes_of_dead_processes_are_removed_at_start() {
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path().join("published");
    std::fs::create_dir_all(&root).expect("dir");
    // A pid that is certainly gone: a child that has exited and been
    // reaped.
    let mut child = Command::new("true").spawn().expect("true");
    let dead = child.id();
    child.wait().expect("wait");
    let leftover = root.join(format!(".incoming-ch-1-{dead}"));
    let mine = root.join(format!(".incoming-ch-2-{}", std::process::id()));
    for d in [&leftover, &mine] {
        std::fs::create_dir_all(d).expect("dir");
        std::fs::write(d.join("video"), b"half").expect("write");
    }
    let _p = reelfleet::publish::directory::DirectoryPublisher::new(&root).expect("publisher");
    assert!(!leftover.exists(), "a dead process's folder was kept");
    assert!(mine.exists(), "a live process's folder was removed");
}

/// `bench-dispatch` refuses impossible arguments and a used directory
/// before it writes anything, and a short real run reports jobs done.
#[test]
fn bench_dispatch_refuses_bad_arguments_and_measures_a_real_node() {
    let dir = tempfile::tempdir().expect("dir");
    let out = reelfleet(
        &["bench-dispatch", "--data", "bd", "--channels", "0"],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--channels 0"), "{}", stderr(&out));
    assert!(!dir.path().join("bd").exists());
    std::fs::create_dir_all(dir.path().join("used")).expect("dir");
    std::fs::write(dir.path().join("used").join("keep"), b"mine").expect("write");
    let out = reelfleet(&["bench-dispatch", "--data", "used"], dir.path());
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(dir.path().join("used"))
            .expect("dir")
            .count(),
        1
    );
    let out = Command::new(env!("CARGO_BIN_EXE_reelfleet"))
        // Two channels, one second: each job leaves artifact files, and
        // deleting tens of thousands takes minutes on some disks.
        .args(["bench-dispatch", "--data", "bd", "--channels", "2"])
        .args(["--seconds", "1", "--record"])
        .env("RUST_LOG", "warn")
        .current_dir(dir.path())
        .output()
        .expect("run reelfleet");
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{line}{}", stderr(&out));
    let jobs: f64 = line
        .split_once(" s: ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no jobs/s in {line}"));
    assert!(jobs > 0.0, "{line}");
    assert!(line.contains("; recording: "), "{line}");
    // What it recorded replays identically.
    let out = reelfleet(&["replay", "bd/record", "--quiet"], dir.path());
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{said}{}", stderr(&out));
    assert!(said.contains(" 0 diverged"), "{said}");
    let out = reelfleet(
        &["replay", "bd/record", "--machine", "channel:nope"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no machine \"channel:nope\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bad_record_table_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("dir");
    for (extra, says) in [
        (
            "[record]\ndir = \"rec\"\nsegment_bytes = 10\n",
            "record.segment_bytes",
        ),
        (
            "[record]\ndir = \"rec\"\nsegment_bytes = 1048576\ntotal_bytes_max = 1048576\n",
            "total_bytes_max",
        ),
        ("[record]\ndri = \"rec\"\n", "dri"),
    ] {
        node_setup(dir.path(), "workstation", extra);
        let out = reelfleet(&["node", "--config", "node.toml"], dir.path());
        assert_refused_and_nothing_written(dir.path(), &out, &[says]);
        assert!(!dir.path().join("rec").exists());
    }
}

#[test]
fn replay_refuses_what_is_not_a_recording_and_names_why() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let out = reelfleet(&["replay", "nowhere"], d);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nowhere"), "{}", stderr(&out));
    std::fs::create_dir_all(d.join("empty")).expect("dir");
    let out = reelfleet(&["replay", "empty"], d);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no recording here"),
        "{}",
        stderr(&out)
    );
    std::fs::create_dir_all(d.join("foreign/n1")).expect("dir");
    std::fs::write(
        d.join("foreign/n1/run-000001-seg-000001.rfr"),
        b"PK\x03\x04 a zip",
    )
    .expect("write");
    let out = reelfleet(&["replay", "foreign"], d);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("run-000001-seg-000001.rfr at byte 0")
            && err.contains("not a reelfleet recording"),
        "{err}"
    );
    let out = reelfleet(&["replay", "foreign", "--set", "channel.lease=5"], d);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown parameter"),
        "{}",
        stderr(&out)
    );
    let out = reelfleet(
        &["replay", "foreign", "--set", "channel.retry_base_ms=soon"],
        d,
    );
    assert!(
        stderr(&out).contains("not a whole number"),
        "{}",
        stderr(&out)
    );
}

/// `bench-quic` refuses impossible counts before it writes anything, and a
/// short real run through two transports reports messages per second.
#[test]
fn bench_quic_refuses_bad_counts_and_measures_real_transports() {
    let dir = tempfile::tempdir().expect("dir");
    let out = reelfleet(
        &["bench-quic", "--data", "bq", "--messages", "0"],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--messages"), "{}", stderr(&out));
    assert!(!dir.path().join("bq").exists());
    let out = reelfleet(
        &[
            "bench-quic",
            "--data",
            "bq",
            "--messages",
            "5000",
            "--round-trips",
            "50",
        ],
        dir.path(),
    );
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{line}{}", stderr(&out));
    let per_s: f64 = line
        .split_once("frames: ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no messages/s in {line}"));
    assert!(per_s > 0.0, "{line}");
    assert!(line.contains("0 dropped"), "{line}");
}

#[test]
fn sim_from_a_recording_needs_a_recording_and_a_moment() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    std::fs::create_dir_all(d.join("empty")).expect("dir");
    std::fs::write(d.join("s.toml"), "name = \"s\"\nduration_s = 60\n").expect("write");
    let out = reelfleet(
        &[
            "sim",
            "--scenario-file",
            "s.toml",
            "--from-recording",
            "empty",
            "--at",
            "5",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no recording here"),
        "{}",
        stderr(&out)
    );
    let out = reelfleet(
        &[
            "sim",
            "--scenario-file",
            "s.toml",
            "--from-recording",
            "empty",
        ],
        d,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--at"), "{}", stderr(&out));
}

/// A swarm's seeds and threads are checked before anything runs: an empty
/// range or one written backwards (a swarm of no seeds would "pass") and
/// zero threads (once quietly run as one) each say what was wrong.
#[test]
fn a_swarm_refuses_seeds_and_threads_that_run_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    for (args, says) in [
        (&["--seeds", "5..1"][..], "the end must be after the start"),
        (&["--seeds", "3..3"][..], "the end must be after the start"),
        (&["--seeds", "1..3", "--jobs", "0"][..], "at least 1"),
    ] {
        let mut all = vec!["sim", "--scenario", "steady", "--swarm"];
        all.extend_from_slice(args);
        let out = reelfleet(&all, dir.path());
        assert_eq!(out.status.code(), Some(2), "{all:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{all:?}: {}", stderr(&out));
    }
}
