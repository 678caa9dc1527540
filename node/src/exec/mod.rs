//! Executors: what runs a stage's job on a node. The machines decide
//! *that* a job runs (a `JobSpec` effect); an executor runs it for real and
//! answers with an outcome the shell feeds back as `JobFinished`.
//!
//! - [`synthetic`]: waits the stage's modelled duration and writes an
//!   artifact manifest; the default for demos and `reelfleet up`.
//! - [`command`]: a real process with templated arguments and environment,
//!   a timeout, killed with its whole process group on cancel.
//! - [`http`]: a JSON POST to an inference server with a timeout; the
//!   answer is the artifact, the status says whether a retry can help.

pub mod command;
pub mod http;
pub mod synthetic;

use std::collections::BTreeMap;
use std::path::PathBuf;

/// One job as an executor sees it.
#[derive(Clone, Debug)]
pub struct ExecJob {
    /// A name unique to this attempt (channel/slot/stage/attempt).
    pub name: String,
    pub stage: String,
    /// Where the job writes its output; created by the executor.
    pub artifact_dir: PathBuf,
    /// Values for `{name}` placeholders in commands: `channel`, `slot`,
    /// `stage`, `attempt`, `artifact_dir`, `input_dir` and any the pipeline adds.
    pub vars: BTreeMap<String, String>,
    /// The modelled duration (synthetic) or the hard timeout (command).
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecOutcome {
    Succeeded { artifact: PathBuf },
    Failed { reason: String, retryable: bool },
    Cancelled,
}

impl ExecJob {
    /// The placeholders every executor offers: the job's own `vars` plus
    /// `artifact_dir` and `stage`, the same for all so that a stage can move
    /// from a script to a server without renaming its placeholders.
    pub fn placeholders(&self) -> BTreeMap<String, String> {
        let mut vars = self.vars.clone();
        vars.insert(
            "artifact_dir".into(),
            self.artifact_dir.to_string_lossy().into_owned(),
        );
        vars.insert("stage".into(), self.stage.clone());
        vars
    }
}

/// Expands `{name}` placeholders from `vars`; an unknown name is an error
/// that names it (a typo in a pipeline should not run a wrong command).
pub fn expand(template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in {template:?}"))?;
        let name = &after[..close];
        let value = vars.get(name).ok_or_else(|| {
            format!(
                "unknown placeholder {{{name}}} in {template:?}; known: {}",
                vars.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        out.push_str(value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_expand_and_unknown_ones_are_named() {
        let vars: BTreeMap<String, String> = [("slot", "42"), ("stage", "render")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            expand("out/{stage}-{slot}.mp4", &vars),
            Ok("out/render-42.mp4".into())
        );
        let e = expand("{nope}", &vars).unwrap_err();
        assert!(
            e.contains("unknown placeholder {nope}") && e.contains("slot, stage"),
            "{e}"
        );
        assert!(expand("{slot", &vars).unwrap_err().contains("unclosed"));
    }
}
