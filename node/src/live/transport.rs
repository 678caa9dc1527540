//! QUIC between nodes: quinn endpoints with mutual TLS (rustls, ring).
//!
//! Every node presents its certificate from the cluster CA (`reelfleet certs
//! issue --node NAME`) and accepts only peers that do: the chain must lead to
//! the cluster CA and the certificate must be a *node* certificate (OU
//! `nodes`; an admin certificate is for the console, not for peers). The
//! client checks the server's name against the node it meant to reach.
//!
//! One long-lived bidirectional stream per peer carries length-prefixed
//! [`NodeMsg`] frames (u32 little-endian length, then the frame). Sends never
//! block the machines: each peer has a bounded queue, and a frame that does
//! not fit is dropped — every cross-node message is one the machines resend
//! or time out on. A lost connection is re-dialled with capped backoff and
//! reported as a hint (`on_unreachable`), which makes membership look at
//! that peer's lease as soon as it could have lapsed; it is never taken as
//! proof that the peer is dead (the lease is).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use actors::node::NodeMsg;

use super::clock::Clock;
use super::clock_check;
use super::wire::{self, FRAME_BYTES_MAX};
use crate::publish::BoxFuture;

const ALPN: &[u8] = b"reelfleet/1";
/// Frames waiting per peer before new ones are dropped.
pub const PEER_QUEUE_FRAMES: usize = 4096;
const BACKOFF_MIN_MS: u64 = 50;
const BACKOFF_MAX_MS: u64 = 2_000;

/// A node's TLS identity: the cluster CA and its own chain and key.
pub struct TlsIdentity {
    pub ca: Vec<CertificateDer<'static>>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn certs_in(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_pem(path)?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut bytes.as_slice()).collect();
    let certs = certs.map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no certificate", path.display()));
    }
    Ok(certs)
}

impl TlsIdentity {
    /// Loads `<dir>/ca.pem` and `<dir>/<folder>/<name>.pem|.key`, as
    /// `reelfleet certs` writes them (`folder`: `nodes` or `admins`).
    pub fn load(dir: &Path, folder: &str, name: &str) -> Result<TlsIdentity, String> {
        let ca = certs_in(&dir.join("ca.pem"))?;
        let chain = certs_in(&dir.join(folder).join(format!("{name}.pem")))?;
        let key_path = dir.join(folder).join(format!("{name}.key"));
        let bytes = read_pem(&key_path)?;
        let key = rustls_pemfile::private_key(&mut bytes.as_slice())
            .map_err(|e| format!("{}: not a PEM key: {e}", key_path.display()))?
            .ok_or_else(|| format!("{}: holds no private key", key_path.display()))?;
        Ok(TlsIdentity { ca, chain, key })
    }

    fn roots(&self) -> Result<rustls::RootCertStore, String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in &self.ca {
            roots
                .add(c.clone())
                .map_err(|e| format!("cluster CA: {e}"))?;
        }
        Ok(roots)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn server_config(id: &TlsIdentity) -> Result<quinn::ServerConfig, String> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(id.roots()?),
        provider(),
    )
    .build()
    .map_err(|e| format!("client verifier: {e}"))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| format!("node certificate: {e}"))?;
    // Nodes and operators' consoles reach the same endpoint; the ALPN
    // says which protocol a connection speaks.
    tls.alpn_protocols = vec![
        ALPN.to_vec(),
        crate::admin::proto::ALPN.to_vec(),
        clock_check::ALPN.to_vec(),
    ];
    let q = QuicServerConfig::try_from(tls).map_err(|e| format!("QUIC TLS: {e}"))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(q));
    cfg.transport_config(transport_params());
    Ok(cfg)
}

pub fn client_config(id: &TlsIdentity) -> Result<quinn::ClientConfig, String> {
    client_config_for(id, ALPN)
}

/// A client of `alpn` (the node protocol, or the admin RPC's).
pub fn client_config_for(id: &TlsIdentity, alpn: &[u8]) -> Result<quinn::ClientConfig, String> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(id.roots()?)
        .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| format!("client certificate: {e}"))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    let q = QuicClientConfig::try_from(tls).map_err(|e| format!("QUIC TLS: {e}"))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(q));
    cfg.transport_config(transport_params());
    Ok(cfg)
}

