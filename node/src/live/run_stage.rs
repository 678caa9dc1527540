//! Runs one stage job on this node's executor as its pipeline and the node
//! config say (`synthetic` unless `[executors.<stage>]` names another), and
//! finds the finished video for the publisher.
//!
//! Artifacts live under `<artifacts>/<channel>/<slot>/<stage>/`; a stage's
//! `{input_dir}` is the previous stage's folder. Nodes that render for each
//! other's channels must share the artifacts folder (a shared mount).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use actors::protocol::JobSpec;
use topology::{placement, ChannelId, StageKind};

use super::config::ExecutorConfig;
use super::ctx::NodeCtx;
use crate::exec::command::CommandSpec;
use crate::exec::http::HttpSpec;
use crate::exec::{ExecJob, ExecOutcome};

pub enum StageResult {
    Ok,
    Failed { retryable: bool },
    Cancelled,
}

fn slot_dir(ctx: &NodeCtx, channel: ChannelId, slot: u64) -> PathBuf {
    ctx.artifacts
        .join(&ctx.topo.channel(channel).name)
        .join(slot.to_string())
}

/// Runs `spec` for at most `timeout_ms`; `cancel` firing (or its sender
/// being dropped) stops it.
pub async fn run_stage(
    ctx: &Arc<NodeCtx>,
    spec: &JobSpec,
    timeout_ms: u64,
    cancel: tokio::sync::oneshot::Receiver<()>,
) -> StageResult {
    let chan = ctx.topo.channel(spec.id.channel);
    let pipeline = ctx.topo.pipeline(chan.pipeline);
    let Some(stage) = pipeline.stages.get(usize::from(spec.id.stage)) else {
        eprintln!("{}: {} has no stage {}", ctx.name, chan.name, spec.id.stage);
        return StageResult::Failed { retryable: false };
    };
    let dir = slot_dir(ctx, spec.id.channel, spec.id.slot);
    let input_dir = match usize::from(spec.id.stage).checked_sub(1) {
        Some(prev) => dir.join(&pipeline.stages[prev].name),
        None => dir.clone(),
    };
    let mut vars = BTreeMap::new();
    vars.insert("channel".to_string(), chan.name.clone());
    vars.insert("slot".to_string(), spec.id.slot.to_string());
    vars.insert("attempt".to_string(), spec.id.attempt.to_string());
    vars.insert(
        "input_dir".to_string(),
        input_dir.to_string_lossy().into_owned(),
    );
    vars.insert(
        "title".to_string(),
        format!("{} number {}", chan.name, spec.id.slot),
    );
    let synthetic_ms = spec
        .duration
        .sample_ms(placement::mix64(spec.id.slot ^ u64::from(spec.id.channel.0) << 32) as u32);
    let job = ExecJob {
        name: format!(
            "{}/{}/{}/a{}",
            chan.name, spec.id.slot, stage.name, spec.id.attempt
        ),
        stage: stage.name.clone(),
        artifact_dir: dir.join(&stage.name),
        vars,
        duration_ms: match ctx.executors.get(&stage.name) {
            None | Some(ExecutorConfig::Synthetic) => synthetic_ms.min(timeout_ms),
            Some(_) => timeout_ms,
        },
    };
    let cancel = async move {
        let _ = cancel.await;
    };
    let run = async {
        match ctx.executors.get(&stage.name) {
            None | Some(ExecutorConfig::Synthetic) => {
                crate::exec::synthetic::run(&job, cancel).await
            }
            Some(ExecutorConfig::Command {
                program,
                args,
                env,
                permanent_exit_codes,
            }) => {
                let c = CommandSpec {
                    program: program.clone(),
                    args: args.clone(),
                    env: env.clone(),
                    permanent_exit_codes: permanent_exit_codes.clone(),
                };
                crate::exec::command::run(&c, &job, cancel).await
            }
            Some(ExecutorConfig::Http {
                url,
                body,
                timeout_ms: t,
                headers,
            }) => {
                let h = HttpSpec {
                    url: url.clone(),
                    body: body.clone().unwrap_or_else(|| serde_json::json!({})),
                    timeout_ms: t.unwrap_or(timeout_ms).min(timeout_ms),
                    headers: headers.clone(),
                };
                crate::exec::http::run(&ctx.http, &h, &job, cancel).await
            }
        }
    };
    // The hard limit holds whatever the executor does.
    let out = match tokio::time::timeout(std::time::Duration::from_millis(timeout_ms), run).await {
        Ok(o) => o,
        Err(_) => ExecOutcome::Failed {
            reason: format!("timed out after {timeout_ms} ms"),
            retryable: true,
        },
    };
    match out {
        ExecOutcome::Succeeded { .. } => StageResult::Ok,
        ExecOutcome::Failed { reason, retryable } => {
            eprintln!("{}: {} failed: {reason}", ctx.name, job.name);
            StageResult::Failed { retryable }
        }
        ExecOutcome::Cancelled => StageResult::Cancelled,
    }
}

/// The file to publish for a video: the last stage's `video.mp4`, else its
/// first artifact (a synthetic manifest). When no stage output is visible
/// here (artifacts not shared), a small stand-in describing the video is
/// written, so that a misconfigured mount shows in the published metadata
/// instead of blocking the channel.
pub fn video_for(ctx: &NodeCtx, channel: ChannelId, slot: u64) -> PathBuf {
    let chan = ctx.topo.channel(channel);
    let pipeline = ctx.topo.pipeline(chan.pipeline);
    let dir = slot_dir(ctx, channel, slot);
    for stage in pipeline.stages.iter().rev() {
        if matches!(stage.kind, StageKind::Publish) {
            continue;
        }
        let d = dir.join(&stage.name);
        for name in ["video.mp4", "response.json", "manifest.json"] {
            if d.join(name).is_file() {
                return d.join(name);
            }
        }
    }
    eprintln!(
        "{}: no stage output for {} slot {slot} under {}; publishing a stand-in (is the artifacts folder shared?)",
        ctx.name,
        chan.name,
        dir.display()
    );
    let stand_in = dir.join("missing-artifact.json");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        &stand_in,
        serde_json::json!({
            "channel": chan.name,
            "slot": slot,
            "note": format!("no stage output under {} on {}", dir.display(), ctx.name),
        })
        .to_string(),
    );
    stand_in
}
