//! `backup` through the admin RPC: a consistent snapshot of the store (the
//! same format as `reelfleet backup`), taken by the node the console is
//! connected to and streamed back on the request's stream: first the
//! answer frame (`records`, `version`, `bytes`), then exactly `bytes` raw
//! bytes. The node writes the backup to an unnamed temporary file first,
//! so memory stays bounded whatever the store's size.

use std::io::{Seek, SeekFrom};

use serde_json::json;
use tokio::io::AsyncReadExt;

use super::proto::{self, Answer};
use crate::live::ports::NodePorts;
use crate::store::backup;

/// Bytes sent per write.
const CHUNK_BYTES: usize = 64 * 1024;

/// Takes the backup and sends it on `send` as answer `id`.
pub async fn serve(mut send: quinn::SendStream, node: &NodePorts, id: u64) {
    let taken = take(node).await;
    let (answer, file) = match taken {
        Ok((file, records, version, bytes)) => (
            Answer::ok(
                id,
                json!({ "records": records, "version": version, "bytes": bytes }),
            ),
            Some(file),
        ),
        Err(e) => (Answer::error(id, e), None),
    };
    let body = serde_json::to_vec(&answer).unwrap_or_default();
    let Ok(framed) = proto::frame(&body) else {
        return;
    };
    if send.write_all(&framed).await.is_err() {
        return;
    }
    if let Some(file) = file {
        let mut file = tokio::fs::File::from_std(file);
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            match file.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    if send.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // The client sees fewer bytes than announced and says so.
                    tracing::warn!(node = %node.name, error = %e, "backup file unreadable mid-stream");
                    return;
                }
            }
        }
    }
    let _ = send.finish();
}

async fn take(node: &NodePorts) -> Result<(std::fs::File, u64, u64, u64), String> {
    let mut file =
        tempfile::tempfile().map_err(|e| format!("cannot make a temporary file: {e}"))?;
    let out = file
        .try_clone()
        .map_err(|e| format!("temporary file: {e}"))?;
    let (records, version) = backup::backup(&*node.store.store, out)
        .await
        .map_err(|e| e.to_string())?;
    let bytes = file
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("temporary file: {e}"))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| format!("temporary file: {e}"))?;
    Ok((file, records, version, bytes))
}