fn transport_params() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // Idle connections are noticed within a few seconds; keep-alives stop
    // a quiet but healthy link from timing out.
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        5_000,
    ))));
    t.keep_alive_interval(Some(Duration::from_millis(1_000)));
    Arc::new(t)
}

/// A certificate's organisational unit and common name.
pub fn ou_and_name(cert: &CertificateDer<'_>) -> Result<(Option<String>, Option<String>), String> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("unreadable peer certificate: {e}"))?;
    let subject = x.subject();
    let ou = subject
        .iter_organizational_unit()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string);
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string);
    Ok((ou, cn))
}

/// The first certificate a connection's peer presented.
pub fn peer_cert(conn: &quinn::Connection) -> Result<CertificateDer<'static>, String> {
    conn.peer_identity()
        .and_then(|a| a.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|c| c.first().cloned())
        .ok_or_else(|| "peer presented no certificate".to_string())
}

/// The node name a peer's certificate proves, if it is a node certificate.
pub fn node_name_of(cert: &CertificateDer<'_>) -> Result<String, String> {
    let (ou, cn) = ou_and_name(cert)?;
    if ou.as_deref() != Some("nodes") {
        return Err(format!(
            "peer certificate is not a node certificate (OU {ou:?})"
        ));
    }
    cn.ok_or_else(|| "peer certificate has no common name".to_string())
}

/// Called for every frame that arrives, with the sending node's name.
pub type OnFrame = Arc<dyn Fn(&str, NodeMsg) + Send + Sync>;
/// Finds a peer's address (the live node reads it from the store).
pub type Resolve = Arc<dyn Fn(String) -> BoxFuture<'static, Option<SocketAddr>> + Send + Sync>;

#[derive(Default)]
pub struct TransportStats {
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub frames_dropped: AtomicU64,
    /// Handshakes that failed (no or foreign certificate) and peers
    /// refused for presenting a non-node certificate.
    pub refused: AtomicU64,
    pub bad_frames: AtomicU64,
    pub connects: AtomicU64,
    /// The connection this node dialled to each peer (for its RTT).
    pub links: Mutex<BTreeMap<String, quinn::Connection>>,
}

impl TransportStats {
    /// Each peer dialled, with the round-trip time of its connection while
    /// it is open (`None` once it closed).
    pub fn peer_rtts(&self) -> Vec<(String, Option<Duration>)> {
        super::lock(&self.links)
            .iter()
            .map(|(p, c)| (p.clone(), c.close_reason().is_none().then(|| c.rtt())))
            .collect()
    }
}

/// Told when a peer cannot be reached or its connection broke: a hint
/// for failure detection, never a verdict.
pub type OnUnreachable = Arc<dyn Fn(&str) + Send + Sync>;

pub struct Transport {
    me: String,
    endpoint: quinn::Endpoint,
    peers: Mutex<BTreeMap<String, mpsc::Sender<Vec<u8>>>>,
    resolve: Resolve,
    unreachable: Arc<std::sync::OnceLock<OnUnreachable>>,
    admin: Arc<std::sync::OnceLock<OnAdmin>>,
    /// The clock that answers peers' clock probes (until set, they are
    /// closed unanswered), and the client config this node probes with.
    clock: Arc<std::sync::OnceLock<Clock>>,
    clock_client: quinn::ClientConfig,
    pub stats: Arc<TransportStats>,
}

/// Handed every admin RPC connection (its certificate checked by TLS).
pub type OnAdmin = Arc<dyn Fn(quinn::Connection) + Send + Sync>;

