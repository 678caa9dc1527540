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
    let fail = |reason: String, retryable| ExecOutcome::Failed { reason, retryable };
    let vars = job.placeholders();
    let args: Result<Vec<String>, String> = spec.args.iter().map(|a| expand(a, &vars)).collect();
    let args = match args {
        Ok(a) => a,
        Err(e) => return fail(format!("stage {}: {e}", job.stage), false),
    };
    let mut env = BTreeMap::new();
    for (k, v) in &spec.env {
        match expand(v, &vars) {
            Ok(v) => {
                env.insert(k.clone(), v);
            }
            Err(e) => return fail(format!("stage {} env {k}: {e}", job.stage), false),
        }
    }
    if let Err(e) = std::fs::create_dir_all(&job.artifact_dir) {
        return fail(
            format!("cannot create {}: {e}", job.artifact_dir.display()),
            true,
        );
    }
    let log =
        |ext: &str| std::fs::File::create(job.artifact_dir.join(format!("{}.{ext}", job.stage)));
    let (stdout, stderr) = match (log("stdout"), log("stderr")) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            return fail(format!("cannot create the job's logs: {e}"), true)
        }
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
    let kill_group = || {
        if let Some(pgid) = pgid {
            // Safety: kill(2) with a negative pid signals the process group
            // this job created; no memory is touched.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    };
    tokio::select! {
        status = child.wait() => {
            // The job is done; anything it left running in its group goes too.
            kill_group();
            match status {
                Ok(s) if s.success() => ExecOutcome::Succeeded { artifact: job.artifact_dir.clone() },
                Ok(s) => match (s.code(), s.signal()) {
                    (Some(code), _) => fail(
                        format!("{} exited with status {code} (see {}.stderr)", spec.program, job.stage),
                        !spec.permanent_exit_codes.contains(&code),
                    ),
                    (None, Some(sig)) => fail(format!("{} was killed by signal {sig}", spec.program), true),
                    _ => fail(format!("{} ended without a status", spec.program), true),
                },
                Err(e) => fail(format!("waiting for {}: {e}", spec.program), true),
            }
        }
        _ = tokio::time::sleep(Duration::from_millis(job.duration_ms)) => {
            kill_group();
            let _ = child.wait().await;
            fail(format!("{} timed out after {} ms and was killed", spec.program, job.duration_ms), true)
        }
        _ = cancel => {
            kill_group();
            let _ = child.wait().await;
            ExecOutcome::Cancelled
        }
    }
}
