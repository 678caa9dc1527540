//! The YouTube publisher: YouTube Data API v3 with an OAuth refresh token
//! and the resumable upload protocol.
//!
//! - **Auth.** An access token is fetched with the refresh-token grant and
//!   cached until shortly before it expires; a 401 from the API drops it,
//!   fetches a new one and repeats that one request, once.
//! - **Upload.** `videos.insert` opens a resumable session (its URI comes
//!   back in `Location`); the file then goes up in chunks of
//!   `chunk_bytes` with `Content-Range`. A 308 says how much the server
//!   holds (`Range: bytes=0-N`, or no `Range` for nothing). After a dropped
//!   connection or a 5xx the publisher asks the session what it has (an
//!   empty PUT with `Content-Range: bytes */total`) and resumes from there,
//!   a bounded number of times with a small backoff. Resuming one session
//!   is not a new upload attempt: retrying a whole upload, and charging for
//!   it, is the machine's decision, never the publisher's.
//! - **Safety.** `may_finish` is asked as the connection is about to write
//!   the body of the chunk that carries the last byte (the latest moment
//!   this client controls); false means those bytes are never sent, so the
//!   video is definitely not published (`Transient`). What remains is the
//!   instant between that answer and the bytes leaving: README, "The
//!   window a guard cannot close".
//! - **Outcomes.** Definite answers map onto `PublishOutcome`; when the
//!   last byte may have reached the server and neither its answer nor a
//!   status query says what happened, the answer is `None` (unknown), and
//!   the machine looks the key up.
//! - **Lookup.** The idempotency key is kept in the description as the line
//!   `reelfleet-key: <key>`; a lookup scans the newest pages of the
//!   channel's uploads playlist for that exact line. Newly uploaded videos
//!   can take a while to appear in that playlist on the real service, so a
//!   `NotFound` right after an unknown outcome is only as good as the
//!   machine's wait before asking.
//! - **Quota.** With a `PublishingProject`, the units this publisher spent
//!   are counted per bucket (an upload's cost per session opened, a
//!   lookup's cost per list call answered) for metrics; reservation is the
//!   control machine's job.
//!
//! There is no logging crate: every failure is printed to stderr and kept
//! as [`YoutubePublisher::last_error`].

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::protocol::{LookupOutcome, PublishOutcome};
use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_RANGE, LOCATION, RANGE, RETRY_AFTER};
use topology::{PublishingProject, QuotaCost};

use super::{BoxFuture, MayFinish, PublishError, Publisher, Upload};

/// The line of a description that carries the idempotency key.
pub const KEY_PREFIX: &str = "reelfleet-key: ";

/// What YouTube allows in a title (characters) and a description (bytes).
const TITLE_MAX_CHARS: usize = 100;
const DESCRIPTION_MAX_BYTES: usize = 5000;
const TAGS_MAX_CHARS: usize = 500;

/// Used when a 429 or a rate-limit 403 carries no usable `Retry-After`.
const DEFAULT_RETRY_AFTER_MS: u64 = 60_000;

#[derive(Clone)]
pub struct YoutubeConfig {
    pub api_base: String,
    pub upload_base: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    /// A multiple of 256 KiB in production (the service persists whole
    /// 256 KiB blocks); any size for tests.
    pub chunk_bytes: usize,
    /// Whole-request limit for every HTTP call, chunks included.
    pub request_timeout_ms: u64,
    pub privacy_status: String,
    /// Pages of 50 uploads a lookup scans, newest first.
    pub lookup_max_pages: usize,
    /// Status queries (and resumes) one upload may make after failures.
    pub max_resumes: u32,
    /// First backoff before a status query; doubles, capped at 8 times.
    pub resume_backoff_ms: u64,
}

