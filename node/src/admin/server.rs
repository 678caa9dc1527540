//! The admin RPC as a node serves it: each request on its own QUIC stream,
//! read within `REQUEST_DEADLINE`, checked against the caller's role (from
//! its certificate), answered from the store. A malformed or refused
//! request gets an error answer on its stream; the connection stays up.

use std::sync::Arc;
use std::time::Duration;

use super::exec;
use super::proto::{self, Answer, Role};
use crate::live::ports::NodePorts;
use crate::live::transport::{ou_and_name, peer_cert};

/// How long a request may take to arrive.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// Most requests served at once on one connection.
const STREAMS_MAX: usize = 16;

/// Who is calling, as its certificate says.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

fn caller_of(conn: &quinn::Connection) -> Result<Caller, String> {
    let cert = peer_cert(conn)?;
    let (ou, cn) = ou_and_name(&cert)?;
    let role = ou
        .as_deref()
        .and_then(Role::from_ou)
        .ok_or_else(|| format!("a certificate with OU {ou:?} has no role here"))?;
    Ok(Caller {
        name: cn.unwrap_or_default(),
        role,
    })
}

/// Serves one admin connection until it closes.
pub fn serve(conn: quinn::Connection, node: Arc<NodePorts>) {
    tokio::spawn(async move {
        let caller = match caller_of(&conn) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(node = %node.name, error = %e, "admin connection refused");
                conn.close(quinn::VarInt::from_u32(4), e.as_bytes());
                return;
            }
        };
        let slots = Arc::new(tokio::sync::Semaphore::new(STREAMS_MAX));
        while let Ok((send, recv)) = conn.accept_bi().await {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let (node, caller) = (Arc::clone(&node), caller.clone());
            tokio::spawn(async move {
                answer_stream(send, recv, &node, &caller).await;
                drop(slot);
            });
        }
    });
}

async fn answer_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    node: &NodePorts,
    caller: &Caller,
) {
    let answer = match tokio::time::timeout(REQUEST_DEADLINE, read_request(&mut recv)).await {
        Err(_) => Answer::error(0, format!("no whole request within {REQUEST_DEADLINE:?}")),
        Ok(Err(e)) => Answer::error(0, e),
        Ok(Ok(body)) => match proto::decode_request(&body) {
            Err((id, e)) => Answer::error(id, e),
            Ok(req) => match req.cmd.allowed_for(caller.role) {
                Err(e) => {
                    tracing::warn!(node = %node.name, who = %caller.name, role = caller.role.name(), command = ?req.cmd, "admin command refused");
                    Answer::error(req.id, e)
                }
                // A backup streams its bytes after the answer.
                Ok(()) if req.cmd == proto::Command::Backup => {
                    return super::backup::serve(send, node, req.id).await;
                }
                Ok(()) => match exec::run(node, caller, &req.cmd).await {
                    Ok(v) => Answer::ok(req.id, v),
                    Err(e) => Answer::error(req.id, e),
                },
            },
        },
    };
    let body = serde_json::to_vec(&answer).unwrap_or_default();
    let framed = proto::frame(&body).unwrap_or_else(|e| {
        let small = serde_json::to_vec(&Answer::error(answer.id, e)).unwrap_or_default();
        proto::frame(&small).unwrap_or_default()
    });
    let _ = send.write_all(&framed).await;
    let _ = send.finish();
}

/// One request frame, bounded before it is read.
async fn read_request(recv: &mut quinn::RecvStream) -> Result<Vec<u8>, String> {
    let mut header = [0u8; 4];
    recv.read_exact(&mut header)
        .await
        .map_err(|e| format!("malformed request: no frame header ({e})"))?;
    let n = proto::frame_len(header)?;
    let mut body = vec![0u8; n];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| format!("malformed request: frame cut short ({e})"))?;
    Ok(body)
}
