//! Executors with real processes: templated arguments, logs beside the
//! artifact, exit status as the reason, and a timeout or cancel that kills
//! the whole process group (grandchildren too).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reelfleet::exec::command::{self, CommandSpec};
use reelfleet::exec::{synthetic, ExecJob, ExecOutcome};

fn job(dir: &std::path::Path, timeout_ms: u64) -> ExecJob {
    let vars: BTreeMap<String, String> = [("channel", "cooking"), ("slot", "7")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ExecJob {
        name: "cooking/7/render/1".into(),
        stage: "render".into(),
        artifact_dir: dir.join("artifact"),
        vars,
        duration_ms: timeout_ms,
    }
}

fn sh(script: &str) -> CommandSpec {
    CommandSpec {
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
        env: [("VIDEO".to_string(), "{channel}-{slot}".to_string())]
            .into_iter()
            .collect(),
        permanent_exit_codes: vec![64],
    }
}

fn alive(pid: i32) -> bool {
    // Signal 0 checks existence; a zombie awaiting its parent counts as gone.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    !status.is_empty() && !status.contains("State:\tZ")
}

#[tokio::test]
async fn a_command_writes_its_artifact_with_templated_args_and_env() {
    let dir = tempfile::tempdir().expect("temp dir");
    let j = job(dir.path(), 10_000);
    let spec = sh("echo \"$VIDEO\" > out.txt; echo to-stderr >&2");
    let out = command::run(&spec, &j, std::future::pending()).await;
    assert_eq!(
        out,
        ExecOutcome::Succeeded {
            artifact: j.artifact_dir.clone()
        }
    );
    assert_eq!(
        std::fs::read_to_string(j.artifact_dir.join("out.txt")).expect("out"),
        "cooking-7\n"
    );
    assert_eq!(
        std::fs::read_to_string(j.artifact_dir.join("render.stderr")).expect("stderr"),
        "to-stderr\n"
    );
}

#[tokio::test]
async fn an_exit_status_is_the_reason_and_says_if_retrying_helps() {
    let dir = tempfile::tempdir().expect("temp dir");
    let j = job(dir.path(), 10_000);
    let out = command::run(&sh("exit 3"), &j, std::future::pending()).await;
    assert!(
        matches!(&out, ExecOutcome::Failed { reason, retryable: true } if reason.contains("status 3")),
        "{out:?}"
    );
    let out = command::run(&sh("exit 64"), &j, std::future::pending()).await;
    assert!(
        matches!(
            out,
            ExecOutcome::Failed {
                retryable: false,
                ..
            }
        ),
        "{out:?}"
    );
    let missing = CommandSpec {
        program: "/no/such/program".into(),
        args: vec![],
        env: BTreeMap::new(),
        permanent_exit_codes: vec![],
    };
    let out = command::run(&missing, &j, std::future::pending()).await;
    assert!(
        matches!(&out, ExecOutcome::Failed { reason, .. } if reason.contains("cannot start")),
        "{out:?}"
    );
    let typo = CommandSpec {
        args: vec!["{chanel}".into()],
        ..sh("true")
    };
    let out = command::run(&typo, &j, std::future::pending()).await;
    assert!(
        matches!(&out, ExecOutcome::Failed { reason, retryable: false } if reason.contains("{chanel}")),
        "{out:?}"
    );
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().expect("temp dir");
    let j = job(dir.path(), 500);
    // The job starts a grandchild that would outlive a plain kill of `sh`.
    let spec = sh("sleep 30 & echo $! > grandchild.pid; wait");
    let started = Instant::now();
    let out = command::run(&spec, &j, std::future::pending()).await;
    assert!(
        matches!(&out, ExecOutcome::Failed { reason, retryable: true } if reason.contains("timed out")),
        "{out:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let pid: i32 = std::fs::read_to_string(j.artifact_dir.join("grandchild.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(pid), "the grandchild {pid} survived the kill");
}

#[tokio::test]
async fn cancel_stops_a_running_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let j = job(dir.path(), 60_000);
    let started = Instant::now();
    let out = command::run(
        &sh("sleep 30"),
        &j,
        tokio::time::sleep(Duration::from_millis(300)),
    )
    .await;
    assert_eq!(out, ExecOutcome::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(10));
    let out = synthetic::run(&j, tokio::time::sleep(Duration::from_millis(50))).await;
    assert_eq!(out, ExecOutcome::Cancelled);
}

#[tokio::test]
async fn the_synthetic_executor_writes_a_manifest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let j = job(dir.path(), 20);
    let out = synthetic::run(&j, std::future::pending()).await;
    assert_eq!(
        out,
        ExecOutcome::Succeeded {
            artifact: j.artifact_dir.clone()
        }
    );
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(j.artifact_dir.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(m["stage"], "render");
    assert_eq!(m["vars"]["slot"], "7");
}
