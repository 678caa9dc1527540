//! The emulated endpoints: token, `videos.insert` (resumable),
//! `channels.list`, `playlistItems.list`, with quota and validation as the
//! real service has them.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::http::*;
use super::*;
impl State {
    /// For a chunk PUT with a body: how many of its bytes to read before
    /// the connection is cut, if the drop fault is due now.
    pub(super) fn cut_for(&mut self, req: &Request) -> Option<usize> {
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
    pub(super) fn keep_cut_chunk(&mut self, req: &Request, got: &[u8], declared: usize) {
        self.writer = req.header(WRITER_HEADER).map(str::to_string);
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

    pub(super) fn handle(&mut self, req: &Request, body: &[u8], now: Instant) -> Reply {
        self.writer = req.header(WRITER_HEADER).map(str::to_string);
        if req.path.starts_with("/emulator/") {
            return self.control(req, body);
        }
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

    pub(super) fn token(&mut self, body: &[u8], now: Instant) -> Reply {
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

    pub(super) fn authorised(&self, req: &Request, now: Instant) -> bool {
        req.header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .and_then(|t| self.tokens.get(t.trim()))
            .is_some_and(|dies| now < *dies)
    }

    pub(super) fn unauthorised() -> Reply {
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

    pub(super) fn api(&mut self, req: &Request, body: &[u8], now: Instant) -> Reply {
        let rates = self.faults.rates_ppm;
        if self.faults.draw(rates.error_5xx) {
            return api_error(503, "backendError", "Backend Error");
        }
        if self.faults.draw(rates.rate_limited) {
            return api_error(429, "rateLimitExceeded", "Too many requests");
        }
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

    pub(super) fn spend(&mut self, cost: QuotaCost) -> Result<(), Reply> {
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

    pub(super) fn insert(&mut self, req: &Request, body: &[u8], now: Instant) -> Reply {
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
            if let Some(k) = session
                .description
                .lines()
                .find_map(|l| l.strip_prefix("reelfleet-key: "))
            {
                self.quota_refused.insert(k.trim_end().to_string());
            }
            return refused;
        }
        self.open_session(session)
    }

    /// Registers a new upload session; its URL goes back in `Location`.
    pub(super) fn open_session(&mut self, session: Session) -> Reply {
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

    pub(super) fn chunk(&mut self, req: &Request, body: &[u8], now: Instant) -> Reply {
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
    pub(super) fn chunk_faults(&mut self) -> Option<Reply> {
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
    pub(super) fn finish_upload(&mut self, id: &str) -> Reply {
        let v = self.complete(id);
        let mut reply = self.video_reply(v);
        if self.faults.draw(self.faults.rates_ppm.lost_response) {
            reply.after = After::Close;
        }
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
    pub(super) fn complete(&mut self, id: &str) -> usize {
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
            completed_by: self.writer.clone(),
            completed_at: Instant::now(),
        });
        index
    }

    pub(super) fn video_reply(&self, index: usize) -> Reply {
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

    pub(super) fn uploads_playlist(&self) -> String {
        let rest = self
            .cfg
            .channel_id
            .strip_prefix("UC")
            .unwrap_or(&self.cfg.channel_id);
        format!("UU{rest}")
    }

    pub(super) fn channels(&mut self, req: &Request, now: Instant) -> Reply {
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

    pub(super) fn playlist_items(&mut self, req: &Request, now: Instant) -> Reply {
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
    pub(super) fn playlist_item(&self, playlist: &str, position: usize, s: &Stored) -> Value {
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
pub(super) fn page_wanted(req: &Request) -> Result<(usize, usize), Reply> {
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
pub(super) fn check_insert_query(req: &Request) -> Result<(), Reply> {
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
pub(super) fn declared_length(req: &Request) -> Result<Option<u64>, Reply> {
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
pub(super) struct PutRange {
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) total: Option<u64>,
}

impl Session {
    /// A session for the video `resource` describes, refused as YouTube
    /// refuses bad metadata; no bytes yet, and no declared size.
    pub(super) fn for_resource(resource: &Value) -> Result<Session, Reply> {
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
    pub(super) fn put_range(&mut self, req: &Request, body: &[u8]) -> Result<PutRange, Reply> {
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
    pub(super) fn append(
        &mut self,
        range: PutRange,
        body: &[u8],
        granularity: u64,
    ) -> Result<bool, Reply> {
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
pub(super) fn check_metadata(title: &str, description: &str, tags: &[String]) -> Result<(), Reply> {
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

pub(super) fn resume_incomplete(held: u64) -> Reply {
    let reply = Reply::empty(308);
    if held == 0 {
        reply
    } else {
        reply.with("Range", format!("bytes=0-{}", held - 1))
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ` (days to civil date: Howard Hinnant's
/// algorithm), since YouTube's resources carry `publishedAt`.
pub(super) fn rfc3339_now() -> String {
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
