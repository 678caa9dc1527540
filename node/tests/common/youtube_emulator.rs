//! A local emulator of the YouTube endpoints the YouTube publisher uses:
//! the OAuth token endpoint (refresh-token grant), `videos.insert` with the
//! resumable upload protocol, `channels.list?mine=true` and
//! `playlistItems.list` over the uploads playlist, newest first, paged.
//!
//! It is a hand-written HTTP/1.1 server on a tokio `TcpListener` bound to
//! `127.0.0.1:0`, so that faults can be injected where a real network puts
//! them: a chunk body cut after N bytes, the answer to the last chunk lost
//! after the upload completed, 5xx and 429 answers, an exhausted quota,
//! tokens that die early. Every knob can be turned while it runs, from any
//! thread.
//!
//! What it holds to, as the real service does:
//! - every API call needs a live bearer token (401 otherwise), chunk PUTs
//!   included;
//! - a chunk must start exactly where the bytes the session holds end, and
//!   its length must match its `Content-Range` (400 otherwise); bytes of a
//!   chunk cut off mid-body are kept, so a client must ask (`bytes */N`)
//!   and resume from the `Range` it is told, not from its chunk boundary;
//! - 308 "Resume Incomplete" with `Range: bytes=0-N` (no `Range` when it
//!   holds nothing); the last byte completes the upload with 200 and the
//!   video resource; any later PUT to that session answers the same;
//! - quota per bucket of a `PublishingProject` (default: the legacy
//!   project, upload 1,600 of 10,000 units): upload cost when a session is
//!   opened, lookup cost per list call; 403 `quotaExceeded` when spent;
//! - titles of at most 100 characters, descriptions of at most 5,000
//!   bytes, tags of at most 500 characters, none with `<` or `>`.
//!
//! Every completed upload is recorded (id, metadata, the bytes), so tests
//! can check that no key was ever published twice.
//!
//! `start` runs it on the current tokio runtime; `start_on_thread` on a
//! thread of its own with its own runtime, for sync tests that drive child
//! processes.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reelfleet::publish::youtube::YoutubeConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use topology::{PublishingProject, QuotaCost};

pub const CLIENT_ID: &str = "emulator-client.apps.googleusercontent.com";
pub const CLIENT_SECRET: &str = "emulator-secret";
pub const REFRESH_TOKEN: &str = "1//emulator-refresh-token";

const UPLOAD_PATH: &str = "/upload/youtube/v3/videos";
const HEAD_MAX: usize = 64 * 1024;
const BODY_MAX: usize = 512 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    /// Quota buckets and the cost of an upload and of a list call.
    pub project: PublishingProject,
    /// `expires_in` of every token issued (see `set_token_lifetime`).
    pub token_lifetime_s: u64,
    /// Non-final chunks must be a multiple of this (256 KiB on the real
    /// service); 1 accepts any size.
    pub chunk_granularity: u64,
    /// `UC` and 22 characters; the uploads playlist is `UU` and the same.
    pub channel_id: String,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            refresh_token: REFRESH_TOKEN.into(),
            project: PublishingProject::youtube_legacy("emulator"),
            token_lifetime_s: 3600,
            chunk_granularity: 1,
            channel_id: "UCreelfleetEmulator00001".into(),
        }
    }
}

/// One completed upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmulatedVideo {
    pub id: String,
    pub title: String,
    pub description: String,
    pub tags: Vec<String>,
    pub privacy_status: String,
    pub bytes: Vec<u8>,
    /// FNV-1a 64 of `bytes`.
    pub checksum: u64,
}

impl EmulatedVideo {
    /// The exact `reelfleet-key: <key>` line is in the description.
    pub fn has_key(&self, key: &str) -> bool {
        let line = format!("reelfleet-key: {key}");
        self.description.lines().any(|l| l.trim_end() == line)
    }
}

/// How the answer to the final chunk is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostResponse {
    /// Close the connection without answering.
    Close,
    /// Keep the connection open and never answer (the client times out).
    Hang,
    /// Answer 503 although the upload completed (a proxy failing late).
    ServerError,
}

/// One request as the emulator saw it.
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    pub method: String,
    /// Without the query.
    pub path: String,
    pub content_range: Option<String>,
    pub body_len: usize,
    /// 0: no answer was sent (a fault cut the connection).
    pub status: u16,
}

pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

#[derive(Default)]
struct Faults {
    fail_next: u32,
    fail_status: u16,
    rate_limit_next: u32,
    retry_after_s: Option<u64>,
    user_rate_limit_next: u32,
    /// (chunks with a body to let through first, bytes of the next to read)
    drop_chunk: Option<(u32, usize)>,
    /// (chunks with a body to let through first, status for the next)
    fail_chunk: Option<(u32, u16)>,
    token_fail_next: u32,
    lose_final: Option<(LostResponse, u32)>,
    quota_exhausted: bool,
    /// Chunks with a body to let through before every token dies.
    expire_tokens_at_chunk: Option<u32>,
    refresh_revoked: bool,
    listing_delay: Duration,
}

struct Session {
    title: String,
    description: String,
    tags: Vec<String>,
    privacy_status: String,
    total: Option<u64>,
    data: Vec<u8>,
    /// Index into `State::videos` once complete.
    video: Option<usize>,
}

