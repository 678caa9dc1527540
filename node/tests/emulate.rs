//! `reelfleet emulate youtube` as its own process, as an operator (or
//! `reelfleet chaos`) runs it: the real YouTube publisher uploads to it,
//! `/emulator/videos` lists the upload with its key, a fault turned on
//! through `/emulator/faults` reaches the publisher, and a bad control
//! request is answered 400 naming what was wrong.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actors::protocol::PublishOutcome;
use reelfleet::publish::youtube::{YoutubeConfig, YoutubePublisher};
use reelfleet::publish::{Publisher, Upload};
use topology::PublishingProject;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn upload(dir: &std::path::Path, key: &str) -> Upload {
    let video = dir.join(format!("{}.mp4", key.replace('/', "-")));
    std::fs::write(&video, vec![7u8; 3000]).expect("video");
    Upload {
        idempotency_key: key.into(),
        video,
        title: format!("Rehearsal {key}"),
        description: "A rehearsal.".into(),
        metadata: serde_json::json!({}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_process_serves_the_publisher_and_takes_faults() {
    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let token = dir.path().join("refresh-token");
    let _emu = Proc(
        Command::new(env!("CARGO_BIN_EXE_reelfleet"))
            .args([
                "emulate",
                "youtube",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--refresh-token-out")
            .arg(&token)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the emulator"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let t0 = Instant::now();
    while http
        .get(format!("{url}/emulator/state"))
        .send()
        .await
        .is_err()
    {
        assert!(t0.elapsed() < Duration::from_secs(20), "no emulator");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cfg = YoutubeConfig {
        api_base: url.clone(),
        upload_base: format!("{url}/upload"),
        token_url: format!("{url}/token"),
        client_id: reelfleet::emulate::youtube::CLIENT_ID.into(),
        client_secret: reelfleet::emulate::youtube::CLIENT_SECRET.into(),
        refresh_token: std::fs::read_to_string(&token).expect("token file"),
        request_timeout_ms: 5_000,
        ..YoutubeConfig::default()
    };
    let project = PublishingProject::youtube_legacy("emulator");
    let p = YoutubePublisher::new(cfg, Some(&project)).expect("publisher");
    let yes: reelfleet::publish::MayFinish = std::sync::Arc::new(|| true);
    let out = p.publish(&upload(dir.path(), "ch-1/1"), yes).await;
    assert!(
        matches!(out, Some(PublishOutcome::Published { .. })),
        "{out:?}"
    );
    let videos: serde_json::Value = http
        .get(format!("{url}/emulator/videos"))
        .send()
        .await
        .expect("videos")
        .json()
        .await
        .expect("JSON");
    assert_eq!(videos[0]["key"], "ch-1/1", "{videos}");

    faults_reach_the_publisher(&http, &url, &p, dir.path()).await;
}

/// A fault through the control endpoint reaches the publisher; a bad
/// control request is refused, naming the field.
async fn faults_reach_the_publisher(
    http: &reqwest::Client,
    url: &str,
    p: &YoutubePublisher,
    dir: &std::path::Path,
) {
    let yes: reelfleet::publish::MayFinish = std::sync::Arc::new(|| true);
    let r = http
        .post(format!("{url}/emulator/faults"))
        .body(r#"{"quota_exhausted": true}"#)
        .send()
        .await
        .expect("faults");
    assert_eq!(r.status(), 200);
    let out = p.publish(&upload(dir, "ch-1/2"), yes).await;
    assert!(
        !matches!(out, Some(PublishOutcome::Published { .. })),
        "published with the quota exhausted: {out:?}"
    );
    let why = p.last_error().unwrap_or_default();
    assert!(why.contains("quota"), "{why}");

    let r = http
        .post(format!("{url}/emulator/faults"))
        .body(r#"{"quota_exausted": true}"#)
        .send()
        .await
        .expect("faults");
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap_or_default();
    assert!(body.contains("quota_exausted"), "{body}");
}
