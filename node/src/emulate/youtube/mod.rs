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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::publish::youtube::YoutubeConfig;
use tokio::net::TcpListener;
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
    /// Per-million chances, drawn per request: a 5xx, a 429, and (per
    /// completed upload) a lost answer; the simulator's `api-faults`.
    rates_ppm: FaultRates,
    /// How many draws so far (the draws are a function of this count).
    draws: u64,
}

/// The simulator's `api-faults` as rates: per-million chances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultRates {
    pub error_5xx: u32,
    pub rate_limited: u32,
    pub lost_response: u32,
}

impl Faults {
    /// Whether the next draw falls under `ppm` per million (splitmix64 of
    /// the draw count: spread evenly, no shared RNG).
    fn draw(&mut self, ppm: u32) -> bool {
        if ppm == 0 {
            return false;
        }
        self.draws += 1;
        let mut z = self.draws.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % 1_000_000 < u64::from(ppm)
    }
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
    /// The writer the completing request named, and when it came.
    completed_by: Option<String>,
    completed_at: Instant,
}

/// Which writer made a video visible, and when: the `X-Reelfleet-Writer`
/// header (`<node>/<epoch>`) of the request that completed the upload,
/// which reelfleet's publisher sends and YouTube ignores.
#[derive(Clone, Debug)]
pub struct Completion {
    pub video_id: String,
    pub description: String,
    pub writer: Option<String>,
    pub at: Instant,
}

/// The header the publisher names itself in (lowercase, as parsed).
pub const WRITER_HEADER: &str = "x-reelfleet-writer";

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
    /// Keys whose upload was refused for quota (`quotaExceeded`).
    quota_refused: std::collections::BTreeSet<String>,
    /// The writer the request being handled names.
    writer: Option<String>,
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
    /// Serves on the current tokio runtime on `127.0.0.1:0`. Returns the
    /// handle and the base URL (`http://127.0.0.1:PORT`).
    pub async fn start() -> Result<(YoutubeEmulator, String), String> {
        Self::start_with(EmulatorConfig::default()).await
    }

    pub async fn start_with(cfg: EmulatorConfig) -> Result<(YoutubeEmulator, String), String> {
        Self::listen(cfg, ([127, 0, 0, 1], 0).into()).await
    }

    /// Serves on `addr` on the current tokio runtime.
    pub async fn listen(
        cfg: EmulatorConfig,
        addr: std::net::SocketAddr,
    ) -> Result<(YoutubeEmulator, String), String> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("emulator: cannot listen on {addr}: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("emulator: {e}"))?;
        let (mut emu, rx) = Self::prepared(cfg, format!("http://{addr}"));
        emu.task = Some(tokio::spawn(serve(listener, emu.shared.clone(), rx)));
        let url = emu.base_url.clone();
        Ok((emu, url))
    }

    /// Serves on `127.0.0.1:0` on a thread of its own with its own runtime
    /// (for synchronous callers that drive child processes).
    pub fn start_on_thread() -> Result<(YoutubeEmulator, String), String> {
        Self::start_on_thread_with(EmulatorConfig::default())
    }

    pub fn start_on_thread_with(cfg: EmulatorConfig) -> Result<(YoutubeEmulator, String), String> {
        Self::start_on_thread_at(cfg, std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// As [`YoutubeEmulator::start_on_thread_with`], on `ip` (a chaos
    /// fleet's bridge, reachable from its network namespaces).
    pub fn start_on_thread_at(
        cfg: EmulatorConfig,
        ip: std::net::IpAddr,
    ) -> Result<(YoutubeEmulator, String), String> {
        let listener = std::net::TcpListener::bind((ip, 0))
            .map_err(|e| format!("emulator: cannot listen on {ip}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("emulator: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("emulator: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("emulator: cannot start a runtime: {e}"))?;
        let (mut emu, rx) = Self::prepared(cfg, format!("http://{addr}"));
        let shared = emu.shared.clone();
        let thread = std::thread::Builder::new()
            .name("youtube-emulator".into())
            .spawn(move || {
                rt.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, shared, rx).await,
                        Err(e) => tracing::error!(error = %e, "emulator: no listener"),
                    }
                });
            })
            .map_err(|e| format!("emulator: cannot start its thread: {e}"))?;
        emu.thread = Some(thread);
        let url = emu.base_url.clone();
        Ok((emu, url))
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
            quota_refused: Default::default(),
            writer: None,
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

    /// From now on, each API request fails with 503 or 429, and each
    /// completed upload loses its answer, with these per-million chances
    /// (all zero: no more).
    pub fn set_fault_rates(&self, rates: FaultRates) {
        self.shared.state().faults.rates_ppm = rates;
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

    /// Every completed upload with the client address that completed it.
    pub fn completions(&self) -> Vec<Completion> {
        self.shared
            .state()
            .videos
            .iter()
            .map(|s| Completion {
                video_id: s.video.id.clone(),
                description: s.video.description.clone(),
                writer: s.completed_by.clone(),
                at: s.completed_at,
            })
            .collect()
    }

    pub fn videos(&self) -> Vec<EmulatedVideo> {
        self.shared
            .state()
            .videos
            .iter()
            .map(|s| s.video.clone())
            .collect()
    }

    /// Keys whose upload the API refused for quota: their videos wait for
    /// the quota reset (a stated reason not to have ended yet).
    pub fn quota_refused_keys(&self) -> std::collections::BTreeSet<String> {
        self.shared.state().quota_refused.clone()
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

mod api;
mod control;
mod http;

use http::serve;

#[cfg(test)]
mod tests {
    use super::Faults;

    #[test]
    fn fault_rates_are_drawn_at_their_per_million_chance() {
        let mut f = Faults::default();
        assert!((0..1_000).all(|_| !f.draw(0)));
        assert!((0..1_000).all(|_| f.draw(1_000_000)));
        let hits = (0..100_000).filter(|_| f.draw(50_000)).count();
        assert!((4_500..5_500).contains(&hits), "{hits} of 100000 at 5%");
    }
}
