//! `reelfleet bench-quic`: node-to-node messaging over the nodes' own
//! transport (`live::transport`: QUIC, mutual TLS, one stream per peer,
//! length-prefixed `NodeMsg` frames) on loopback. Two transports in this
//! process, as two nodes use them, and on the receiving one an actor (a
//! ractor mailbox, as the live node's router delivers to its machines):
//! messages per second one way (sent in windows no larger than a peer's
//! queue, so none is dropped), and the round trip of a ping-pong through
//! that actor (p50, p99). A benchmark, never a test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actors::node::NodeMsg;
use clap::Args;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use reelfleet::live::transport::{OnFrame, Resolve, TlsIdentity, Transport, PEER_QUEUE_FRAMES};
use tokio::sync::mpsc;
use topology::RegionId;

#[derive(Args, Debug)]
pub struct QuicArgs {
    /// Where the two nodes' certificates are made (a new directory).
    #[arg(long, default_value = "bench-quic")]
    data: PathBuf,
    /// Messages sent one way for the throughput figure.
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Ping-pongs for the round-trip figures.
    #[arg(long, default_value_t = 10_000)]
    round_trips: u64,
}

const MESSAGES_MAX: u64 = 100_000_000;

pub fn run(args: QuicArgs) -> i32 {
    crate::cli_bench::report(run_inner(&args))
}

/// The message measured: a dispatcher's summary, as small as the nodes'
/// messages get (a GPU's load report or a job is a few times larger).
fn message(i: u64) -> NodeMsg {
    NodeMsg::DispatchSummary {
        to: RegionId(0),
        region: RegionId(1),
        best_wait_ms: i,
    }
}

fn run_inner(args: &QuicArgs) -> Result<String, String> {
    if !(1..=MESSAGES_MAX).contains(&args.messages)
        || !(1..=MESSAGES_MAX).contains(&args.round_trips)
    {
        return Err(format!(
            "--messages and --round-trips: from 1 to {MESSAGES_MAX}"
        ));
    }
    crate::cli_bench::fresh_data_dir(&args.data)?;
    let certs = args.data.join("certs");
    crate::cli_up::ensure_certs(&certs, &["a".to_string(), "b".to_string()])?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    rt.block_on(bench(args, &certs))
}

/// The receiving node's actor: counts what arrives, tells the sender at
/// the end of each window, and sends a ping straight back.
struct Sink;

struct SinkArgs {
    window: u64,
    window_done: mpsc::UnboundedSender<()>,
    b: Arc<OnceLock<Arc<Transport>>>,
}

struct SinkState {
    args: SinkArgs,
    received: u64,
}

impl Actor for Sink {
    type Msg = NodeMsg;
    type State = SinkState;
    type Arguments = SinkArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<NodeMsg>,
        args: SinkArgs,
    ) -> Result<SinkState, ActorProcessingErr> {
        Ok(SinkState { args, received: 0 })
    }

    async fn handle(
        &self,
        _me: ActorRef<NodeMsg>,
        msg: NodeMsg,
        s: &mut SinkState,
    ) -> Result<(), ActorProcessingErr> {
        if let NodeMsg::DispatchSummary { to, .. } = &msg {
            if to.0 == 1 {
                if let Some(b) = s.args.b.get() {
                    b.send("a", &msg);
                }
                return Ok(());
            }
        }
        s.received += 1;
        if s.received.is_multiple_of(s.args.window) {
            let _ = s.args.window_done.send(());
        }
        Ok(())
    }
}

/// Both nodes' addresses, known once both are bound.
#[derive(Default)]
struct Book {
    a: OnceLock<SocketAddr>,
    b: OnceLock<SocketAddr>,
}

fn resolver(book: &Arc<Book>) -> Resolve {
    let book = Arc::clone(book);
    Arc::new(move |peer: String| {
        let book = Arc::clone(&book);
        Box::pin(async move {
            match peer.as_str() {
                "a" => book.a.get().copied(),
                "b" => book.b.get().copied(),
                _ => None,
            }
        })
    })
}

