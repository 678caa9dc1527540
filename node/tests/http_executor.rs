//! The http executor against a tiny hand-written HTTP/1.1 server: what the
//! server receives (expanded URL, headers and body), what a job leaves
//! behind, and which failures are worth a retry.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reelfleet::exec::http::{self, HttpSpec};
use reelfleet::exec::{ExecJob, ExecOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the server does with a request once it has read it.
#[derive(Clone)]
enum Reply {
    Answer {
        status: u16,
        body: String,
    },
    /// Keeps the connection open without a word, until the client hangs up.
    Never,
}

#[derive(Debug)]
enum Event {
    Request {
        head: String,
        body: Vec<u8>,
    },
    /// The client closed a connection the server never answered.
    Closed,
}

/// Serves `reply` to every connection; returns the base URL and what the
/// server saw.
async fn serve(reply: Reply) -> (String, mpsc::UnboundedReceiver<Event>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(connection(conn, reply.clone(), tx.clone()));
        }
    });
    (base, rx)
}

async fn connection(mut conn: TcpStream, reply: Reply, tx: mpsc::UnboundedSender<Event>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[head_end..head_end + length].to_vec();
    let _ = tx.send(Event::Request { head, body });
    match reply {
        Reply::Answer { status, body } => {
            let text = format!(
                "HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(text.as_bytes()).await;
            let _ = conn.shutdown().await;
        }
        Reply::Never => loop {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    let _ = tx.send(Event::Closed);
                    return;
                }
                Ok(_) => {}
            }
        },
    }
}