impl Transport {
    /// Binds `bind` and starts accepting peers. Needs a tokio runtime.
    pub fn start(
        bind: SocketAddr,
        id: &TlsIdentity,
        me: &str,
        on_frame: OnFrame,
        resolve: Resolve,
    ) -> Result<Arc<Transport>, String> {
        let mut endpoint = quinn::Endpoint::server(server_config(id)?, bind)
            .map_err(|e| format!("cannot listen on {bind} (UDP): {e}"))?;
        endpoint.set_default_client_config(client_config(id)?);
        let stats = Arc::new(TransportStats::default());
        let admin = Arc::new(std::sync::OnceLock::new());
        let clock = Arc::new(std::sync::OnceLock::new());
        let t = Arc::new(Transport {
            me: me.to_string(),
            endpoint: endpoint.clone(),
            peers: Mutex::new(BTreeMap::new()),
            resolve,
            unreachable: Arc::new(std::sync::OnceLock::new()),
            admin: Arc::clone(&admin),
            clock: Arc::clone(&clock),
            clock_client: client_config_for(id, clock_check::ALPN)?,
            stats: Arc::clone(&stats),
        });
        let accept = Accept {
            on_frame,
            admin,
            clock,
            stats,
            me: me.to_string(),
        };
        tokio::spawn(accept_loop(endpoint, accept));
        Ok(t)
    }

    /// Sets who serves admin RPC connections (once); until then they are
    /// closed.
    pub fn on_admin(&self, f: OnAdmin) {
        let _ = self.admin.set(f);
    }

    /// Answers peers' clock probes with `clock` from now on (once).
    pub fn serve_clock(&self, clock: Clock) {
        let _ = self.clock.set(clock);
    }

    /// Asks `peer` at `addr` for its time ([`clock_check`]).
    pub async fn probe_clock(
        &self,
        peer: &str,
        addr: SocketAddr,
        clock: &Clock,
    ) -> Result<clock_check::Sample, String> {
        clock_check::probe(&self.endpoint, self.clock_client.clone(), peer, addr, clock).await
    }

    /// Sets who hears of unreachable peers (once; later calls are ignored).
    pub fn on_unreachable(&self, f: OnUnreachable) {
        let _ = self.unreachable.set(f);
    }

    pub fn local_addr(&self) -> Result<SocketAddr, String> {
        self.endpoint
            .local_addr()
            .map_err(|e| format!("local address: {e}"))
    }

    /// Queues `msg` for `peer`; never blocks.
    pub fn send(&self, peer: &str, msg: &NodeMsg) {
        let frame = wire::encode(msg);
        let tx = {
            let mut peers = super::lock(&self.peers);
            peers
                .entry(peer.to_string())
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(PEER_QUEUE_FRAMES);
                    tokio::spawn(dial_loop(
                        self.endpoint.clone(),
                        self.me.clone(),
                        peer.to_string(),
                        rx,
                        Arc::clone(&self.resolve),
                        Arc::clone(&self.stats),
                        Arc::clone(&self.unreachable),
                    ));
                    tx
                })
                .clone()
        };
        if tx.try_send(frame).is_err() {
            self.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn close(&self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"node stopping");
    }
}

async fn dial_loop(
    endpoint: quinn::Endpoint,
    me: String,
    peer: String,
    mut rx: mpsc::Receiver<Vec<u8>>,
    resolve: Resolve,
    stats: Arc<TransportStats>,
    unreachable: Arc<std::sync::OnceLock<OnUnreachable>>,
) {
    let hint = |peer: &str| {
        if let Some(f) = unreachable.get() {
            f(peer);
        }
    };
    let mut backoff_ms = BACKOFF_MIN_MS;
    // A frame taken off the queue but not yet written survives a redial.
    let mut pending: Option<Vec<u8>> = None;
    loop {
        if pending.is_none() {
            match rx.recv().await {
                Some(f) => pending = Some(f),
                None => return, // the transport is gone
            }
        }
        let conn = match resolve(peer.clone()).await {
            Some(addr) => match endpoint.connect(addr, &peer) {
                Ok(connecting) => connecting.await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            None => Err("address unknown".to_string()),
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                hint(&peer);
                if backoff_ms >= BACKOFF_MAX_MS {
                    tracing::warn!(node = %me, %peer, error = %e, "cannot reach peer");
                }
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
                continue;
            }
        };
        stats.connects.fetch_add(1, Ordering::Relaxed);
        super::lock(&stats.links).insert(peer.clone(), conn.clone());
        let Ok((mut send, _recv)) = conn.open_bi().await else {
            continue;
        };
        backoff_ms = BACKOFF_MIN_MS;
        loop {
            let frame = match pending.take() {
                Some(f) => f,
                None => match rx.recv().await {
                    Some(f) => f,
                    None => return,
                },
            };
            let len = (frame.len() as u32).to_le_bytes();
            let ok = send.write_all(&len).await.is_ok() && send.write_all(&frame).await.is_ok();
            if !ok {
                pending = Some(frame);
                hint(&peer);
                break;
            }
            stats.frames_out.fetch_add(1, Ordering::Relaxed);
        }
        let _ = send.flush().await;
    }
}

