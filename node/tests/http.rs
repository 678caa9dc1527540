//! The operator's HTTP listener of `reelfleet up`: /metrics accepted by
//! `promtool check metrics` (one exposition for six nodes, HELP on every
//! family), /health, /ready, /status, and its limits (an oversized request
//! head is refused and the listener keeps serving; connections beyond the
//! limit are closed at once). A busy port asked for explicitly is an error
//! that writes nothing.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::promtool::promtool_complaints;

/// One request on a fresh connection: (status, body).
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `up` on any free ports; returns it and its HTTP address.
fn start_up(data: &std::path::Path) -> (Up, SocketAddr) {
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
    let up = Up(child);
    let mut lines = BufReader::new(out).lines();
    let mut addr = None;
    loop {
        let line = lines
            .next()
            .expect("up printed its addresses")
            .expect("line");
        if let Some(rest) = line.strip_prefix("metrics: http://") {
            addr = Some(
                rest.trim_end_matches("/metrics")
                    .parse()
                    .expect("an address"),
            );
        }
        if line.starts_with("admin: reelfleet console ") {
            break;
        }
    }
    let addr = addr.expect("the metrics line comes first");
    // Keep draining stdout so that `up` never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (up, addr)
}

#[test]
fn up_serves_metrics_health_ready_and_status_within_limits() {
    let dir = tempfile::tempdir().expect("dir");
    let (_up, addr) = start_up(&dir.path().join("data"));
    assert_eq!(get(addr, "/health").map(|r| r.0), Some(200));
    // Ready once every node holds its lease; something gets published.
    let t0 = Instant::now();
    let metrics = loop {
        let ready = get(addr, "/ready").map(|r| r.0);
        let m = get(addr, "/metrics").map(|r| r.1).unwrap_or_default();
        if ready == Some(200) && m.contains("reelfleet_videos_published_total{") {
            break m;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "not ready with a video published after 60 s: /ready {ready:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    check_exposition(&metrics);
    let (code, status) = get(addr, "/status").expect("/status");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&status).expect("JSON");
    let nodes = v["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 6, "{v}");
    assert!(nodes.iter().all(|n| n["lease"]["held"] == true), "{v}");
    assert_eq!(get(addr, "/nope").map(|r| r.0), Some(404));
    check_limits(addr);
}

/// One exposition: each family typed and described once, every series of
/// a node labelled with it, and promtool content.
fn check_exposition(metrics: &str) {
    for family in [
        "reelfleet_build_info",
        "reelfleet_videos_published_total",
        "reelfleet_stage_duration_seconds",
        "reelfleet_channels_owned",
        "reelfleet_store_call_duration_seconds",
        "reelfleet_quic_frames_out_total",
        "reelfleet_quic_rtt_seconds",
        "reelfleet_ready",
    ] {
        assert_eq!(
            metrics.matches(&format!("# TYPE {family} ")).count(),
            1,
            "{family} typed once:\n{metrics}"
        );
        assert_eq!(
            metrics.matches(&format!("# HELP {family} ")).count(),
            1,
            "{family} described once"
        );
    }
    assert!(metrics.contains("reelfleet_stage_duration_seconds_bucket{"));
    for series in metrics.lines().filter(|l| l.starts_with("reelfleet_")) {
        if !series.starts_with("reelfleet_http_") {
            assert!(series.contains("node=\""), "no node label: {series}");
        }
    }
    if let Some(complaints) = promtool_complaints(metrics) {
        assert!(
            complaints.is_empty(),
            "promtool check metrics:\n{complaints}"
        );
    }
}

fn check_limits(addr: SocketAddr) {
    // An oversized head is refused; the listener keeps serving.
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let big = "x".repeat(256 * 1024);
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert_eq!(get(addr, "/health").map(|r| r.0), Some(200));

    // Idle connections up to the limit are held; one more is closed at
    // once; once they go, the listener serves again.
    let idle: Vec<TcpStream> = (0..reelfleet::http::MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = TcpStream::connect(addr).expect("connect");
    extra.set_read_timeout(Some(Duration::from_secs(3))).ok();
    let _ = write!(extra, "GET /health HTTP/1.1\r\nhost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    let n = extra.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a connection over the limit was served");
    drop(idle);
    let t0 = Instant::now();
    while get(addr, "/health").map(|r| r.0) != Some(200) {
        assert!(t0.elapsed() < Duration::from_secs(5), "not serving again");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_busy_port_given_explicitly_is_an_error_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("dir");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr");
    let data = dir.path().join("data");
    // The admin RPC is QUIC: its port is busy when UDP is taken there.
    let _busy_udp = std::net::UdpSocket::bind(port).expect("bind UDP on the same port");
    for flag in ["--metrics", "--admin"] {
        let out = Command::new(env!("CARGO_BIN_EXE_reelfleet"))
            .args(["up", flag, &port.to_string(), "--data"])
            .arg(&data)
            .output()
            .expect("run up");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag}: up ran on a busy port");
        assert!(
            err.contains(flag) && err.contains(&port.to_string()),
            "{err}"
        );
        assert!(!data.exists(), "{flag}: up wrote {} first", data.display());
    }
}