struct Stored {
    video: EmulatedVideo,
    visible_at: Instant,
    published_at: String,
}

struct State {
    cfg: EmulatorConfig,
    base_url: String,
    /// Access token → the moment it dies.
    tokens: HashMap<String, Instant>,
    token_seq: u64,
    token_requests: u32,
    /// Tokens really die after this, whatever `expires_in` said.
    token_actual_lifetime: Option<Duration>,
    rejected_tokens: u32,
    sessions: HashMap<String, Session>,
    session_seq: u64,
    videos: Vec<Stored>,
    units_used: Vec<u64>,
    faults: Faults,
    log: Vec<LoggedRequest>,
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide the
        // emulator's state from the next assertion.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The handle: knobs, observers, and the server's lifetime (it stops when
/// this is dropped).
pub struct YoutubeEmulator {
    shared: Arc<Shared>,
    base_url: String,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl YoutubeEmulator {
    /// Serves on the current tokio runtime. Returns the base URL
    /// (`http://127.0.0.1:PORT`).
    pub async fn start() -> (YoutubeEmulator, String) {
        Self::start_with(EmulatorConfig::default()).await
    }

    pub async fn start_with(cfg: EmulatorConfig) -> (YoutubeEmulator, String) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("emulator: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("emulator: local address");
        let (mut emu, rx) = Self::prepared(cfg, format!("http://{addr}"));
        emu.task = Some(tokio::spawn(serve(listener, emu.shared.clone(), rx)));
        let url = emu.base_url.clone();
        (emu, url)
    }

    /// Serves on a thread of its own with its own runtime.
    pub fn start_on_thread() -> (YoutubeEmulator, String) {
        Self::start_on_thread_with(EmulatorConfig::default())
    }

    pub fn start_on_thread_with(cfg: EmulatorConfig) -> (YoutubeEmulator, String) {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("emulator: bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("emulator: non-blocking listener");
        let addr = listener.local_addr().expect("emulator: local address");
        let (mut emu, rx) = Self::prepared(cfg, format!("http://{addr}"));
        let shared = emu.shared.clone();
        let thread = std::thread::Builder::new()
            .name("youtube-emulator".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("emulator: runtime");
                rt.block_on(async move {
                    let listener =
                        TcpListener::from_std(listener).expect("emulator: tokio listener");
                    serve(listener, shared, rx).await;
                });
            })
            .expect("emulator: thread");
        emu.thread = Some(thread);
        let url = emu.base_url.clone();
        (emu, url)
    }

    fn prepared(cfg: EmulatorConfig, base_url: String) -> (YoutubeEmulator, watch::Receiver<bool>) {
        let buckets = cfg.project.buckets.len();
        let state = State {
            cfg,
            base_url: base_url.clone(),
            tokens: HashMap::new(),
            token_seq: 0,
            token_requests: 0,
            token_actual_lifetime: None,
            rejected_tokens: 0,
            sessions: HashMap::new(),
            session_seq: 0,
            videos: Vec::new(),
            units_used: vec![0; buckets],
            faults: Faults::default(),
            log: Vec::new(),
        };
        let (stop, rx) = watch::channel(false);
        let emu = YoutubeEmulator {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
            }),
            base_url,
            stop,
            task: None,
            thread: None,
        };
        (emu, rx)
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A publisher configuration aimed at this emulator, with its
    /// credentials, 256 KiB chunks, short timeouts and backoffs.
    pub fn publisher_config(&self) -> YoutubeConfig {
        let st = self.shared.state();
        YoutubeConfig {
            api_base: self.base_url.clone(),
            upload_base: format!("{}/upload", self.base_url),
            token_url: format!("{}/token", self.base_url),
            client_id: st.cfg.client_id.clone(),
            client_secret: st.cfg.client_secret.clone(),
            refresh_token: st.cfg.refresh_token.clone(),
            chunk_bytes: 256 * 1024,
            request_timeout_ms: 5_000,
            resume_backoff_ms: 10,
            ..YoutubeConfig::default()
        }
    }

    /// Stops serving and waits until the port is closed: afterwards every
    /// connection is refused.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    // ---- knobs ----

    /// The next `k` API requests (not the token endpoint) get `status`.
    pub fn fail_next(&self, k: u32, status: u16) {
        let mut st = self.shared.state();
        st.faults.fail_next = k;
        st.faults.fail_status = status;
    }

    /// The next `k` API requests get 429 (`rateLimitExceeded`), with
    /// `Retry-After: s` when given.
    pub fn rate_limit_next(&self, k: u32, retry_after_s: Option<u64>) {
        let mut st = self.shared.state();
        st.faults.rate_limit_next = k;
        st.faults.retry_after_s = retry_after_s;
    }

    /// The next `k` API requests get 403 `userRateLimitExceeded`.
    pub fn user_rate_limit_next(&self, k: u32) {
        self.shared.state().faults.user_rate_limit_next = k;
    }

    /// Lets `skip` chunk PUTs with a body through, then cuts the next one
    /// after `after_bytes` bytes of its body (which the session keeps) and
    /// closes the connection without answering. With `after_bytes` at
    /// least the chunk's length, the whole chunk is kept (and may complete
    /// the upload) and only the answer is lost.
    pub fn drop_chunk(&self, skip: u32, after_bytes: usize) {
        self.shared.state().faults.drop_chunk = Some((skip, after_bytes));
    }

