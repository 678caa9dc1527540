//! The operator's HTTP listener, on hyper: `/metrics` (Prometheus text),
//! `/health` (the process runs), `/ready` (store reachable and lease held,
//! else 503 with the reason) and `/status` (JSON).
//!
//! Bounded so that a scraper gone wrong cannot hurt the node: at most
//! `MAX_CONNECTIONS` at once (more are closed at accept), request heads of
//! at most `MAX_HEAD_BYTES` read within `HEAD_TIMEOUT`, no request bodies,
//! and every connection closed after `CONNECTION_LIFETIME`. An accept error
//! (EMFILE, ENFILE, ...) is logged and the listener keeps serving.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::store::BoxFuture;

pub const MAX_CONNECTIONS: usize = 64;
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Pause after a failed accept, so that EMFILE does not spin the loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the listener answers with.
#[derive(Clone)]
pub struct Pages {
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// `Ok(what)` when ready, else `Err(why not)`.
    pub ready: Arc<dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync>,
    pub status: Arc<dyn Fn() -> BoxFuture<'static, serde_json::Value> + Send + Sync>,
}

/// Binds `addr` (an error naming it if it cannot) and serves `pages`.
pub async fn serve(addr: SocketAddr, pages: Pages) -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("HTTP: cannot listen on {addr}: {e}"))?;
    serve_on(listener, pages)
}

/// Serves `pages` on a bound listener; returns its address.
pub fn serve_on(listener: tokio::net::TcpListener, pages: Pages) -> Result<SocketAddr, String> {
    let bound = listener
        .local_addr()
        .map_err(|e| format!("HTTP listener: {e}"))?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(listen = %bound, error = %e, "HTTP accept failed; still serving");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                tracing::warn!(listen = %bound, %peer, limit = MAX_CONNECTIONS, "HTTP connection refused: too many open");
                drop(sock);
                continue;
            };
            let pages = pages.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let pages = pages.clone();
                    async move { Ok::<_, Infallible>(answer(&pages, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .serve_connection(TokioIo::new(sock), service);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
                drop(slot);
            });
        }
    });
    Ok(bound)
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn answer(pages: &Pages, req: Request<Incoming>) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let has_body = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || req.headers().contains_key(hyper::header::TRANSFER_ENCODING);
    let path = req.uri().path().to_string();
    let r = if req.method() != Method::GET && req.method() != Method::HEAD {
        reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET is served here\n".into(),
        )
    } else if has_body {
        reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            TEXT,
            "requests here take no body\n".into(),
        )
    } else {
        match path.as_str() {
            "/metrics" => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                (pages.metrics)(),
            ),
            "/health" => reply(StatusCode::OK, TEXT, "ok\n".into()),
            "/ready" => match (pages.ready)().await {
                Ok(what) => reply(StatusCode::OK, TEXT, format!("ready: {what}\n")),
                Err(why) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    format!("not ready: {why}\n"),
                ),
            },
            "/status" => {
                let v = (pages.status)().await;
                let body = serde_json::to_string_pretty(&v).unwrap_or_default() + "\n";
                reply(StatusCode::OK, "application/json", body)
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                TEXT,
                "served here: /metrics /health /ready /status\n".into(),
            ),
        }
    };
    metrics::counter!(
        "reelfleet_http_requests_total",
        "path" => known_path(&path),
        "status" => r.status().as_u16().to_string()
    )
    .increment(1);
    r
}

/// The path as a label: one of the served ones, else "other" (a scanner's
/// paths must not grow the series without bound).
fn known_path(p: &str) -> &'static str {
    match p {
        "/metrics" => "/metrics",
        "/health" => "/health",
        "/ready" => "/ready",
        "/status" => "/status",
        _ => "other",
    }
}
