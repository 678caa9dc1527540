//! The http executor: one JSON POST per job to an inference server (a TTS,
//! image or video model behind HTTP), with a timeout. A 2xx answer is the
//! artifact (`<artifact_dir>/response.json`); any other answer or a
//! transport error becomes a failure that says whether retrying can help,
//! so that the channel machine retries an overloaded server but not a
//! request the server rejects.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::time::Duration;

use super::{expand, ExecJob, ExecOutcome};

/// An http stage as the pipeline declares it.
#[derive(Clone, Debug)]
pub struct HttpSpec {
    /// May hold `{placeholders}`, expanded with [`super::expand`]. Expanded
    /// values are not percent-encoded: put them in the body, not the query,
    /// unless they are known to be URL-safe.
    pub url: String,
    /// Sent as JSON. Every string value, at any depth, may hold
    /// `{placeholders}`; keys, numbers and booleans are sent as written.
    pub body: serde_json::Value,
    /// Covers connecting, sending and reading the whole answer.
    pub timeout_ms: u64,
    /// Extra request headers; values may hold `{placeholders}` (a token).
    pub headers: BTreeMap<String, String>,
}

/// The name of the artifact a successful job leaves in its artifact dir.
pub const RESPONSE_FILE: &str = "response.json";

/// How much of an error answer's body goes into the failure reason: enough
/// to see the server's message, not so much that a HTML error page floods
/// the logs and the video record.
const SNIPPET_CHARS: usize = 200;

/// Posts `spec` for `job` and waits for the answer, at most
/// `spec.timeout_ms`; `cancel` resolving first drops the request (which
/// closes its connection) and answers `Cancelled`.
pub async fn run(
    client: &reqwest::Client,
    spec: &HttpSpec,
    job: &ExecJob,
    cancel: impl std::future::Future<Output = ()>,
) -> ExecOutcome {
    let fail = |reason: String, retryable| ExecOutcome::Failed { reason, retryable };
    let vars = job.placeholders();
    // A typo in a placeholder is a pipeline bug: retrying cannot fix it.
    let url = match expand(&spec.url, &vars) {
        Ok(u) => u,
        Err(e) => return fail(format!("stage {} url: {e}", job.stage), false),
    };
    let body = match expand_json(&spec.body, &vars, "body") {
        Ok(b) => b,
        Err(e) => return fail(format!("stage {} {e}", job.stage), false),
    };
    let mut request = client.post(&url).json(&body);
    for (name, value) in &spec.headers {
        match expand(value, &vars) {
            Ok(v) => request = request.header(name.as_str(), v),
            Err(e) => return fail(format!("stage {} header {name}: {e}", job.stage), false),
        }
    }
    if let Err(e) = std::fs::create_dir_all(&job.artifact_dir) {
        return fail(
            format!("cannot create {}: {e}", job.artifact_dir.display()),
            true,
        );
    }
    // Sending and reading the body are one future, so the timeout bounds a
    // server that answers its headers and then stalls, too.
    let exchange = async {
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, bytes))
    };
    let timeout = Duration::from_millis(spec.timeout_ms);
    let (status, bytes) = tokio::select! {
        r = tokio::time::timeout(timeout, exchange) => match r {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return fail(format!("POST {url}: {}", describe(&e)), true),
            Err(_) => return fail(format!("POST {url}: timed out after {} ms", spec.timeout_ms), true),
        },
        // Returning drops `exchange`, and with it the request.
        _ = cancel => return ExecOutcome::Cancelled,
    };
    if status.is_success() {
        // A 2xx that is not JSON is a URL pointing at the wrong thing (a web
        // page, a proxy); handing it on as `response.json` would only move
        // the failure to the next stage.
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            return fail(
                format!(
                    "POST {url}: {status} but the body is not JSON ({e}): {}",
                    snippet(&bytes)
                ),
                false,
            );
        }
        let path = job.artifact_dir.join(RESPONSE_FILE);
        let tmp = job.artifact_dir.join(format!(".{RESPONSE_FILE}.tmp"));
        // Temp + rename: a crash never leaves a half-written response that a
        // restarted node would take for a finished stage.
        return match std::fs::write(&tmp, &bytes).and_then(|_| std::fs::rename(&tmp, &path)) {
            Ok(()) => ExecOutcome::Succeeded {
                artifact: job.artifact_dir.clone(),
            },
            Err(e) => fail(format!("cannot write {}: {e}", path.display()), true),
        };
    }
    let code = status.as_u16();
    // 408 and 429 are the server saying "not now"; 5xx is the server's own
    // trouble. Every other answer is about the request, which a retry sends
    // unchanged.
    let retryable = code == 408 || code == 429 || status.is_server_error();
    fail(
        format!("POST {url}: {status}: {}", snippet(&bytes)),
        retryable,
    )
}

/// Expands placeholders in every string of `value`; `path` names where a
/// bad one is (`body.inputs[2].text`).
fn expand_json(
    value: &serde_json::Value,
    vars: &BTreeMap<String, String>,
    path: &str,
) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    Ok(match value {
        Value::String(s) => Value::String(expand(s, vars).map_err(|e| format!("{path}: {e}"))?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| expand_json(v, vars, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), expand_json(v, vars, &format!("{path}.{k}"))?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// A transport error with its causes: reqwest's own message ("error sending
/// request") hides the one that matters ("Connection refused").
fn describe(e: &reqwest::Error) -> String {
    let mut out = if e.is_connect() {
        format!("cannot connect: {e}")
    } else {
        e.to_string()
    };
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// The start of a body, on one line, cut at a character boundary.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return "(empty body)".into();
    }
    match one_line.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}