    /// Lets `skip` chunk PUTs with a body through, then answers the next
    /// one `status` (a 5xx) without keeping any of its bytes.
    pub fn fail_chunk(&self, skip: u32, status: u16) {
        self.shared.state().faults.fail_chunk = Some((skip, status));
    }

    /// The next `k` calls to the token endpoint get 503.
    pub fn fail_token_next(&self, k: u32) {
        self.shared.state().faults.token_fail_next = k;
    }

    /// The next upload to complete completes, but its answer is lost; the
    /// `then_fail` API requests after it get 503.
    pub fn lose_final_response(&self, how: LostResponse, then_fail: u32) {
        self.shared.state().faults.lose_final = Some((how, then_fail));
    }

    pub fn set_quota_exhausted(&self, exhausted: bool) {
        self.shared.state().faults.quota_exhausted = exhausted;
    }

    /// A new quota day: every bucket back to zero used.
    pub fn reset_quota_day(&self) {
        let mut st = self.shared.state();
        st.units_used.iter_mut().for_each(|u| *u = 0);
        st.faults.quota_exhausted = false;
    }

    /// Every access token issued so far dies now.
    pub fn expire_tokens(&self) {
        self.shared.state().tokens.clear();
    }

    /// Lets `skip` chunk PUTs with a body through, then every access token
    /// dies as the next one arrives (so it gets 401).
    pub fn expire_tokens_at_chunk(&self, skip: u32) {
        self.shared.state().faults.expire_tokens_at_chunk = Some(skip);
    }

    /// Tokens issued from now say `expires_in: advertised_s` but die after
    /// `actual` (a token that expires early, as after a revocation).
    pub fn set_token_lifetime(&self, advertised_s: u64, actual: Duration) {
        let mut st = self.shared.state();
        st.cfg.token_lifetime_s = advertised_s;
        st.token_actual_lifetime = Some(actual);
    }

    /// The refresh token is revoked: the token endpoint answers
    /// `invalid_grant`.
    pub fn revoke_refresh_token(&self) {
        self.shared.state().faults.refresh_revoked = true;
    }

    /// Every upload session is forgotten (404 from now on), as when they
    /// expire after a week.
    pub fn forget_sessions(&self) {
        self.shared.state().sessions.clear();
    }

    /// New videos appear in the uploads playlist only after this long.
    pub fn set_listing_delay(&self, delay: Duration) {
        self.shared.state().faults.listing_delay = delay;
    }

    pub fn clear_faults(&self) {
        self.shared.state().faults = Faults::default();
    }

    // ---- observers ----

    pub fn videos(&self) -> Vec<EmulatedVideo> {
        self.shared
            .state()
            .videos
            .iter()
            .map(|s| s.video.clone())
            .collect()
    }

    pub fn uploads_for_key(&self, key: &str) -> usize {
        self.shared
            .state()
            .videos
            .iter()
            .filter(|s| s.video.has_key(key))
            .count()
    }

    /// Successful and refused calls to the token endpoint.
    pub fn token_requests(&self) -> u32 {
        self.shared.state().token_requests
    }

    /// API requests answered 401.
    pub fn rejected_tokens(&self) -> u32 {
        self.shared.state().rejected_tokens
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.state().log.clone()
    }

    /// Upload sessions opened (each charged the upload cost).
    pub fn sessions_opened(&self) -> u64 {
        self.shared.state().session_seq
    }

    pub fn units_used(&self) -> Vec<(String, u64)> {
        let st = self.shared.state();
        st.cfg
            .project
            .buckets
            .iter()
            .map(|b| b.name.clone())
            .zip(st.units_used.iter().copied())
            .collect()
    }
}

impl Drop for YoutubeEmulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---- the server ----

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // Connections live in a set so that stopping ends them all before
    // `stop` returns: a kept-alive connection must not answer afterwards.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                while connections.try_join_next().is_some() {}
                let Ok((mut stream, _)) = accepted else { continue };
                let shared = shared.clone();
                connections.spawn(async move { connection(&mut stream, &shared).await });
            }
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    drop(listener);
    connections.shutdown().await;
}

struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    /// Names in lower case.
    headers: HashMap<String, String>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    after: After,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    Answer,
    Close,
    Hang,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=UTF-8".into(),
            )],
            body: body.to_string().into_bytes(),
            after: After::Answer,
        }
    }

    fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            after: After::Answer,
        }
    }

    fn with(mut self, name: &str, value: String) -> Reply {
        self.headers.push((name.into(), value));
        self
    }
}

/// A Google API error body.
fn api_error(status: u16, reason: &str, message: &str) -> Reply {
    let domain = match reason {
        "quotaExceeded" => "youtube.quota",
        "rateLimitExceeded" | "userRateLimitExceeded" => "usageLimits",
        _ => "global",
    };
    Reply::json(
        status,
        json!({"error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
        }}),
    )
}