impl Default for YoutubeConfig {
    fn default() -> Self {
        YoutubeConfig {
            api_base: "https://www.googleapis.com".into(),
            upload_base: "https://www.googleapis.com/upload".into(),
            token_url: "https://oauth2.googleapis.com/token".into(),
            client_id: String::new(),
            client_secret: String::new(),
            refresh_token: String::new(),
            chunk_bytes: 32 * 256 * 1024,
            request_timeout_ms: 120_000,
            privacy_status: "private".into(),
            lookup_max_pages: 4,
            max_resumes: 5,
            resume_backoff_ms: 500,
        }
    }
}

// By hand, so that secrets never reach a log through `{:?}`.
impl std::fmt::Debug for YoutubeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YoutubeConfig")
            .field("api_base", &self.api_base)
            .field("upload_base", &self.upload_base)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("chunk_bytes", &self.chunk_bytes)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("privacy_status", &self.privacy_status)
            .field("lookup_max_pages", &self.lookup_max_pages)
            .field("max_resumes", &self.max_resumes)
            .field("resume_backoff_ms", &self.resume_backoff_ms)
            .finish()
    }
}

struct Token {
    access: String,
    refresh_at: Instant,
}

struct Accounting {
    buckets: Vec<String>,
    upload: QuotaCost,
    lookup: QuotaCost,
    spent: Mutex<Vec<u64>>,
}

pub struct YoutubePublisher {
    cfg: YoutubeConfig,
    http: reqwest::Client,
    /// An async lock, held across the refresh, so that concurrent uploads
    /// wait for one refresh instead of each making its own.
    token: tokio::sync::Mutex<Option<Token>>,
    uploads_playlist: Mutex<Option<String>>,
    accounting: Option<Accounting>,
    last_error: Mutex<Option<String>>,
}

/// An HTTP answer, body read in full.
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

enum Failure {
    /// `may_finish` said no: the final bytes were not sent.
    Stopped,
    /// Nothing reached the server: the connection was never made, or no
    /// access token could be had.
    NotSent(String),
    /// The request may have reached the server; no answer came back.
    Lost(String),
}

/// Where an upload stands while its chunks go out.
#[derive(Default)]
struct Progress {
    /// The first byte the server does not hold yet.
    offset: u64,
    /// Status queries made, and chunks that moved nothing.
    resumes: u32,
    /// True from the moment a request carrying the last byte went out
    /// unanswered (or answered by a 5xx) until the server says that it
    /// does not hold the whole file.
    last_byte_maybe_in: bool,
    /// Who sends the upload, `<node>/<epoch>`: the final chunk names it in
    /// [`WRITER_HEADER`] (an audit's evidence; YouTube ignores the header).
    writer: String,
}

/// The header the final chunk names its writer in.
pub const WRITER_HEADER: &str = "X-Reelfleet-Writer";

/// `<node>/<epoch>` from an upload's metadata (empty parts if absent).
fn writer_of(metadata: &serde_json::Value) -> String {
    let node = metadata.get("node").and_then(|v| v.as_str()).unwrap_or("");
    let epoch = metadata.get("epoch").and_then(|v| v.as_u64()).unwrap_or(0);
    format!("{node}/{epoch}")
}

/// What one chunk's PUT leaves the upload to do next.
enum AfterChunk {
    /// The upload is over, one way or the other.
    Finished(Option<PublishOutcome>),
    /// The server took bytes: send from its new offset.
    Next,
    /// Unanswered, or answered by a 5xx: ask the session what it holds.
    Resume(String),
}

enum Status {
    Complete(Reply),
    /// Bytes the server holds.
    Incomplete(u64),
    Gone,
    Failed(String),
}

