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

    /// Asks for a backup and writes its bytes to `out`; the answer says how
    /// many records at which store version. Fails if fewer bytes come than
    /// the answer announced.
    pub async fn backup(&mut self, out: &mut impl std::io::Write) -> Result<Answer, String> {
        let body = serde_json::to_vec(&Request {
            v: VERSION,
            id: self.next_id,
            cmd: Command::Backup,
        })
        .map_err(|e| format!("cannot encode: {e}"))?;
        self.next_id += 1;
        let (mut send, mut recv) = self.send(&proto::frame(&body)?).await?;
        let _ = send.finish();
        let answer = read_answer(&mut recv).await?;
        if !answer.ok {
            return Ok(answer);
        }
        let want = answer
            .result
            .as_ref()
            .and_then(|r| r["bytes"].as_u64())
            .ok_or("the backup answer does not say how many bytes follow")?;
        let mut got = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        while got < want {
            let n = recv
                .read(&mut buf)
                .await
                .map_err(|e| format!("backup cut short after {got} of {want} bytes: {e}"))?
                .ok_or_else(|| format!("backup cut short after {got} of {want} bytes"))?;
            let n = n.min(usize::try_from(want - got).unwrap_or(usize::MAX));
            out.write_all(&buf[..n])
                .map_err(|e| format!("cannot write the backup: {e}"))?;
            got += n as u64;
        }
        Ok(answer)
    }

    async fn send(
        &mut self,
        bytes: &[u8],
    ) -> Result<(quinn::SendStream, quinn::RecvStream), String> {
        let (mut send, recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| format!("the connection is gone: {e}"))?;
        send.write_all(bytes)
            .await
            .map_err(|e| format!("cannot send: {e}"))?;
        Ok((send, recv))
    }

    /// Sends raw bytes as a request stream (tests send malformed ones).
    pub async fn call_raw(&mut self, bytes: &[u8]) -> Result<Answer, String> {
        let (mut send, mut recv) = self.send(bytes).await?;
        let _ = send.finish();
        read_answer(&mut recv).await
    }
}

/// One answer frame.
async fn read_answer(recv: &mut quinn::RecvStream) -> Result<Answer, String> {
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
