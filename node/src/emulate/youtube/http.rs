//! The emulator's hand-written HTTP/1.1 server: bounded heads and bodies,
//! and the places where faults cut a body, drop an answer or hang.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::*;

pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
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

pub(super) struct Request {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: HashMap<String, String>,
    /// Names in lower case.
    pub(super) headers: HashMap<String, String>,
}

impl Request {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
    pub(super) after: After,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum After {
    Answer,
    Close,
    Hang,
}

impl Reply {
    pub(super) fn json(status: u16, body: Value) -> Reply {
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

    pub(super) fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            after: After::Answer,
        }
    }

    pub(super) fn with(mut self, name: &str, value: String) -> Reply {
        self.headers.push((name.into(), value));
        self
    }
}

/// A Google API error body.
pub(super) fn api_error(status: u16, reason: &str, message: &str) -> Reply {
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

pub(super) async fn connection(stream: &mut TcpStream, shared: &Shared) {
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
pub(super) async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Vec<u8>>> {
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
pub(super) async fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> Vec<u8> {
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

pub(super) fn parse_head(head: &[u8]) -> Option<Request> {
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

pub(super) fn parse_form(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(super) fn percent_decode(s: &str) -> String {
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

pub(super) fn phrase(status: u16) -> &'static str {
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

pub(super) async fn write_reply(stream: &mut TcpStream, reply: &Reply) -> std::io::Result<()> {
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
pub(super) enum ContentRange {
    Chunk {
        first: u64,
        last: u64,
        total: Option<u64>,
    },
    Query {
        total: Option<u64>,
    },
}

pub(super) fn parse_content_range(v: &str) -> Option<ContentRange> {
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

pub(super) fn upload_id(req: &Request) -> Option<&str> {
    req.query.get("upload_id").map(String::as_str)
}