async fn connection(stream: &mut TcpStream, shared: &Shared) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let head = match read_head(stream, &mut buf).await {
            Ok(Some(h)) => h,
            Ok(None) | Err(_) => return,
        };
        let Some(req) = parse_head(&head) else {
            let _ = write_reply(stream, &api_error(400, "badRequest", "malformed request")).await;
            return;
        };
        if req
            .header("transfer-encoding")
            .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"))
        {
            // Google's upload endpoints want a length; so does this one.
            let _ = write_reply(stream, &api_error(411, "badRequest", "length required")).await;
            return;
        }
        let len = match req
            .header("content-length")
            .map(|v| v.trim().parse::<usize>())
        {
            None => 0,
            Some(Ok(n)) if n <= BODY_MAX => n,
            Some(_) => {
                let _ = write_reply(stream, &api_error(400, "badRequest", "bad length")).await;
                return;
            }
        };
        let cut = if len > 0 {
            shared.state().cut_for(&req)
        } else {
            None
        };
        if let Some(after) = cut {
            // Read what the fault lets through, keep it, and vanish.
            let got = read_body(stream, &mut buf, after.min(len)).await;
            shared.state().keep_cut_chunk(&req, &got, len);
            return;
        }
        let body = read_body(stream, &mut buf, len).await;
        if body.len() < len {
            return;
        }
        let reply = shared.state().handle(&req, &body, Instant::now());
        match reply.after {
            After::Answer => {
                if write_reply(stream, &reply).await.is_err() {
                    return;
                }
                if req
                    .header("connection")
                    .is_some_and(|c| c.eq_ignore_ascii_case("close"))
                {
                    return;
                }
            }
            After::Close => return,
            After::Hang => {
                tokio::time::sleep(Duration::from_secs(600)).await;
                return;
            }
        }
    }
}

/// The head of the next request, up to and without the blank line; `None`
/// when the client closed the connection between requests.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Vec<u8>>> {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = buf[..at].to_vec();
            buf.drain(..at + 4);
            return Ok(Some(head));
        }
        if buf.len() > HEAD_MAX {
            return Err(std::io::Error::other("head too large"));
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(std::io::Error::other("closed mid-head"))
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Up to `len` body bytes: fewer only when the client went away.
async fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> Vec<u8> {
    let take = len.min(buf.len());
    let mut body: Vec<u8> = buf.drain(..take).collect();
    let mut chunk = vec![0u8; 64 * 1024];
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        match stream.read(&mut chunk[..want]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body
}

fn parse_head(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?;
    if !first.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = HashMap::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Some(Request {
        method,
        path: percent_decode(path),
        query: parse_form(query),
        headers,
    })
}

fn parse_form(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        308 => "Resume Incomplete",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        410 => "Gone",
        411 => "Length Required",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

async fn write_reply(stream: &mut TcpStream, reply: &Reply) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", reply.status, phrase(reply.status));
    for (name, value) in &reply.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&reply.body);
    stream.write_all(&bytes).await?;
    stream.flush().await
}

/// `bytes a-b/total`, `bytes */total`, `bytes a-b/*`.
enum ContentRange {
    Chunk {
        first: u64,
        last: u64,
        total: Option<u64>,
    },
    Query {
        total: Option<u64>,
    },
}

fn parse_content_range(v: &str) -> Option<ContentRange> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    if range.trim() == "*" {
        return Some(ContentRange::Query { total });
    }
    let (a, b) = range.split_once('-')?;
    let (first, last) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    if last < first {
        return None;
    }
    Some(ContentRange::Chunk { first, last, total })
}

fn upload_id(req: &Request) -> Option<&str> {
    req.query.get("upload_id").map(String::as_str)
}

impl State {
    /// For a chunk PUT with a body: how many of its bytes to read before
    /// the connection is cut, if the drop fault is due now.
    fn cut_for(&mut self, req: &Request) -> Option<usize> {
        if req.method != "PUT" || req.path != UPLOAD_PATH {
            return None;
        }
        if !upload_id(req).is_some_and(|id| self.sessions.contains_key(id)) {
            return None;
        }
        let (skip, after) = self.faults.drop_chunk?;
        if skip > 0 {
            self.faults.drop_chunk = Some((skip - 1, after));
            return None;
        }
        self.faults.drop_chunk = None;
        Some(after)
    }

