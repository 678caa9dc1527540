//! The admin RPC's client: `reelfleet ctl` and the tests. One connection,
//! one stream per request.

use std::net::SocketAddr;

use super::proto::{self, Answer, Command, Request, VERSION};
use crate::live::transport::{client_config_for, TlsIdentity};

pub struct AdminClient {
    conn: quinn::Connection,
    _endpoint: quinn::Endpoint,
    next_id: u64,
}

impl AdminClient {
    /// Connects to a node's QUIC address with the identity `id` (an admin
    /// certificate, or a node's). `server_name` is the node's name.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        id: &TlsIdentity,
    ) -> Result<AdminClient, String> {
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0".parse().map_err(|e| format!("{e}"))?
        } else {
            "0.0.0.0:0".parse().map_err(|e| format!("{e}"))?
        };
        let mut endpoint =
            quinn::Endpoint::client(bind).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
        endpoint.set_default_client_config(client_config_for(id, proto::ALPN)?);
        let conn = endpoint
            .connect(addr, server_name)
            .map_err(|e| format!("{addr}: {e}"))?
            .await
            .map_err(|e| format!("{addr}: cannot connect: {e}"))?;
        Ok(AdminClient {
            conn,
            _endpoint: endpoint,
            next_id: 1,
        })
    }

    /// Sends `cmd` and waits for its answer.
    pub async fn call(&mut self, cmd: Command) -> Result<Answer, String> {
        let id = self.next_id;
        self.next_id += 1;
        let body = serde_json::to_vec(&Request {
            v: VERSION,
            id,
            cmd,
        })
        .map_err(|e| format!("cannot encode: {e}"))?;
        self.call_raw(&proto::frame(&body)?).await
    }

    /// Sends raw bytes as a request stream (tests send malformed ones).
    pub async fn call_raw(&mut self, bytes: &[u8]) -> Result<Answer, String> {
        let (mut send, mut recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| format!("the connection is gone: {e}"))?;
        send.write_all(bytes)
            .await
            .map_err(|e| format!("cannot send: {e}"))?;
        let _ = send.finish();
        let mut header = [0u8; 4];
        recv.read_exact(&mut header)
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        let n = proto::frame_len(header)?;
        let mut body = vec![0u8; n];
        recv.read_exact(&mut body)
            .await
            .map_err(|e| format!("answer cut short: {e}"))?;
        proto::decode_answer(&body)
    }
}