/// What the accept loop hands each connection to.
struct Accept {
    on_frame: OnFrame,
    admin: Arc<std::sync::OnceLock<OnAdmin>>,
    clock: Arc<std::sync::OnceLock<Clock>>,
    stats: Arc<TransportStats>,
    me: String,
}

async fn accept_loop(endpoint: quinn::Endpoint, accept: Accept) {
    let accept = Arc::new(accept);
    while let Some(incoming) = endpoint.accept().await {
        let a = Arc::clone(&accept);
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    a.stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %a.me, %remote, error = %e, "refused a peer");
                    return;
                }
            };
            let alpn = conn
                .handshake_data()
                .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|h| h.protocol);
            if alpn.as_deref() == Some(crate::admin::proto::ALPN) {
                match a.admin.get() {
                    Some(serve) => serve(conn),
                    None => conn.close(quinn::VarInt::from_u32(3), b"no admin RPC here"),
                }
                return;
            }
            if alpn.as_deref() == Some(clock_check::ALPN) {
                match a.clock.get() {
                    Some(clock) => clock_check::answer(conn, *clock).await,
                    None => conn.close(quinn::VarInt::from_u32(3), b"not started"),
                }
                return;
            }
            serve_peer(conn, &a, remote).await;
        });
    }
}

/// A node's connection: frames until it closes.
async fn serve_peer(conn: quinn::Connection, a: &Arc<Accept>, remote: SocketAddr) {
    let peer = match peer_name(&conn) {
        Ok(p) => p,
        Err(e) => {
            a.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = %a.me, %remote, error = %e, "refused a peer");
            conn.close(quinn::VarInt::from_u32(1), e.as_bytes());
            return;
        }
    };
    while let Ok((_send, recv)) = conn.accept_bi().await {
        let a = Arc::clone(a);
        let conn = conn.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            if let Err(e) = read_frames(recv, &peer, &a.on_frame, &a.stats).await {
                a.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %a.me, %peer, error = %e, "closing the connection: bad frame");
                conn.close(quinn::VarInt::from_u32(2), e.as_bytes());
            }
        });
    }
}

fn peer_name(conn: &quinn::Connection) -> Result<String, String> {
    node_name_of(&peer_cert(conn)?)
}

/// Reads frames until the stream ends; a malformed frame is an error that
/// says what was wrong (the caller closes the connection).
async fn read_frames(
    mut recv: quinn::RecvStream,
    peer: &str,
    on_frame: &OnFrame,
    stats: &TransportStats,
) -> Result<(), String> {
    let mut len = [0u8; 4];
    let mut buf = Vec::new();
    loop {
        match recv.read_exact(&mut len).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(()),
            Err(quinn::ReadExactError::FinishedEarly(_)) => {
                return Err("frame length cut short".into())
            }
            Err(quinn::ReadExactError::ReadError(_)) => return Ok(()), // connection lost
        }
        let n = u32::from_le_bytes(len) as usize;
        if n > FRAME_BYTES_MAX {
            return Err(format!(
                "frame of {n} bytes is larger than the limit of {FRAME_BYTES_MAX}"
            ));
        }
        buf.resize(n, 0);
        recv.read_exact(&mut buf)
            .await
            .map_err(|e| format!("frame of {n} bytes cut short: {e}"))?;
        let msg = wire::decode(&buf).map_err(|e| {
            format!(
                "malformed frame of {n} bytes: bad {} at byte {}",
                e.what, e.offset
            )
        })?;
        stats.frames_in.fetch_add(1, Ordering::Relaxed);
        on_frame(peer, msg);
    }
}