    /// Keeps the bytes of a chunk that arrived before its connection was
    /// cut, when they are where the session expects them and the request
    /// was authorised: what a real server would have persisted.
    fn keep_cut_chunk(&mut self, req: &Request, got: &[u8], declared: usize) {
        self.log.push(LoggedRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            content_range: req.header("content-range").map(str::to_string),
            body_len: got.len(),
            status: 0,
        });
        if !self.authorised(req, Instant::now()) {
            return;
        }
        let Some(ContentRange::Chunk {
            first, last, total, ..
        }) = req.header("content-range").and_then(parse_content_range)
        else {
            return;
        };
        if last - first + 1 != declared as u64 {
            return;
        }
        let Some(id) = upload_id(req).map(str::to_string) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if s.video.is_some() || first != s.data.len() as u64 {
            return;
        }
        if s.total.is_none() {
            s.total = total;
        }
        s.data.extend_from_slice(got);
        if Some(s.data.len() as u64) == s.total {
            self.complete(&id);
        }
    }

    fn handle(&mut self, req: &Request, body: &[u8], now: Instant) -> Reply {
        let reply = if req.method == "POST" && req.path == "/token" {
            self.token(body, now)
        } else {
            self.api(req, body, now)
        };
        self.log.push(LoggedRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            content_range: req.header("content-range").map(str::to_string),
            body_len: body.len(),
            status: if reply.after == After::Answer {
                reply.status
            } else {
                0
            },
        });
        if reply.status == 401 {
            self.rejected_tokens += 1;
        }
        reply
    }

    fn token(&mut self, body: &[u8], now: Instant) -> Reply {
        self.token_requests += 1;
        if self.faults.token_fail_next > 0 {
            self.faults.token_fail_next -= 1;
            return Reply::json(
                503,
                json!({"error": "internal_failure", "error_description": "Backend Error"}),
            );
        }
        let form = parse_form(&String::from_utf8_lossy(body));
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        if get("grant_type") != "refresh_token" {
            return Reply::json(
                400,
                json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type: "}),
            );
        }
        if get("client_id") != self.cfg.client_id || get("client_secret") != self.cfg.client_secret
        {
            return Reply::json(
                401,
                json!({"error": "invalid_client", "error_description": "Unauthorized"}),
            );
        }
        if get("refresh_token") != self.cfg.refresh_token || self.faults.refresh_revoked {
            return Reply::json(
                400,
                json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."}),
            );
        }
        self.token_seq += 1;
        let token = format!(
            "ya29.emu{}.{:016x}",
            self.token_seq,
            fnv64(format!("{}{:?}", self.token_seq, now).as_bytes())
        );
        let advertised = self.cfg.token_lifetime_s;
        let lives = self
            .token_actual_lifetime
            .unwrap_or(Duration::from_secs(advertised));
        self.tokens.insert(token.clone(), now + lives);
        Reply::json(
            200,
            json!({
                "access_token": token,
                "expires_in": advertised,
                "scope": "https://www.googleapis.com/auth/youtube.upload https://www.googleapis.com/auth/youtube.readonly",
                "token_type": "Bearer",
            }),
        )
    }

    fn authorised(&self, req: &Request, now: Instant) -> bool {
        req.header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .and_then(|t| self.tokens.get(t.trim()))
            .is_some_and(|dies| now < *dies)
    }

    fn unauthorised() -> Reply {
        Reply::json(
            401,
            json!({"error": {
                "code": 401,
                "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
                "errors": [{"message": "Invalid Credentials", "domain": "global", "reason": "authError", "location": "Authorization", "locationType": "header"}],
                "status": "UNAUTHENTICATED",
            }}),
        )
        .with(
            "WWW-Authenticate",
            "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"".into(),
        )
    }

    fn api(&mut self, req: &Request, body: &[u8], now: Instant) -> Reply {
        if self.faults.fail_next > 0 {
            self.faults.fail_next -= 1;
            let status = if self.faults.fail_status >= 500 {
                self.faults.fail_status
            } else {
                503
            };
            return api_error(status, "backendError", "Backend Error");
        }
        if self.faults.rate_limit_next > 0 {
            self.faults.rate_limit_next -= 1;
            let reply = api_error(429, "rateLimitExceeded", "Too many requests");
            return match self.faults.retry_after_s {
                Some(s) => reply.with("Retry-After", s.to_string()),
                None => reply,
            };
        }
        if self.faults.user_rate_limit_next > 0 {
            self.faults.user_rate_limit_next -= 1;
            return api_error(403, "userRateLimitExceeded", "User Rate Limit Exceeded");
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", UPLOAD_PATH) => self.insert(req, body, now),
            ("PUT", UPLOAD_PATH) => self.chunk(req, body, now),
            ("GET", "/youtube/v3/channels") => self.channels(req, now),
            ("GET", "/youtube/v3/playlistItems") => self.playlist_items(req, now),
            _ => api_error(404, "notFound", "Not Found"),
        }
    }

    fn spend(&mut self, cost: QuotaCost) -> Result<(), Reply> {
        let limit = self
            .cfg
            .project
            .buckets
            .get(cost.bucket)
            .map_or(0, |b| b.units_per_day);
        let used = self
            .units_used
            .get(cost.bucket)
            .copied()
            .unwrap_or(u64::MAX);
        if self.faults.quota_exhausted || used.saturating_add(cost.units) > limit {
            return Err(api_error(
                403,
                "quotaExceeded",
                "The request cannot be completed because you have exceeded your quota.",
            ));
        }
        self.units_used[cost.bucket] += cost.units;
        Ok(())
    }

    fn insert(&mut self, req: &Request, body: &[u8], now: Instant) -> Reply {
        if !self.authorised(req, now) {
            return Self::unauthorised();
        }
        if let Err(refused) = check_insert_query(req) {
            return refused;
        }
        let Ok(resource) = serde_json::from_slice::<Value>(body) else {
            return api_error(400, "parseError", "Parse Error");
        };
        let mut session = match Session::for_resource(&resource) {
            Ok(s) => s,
            Err(refused) => return refused,
        };
        session.total = match declared_length(req) {
            Ok(total) => total,
            Err(refused) => return refused,
        };
        if let Some(t) = req.header("x-upload-content-type") {
            if !(t.starts_with("video/") || t == "application/octet-stream") {
                return api_error(400, "invalidVideoMetadata", "Media type not accepted");
            }
        }
        if let Err(refused) = self.spend(self.cfg.project.upload_cost) {
            return refused;
        }
        self.open_session(session)
    }

    /// Registers a new upload session; its URL goes back in `Location`.
    fn open_session(&mut self, session: Session) -> Reply {
        self.session_seq += 1;
        let id = format!(
            "AEnB2U{:06}{:012x}",
            self.session_seq,
            fnv64(format!("{}{}", self.session_seq, session.title).as_bytes()) & 0xFFFF_FFFF_FFFF
        );
        self.sessions.insert(id.clone(), session);
        let location = format!(
            "{}{UPLOAD_PATH}?uploadType=resumable&part=snippet,status&upload_id={id}",
            self.base_url
        );
        Reply::empty(200)
            .with("Location", location.clone())
            .with("X-GUploader-UploadID", id)
    }

    fn chunk(&mut self, req: &Request, body: &[u8], now: Instant) -> Reply {
        let Some(id) = upload_id(req).map(str::to_string) else {
            return api_error(400, "badRequest", "upload_id missing");
        };
        if !self.sessions.contains_key(&id) {
            return api_error(404, "notFound", "No such upload session");
        }
        // Status queries (no body) are never the chunk a fault aims at.
        if !body.is_empty() {
            if let Some(refused) = self.chunk_faults() {
                return refused;
            }
        }
        if !self.authorised(req, now) {
            return Self::unauthorised();
        }
        let granularity = self.cfg.chunk_granularity.max(1);
        let Some(s) = self.sessions.get_mut(&id) else {
            return api_error(404, "notFound", "No such upload session");
        };
        if let Some(v) = s.video {
            // A finished session answers every PUT with the video.
            return self.video_reply(v);
        }
        let range = match s.put_range(req, body) {
            Ok(range) => range,
            Err(reply) => return reply,
        };
        match s.append(range, body, granularity) {
            Ok(false) => resume_incomplete(s.data.len() as u64),
            Ok(true) => self.finish_upload(&id),
            Err(refused) => refused,
        }
    }

    /// The chunk faults armed for the next chunks: tokens that expire under
    /// it, or a chunk refused whole; `Some` is the reply that refuses it.
    fn chunk_faults(&mut self) -> Option<Reply> {
        if let Some(skip) = self.faults.expire_tokens_at_chunk {
            if skip == 0 {
                self.faults.expire_tokens_at_chunk = None;
                self.tokens.clear();
            } else {
                self.faults.expire_tokens_at_chunk = Some(skip - 1);
            }
        }
        if let Some((skip, status)) = self.faults.fail_chunk {
            if skip == 0 {
                // Refused whole: none of its bytes are kept.
                self.faults.fail_chunk = None;
                return Some(api_error(status, "backendError", "Backend Error"));
            }
            self.faults.fail_chunk = Some((skip - 1, status));
        }
        None
    }

    /// The session `id` holds every byte: the video it makes, unless a
    /// fault armed with `lose_final` loses that answer.
    fn finish_upload(&mut self, id: &str) -> Reply {
        let v = self.complete(id);
        let mut reply = self.video_reply(v);
        if let Some((how, then_fail)) = self.faults.lose_final.take() {
            self.faults.fail_next += then_fail;
            if self.faults.fail_status == 0 {
                self.faults.fail_status = 503;
            }
            match how {
                LostResponse::Close => reply.after = After::Close,
                LostResponse::Hang => reply.after = After::Hang,
                LostResponse::ServerError => {
                    reply = api_error(503, "backendError", "Backend Error");
                }
            }
        }
        reply
    }

    /// Turns a session holding every byte into a video; its index.
    fn complete(&mut self, id: &str) -> usize {
        let index = self.videos.len();
        let Some(s) = self.sessions.get_mut(id) else {
            return index;
        };
        if let Some(v) = s.video {
            return v;
        }
        s.video = Some(index);
        let bytes = std::mem::take(&mut s.data);
        let video = EmulatedVideo {
            id: format!("emu{:08}", index + 1),
            title: s.title.clone(),
            description: s.description.clone(),
            tags: s.tags.clone(),
            privacy_status: s.privacy_status.clone(),
            checksum: fnv64(&bytes),
            bytes,
        };
        self.videos.push(Stored {
            video,
            visible_at: Instant::now() + self.faults.listing_delay,
            published_at: rfc3339_now(),
        });
        index
    }

    fn video_reply(&self, index: usize) -> Reply {
        let Some(stored) = self.videos.get(index) else {
            return api_error(500, "backendError", "lost video");
        };
        let v = &stored.video;
        Reply::json(
            200,
            json!({
                "kind": "youtube#video",
                "etag": format!("{:016x}", v.checksum),
                "id": v.id,
                "snippet": {
                    "publishedAt": stored.published_at,
                    "channelId": self.cfg.channel_id,
                    "title": v.title,
                    "description": v.description,
                    "tags": v.tags,
                    "channelTitle": "reelfleet emulator",
                    "categoryId": "22",
                },
                "status": {
                    "uploadStatus": "uploaded",
                    "privacyStatus": v.privacy_status,
                    "license": "youtube",
                    "embeddable": true,
                    "publicStatsViewable": true,
                },
            }),
        )
    }

    fn uploads_playlist(&self) -> String {
        let rest = self
            .cfg
            .channel_id
            .strip_prefix("UC")
            .unwrap_or(&self.cfg.channel_id);
        format!("UU{rest}")
    }

    fn channels(&mut self, req: &Request, now: Instant) -> Reply {
        if !self.authorised(req, now) {
            return Self::unauthorised();
        }
        if !req.query.contains_key("part") {
            return api_error(400, "required", "Required parameter: part");
        }
        if req.query.get("mine").map(String::as_str) != Some("true") {
            return api_error(
                400,
                "missingRequiredParameter",
                "only mine=true is emulated",
            );
        }
        if let Err(refused) = self.spend(self.cfg.project.lookup_cost) {
            return refused;
        }
        Reply::json(
            200,
            json!({
                "kind": "youtube#channelListResponse",
                "etag": "emulator",
                "pageInfo": {"totalResults": 1, "resultsPerPage": 5},
                "items": [{
                    "kind": "youtube#channel",
                    "etag": "emulator",
                    "id": self.cfg.channel_id,
                    "contentDetails": {"relatedPlaylists": {"likes": "", "uploads": self.uploads_playlist()}},
                }],
            }),
        )
    }

    fn playlist_items(&mut self, req: &Request, now: Instant) -> Reply {
        if !self.authorised(req, now) {
            return Self::unauthorised();
        }
        let parts = req.query.get("part").cloned().unwrap_or_default();
        if !parts.split(',').any(|p| p.trim() == "snippet") {
            return api_error(400, "required", "part must include snippet");
        }
        let Some(playlist) = req.query.get("playlistId") else {
            return api_error(400, "missingRequiredParameter", "No filter selected.");
        };
        if *playlist != self.uploads_playlist() {
            return api_error(
                404,
                "playlistNotFound",
                "The playlist identified with the request's playlistId parameter cannot be found.",
            );
        }
        let (start, per_page) = match page_wanted(req) {
            Ok(page) => page,
            Err(refused) => return refused,
        };
        if let Err(refused) = self.spend(self.cfg.project.lookup_cost) {
            return refused;
        }
        let visible: Vec<&Stored> = self
            .videos
            .iter()
            .rev()
            .filter(|s| s.visible_at <= now)
            .collect();
        let items: Vec<Value> = visible
            .iter()
            .enumerate()
            .skip(start)
            .take(per_page)
            .map(|(position, s)| self.playlist_item(playlist, position, s))
            .collect();
        let mut page = json!({
            "kind": "youtube#playlistItemListResponse",
            "etag": "emulator",
            "items": items,
            "pageInfo": {"totalResults": visible.len(), "resultsPerPage": per_page},
        });
        if start + per_page < visible.len() && per_page > 0 {
            page["nextPageToken"] = json!(format!("EMU{:x}", start + per_page));
        }
        if start > 0 {
            page["prevPageToken"] = json!(format!("EMU{:x}", start.saturating_sub(per_page)));
        }
        Reply::json(200, page)
    }

    /// One video as an item of the uploads playlist, at `position`.
    fn playlist_item(&self, playlist: &str, position: usize, s: &Stored) -> Value {
        json!({
            "kind": "youtube#playlistItem",
            "etag": format!("{:016x}", s.video.checksum),
            "id": format!("UExp{}", s.video.id),
            "snippet": {
                "publishedAt": s.published_at,
                "channelId": self.cfg.channel_id,
                "title": s.video.title,
                "description": s.video.description,
                "thumbnails": {},
                "channelTitle": "reelfleet emulator",
                "playlistId": playlist,
                "position": position,
                "resourceId": {"kind": "youtube#video", "videoId": s.video.id},
                "videoOwnerChannelTitle": "reelfleet emulator",
                "videoOwnerChannelId": self.cfg.channel_id,
            },
        })
    }
}