impl YoutubePublisher {
    pub fn new(
        cfg: YoutubeConfig,
        project: Option<&PublishingProject>,
    ) -> Result<YoutubePublisher, PublishError> {
        let bad = |reason: String| PublishError {
            reason,
            retryable: false,
        };
        if cfg.chunk_bytes == 0 {
            return Err(bad("youtube: chunk_bytes must be positive".into()));
        }
        let accounting = match project {
            None => None,
            Some(p) => {
                let n = p.buckets.len();
                if p.upload_cost.bucket >= n || p.lookup_cost.bucket >= n {
                    return Err(bad(format!(
                        "youtube: project {} names a quota bucket it does not have",
                        p.name
                    )));
                }
                Some(Accounting {
                    buckets: p.buckets.iter().map(|b| b.name.clone()).collect(),
                    upload: p.upload_cost,
                    lookup: p.lookup_cost,
                    spent: Mutex::new(vec![0; n]),
                })
            }
        };
        let timeout = Duration::from_millis(cfg.request_timeout_ms.max(1));
        let http = reqwest::Client::builder()
            // A 308 here is "Resume Incomplete", never a redirect to follow.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| bad(format!("youtube: cannot build the HTTP client: {e}")))?;
        Ok(YoutubePublisher {
            cfg,
            http,
            token: tokio::sync::Mutex::new(None),
            uploads_playlist: Mutex::new(None),
            accounting,
            last_error: Mutex::new(None),
        })
    }

    /// The last failure this publisher met, for operators.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// Units spent per quota bucket of the project it was built with
    /// (empty without one).
    pub fn units_spent(&self) -> Vec<(String, u64)> {
        match &self.accounting {
            None => Vec::new(),
            Some(a) => a
                .buckets
                .iter()
                .cloned()
                .zip(lock(&a.spent).iter().copied())
                .collect(),
        }
    }

    fn charge(&self, pick: fn(&Accounting) -> QuotaCost) {
        if let Some(a) = &self.accounting {
            let cost = pick(a);
            lock(&a.spent)[cost.bucket] += cost.units;
        }
    }

    fn note(&self, message: String) {
        tracing::warn!(publisher = "youtube", "{message}");
        *lock(&self.last_error) = Some(message);
    }

    fn transient(&self, message: String) -> Option<PublishOutcome> {
        self.note(message);
        Some(PublishOutcome::Transient)
    }

    /// Neither the answer to the last byte nor a status query told what
    /// happened: the machine must look the key up.
    fn unknown(&self, message: String) -> Option<PublishOutcome> {
        self.note(format!("outcome unknown: {message}"));
        None
    }

