//! A model server for rehearsals: what the `http` executor talks to (a TTS,
//! an LLM, a render model behind HTTP), with knobs to make it slow or make
//! it fail, so that the chaos runner can break providers and GPUs through
//! the executors for real. Served with hyper.
//!
//! `POST /<stage>` with a JSON body waits the stage's time (its base, times
//! the slow factor) and answers `200 {"stage": ..., "served": n}`, or the
//! failing status with a JSON error. Bodies are capped at
//! [`BODY_MAX_BYTES`]; anything else is 404, 405 or 413.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

/// The largest request body served (a job's parameters, not media).
pub const BODY_MAX_BYTES: usize = 64 * 1024;

/// How one stage's endpoint behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Behaviour {
    /// The time a request takes when nothing is wrong.
    pub base_ms: u64,
    /// How many times slower than `base_ms` it is now (1: healthy).
    pub slow_factor: u64,
    /// Answer this status instead of serving (a 5xx: the server's trouble).
    pub failing: Option<u16>,
}

#[derive(Debug, Default)]
struct State {
    stages: BTreeMap<String, Behaviour>,
    served: u64,
    refused: u64,
}

pub struct ProviderEmulator {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

impl ProviderEmulator {
    /// Serves `stages` (name, base time) on `127.0.0.1:0`, on a thread of
    /// its own with its own runtime.
    pub fn start_on_thread(stages: &[(&str, u64)]) -> Result<ProviderEmulator, String> {
        Self::start_on_thread_at(stages, std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// As [`ProviderEmulator::start_on_thread`], on `ip`.
    pub fn start_on_thread_at(
        stages: &[(&str, u64)],
        ip: std::net::IpAddr,
    ) -> Result<ProviderEmulator, String> {
        let listener = std::net::TcpListener::bind((ip, 0))
            .map_err(|e| format!("provider emulator: cannot listen on {ip}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("provider emulator: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("provider emulator: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("provider emulator: cannot start a runtime: {e}"))?;
        let mut state = State::default();
        for (name, base_ms) in stages {
            state.stages.insert(
                (*name).to_string(),
                Behaviour {
                    base_ms: *base_ms,
                    slow_factor: 1,
                    failing: None,
                },
            );
        }
        let state = Arc::new(Mutex::new(state));
        let (stop, rx) = watch::channel(false);
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("provider-emulator".into())
            .spawn(move || {
                rt.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => serve(l, shared, rx).await,
                        Err(e) => tracing::error!(error = %e, "provider emulator: no listener"),
                    }
                });
            })
            .map_err(|e| format!("provider emulator: cannot start its thread: {e}"))?;
        Ok(ProviderEmulator {
            state,
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`; a stage's endpoint is `<base_url>/<stage>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn with_stage(&self, stage: &str, f: impl FnOnce(&mut Behaviour)) -> Result<(), String> {
        let mut s = lock(&self.state);
        let known: Vec<String> = s.stages.keys().cloned().collect();
        let b = s.stages.get_mut(stage).ok_or_else(|| {
            format!(
                "provider emulator: no stage {stage:?} (served: {})",
                known.join(", ")
            )
        })?;
        f(b);
        Ok(())
    }

    /// `stage` answers `status` (None: serves again).
    pub fn set_failing(&self, stage: &str, status: Option<u16>) -> Result<(), String> {
        self.with_stage(stage, |b| b.failing = status)
    }

    /// `stage` takes `factor` times its base time (1: healthy).
    pub fn set_slow(&self, stage: &str, factor: u64) -> Result<(), String> {
        self.with_stage(stage, |b| b.slow_factor = factor.max(1))
    }

    /// Every stage healthy again.
    pub fn clear_faults(&self) {
        for b in lock(&self.state).stages.values_mut() {
            b.slow_factor = 1;
            b.failing = None;
        }
    }

    /// Requests served, and refused by a failing knob.
    pub fn counts(&self) -> (u64, u64) {
        let s = lock(&self.state);
        (s.served, s.refused)
    }
}

impl Drop for ProviderEmulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<Mutex<State>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (sock, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "provider emulator: accept failed; still serving");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(answer(&state, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(sock), service)
                .await;
        });
    }
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({"error": message}))
}

async fn answer(state: &Mutex<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let stage = req.uri().path().trim_start_matches('/').to_string();
    let Some(b) = lock(state).stages.get(&stage).copied() else {
        return error(StatusCode::NOT_FOUND, &format!("no stage {stage:?} here"));
    };
    if req.method() != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "POST a job here");
    }
    let body = match Limited::new(req.into_body(), BODY_MAX_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large"),
    };
    if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON");
    }
    if let Some(status) = b.failing {
        lock(state).refused += 1;
        let s = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return error(s, "the model server is failing (emulated)");
    }
    tokio::time::sleep(Duration::from_millis(b.base_ms * b.slow_factor)).await;
    let served = {
        let mut s = lock(state);
        s.served += 1;
        s.served
    };
    json(
        StatusCode::OK,
        serde_json::json!({"stage": stage, "served": served}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(url: &str, body: &str) -> (u16, String) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            (status, r.text().await.expect("body"))
        })
    }

    #[test]
    fn serves_fails_and_slows_as_told() {
        let p = ProviderEmulator::start_on_thread(&[("render", 10)]).expect("start");
        let url = format!("{}/render", p.base_url());
        assert_eq!(post(&url, "{}").0, 200);
        p.set_failing("render", Some(503)).expect("knob");
        let (status, body) = post(&url, "{}");
        assert_eq!(status, 503, "{body}");
        p.clear_faults();
        p.set_slow("render", 20).expect("knob");
        let t = std::time::Instant::now();
        assert_eq!(post(&url, "{}").0, 200);
        assert!(t.elapsed() >= Duration::from_millis(200));
        assert_eq!(p.counts(), (2, 1));
        assert_eq!(post(&url, "not json").0, 400);
        assert_eq!(post(&format!("{}/script", p.base_url()), "{}").0, 404);
        let e = p.set_slow("script", 2).expect_err("unknown stage");
        assert!(e.contains("render"), "{e}");
    }
}