/// The page a playlistItems.list asks for: (first item, items per page).
fn page_wanted(req: &Request) -> Result<(usize, usize), Reply> {
    let per_page = match req.query.get("maxResults").map(|m| m.parse::<usize>()) {
        None => 5,
        Some(Ok(n)) if n <= 50 => n,
        Some(_) => {
            return Err(api_error(
                400,
                "invalidValue",
                "Invalid value for maxResults",
            ))
        }
    };
    let start = match req.query.get("pageToken") {
        None => 0,
        Some(t) => t
            .strip_prefix("EMU")
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .ok_or_else(|| {
                api_error(
                    400,
                    "invalidPageToken",
                    "The request specifies an invalid page token.",
                )
            })?,
    };
    Ok((start, per_page))
}

/// videos.insert takes only resumable uploads, and needs the snippet part.
fn check_insert_query(req: &Request) -> Result<(), Reply> {
    if req.query.get("uploadType").map(String::as_str) != Some("resumable") {
        return Err(api_error(
            400,
            "invalidUploadType",
            "only resumable uploads are emulated",
        ));
    }
    let parts: Vec<&str> = req
        .query
        .get("part")
        .map(|p| p.split(',').map(str::trim).collect())
        .unwrap_or_default();
    if !parts.contains(&"snippet") {
        return Err(api_error(400, "required", "part must include snippet"));
    }
    Ok(())
}

