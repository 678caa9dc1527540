//! The emulator's own control surface, for rehearsals driven from another
//! process (`reelfleet chaos`, an operator's script): `GET
//! /emulator/videos` lists every completed upload with its reelfleet key,
//! `GET /emulator/state` the quota and counters, and `POST
//! /emulator/faults` turns the fault knobs (a JSON object; every field is
//! optional). No token is needed: the emulator listens on loopback unless
//! told otherwise, and is a rehearsal tool, not a service.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::http::*;
use super::*;

/// Largest control body, in bytes.
const CONTROL_BODY_MAX: usize = 16 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsRequest {
    /// `[k, status]`: the next k API requests get status.
    fail_next: Option<(u32, u16)>,
    /// `[k, retry_after_s]`: the next k API requests get 429.
    rate_limit_next: Option<(u32, Option<u64>)>,
    user_rate_limit_next: Option<u32>,
    /// `[skip, after_bytes]`.
    drop_chunk: Option<(u32, usize)>,
    /// `[skip, status]`.
    fail_chunk: Option<(u32, u16)>,
    fail_token_next: Option<u32>,
    /// `["close" | "hang" | "server_error", then_fail]`.
    lose_final_response: Option<(String, u32)>,
    quota_exhausted: Option<bool>,
    reset_quota_day: Option<bool>,
    expire_tokens: Option<bool>,
    listing_delay_ms: Option<u64>,
    /// `[error_5xx, rate_limited, lost_response]`, per million (the
    /// simulator's `api-faults`): drawn per request from now on.
    rates_ppm: Option<(u32, u32, u32)>,
    /// Clears every fault first.
    clear: Option<bool>,
}

/// `rates_ppm: [error_5xx, rate_limited, lost_response]`, each a chance
/// per million.
fn rates((error_5xx, rate_limited, lost_response): (u32, u32, u32)) -> Result<FaultRates, String> {
    if error_5xx.max(rate_limited).max(lost_response) > 1_000_000 {
        return Err(format!(
            "rates_ppm: [{error_5xx}, {rate_limited}, {lost_response}]: each 0..=1000000"
        ));
    }
    Ok(FaultRates {
        error_5xx,
        rate_limited,
        lost_response,
    })
}

impl State {
    /// Answers a control request (`/emulator/...`).
    pub(super) fn control(&mut self, req: &Request, body: &[u8]) -> Reply {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/emulator/videos") => Reply::json(200, self.videos_json()),
            ("GET", "/emulator/state") => Reply::json(200, self.state_json()),
            ("POST", "/emulator/faults") => match self.set_faults(body) {
                Ok(()) => Reply::json(200, json!({"ok": true})),
                Err(e) => Reply::json(400, json!({"error": e})),
            },
            _ => Reply::json(
                404,
                json!({"error": format!("no control endpoint {} {}", req.method, req.path)}),
            ),
        }
    }

    fn videos_json(&self) -> Value {
        json!(self
            .videos
            .iter()
            .map(|s| {
                let key = s
                    .video
                    .description
                    .lines()
                    .find_map(|l| l.strip_prefix("reelfleet-key: "))
                    .map(|k| k.trim_end().to_string());
                json!({
                    "id": s.video.id,
                    "key": key,
                    "title": s.video.title,
                    "bytes": s.video.bytes.len(),
                    "checksum": format!("{:016x}", s.video.checksum),
                })
            })
            .collect::<Vec<_>>())
    }

    fn state_json(&self) -> Value {
        let units: Vec<Value> = self
            .cfg
            .project
            .buckets
            .iter()
            .zip(self.units_used.iter())
            .map(|(b, u)| json!({"bucket": b.name, "used": u, "per_day": b.units_per_day}))
            .collect();
        json!({
            "videos": self.videos.len(),
            "sessions_opened": self.session_seq,
            "token_requests": self.token_requests,
            "rejected_tokens": self.rejected_tokens,
            "quota": units,
        })
    }

    fn set_faults(&mut self, body: &[u8]) -> Result<(), String> {
        if body.len() > CONTROL_BODY_MAX {
            return Err(format!("a control body over {CONTROL_BODY_MAX} bytes"));
        }
        let f: FaultsRequest = serde_json::from_slice(body).map_err(|e| format!("faults: {e}"))?;
        let lose = match &f.lose_final_response {
            None => None,
            Some((how, n)) => Some((
                match how.as_str() {
                    "close" => LostResponse::Close,
                    "hang" => LostResponse::Hang,
                    "server_error" => LostResponse::ServerError,
                    other => {
                        return Err(format!(
                            "lose_final_response: {other:?} is not close, hang or server_error"
                        ))
                    }
                },
                *n,
            )),
        };
        let rates = f.rates_ppm.map(rates).transpose()?;
        if f.clear == Some(true) {
            self.faults = Faults::default();
        }
        if let Some(r) = rates {
            self.faults.rates_ppm = r;
        }
        let faults = &mut self.faults;
        if let Some((k, status)) = f.fail_next {
            (faults.fail_next, faults.fail_status) = (k, status);
        }
        if let Some((k, after)) = f.rate_limit_next {
            (faults.rate_limit_next, faults.retry_after_s) = (k, after);
        }
        if let Some(k) = f.user_rate_limit_next {
            faults.user_rate_limit_next = k;
        }
        if f.drop_chunk.is_some() {
            faults.drop_chunk = f.drop_chunk;
        }
        if f.fail_chunk.is_some() {
            faults.fail_chunk = f.fail_chunk;
        }
        if let Some(k) = f.fail_token_next {
            faults.token_fail_next = k;
        }
        if lose.is_some() {
            faults.lose_final = lose;
        }
        if let Some(q) = f.quota_exhausted {
            faults.quota_exhausted = q;
        }
        if let Some(ms) = f.listing_delay_ms {
            faults.listing_delay = Duration::from_millis(ms);
        }
        if f.reset_quota_day == Some(true) {
            self.units_used.iter_mut().for_each(|u| *u = 0);
            self.faults.quota_exhausted = false;
        }
        if f.expire_tokens == Some(true) {
            self.tokens.clear();
        }
        Ok(())
    }
}