async fn bench(args: &QuicArgs, certs: &std::path::Path) -> Result<String, String> {
    let book = Arc::new(Book::default());
    let window = PEER_QUEUE_FRAMES as u64 / 2;
    let (window_tx, mut window_rx) = mpsc::unbounded_channel::<()>();
    let b_cell: Arc<OnceLock<Arc<Transport>>> = Arc::new(OnceLock::new());
    let (sink, _sink_join) = Actor::spawn(
        None,
        Sink,
        SinkArgs {
            window,
            window_done: window_tx,
            b: Arc::clone(&b_cell),
        },
    )
    .await
    .map_err(|e| format!("cannot start the sink actor: {e}"))?;
    let on_b: OnFrame = Arc::new(move |_peer: &str, msg: NodeMsg| {
        let _ = sink.cast(msg);
    });
    let (pong_tx, mut pong_rx) = mpsc::unbounded_channel::<()>();
    let on_a: OnFrame = Arc::new(move |_peer: &str, _msg: NodeMsg| {
        let _ = pong_tx.send(());
    });
    let start = |name: &str, on: OnFrame| -> Result<Arc<Transport>, String> {
        let loopback: SocketAddr = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
        let id = TlsIdentity::load(certs, "nodes", name)?;
        Transport::start(loopback, &id, name, on, resolver(&book))
    };
    let (a, b) = (start("a", on_a)?, start("b", on_b)?);
    let _ = book.a.set(a.local_addr()?);
    let _ = book.b.set(b.local_addr()?);
    let _ = b_cell.set(Arc::clone(&b));
    // The connection is made by the first message: one round trip first.
    let ping = || NodeMsg::DispatchSummary {
        to: RegionId(1),
        region: RegionId(0),
        best_wait_ms: 0,
    };
    a.send("b", &ping());
    wait(&mut pong_rx, "the first ping").await?;
    let frame_bytes = reelfleet::live::wire::encode(&message(0)).len();

    let (sent, secs) = one_way(&a, &mut window_rx, args.messages, window).await?;
    let dropped = a.stats.frames_dropped.load(Ordering::Relaxed);
    let mut rtts_us = Vec::with_capacity(args.round_trips as usize);
    for _ in 0..args.round_trips {
        let t = Instant::now();
        a.send("b", &ping());
        wait(&mut pong_rx, "a pong").await?;
        rtts_us.push(t.elapsed().as_micros() as u64);
    }
    a.close();
    b.close();
    rtts_us.sort_unstable();
    let pct = |p: f64| rtts_us[((rtts_us.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    Ok(format!(
        "QUIC with mutual TLS, loopback, {frame_bytes}-byte frames: {:.0} messages/s one way \
         ({sent} in {secs:.2} s, windows of {window}, {dropped} dropped); round trip p50 {:.3} ms, \
         p99 {:.3} ms over {}",
        sent as f64 / secs,
        pct(0.5),
        pct(0.99),
        rtts_us.len()
    ))
}

/// Sends `messages` (rounded up to whole windows) from `a` to b, each
/// window confirmed before the next; how many were sent, in how many
/// seconds.
async fn one_way(
    a: &Transport,
    window_rx: &mut mpsc::UnboundedReceiver<()>,
    messages: u64,
    window: u64,
) -> Result<(u64, f64), String> {
    let windows = messages.div_ceil(window);
    let started = Instant::now();
    for w in 0..windows {
        for i in 0..window {
            a.send("b", &message(w * window + i));
        }
        wait(window_rx, "a window of messages").await?;
    }
    Ok((windows * window, started.elapsed().as_secs_f64()))
}

/// The next notice on `rx`, within 10 s.
async fn wait(rx: &mut mpsc::UnboundedReceiver<()>, what: &str) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(())) => Ok(()),
        _ => Err(format!("{what} did not arrive within 10 s")),
    }
}
