//! The example pipeline of `examples/ffmpeg.toml` for real: its config
//! parses, and its voice and render scripts, run through the `command`
//! executor as a node would run them, make a playable MP4 with a video and
//! an audio stream. Needs espeak-ng and ffmpeg; without them the test says
//! why it skips, except under CI (which installs them), where it fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use reelfleet::exec::command::{self, CommandSpec};
use reelfleet::exec::{ExecJob, ExecOutcome};
use topology::StageKind;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the node crate sits in the workspace")
        .to_path_buf()
}

/// Where `tool` is on `PATH`, like `which`.
fn on_path(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[test]
fn the_example_config_parses_with_the_four_stages() {
    let path = repo().join("examples/ffmpeg.toml");
    let text = std::fs::read_to_string(&path).expect("examples/ffmpeg.toml");
    let t = topology::config::parse_topology(&text)
        .unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
    let p = t
        .pipelines
        .iter()
        .find(|p| p.name == "spoken-title")
        .expect("the spoken-title pipeline");
    let stages: Vec<_> = p
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.kind.clone()))
        .collect();
    assert_eq!(
        stages,
        vec![
            ("script", StageKind::Cpu),
            ("voice", StageKind::Cpu),
            ("render", StageKind::Gpu),
            ("upload", StageKind::Publish),
        ]
    );
    let render = &p.stages[2];
    assert!(render.gpu_memory_bytes > 0 && render.gpu_memory_bytes <= topology::GIB);
    // The render stage must fit on the node's declared GPU.
    assert!(t
        .gpus
        .iter()
        .any(|g| g.memory_bytes >= render.gpu_memory_bytes));
}

fn job(stage: &str, dir: &Path, vars: &BTreeMap<String, String>) -> ExecJob {
    ExecJob {
        name: format!("spoken/0/{stage}/1"),
        stage: stage.into(),
        artifact_dir: dir.join(stage),
        vars: vars.clone(),
        // A hard timeout far above what a few seconds of speech take.
        duration_ms: 120_000,
    }
}

fn script(name: &str, args: &[&str]) -> CommandSpec {
    let path = repo().join("examples/ffmpeg").join(name);
    CommandSpec {
        program: "sh".into(),
        args: std::iter::once(path.to_string_lossy().into_owned())
            .chain(args.iter().map(|a| a.to_string()))
            .collect(),
        env: BTreeMap::new(),
        permanent_exit_codes: vec![64, 66],
    }
}

/// Fails with the stage's stderr log, which says what went wrong.
fn expect_success(out: &ExecOutcome, j: &ExecJob) {
    if !matches!(out, ExecOutcome::Succeeded { .. }) {
        let log = std::fs::read_to_string(j.artifact_dir.join(format!("{}.stderr", j.stage)))
            .unwrap_or_default();
        panic!("stage {}: {out:?}\n--- stderr ---\n{log}", j.stage);
    }
}

#[tokio::test]
async fn voice_and_render_make_a_real_mp4() {
    if skip_without_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // Quote, colon and percent: the characters that break shell and
    // ffmpeg-filter quoting when a script gets them wrong.
    let vars: BTreeMap<String, String> = [
        ("channel", "spoken"),
        ("slot", "0"),
        ("attempt", "1"),
        ("title", "Mum's soup: 100% real, {not a placeholder}"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    let voice = run_voice(dir.path(), &vars).await;
    let mp4 = run_render(dir.path(), &vars, &voice).await;

    if on_path("ffprobe").is_none() {
        eprintln!("ffprobe not on PATH: streams and duration not checked");
        return;
    }
    assert_one_video_and_one_audio_stream(&mp4);
}

/// True when espeak-ng or ffmpeg is missing and the test should skip;
/// panics instead under CI.
fn skip_without_tools() -> bool {
    let missing: Vec<_> = ["espeak-ng", "ffmpeg"]
        .into_iter()
        .filter(|t| on_path(t).is_none())
        .collect();
    if missing.is_empty() {
        return false;
    }
    let why = format!(
        "{} not on PATH (apt-get install espeak-ng ffmpeg)",
        missing.join(" and ")
    );
    // CI installs them: there a skip would hide a broken pipeline.
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but {why}");
    }
    eprintln!("skipping the ffmpeg pipeline: {why}");
    true
}

/// Runs the voice stage; its job, whose artifact holds `voice.wav`.
async fn run_voice(dir: &Path, vars: &BTreeMap<String, String>) -> ExecJob {
    let voice = job("voice", dir, vars);
    let out = command::run(
        &script("voice.sh", &["{artifact_dir}", "{title}"]),
        &voice,
        std::future::pending(),
    )
    .await;
    expect_success(&out, &voice);
    let wav = std::fs::metadata(voice.artifact_dir.join("voice.wav")).expect("voice.wav");
    assert!(wav.len() > 1024, "voice.wav is {} bytes", wav.len());
    voice
}

/// Runs the render stage on the voice stage's artifact; the MP4 it made.
async fn run_render(dir: &Path, vars: &BTreeMap<String, String>, voice: &ExecJob) -> PathBuf {
    let mut render_vars = vars.clone();
    render_vars.insert(
        "input_dir".into(),
        voice.artifact_dir.to_string_lossy().into_owned(),
    );
    let render = job("render", dir, &render_vars);
    let out = command::run(
        &script("render.sh", &["{input_dir}", "{artifact_dir}", "{title}"]),
        &render,
        std::future::pending(),
    )
    .await;
    expect_success(&out, &render);

    let mp4 = render.artifact_dir.join("video.mp4");
    let bytes = std::fs::read(&mp4).expect("video.mp4");
    assert!(bytes.len() > 1024, "video.mp4 is {} bytes", bytes.len());
    assert_eq!(
        &bytes[4..8],
        b"ftyp",
        "video.mp4 does not start with an MP4 ftyp box"
    );
    assert!(
        !render.artifact_dir.join("video.partial.mp4").exists(),
        "the partial file was left behind"
    );
    mp4
}

/// Asks ffprobe what `mp4` holds: one video and one audio stream, and more
/// than half a second of them.
fn assert_one_video_and_one_audio_stream(mp4: &Path) {
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type:format=duration",
            "-of",
            "json",
        ])
        .arg(mp4)
        .output()
        .expect("ffprobe runs");
    assert!(
        probe.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&probe.stdout).expect("ffprobe's JSON");
    let kinds: Vec<&str> = info["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .filter_map(|s| s["codec_type"].as_str())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "video").count(), 1, "{info}");
    assert_eq!(kinds.iter().filter(|k| **k == "audio").count(), 1, "{info}");
    let duration: f64 = info["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .expect("a duration");
    assert!(duration > 0.5, "duration {duration} s");
}