/// The upload's size from `X-Upload-Content-Length`, if it was given.
fn declared_length(req: &Request) -> Result<Option<u64>, Reply> {
    match req.header("x-upload-content-length") {
        None => Ok(None),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) => Ok(Some(n)),
            Err(_) => Err(api_error(
                400,
                "badRequest",
                "invalid X-Upload-Content-Length",
            )),
        },
    }
}

/// A chunk's bytes and the upload's total, as its Content-Range gives them.
struct PutRange {
    first: u64,
    last: u64,
    total: Option<u64>,
}

impl Session {
    /// A session for the video `resource` describes, refused as YouTube
    /// refuses bad metadata; no bytes yet, and no declared size.
    fn for_resource(resource: &Value) -> Result<Session, Reply> {
        let text = |p: &str| {
            resource
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let title = text("/snippet/title");
        let description = text("/snippet/description");
        let tags: Vec<String> = resource
            .pointer("/snippet/tags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let privacy = match text("/status/privacyStatus").as_str() {
            "" => "public".to_string(),
            p @ ("private" | "public" | "unlisted") => p.to_string(),
            _ => {
                return Err(api_error(
                    400,
                    "invalidPrivacyStatus",
                    "Invalid privacy status",
                ))
            }
        };
        check_metadata(&title, &description, &tags)?;
        Ok(Session {
            title,
            description,
            tags,
            privacy_status: privacy,
            total: None,
            data: Vec::new(),
            video: None,
        })
    }

    /// The range a PUT carries. A status query is answered here, as is a
    /// range the session cannot take: `Err` is the reply to send.
    fn put_range(&mut self, req: &Request, body: &[u8]) -> Result<PutRange, Reply> {
        let held = self.data.len() as u64;
        let range = req.header("content-range").map(parse_content_range);
        let (first, last, total) = match range {
            Some(None) => return Err(api_error(400, "badRequest", "invalid Content-Range")),
            Some(Some(ContentRange::Query { total })) => {
                if !body.is_empty() {
                    return Err(api_error(400, "badRequest", "a status query has no body"));
                }
                if let (Some(t), Some(declared)) = (total, self.total) {
                    if t != declared {
                        return Err(api_error(
                            400,
                            "badRequest",
                            "total does not match the upload",
                        ));
                    }
                }
                if self.total.is_none() {
                    self.total = total;
                }
                return Err(resume_incomplete(held));
            }
            Some(Some(ContentRange::Chunk { first, last, total })) => (first, last, total),
            // No Content-Range: the whole file in one request.
            None if held == 0 && !body.is_empty() => {
                (0, body.len() as u64 - 1, Some(body.len() as u64))
            }
            None => return Err(api_error(400, "badRequest", "Content-Range required")),
        };
        let total = match (total, self.total) {
            (Some(t), Some(declared)) if t != declared => {
                return Err(api_error(
                    400,
                    "badRequest",
                    "total does not match X-Upload-Content-Length",
                ))
            }
            (t, declared) => declared.or(t),
        };
        Ok(PutRange { first, last, total })
    }

    /// Appends a chunk that continues exactly where the session's bytes
    /// end; `Ok(true)` when it completes the upload.
    fn append(&mut self, range: PutRange, body: &[u8], granularity: u64) -> Result<bool, Reply> {
        let PutRange { first, last, total } = range;
        let held = self.data.len() as u64;
        if last - first + 1 != body.len() as u64 {
            return Err(api_error(
                400,
                "badRequest",
                "body length does not match Content-Range",
            ));
        }
        if first != held {
            return Err(api_error(
                400,
                "badRequest",
                &format!(
                    "Invalid request. According to the Content-Range header, the upload offset is {first} byte(s), which does not match the already uploaded size of {held} byte(s)."
                ),
            ));
        }
        if total.is_some_and(|t| last + 1 > t) {
            return Err(api_error(
                400,
                "badRequest",
                "Content-Range beyond the total",
            ));
        }
        let is_final = total == Some(last + 1);
        if !is_final && !(body.len() as u64).is_multiple_of(granularity) {
            return Err(api_error(
                400,
                "badRequest",
                &format!("chunks must be a multiple of {granularity} bytes"),
            ));
        }
        self.total = total;
        self.data.extend_from_slice(body);
        Ok(is_final)
    }
}

/// YouTube's limits on a video's title, description and tags; angle
/// brackets are refused in all three.
fn check_metadata(title: &str, description: &str, tags: &[String]) -> Result<(), Reply> {
    let angle = |s: &str| s.contains('<') || s.contains('>');
    if title.trim().is_empty() {
        return Err(api_error(
            400,
            "invalidTitle",
            "The request metadata specifies an invalid or empty video title.",
        ));
    }
    if title.chars().count() > 100 || angle(title) {
        return Err(api_error(
            400,
            "invalidTitle",
            "The request metadata specifies an invalid video title.",
        ));
    }
    if description.len() > 5000 || angle(description) {
        return Err(api_error(
            400,
            "invalidDescription",
            "The request metadata specifies an invalid video description.",
        ));
    }
    let tag_chars: usize =
        tags.iter().map(|t| t.chars().count()).sum::<usize>() + tags.len().saturating_sub(1);
    if tag_chars > 500 || tags.iter().any(|t| angle(t)) {
        return Err(api_error(
            400,
            "invalidTags",
            "The request metadata specifies invalid video keywords.",
        ));
    }
    Ok(())
}

fn resume_incomplete(held: u64) -> Reply {
    let reply = Reply::empty(308);
    if held == 0 {
        reply
    } else {
        reply.with("Range", format!("bytes=0-{}", held - 1))
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ` (days to civil date: Howard Hinnant's
/// algorithm), since YouTube's resources carry `publishedAt`.
fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
