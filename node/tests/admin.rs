//! The admin RPC against a real `reelfleet node`, driven through
//! `reelfleet ctl` as an operator would: roles from client certificates (a
//! viewer only reads, an operator may pause but not flip the kill switch, a
//! node certificate only reads, no certificate cannot connect), a malformed
//! frame answered with an error while the connection stays usable, and
//! every change in the audit log with who, role, what and when.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use reelfleet::admin::client::AdminClient;
use reelfleet::admin::proto::Command as AdminCommand;
use reelfleet::certs::{self, Role};
use reelfleet::live::transport::TlsIdentity;

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ctl(dir: &Path, port: u16, who: &[&str], cmd: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reelfleet"))
        .args([
            "ctl",
            "--node",
            &format!("127.0.0.1:{port}"),
            "--cert",
            "certs",
        ])
        .args(who)
        .args(cmd)
        .current_dir(dir)
        .output()
        .expect("run ctl")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "ctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn refused(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "ctl was allowed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One node on redb with the ffmpeg example's cluster (channel "spoken"),
/// and certificates for a viewer, an operator and an admin.
fn start(dir: &Path) -> (Node, u16) {
    let cluster = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ffmpeg.toml"),
    )
    .expect("example cluster");
    std::fs::write(dir.join("cluster.toml"), cluster).expect("write");
    let c = dir.join("certs");
    certs::init(&c, "admin-test").expect("CA");
    certs::issue(&c, Role::Node, "workstation").expect("node");
    certs::issue(&c, Role::Viewer, "vera").expect("viewer");
    certs::issue(&c, Role::Operator, "otto").expect("operator");
    certs::issue(&c, Role::Admin, "ada").expect("admin");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port")
        .port();
    std::fs::write(
        dir.join("node.toml"),
        format!(
            "node = \"workstation\"\ncluster = \"cluster.toml\"\nstore = \"redb://data/store.redb\"\n\
             listen = \"127.0.0.1:{port}\"\ncerts = \"certs\"\ndata_dir = \"data\"\n[gpu]\nprobe = false\n"
        ),
    )
    .expect("write");
    let node = Node(
        Command::new(env!("CARGO_BIN_EXE_reelfleet"))
            .args(["node", "--config", "node.toml"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the node"),
    );
    let t0 = Instant::now();
    while !ctl(dir, port, &["--as", "vera"], &["status"])
        .status
        .success()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no admin RPC after 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (node, port)
}

#[test]
fn roles_changes_and_the_audit_log_through_ctl() {
    let tmp = tempfile::tempdir().expect("dir");
    let dir = tmp.path();
    let (_node, port) = start(dir);
    let viewer = ["--as", "vera"];
    let operator = ["--as", "otto"];
    let admin = ["--as", "ada"];
    let node_cert = ["--as", "workstation", "--as-node"];

    // Everyone reads.
    for who in [&viewer[..], &operator[..], &admin[..], &node_cert[..]] {
        let s = ok(&ctl(dir, port, who, &["status"]));
        assert!(s.contains("workstation"), "{s}");
    }
    // A viewer may not pause; an operator may.
    let e = refused(&ctl(dir, port, &viewer, &["pause", "spoken"]));
    assert!(
        e.contains("needs the operator role") && e.contains("viewer"),
        "{e}"
    );
    let out = ok(&ctl(dir, port, &operator, &["pause", "spoken"]));
    assert!(out.contains("spoken"), "{out}");
    let chans = ok(&ctl(dir, port, &viewer, &["--json", "channels"]));
    let v: serde_json::Value = serde_json::from_str(&chans).expect("JSON");
    assert_eq!(v[0]["paused"], true, "{v}");
    // The kill switch is an admin's: not an operator's, not a node's.
    let e = refused(&ctl(
        dir,
        port,
        &operator,
        &["killswitch", "on", "--reason", "test"],
    ));
    assert!(e.contains("needs the admin role"), "{e}");
    let e = refused(&ctl(
        dir,
        port,
        &node_cert,
        &["killswitch", "on", "--reason", "test"],
    ));
    assert!(
        e.contains("needs the admin role") && e.contains("node"),
        "{e}"
    );
    ok(&ctl(
        dir,
        port,
        &admin,
        &["killswitch", "on", "--reason", "a runaway test"],
    ));
    let s = ok(&ctl(dir, port, &viewer, &["--json", "status"]));
    let v: serde_json::Value = serde_json::from_str(&s).expect("JSON");
    assert_eq!(v["killswitch"], true, "{v}");
    assert_eq!(v["paused"][0], "spoken", "{v}");
    ok(&ctl(
        dir,
        port,
        &admin,
        &["killswitch", "off", "--reason", "done"],
    ));
    ok(&ctl(dir, port, &operator, &["resume", "spoken"]));
    // Regions and one channel read; a kill is an operator's.
    let r = ok(&ctl(dir, port, &viewer, &["--json", "regions"]));
    let v: serde_json::Value = serde_json::from_str(&r).expect("JSON");
    assert_eq!(v[0]["region"], "local", "{v}");
    let e = refused(&ctl(dir, port, &viewer, &["kill", "spoken"]));
    assert!(e.contains("needs the operator role"), "{e}");
    ok(&ctl(dir, port, &operator, &["kill", "spoken"]));
    let c = ok(&ctl(dir, port, &viewer, &["--json", "channel", "spoken"]));
    let v: serde_json::Value = serde_json::from_str(&c).expect("JSON");
    assert_eq!(v["killed"], true, "{v}");
    assert!(v["videos"].is_array(), "{v}");

    check_audit(dir, port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_is_answered_and_the_connection_goes_on() {
    let tmp = tempfile::tempdir().expect("dir");
    let dir = tmp.path().to_path_buf();
    let (_node, port) = tokio::task::spawn_blocking(move || {
        let r = start(&dir);
        (r, dir)
    })
    .await
    .map(|(r, _)| r)
    .expect("start");
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let id = TlsIdentity::load(&tmp.path().join("certs"), "admins", "vera").expect("identity");
    let mut c = AdminClient::connect(addr, "localhost", &id)
        .await
        .expect("connect");
    let a = c
        .call_raw(b"\x05\x00\x00\x00hello")
        .await
        .expect("an answer");
    assert!(
        !a.ok && a.error.as_deref().unwrap_or("").contains("malformed"),
        "{a:?}"
    );
    let a = c
        .call_raw(b"\x22\x00\x00\x00{\"v\": 2, \"id\": 9, \"cmd\": \"status\"}")
        .await
        .expect("an answer");
    assert_eq!(a.id, 9);
    assert!(a.error.as_deref().unwrap_or("").contains("newer"), "{a:?}");
    let too_big = (1u32 << 30).to_le_bytes();
    let a = c.call_raw(&too_big).await.expect("an answer");
    assert!(
        a.error.as_deref().unwrap_or("").contains("over the limit"),
        "{a:?}"
    );
    // The same connection still answers.
    let a = c.call(AdminCommand::Status).await.expect("status");
    assert!(a.ok, "{a:?}");

    // No client certificate: refused at connect.
    let ca = std::fs::read(tmp.path().join("certs/ca.pem")).expect("ca");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.as_slice()).flatten() {
        roots.add(c).expect("root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![reelfleet::admin::proto::ALPN.to_vec()];
    let q = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("bind")).expect("endpoint");
    ep.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(q)));
    let r = async {
        let conn = ep
            .connect(addr, "localhost")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut s, mut r) = conn.open_bi().await.map_err(|e| e.to_string())?;
        s.write_all(b"\x00\x00\x00\x00")
            .await
            .map_err(|e| e.to_string())?;
        let mut b = [0u8; 4];
        r.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    }
    .await;
    assert!(r.is_err(), "a client without a certificate was served");
}

/// Every change is in the audit log, with who, role, what and when;
/// refused commands changed nothing and are not.
fn check_audit(dir: &Path, port: u16) {
    let viewer = ["--as", "vera"];
    let a = ok(&ctl(dir, port, &viewer, &["--json", "audit"]));
    let log: Vec<serde_json::Value> = serde_json::from_str(&a).expect("JSON");
    let seen: Vec<(String, String, String)> = log
        .iter()
        .map(|r| {
            (
                r["who"].as_str().unwrap_or_default().to_string(),
                r["role"].as_str().unwrap_or_default().to_string(),
                r["command"]["cmd"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expect = [
        ("otto", "operator", "pause"),
        ("ada", "admin", "killswitch"),
        ("ada", "admin", "killswitch"),
        ("otto", "operator", "resume"),
        ("otto", "operator", "kill"),
    ];
    let expect: Vec<(String, String, String)> = expect
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(seen, expect, "{log:?}");
    assert!(log
        .iter()
        .all(|r| r["at_ms"].as_u64().is_some_and(|t| t > 0)));
    assert_eq!(log[1]["command"]["reason"], "a runaway test");
}

/// tmux drives a terminal as a person would; CI installs it.
fn tmux(args: &[&str]) -> String {
    let o = Command::new("tmux").args(args).output().expect("tmux");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn wait_screen(session: &str, want: &str) -> String {
    let t0 = Instant::now();
    loop {
        let screen = tmux(&["capture-pane", "-p", "-t", session, "-S", "-200"]);
        if screen.contains(want) {
            return screen;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{want:?} never showed; the screen:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Types keys one at a time, as a person does (a burst can outrun the
/// line editor's redraw under load).
fn keys(session: &str, ks: &[&str]) {
    for k in ks {
        tmux(&["send-keys", "-t", session, k]);
        std::thread::sleep(Duration::from_millis(60));
    }
}

/// Waits until the console shows an empty prompt, ready for a line: keys
/// typed before that may be dropped when the line editor takes the
/// terminal back.
fn wait_prompt(session: &str) {
    wait_last_line(session, "reelfleet>");
}

/// Waits until the last line on the screen is `want`.
fn wait_last_line(session: &str, want: &str) {
    let t0 = Instant::now();
    loop {
        let screen = tmux(&["capture-pane", "-p", "-t", session]);
        let last = screen.lines().rev().find(|l| !l.trim().is_empty());
        if last.map(str::trim_end) == Some(want) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no prompt; the screen:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_console_in_a_terminal_completes_remembers_and_runs_commands() {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI installs tmux");
        eprintln!("skipped: no tmux (apt-get install tmux)");
        return;
    }
    let tmp = tempfile::tempdir().expect("dir");
    let dir = tmp.path();
    let (_node, port) = start(dir);
    let session = format!("rf-console-{}", std::process::id());
    let cmd = format!(
        "cd {} && HOME={} {} console --node 127.0.0.1:{port} --cert certs --as otto",
        dir.display(),
        dir.display(),
        env!("CARGO_BIN_EXE_reelfleet")
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "160",
        "-y",
        "50",
        &cmd,
    ]);
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["kill-session", "-t", &self.0])
                .output();
        }
    }
    let _kill = Kill(session.clone());
    wait_prompt(&session);
    // Completion of a command, then of a channel name.
    keys(&session, &["sta", "Tab"]);
    wait_screen(&session, "reelfleet> status");
    keys(&session, &["Enter"]);
    wait_screen(&session, "answered_by: workstation");
    wait_prompt(&session);
    keys(&session, &["pause sp", "Tab"]);
    wait_screen(&session, "reelfleet> pause spoken");
    keys(&session, &["Enter"]);
    wait_screen(&session, "paused:");
    wait_prompt(&session);
    keys(&session, &["help", "Enter"]);
    wait_screen(&session, "killswitch on|off");
    wait_prompt(&session);
    // An operator is refused the kill switch, in the console too.
    keys(&session, &["killswitch on --reason x", "Enter"]);
    wait_screen(&session, "needs the admin role");
    wait_prompt(&session);
    // History: two steps up is the pause again.
    keys(&session, &["Up", "Up", "Up"]);
    wait_last_line(&session, "reelfleet> pause spoken");
    keys(&session, &["C-u", "quit", "Enter"]);
    let t0 = Instant::now();
    let history = dir.join(".reelfleet_history");
    while !history.exists() {
        assert!(t0.elapsed() < Duration::from_secs(10), "no history saved");
        std::thread::sleep(Duration::from_millis(100));
    }
    let h = std::fs::read_to_string(&history).expect("history");
    assert!(h.contains("pause spoken") && h.contains("status"), "{h}");
}

/// `drain NODE` through the RPC: the node hands its channels away and
/// exits 0 (not a failure a service manager restarts); started again, it
/// refuses, naming who drained it and how to undo it, and exits 0.
#[test]
fn a_drained_node_stops_and_stays_out() {
    let tmp = tempfile::tempdir().expect("dir");
    let dir = tmp.path();
    let (mut node, port) = start(dir);
    let e = refused(&ctl(
        dir,
        port,
        &["--as", "vera"],
        &["drain", "workstation"],
    ));
    assert!(e.contains("needs the operator role"), "{e}");
    ok(&ctl(
        dir,
        port,
        &["--as", "otto"],
        &["drain", "workstation"],
    ));
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = node.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the node did not stop within 30 s of drain"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "drained node exited with {status}");
    let again = Command::new(env!("CARGO_BIN_EXE_reelfleet"))
        .args(["node", "--config", "node.toml"])
        .current_dir(dir)
        .output()
        .expect("start again");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{err}");
    assert!(
        err.contains("drained by otto") && err.contains("ctl undrain workstation"),
        "{err}"
    );
}