    async fn access_token(&self) -> Result<String, String> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref() {
            if Instant::now() < t.refresh_at {
                return Ok(t.access.clone());
            }
        }
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", self.cfg.client_id.as_str()),
            ("client_secret", self.cfg.client_secret.as_str()),
            ("refresh_token", self.cfg.refresh_token.as_str()),
        ];
        let resp = self
            .http
            .post(&self.cfg.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| format!("token endpoint unreachable: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("token endpoint answer cut off: {e}"))?;
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if !(200..300).contains(&status) {
            let error = json.get("error").and_then(|v| v.as_str()).unwrap_or("?");
            let what = json
                .get("error_description")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            return Err(format!(
                "token refresh refused: HTTP {status} {error} {what}"
            ));
        }
        let access = json
            .get("access_token")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| "token endpoint answered without an access_token".to_string())?
            .to_string();
        let expires_in = json
            .get("expires_in")
            .and_then(|v| v.as_u64())
            .unwrap_or(3600);
        // Refresh a minute early (a tenth early for short-lived tokens), so
        // that a token never expires between this check and the server's.
        let margin = (expires_in / 10).min(60);
        *slot = Some(Token {
            access: access.clone(),
            refresh_at: Instant::now() + Duration::from_secs(expires_in - margin),
        });
        Ok(access)
    }

    async fn forget_token(&self, rejected: &str) {
        let mut slot = self.token.lock().await;
        // Another request may already have replaced it; keep the new one.
        if slot.as_ref().is_some_and(|t| t.access == rejected) {
            *slot = None;
        }
    }

    /// One API request with a bearer token; on a 401 the token is renewed
    /// and the request repeated once.
    async fn call(
        &self,
        build: &(dyn Fn() -> reqwest::RequestBuilder + Sync),
    ) -> Result<Reply, Failure> {
        let mut renewed = false;
        loop {
            let token = self.access_token().await.map_err(Failure::NotSent)?;
            let resp = match build().bearer_auth(&token).send().await {
                Ok(r) => r,
                Err(e) if e.is_connect() => return Err(Failure::NotSent(e.to_string())),
                Err(e) => return Err(Failure::Lost(e.to_string())),
            };
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = match resp.bytes().await {
                Ok(b) => b.to_vec(),
                Err(e) => return Err(Failure::Lost(format!("answer cut off: {e}"))),
            };
            if status == 401 && !renewed {
                self.forget_token(&token).await;
                renewed = true;
                continue;
            }
            return Ok(Reply {
                status,
                headers,
                body,
            });
        }
    }

    /// The outcome of a request the server answered with a refusal.
    fn refusal(&self, what: &str, reply: &Reply) -> Option<PublishOutcome> {
        let reasons = error_reasons(&reply.body);
        let has = |r: &str| reasons.iter().any(|x| x == r);
        let detail = format!(
            "{what}: HTTP {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        if reply.status == 403 && (has("quotaExceeded") || has("dailyLimitExceeded")) {
            self.note(detail);
            return Some(PublishOutcome::QuotaExceeded);
        }
        if reply.status == 429
            || (reply.status == 403 && (has("rateLimitExceeded") || has("userRateLimitExceeded")))
        {
            self.note(detail);
            return Some(PublishOutcome::RateLimited {
                retry_after_ms: retry_after_ms(&reply.headers),
            });
        }
        self.transient(detail)
    }

    async fn publish_inner(
        &self,
        upload: &Upload,
        may_finish: &MayFinish,
    ) -> Option<PublishOutcome> {
        let key = &upload.idempotency_key;
        let path = upload.video.clone();
        let total = match tokio::task::spawn_blocking(move || std::fs::metadata(&path)).await {
            Ok(Ok(m)) if m.len() > 0 => m.len(),
            Ok(Ok(_)) => return self.transient(format!("{key}: the video file is empty")),
            Ok(Err(e)) => {
                return self.transient(format!(
                    "{key}: cannot read {}: {e}",
                    upload.video.display()
                ))
            }
            Err(e) => return self.transient(format!("{key}: file check failed: {e}")),
        };
        let resource = serde_json::json!({
            "snippet": {
                "title": title_of(upload),
                "description": description_of(upload),
                "tags": tags_of(&upload.metadata),
            },
            "status": { "privacyStatus": self.cfg.privacy_status },
        });
        let url = format!(
            "{}/youtube/v3/videos?uploadType=resumable&part=snippet,status",
            self.cfg.upload_base
        );
        let init = self
            .call(&|| {
                self.http
                    .post(&url)
                    .header("X-Upload-Content-Length", total)
                    .header("X-Upload-Content-Type", "video/*")
                    .json(&resource)
            })
            .await;
        let reply = match init {
            Ok(r) => r,
            // Without a session no byte can have landed.
            Err(Failure::NotSent(e) | Failure::Lost(e)) => {
                return self.transient(format!("{key}: opening the upload failed: {e}"))
            }
            Err(Failure::Stopped) => return self.transient(format!("{key}: stopped")),
        };
        if !matches!(reply.status, 200 | 201) {
            return self.refusal(&format!("{key}: opening the upload"), &reply);
        }
        let session = reply
            .headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|loc| reqwest::Url::parse(&url).ok()?.join(loc).ok());
        let Some(session) = session else {
            return self.transient(format!("{key}: the upload was opened without a Location"));
        };
        self.charge(|a| a.upload);
        let writer = writer_of(&upload.metadata);
        self.send_chunks(
            key,
            &upload.video,
            session.as_str(),
            total,
            may_finish,
            writer,
        )
        .await
    }

    async fn send_chunks(
        &self,
        key: &str,
        video: &Path,
        session: &str,
        total: u64,
        may_finish: &MayFinish,
        writer: String,
    ) -> Option<PublishOutcome> {
        let mut progress = Progress {
            writer,
            ..Progress::default()
        };
        loop {
            if progress.offset >= total {
                // Every byte held, yet "incomplete": nothing sensible to
                // send, and the server has said it is not a video.
                return self.transient(format!(
                    "{key}: the server holds all {total} bytes but calls the upload incomplete"
                ));
            }
            let sent = self
                .send_chunk(key, video, session, total, &mut progress, may_finish)
                .await;
            let trouble = match sent {
                AfterChunk::Finished(outcome) => return outcome,
                AfterChunk::Next => continue,
                AfterChunk::Resume(trouble) => trouble,
            };
            let resumed = self
                .resume(key, session, total, &trouble, &mut progress)
                .await;
            if let ControlFlow::Break(outcome) = resumed {
                return outcome;
            }
        }
    }

    /// Sends the chunk that starts at `progress.offset`.
    async fn send_chunk(
        &self,
        key: &str,
        video: &Path,
        session: &str,
        total: u64,
        progress: &mut Progress,
        may_finish: &MayFinish,
    ) -> AfterChunk {
        let offset = progress.offset;
        let end = (offset + self.cfg.chunk_bytes as u64).min(total);
        let is_final = end == total;
        let data = match read_range(video.to_path_buf(), offset, end).await {
            Ok(d) => d,
            Err(e) => {
                // Only reached with the last byte not in flight: every
                // unanswered final chunk is settled by a status query
                // before the loop comes back here.
                return AfterChunk::Finished(self.transient(format!("{key}: {e}")));
            }
        };
        let range = format!("bytes {}-{}/{}", offset, end - 1, total);
        let refused = Arc::new(AtomicBool::new(false));
        let sent = self
            .call(&|| {
                let put = self.http.put(session).header(CONTENT_RANGE, &range);
                if is_final {
                    put.header(CONTENT_LENGTH, data.len())
                        .header(WRITER_HEADER, &progress.writer)
                        .body(guarded_body(data.clone(), may_finish, &refused))
                } else {
                    put.body(data.clone())
                }
            })
            .await;
        // The guard said no as the body was about to go: the last byte
        // never left, so the upload is definitely not complete.
        let sent = if refused.load(Ordering::SeqCst) {
            Err(Failure::Stopped)
        } else {
            sent
        };
        match sent {
            Err(Failure::Stopped) => AfterChunk::Finished(self.transient(format!(
                "{key}: may_finish said no; the last chunk was not sent"
            ))),
            Err(Failure::NotSent(e)) => AfterChunk::Resume(e),
            Err(Failure::Lost(e)) => {
                progress.last_byte_maybe_in |= is_final;
                AfterChunk::Resume(e)
            }
            Ok(r) => self.chunk_answered(key, total, &range, is_final, &r, progress),
        }
    }

    /// What the server's answer to the chunk `range` means for the upload.
    fn chunk_answered(
        &self,
        key: &str,
        total: u64,
        range: &str,
        is_final: bool,
        reply: &Reply,
        progress: &mut Progress,
    ) -> AfterChunk {
        match reply.status {
            200 | 201 => AfterChunk::Finished(self.completed(key, reply)),
            308 => {
                let held = held_bytes(&reply.headers);
                if held > total {
                    return AfterChunk::Finished(
                        self.transient(format!("{key}: the server claims {held} of {total} bytes")),
                    );
                }
                if held <= progress.offset {
                    // No progress: counts against the same bound as
                    // resumes, so that a stuck session ends.
                    progress.resumes += 1;
                    if progress.resumes > self.cfg.max_resumes {
                        return AfterChunk::Finished(
                            self.transient(format!("{key}: the upload makes no progress")),
                        );
                    }
                }
                progress.offset = held;
                AfterChunk::Next
            }
            404 | 410 => {
                AfterChunk::Finished(self.transient(format!("{key}: the upload session is gone")))
            }
            s if s >= 500 => {
                // A 5xx to the last byte does not prove that the
                // upload failed: only the session can say.
                progress.last_byte_maybe_in |= is_final;
                AfterChunk::Resume(format!("HTTP {s}"))
            }
            _ => AfterChunk::Finished(self.refusal(&format!("{key}: sending {range}"), reply)),
        }
    }

    /// Asks the session what it holds, and moves `progress` there so the
    /// upload resumes from it; breaks with the outcome when the session
    /// settles the upload or the resumes run out.
    async fn resume(
        &self,
        key: &str,
        session: &str,
        total: u64,
        trouble: &str,
        progress: &mut Progress,
    ) -> ControlFlow<Option<PublishOutcome>> {
        loop {
            if progress.resumes >= self.cfg.max_resumes {
                let message = format!(
                    "{key}: gave up after {} resumes ({trouble})",
                    progress.resumes
                );
                return ControlFlow::Break(self.unsettled(message, progress));
            }
            progress.resumes += 1;
            let backoff = self.cfg.resume_backoff_ms << (progress.resumes - 1).min(3);
            tokio::time::sleep(Duration::from_millis(backoff)).await;
            match self.status_query(session, total).await {
                Status::Complete(r) => return ControlFlow::Break(self.completed(key, &r)),
                Status::Incomplete(held) => {
                    progress.offset = held;
                    progress.last_byte_maybe_in = false;
                    return ControlFlow::Continue(());
                }
                Status::Gone => {
                    let message = format!("{key}: the upload session is gone ({trouble})");
                    // A session that may have completed and then expired
                    // tells nothing; one that never had the last byte is
                    // definitely not a video.
                    return ControlFlow::Break(self.unsettled(message, progress));
                }
                Status::Failed(e) => {
                    self.note(format!("{key}: status query failed: {e}"));
                }
            }
        }
    }

    /// An upload abandoned part-way: unknown if the last byte may have
    /// landed (the video may exist), otherwise a plain transient failure.
    fn unsettled(&self, message: String, progress: &Progress) -> Option<PublishOutcome> {
        if progress.last_byte_maybe_in {
            self.unknown(message)
        } else {
            self.transient(message)
        }
    }

    async fn status_query(&self, session: &str, total: u64) -> Status {
        let range = format!("bytes */{total}");
        let reply = self
            .call(&|| {
                self.http
                    .put(session)
                    .header(CONTENT_RANGE, &range)
                    .body(Vec::new())
            })
            .await;
        match reply {
            Ok(r) => match r.status {
                200 | 201 => Status::Complete(r),
                308 => Status::Incomplete(held_bytes(&r.headers).min(total)),
                404 | 410 => Status::Gone,
                s => Status::Failed(format!("HTTP {s} {}", String::from_utf8_lossy(&r.body))),
            },
            Err(Failure::NotSent(e) | Failure::Lost(e)) => Status::Failed(e),
            Err(Failure::Stopped) => Status::Failed("stopped".into()),
        }
    }

    /// The server holds the whole file: the video exists.
    fn completed(&self, key: &str, reply: &Reply) -> Option<PublishOutcome> {
        let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        match json.get("id").and_then(|v| v.as_str()) {
            Some(id) if !id.is_empty() => Some(PublishOutcome::Published {
                remote_id: id.to_string(),
            }),
            // Complete, but which video? A lookup by key will tell.
            _ => self.unknown(format!("{key}: completed without a video id")),
        }
    }

    async fn uploads_playlist(&self) -> Result<String, String> {
        if let Some(p) = lock(&self.uploads_playlist).clone() {
            return Ok(p);
        }
        let url = format!("{}/youtube/v3/channels", self.cfg.api_base);
        let reply = self
            .call(&|| {
                self.http
                    .get(&url)
                    .query(&[("part", "contentDetails"), ("mine", "true")])
            })
            .await
            .map_err(failure_text)?;
        if reply.status != 200 {
            return Err(format!(
                "channels.list: HTTP {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ));
        }
        self.charge(|a| a.lookup);
        let json: serde_json::Value = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("channels.list: not JSON: {e}"))?;
        let playlist = json
            .pointer("/items/0/contentDetails/relatedPlaylists/uploads")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| "channels.list: no uploads playlist for this account".to_string())?
            .to_string();
        *lock(&self.uploads_playlist) = Some(playlist.clone());
        Ok(playlist)
    }

    async fn lookup_inner(&self, key: &str) -> Result<Option<String>, String> {
        let playlist = self.uploads_playlist().await?;
        let needle = format!("{KEY_PREFIX}{key}");
        let url = format!("{}/youtube/v3/playlistItems", self.cfg.api_base);
        let mut page: Option<String> = None;
        for _ in 0..self.cfg.lookup_max_pages {
            let reply = self
                .call(&|| {
                    let mut q = vec![
                        ("part", "snippet"),
                        ("playlistId", playlist.as_str()),
                        ("maxResults", "50"),
                    ];
                    if let Some(p) = &page {
                        q.push(("pageToken", p.as_str()));
                    }
                    self.http.get(&url).query(&q)
                })
                .await
                .map_err(failure_text)?;
            if reply.status != 200 {
                if reply.status == 404 {
                    // The cached playlist may belong to another channel now.
                    *lock(&self.uploads_playlist) = None;
                }
                return Err(format!(
                    "playlistItems.list: HTTP {} {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                ));
            }
            self.charge(|a| a.lookup);
            let json: serde_json::Value = serde_json::from_slice(&reply.body)
                .map_err(|e| format!("playlistItems.list: not JSON: {e}"))?;
            let items = json
                .get("items")
                .and_then(|v| v.as_array())
                .map(Vec::as_slice)
                .unwrap_or_default();
            for item in items {
                let snippet = item.get("snippet");
                let description = snippet
                    .and_then(|s| s.get("description"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("");
                if description.lines().any(|l| l.trim_end() == needle) {
                    return snippet
                        .and_then(|s| s.pointer("/resourceId/videoId"))
                        .and_then(|v| v.as_str())
                        .map(|id| Some(id.to_string()))
                        .ok_or_else(|| format!("{key}: found without a videoId"));
                }
            }
            match json.get("nextPageToken").and_then(|v| v.as_str()) {
                Some(t) if !t.is_empty() => page = Some(t.to_string()),
                _ => return Ok(None),
            }
        }
        Ok(None)
    }
}

impl Publisher for YoutubePublisher {
    fn publish<'a>(
        &'a self,
        upload: &'a Upload,
        may_finish: MayFinish,
    ) -> BoxFuture<'a, Option<PublishOutcome>> {
        Box::pin(async move { self.publish_inner(upload, &may_finish).await })
    }

    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, LookupOutcome> {
        Box::pin(async move {
            match self.lookup_inner(key).await {
                Ok(Some(remote_id)) => LookupOutcome::Found { remote_id },
                Ok(None) => LookupOutcome::NotFound,
                Err(e) => {
                    self.note(format!("lookup of {key} failed: {e}"));
                    LookupOutcome::Failed
                }
            }
        })
    }

    fn quota_units_spent(&self) -> Vec<(String, u64)> {
        self.units_spent()
    }
}

/// A poisoned lock only means another task panicked mid-update of a
/// counter or a cache; the value is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn failure_text(f: Failure) -> String {
    match f {
        Failure::Stopped => "stopped".into(),
        Failure::NotSent(e) | Failure::Lost(e) => e,
    }
}

