//! Structured logs on `tracing`: human-readable lines on a terminal, or one
//! JSON object per line (`--log-format json`) for log stacks; `RUST_LOG`
//! filters (default: `info` for reelfleet, `warn` for the libraries). The
//! `log` records of rustls and others come through the same subscriber.
//!
//! Every event about a video carries `node`, `region`, `channel` and
//! `slot`: events of a stage run inside a `video` span with those fields
//! (and `stage`), on whichever node runs it, so a log stack follows one
//! video across its stages and nodes by `channel` and `slot`.

use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per event, with its span's fields.
    Json,
}

/// What is logged when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,quinn=warn,quinn_proto=warn,rustls=warn,ractor=warn,h2=warn,hyper=warn,tonic=warn,tower=warn,reqwest=warn";

/// Installs the process's subscriber (once; later calls do nothing, so
/// tests that start several nodes may each call it). A `RUST_LOG` that does
/// not parse is an error naming it.
pub fn init(format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec)
            .map_err(|e| format!("RUST_LOG={spec:?} is not a log filter: {e}"))?,
        _ => EnvFilter::new(DEFAULT_FILTER),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE)
        .with_target(true);
    let result = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    // Already installed (a second node in one process): keep the first.
    let _ = result;
    Ok(())
}

/// The span that events about one video run in (`stage` is recorded by
/// stage jobs). At level ERROR so that it is enabled whenever any event
/// inside it is: a filter such as `warn,reelfleet::live::ports=info` would
/// otherwise drop the span (its target is this module) and with it the
/// video's fields from every event. A root span: one video's work never
/// nests in another's (a job a GPU admits as another finishes starts
/// inside the finished job's task, and would otherwise carry both videos).
pub fn video_span(node: &str, region: &str, channel: &str, slot: u64) -> tracing::Span {
    tracing::span!(
        parent: None,
        tracing::Level::ERROR,
        "video",
        node,
        region,
        channel,
        slot,
        stage = tracing::field::Empty
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_video_span_started_inside_another_carries_only_its_own_video() {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let first = super::video_span("n0", "r0", "ch-1", 7);
            let _in_first = first.enter();
            // As when a GPU admits the next job inside the finished one's task.
            let second = super::video_span("n0", "r0", "ch-2", 8);
            let _in_second = second.enter();
            tracing::info!("stage done");
        });
        let text = String::from_utf8(buf.0.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .expect("utf-8");
        assert!(
            text.contains("channel=\"ch-2\"") && text.contains("slot=8"),
            "{text}"
        );
        assert!(
            !text.contains("ch-1"),
            "the finished video leaked in: {text}"
        );
    }
}