fn client() -> reqwest::Client {
    // No proxy: a proxy from the environment must not sit between the test
    // and its 127.0.0.1 server.
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

fn job(dir: &std::path::Path) -> ExecJob {
    let vars: BTreeMap<String, String> = [("channel", "cooking"), ("slot", "7")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ExecJob {
        name: "cooking/7/render/1".into(),
        stage: "render".into(),
        artifact_dir: dir.join("artifact"),
        vars,
        duration_ms: 60_000,
    }
}

fn spec(base: &str, timeout_ms: u64) -> HttpSpec {
    HttpSpec {
        url: format!("{base}/v1/{{stage}}?slot={{slot}}"),
        body: serde_json::json!({
            "prompt": "a video about {channel}",
            "meta": { "slot": "{slot}", "tags": ["{stage}", 3, true], "out": "{artifact_dir}" },
            "n": 2,
        }),
        timeout_ms,
        headers: [(
            "authorization".to_string(),
            "Bearer tok-{channel}".to_string(),
        )]
        .into_iter()
        .collect(),
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the server saw nothing within 10 s")
        .expect("the server stopped")
}

#[tokio::test]
async fn a_2xx_answer_is_written_as_the_artifact_and_the_server_saw_the_expanded_request() {
    let answer = r#"{"video":"https://cdn.example/v.mp4","frames":[1,2,3]}"#;
    let (base, mut rx) = serve(Reply::Answer {
        status: 200,
        body: answer.into(),
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let j = job(dir.path());
    let out = http::run(&client(), &spec(&base, 10_000), &j, std::future::pending()).await;
    assert_eq!(
        out,
        ExecOutcome::Succeeded {
            artifact: j.artifact_dir.clone()
        }
    );
    let written: serde_json::Value = serde_json::from_slice(
        &std::fs::read(j.artifact_dir.join(http::RESPONSE_FILE)).expect("response.json"),
    )
    .expect("json");
    assert_eq!(
        written,
        serde_json::from_str::<serde_json::Value>(answer).expect("json")
    );
    let leftovers: Vec<_> = std::fs::read_dir(&j.artifact_dir)
        .expect("artifact dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, vec![http::RESPONSE_FILE.to_string()]);

    let Event::Request { head, body } = next(&mut rx).await else {
        panic!("expected a request")
    };
    assert!(
        head.starts_with("POST /v1/render?slot=7 HTTP/1.1\r\n"),
        "{head}"
    );
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("\r\ncontent-type: application/json\r\n"),
        "{head}"
    );
    assert!(
        lower.contains("\r\nauthorization: bearer tok-cooking\r\n"),
        "{head}"
    );
    let sent: serde_json::Value = serde_json::from_slice(&body).expect("a JSON body");
    assert_eq!(
        sent,
        serde_json::json!({
            "prompt": "a video about cooking",
            "meta": {
                "slot": "7",
                "tags": ["render", 3, true],
                "out": j.artifact_dir.to_string_lossy(),
            },
            "n": 2,
        })
    );
}

#[tokio::test]
async fn server_trouble_is_retryable() {
    for status in [500, 503, 429, 408] {
        let (base, _rx) = serve(Reply::Answer {
            status,
            body: r#"{"error":"overloaded"}"#.into(),
        })
        .await;
        let dir = tempfile::tempdir().expect("temp dir");
        let j = job(dir.path());
        let out = http::run(&client(), &spec(&base, 10_000), &j, std::future::pending()).await;
        assert!(
            matches!(&out, ExecOutcome::Failed { reason, retryable: true }
                if reason.contains(&status.to_string()) && reason.contains("overloaded")),
            "{status}: {out:?}"
        );
        assert!(!j.artifact_dir.join(http::RESPONSE_FILE).exists());
    }
}

#[tokio::test]
async fn a_rejected_request_is_a_permanent_failure_with_a_short_snippet() {
    let long_tail = "x".repeat(10_000);
    let (base, _rx) = serve(Reply::Answer {
        status: 400,
        body: format!(r#"{{"error":"bad prompt","detail":"{long_tail}"}}"#),
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let j = job(dir.path());
    let out = http::run(&client(), &spec(&base, 10_000), &j, std::future::pending()).await;
    let ExecOutcome::Failed {
        reason,
        retryable: false,
    } = &out
    else {
        panic!("expected a permanent failure: {out:?}")
    };
    assert!(
        reason.contains("400") && reason.contains("bad prompt"),
        "{reason}"
    );
    assert!(
        reason.len() < 1_000,
        "the reason carries the whole body: {} bytes",
        reason.len()
    );
    assert!(!j.artifact_dir.join(http::RESPONSE_FILE).exists());
}

#[tokio::test]
async fn a_2xx_that_is_not_json_is_a_permanent_failure() {
    let (base, _rx) = serve(Reply::Answer {
        status: 200,
        body: "<html>login</html>".into(),
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let j = job(dir.path());
    let out = http::run(&client(), &spec(&base, 10_000), &j, std::future::pending()).await;
    assert!(
        matches!(&out, ExecOutcome::Failed { reason, retryable: false }
            if reason.contains("not JSON") && reason.contains("<html>login</html>")),
        "{out:?}"
    );
    assert!(!j.artifact_dir.join(http::RESPONSE_FILE).exists());
}

#[tokio::test]
async fn a_silent_server_times_out_within_about_the_timeout() {
    let (base, mut rx) = serve(Reply::Never).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let j = job(dir.path());
    let started = Instant::now();
    let out = http::run(&client(), &spec(&base, 300), &j, std::future::pending()).await;
    let took = started.elapsed();
    assert!(
        matches!(&out, ExecOutcome::Failed { reason, retryable: true }
            if reason.contains("POST ") && reason.contains("timed out after 300 ms")),
        "{out:?}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(matches!(next(&mut rx).await, Event::Request { .. }));
}

#[tokio::test]
async fn cancel_drops_the_request_and_closes_its_connection() {
    let (base, mut rx) = serve(Reply::Never).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let j = job(dir.path());
    let started = Instant::now();
    let out = http::run(
        &client(),
        &spec(&base, 60_000),
        &j,
        tokio::time::sleep(Duration::from_millis(300)),
    )
    .await;
    assert_eq!(out, ExecOutcome::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(next(&mut rx).await, Event::Request { .. }));
    // The request future was dropped, not left running in the background.
    assert!(matches!(next(&mut rx).await, Event::Closed));
}

#[tokio::test]
async fn an_unknown_placeholder_fails_before_anything_is_sent() {
    let (base, mut rx) = serve(Reply::Answer {
        status: 200,
        body: "{}".into(),
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let j = job(dir.path());
    let mut s = spec(&base, 10_000);
    s.body["meta"]["tags"][1] = serde_json::json!("{chanel}");
    let out = http::run(&client(), &s, &j, std::future::pending()).await;
    assert!(
        matches!(&out, ExecOutcome::Failed { reason, retryable: false }
            if reason.contains("{chanel}") && reason.contains("body.meta.tags[1]")),
        "{out:?}"
    );
    let mut s = spec(&base, 10_000);
    s.url = format!("{base}/{{model}}");
    let out = http::run(&client(), &s, &j, std::future::pending()).await;
    assert!(
        matches!(&out, ExecOutcome::Failed { reason, retryable: false }
            if reason.contains("{model}") && reason.contains("url")),
        "{out:?}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rx.try_recv().is_err(), "a request was sent");
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    // A port that was just free: nothing listens on it any more.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr").port()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let j = job(dir.path());
    let s = spec(&format!("http://127.0.0.1:{port}"), 10_000);
    let out = http::run(&client(), &s, &j, std::future::pending()).await;
    assert!(
        matches!(&out, ExecOutcome::Failed { reason, retryable: true }
            if reason.contains("cannot connect")),
        "{out:?}"
    );
}