/// The final chunk's body: `may_finish` is asked when the connection
/// polls the body to write it, the latest moment this client controls
/// (after the headers, with no await between the answer and the bytes
/// going out). On a no, the body fails, the request is abandoned with the
/// last byte unsent, and `refused` says so.
fn guarded_body(data: Vec<u8>, may_finish: &MayFinish, refused: &Arc<AtomicBool>) -> reqwest::Body {
    let (may_finish, refused) = (Arc::clone(may_finish), Arc::clone(refused));
    let once = futures_util::stream::once(async move {
        if may_finish() {
            Ok(data)
        } else {
            refused.store(true, Ordering::SeqCst);
            Err(std::io::Error::other("may_finish said no"))
        }
    });
    reqwest::Body::wrap_stream(once)
}

async fn read_range(video: PathBuf, start: u64, end: u64) -> Result<Vec<u8>, String> {
    let shown = video.display().to_string();
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&video)?;
        f.seek(SeekFrom::Start(start))?;
        let mut buf = vec![0; (end - start) as usize];
        f.read_exact(&mut buf)?;
        Ok(buf)
    })
    .await;
    match read {
        Ok(Ok(buf)) => Ok(buf),
        Ok(Err(e)) => Err(format!("cannot read {shown} at {start}: {e}")),
        Err(e) => Err(format!("reading {shown} failed: {e}")),
    }
}

