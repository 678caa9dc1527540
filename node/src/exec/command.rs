//! The command executor: one process per job, in a process group of its
//! own, so that a cancel or a timeout kills everything it started. Its
//! stdout and stderr are kept beside the artifact (`<stage>.stdout`,
//! `<stage>.stderr`); its exit status becomes the failure reason.

use std::collections::BTreeMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Stdio;
use std::time::Duration;

use super::{expand, ExecJob, ExecOutcome};

/// A command stage as the pipeline declares it.
#[derive(Clone, Debug)]
pub struct CommandSpec {
    pub program: String,
    /// Each argument may hold `{placeholders}`.
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Exit codes that mean "retrying will not help".
    pub permanent_exit_codes: Vec<i32>,
}

/// Runs `spec` for `job`, killing its process group at `job.duration_ms`
/// (the timeout) or when `cancel` resolves.
pub async fn run(
    spec: &CommandSpec,
    job: &ExecJob,
    cancel: impl std::future::Future<Output = ()>,
) -> ExecOutcome {
    let (args, env) = match expand_invocation(spec, job) {
        Ok(v) => v,
        Err(reason) => return fail(reason, false),
    };
    let (stdout, stderr) = match open_logs(job) {
        Ok(v) => v,
        Err(reason) => return fail(reason, true),
    };
    let mut cmd = std::process::Command::new(&spec.program);
    cmd.args(&args)
        .envs(&env)
        .current_dir(&job.artifact_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        // Its own process group: the whole tree can be killed at once.
        .process_group(0);
    let mut child = match tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start {:?}: {e}", spec.program), false),
    };
    let pgid = child.id().map(|p| p as i32);
    tokio::select! {
        status = child.wait() => {
            // The job is done; anything it left running in its group goes too.
            kill_group(pgid);
            exit_outcome(spec, job, status)
        }
        _ = tokio::time::sleep(Duration::from_millis(job.duration_ms)) => {
            kill_group(pgid);
            let _ = child.wait().await;
            fail(format!("{} timed out after {} ms and was killed", spec.program, job.duration_ms), true)
        }
        _ = cancel => {
            kill_group(pgid);
            let _ = child.wait().await;
            ExecOutcome::Cancelled
        }
    }
}

fn fail(reason: String, retryable: bool) -> ExecOutcome {
    ExecOutcome::Failed { reason, retryable }
}

/// The job's arguments and environment with every placeholder filled in;
/// a placeholder that cannot be filled is a permanent failure.
fn expand_invocation(
    spec: &CommandSpec,
    job: &ExecJob,
) -> Result<(Vec<String>, BTreeMap<String, String>), String> {
    let vars = job.placeholders();
    let args = spec
        .args
        .iter()
        .map(|a| expand(a, &vars))
        .collect::<Result<Vec<String>, String>>()
        .map_err(|e| format!("stage {}: {e}", job.stage))?;
    let mut env = BTreeMap::new();
    for (k, v) in &spec.env {
        let v = expand(v, &vars).map_err(|e| format!("stage {} env {k}: {e}", job.stage))?;
        env.insert(k.clone(), v);
    }
    Ok((args, env))
}

/// Creates the artifact directory and the job's `<stage>.stdout` and
/// `<stage>.stderr` beside it; a failure here may pass, so it is retryable.
fn open_logs(job: &ExecJob) -> Result<(std::fs::File, std::fs::File), String> {
    std::fs::create_dir_all(&job.artifact_dir)
        .map_err(|e| format!("cannot create {}: {e}", job.artifact_dir.display()))?;
    let log =
        |ext: &str| std::fs::File::create(job.artifact_dir.join(format!("{}.{ext}", job.stage)));
    match (log("stdout"), log("stderr")) {
        (Ok(o), Ok(e)) => Ok((o, e)),
        (Err(e), _) | (_, Err(e)) => Err(format!("cannot create the job's logs: {e}")),
    }
}

/// Kills the process group the job created, if it got as far as one.
fn kill_group(pgid: Option<i32>) {
    if let Some(pgid) = pgid {
        // Safety: kill(2) with a negative pid signals the process group
        // this job created; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// What a finished process's exit status means for the job: only the exit
/// codes the stage declares permanent are not worth a retry.
fn exit_outcome(
    spec: &CommandSpec,
    job: &ExecJob,
    status: std::io::Result<std::process::ExitStatus>,
) -> ExecOutcome {
    match status {
        Ok(s) if s.success() => ExecOutcome::Succeeded {
            artifact: job.artifact_dir.clone(),
        },
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => fail(
                format!(
                    "{} exited with status {code} (see {}.stderr)",
                    spec.program, job.stage
                ),
                !spec.permanent_exit_codes.contains(&code),
            ),
            (None, Some(sig)) => fail(format!("{} was killed by signal {sig}", spec.program), true),
            _ => fail(format!("{} ended without a status", spec.program), true),
        },
        Err(e) => fail(format!("waiting for {}: {e}", spec.program), true),
    }
}
