//! The synthetic executor: waits the stage's modelled duration, then writes
//! `manifest.json` describing what a real stage would have produced.

use std::time::Duration;

use super::{ExecJob, ExecOutcome};

/// Runs `job`; `cancel` resolving first stops it.
pub async fn run(job: &ExecJob, cancel: impl std::future::Future<Output = ()>) -> ExecOutcome {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(job.duration_ms)) => {}
        _ = cancel => return ExecOutcome::Cancelled,
    }
    if let Err(e) = std::fs::create_dir_all(&job.artifact_dir) {
        return ExecOutcome::Failed {
            reason: format!("cannot create {}: {e}", job.artifact_dir.display()),
            retryable: true,
        };
    }
    let manifest = serde_json::json!({
        "job": job.name,
        "stage": job.stage,
        "executor": "synthetic",
        "duration_ms": job.duration_ms,
        "vars": job.vars,
    });
    let path = job.artifact_dir.join("manifest.json");
    let tmp = job.artifact_dir.join(".manifest.json.tmp");
    let written =
        std::fs::write(&tmp, manifest.to_string()).and_then(|_| std::fs::rename(&tmp, &path));
    match written {
        Ok(()) => ExecOutcome::Succeeded {
            artifact: job.artifact_dir.clone(),
        },
        Err(e) => ExecOutcome::Failed {
            reason: format!("cannot write {}: {e}", path.display()),
            retryable: true,
        },
    }
}