/// Bytes the server holds, from a 308's `Range: bytes=0-N`; none without.
fn held_bytes(headers: &HeaderMap) -> u64 {
    headers
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(_, last)| last.trim().parse::<u64>().ok())
        .map_or(0, |last| last + 1)
}

fn retry_after_ms(headers: &HeaderMap) -> u64 {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_RETRY_AFTER_MS, |s| s.saturating_mul(1000))
}

/// `error.errors[*].reason` of a Google API error body.
fn error_reasons(body: &[u8]) -> Vec<String> {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    json.pointer("/error/errors")
        .and_then(|v| v.as_array())
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e.get("reason").and_then(|r| r.as_str()))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// YouTube rejects `<` and `>` in titles, descriptions and tags.
fn clean(s: &str) -> String {
    s.replace('<', "\u{2039}").replace('>', "\u{203A}")
}

fn title_of(upload: &Upload) -> String {
    let t: String = clean(upload.title.trim())
        .chars()
        .take(TITLE_MAX_CHARS)
        .collect();
    if t.trim().is_empty() {
        // A title is required; the key at least says which video it is.
        upload
            .idempotency_key
            .chars()
            .take(TITLE_MAX_CHARS)
            .collect()
    } else {
        t
    }
}

/// The caller's description (without any key line of its own, which would
/// confuse lookups) cut to fit, then the key line, which always survives.
pub fn description_of(upload: &Upload) -> String {
    let key_line = format!("{KEY_PREFIX}{}", upload.idempotency_key);
    let own: Vec<String> = upload
        .description
        .lines()
        .filter(|l| !l.trim_start().starts_with(KEY_PREFIX.trim_end()))
        .map(clean)
        .collect();
    let mut text = own.join("\n").trim_end().to_string();
    let room = DESCRIPTION_MAX_BYTES.saturating_sub(key_line.len() + 2);
    if text.len() > room {
        let mut cut = room;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    if text.is_empty() {
        key_line
    } else {
        format!("{text}\n\n{key_line}")
    }
}

/// `metadata.tags` (strings), cleaned, within YouTube's 500 characters.
fn tags_of(metadata: &serde_json::Value) -> Vec<String> {
    let mut used = 0;
    let mut tags = Vec::new();
    let given = metadata.get("tags").and_then(|v| v.as_array());
    for tag in given.into_iter().flatten().filter_map(|t| t.as_str()) {
        let tag = clean(tag.trim()).replace(',', " ");
        let len = tag.chars().count() + usize::from(!tags.is_empty());
        if tag.is_empty() || used + len > TAGS_MAX_CHARS {
            continue;
        }
        used += len;
        tags.push(tag);
    }
    tags
}
