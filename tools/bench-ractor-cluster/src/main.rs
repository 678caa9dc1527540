//! Two `NodeServer`s on loopback (two processes: ractor_cluster's registry
//! and process groups are process-wide), one sink actor each in process
//! group "bench". `server PORT` serves; `client PORT SERVER_PORT MESSAGES
//! ROUND_TRIPS` connects, casts MESSAGES one way in windows of 2,048 (each
//! window confirmed by an RPC that counts what arrived, as bench-quic's
//! windows are confirmed by a notice back), then times ROUND_TRIPS RPCs.

use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;

const GROUP: &str = "bench";
const WINDOW: u64 = 2_048;

struct Sink;

#[derive(RactorClusterMessage)]
enum SinkMsg {
    Data(u64),
    #[rpc]
    Count(RpcReplyPort<u64>),
    #[rpc]
    Ping(u64, RpcReplyPort<u64>),
}

impl Actor for Sink {
    type Msg = SinkMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, me: ActorRef<SinkMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        ractor::pg::join(GROUP.to_string(), vec![me.get_cell()]);
        Ok(0)
    }

    async fn handle(
        &self,
        _me: ActorRef<SinkMsg>,
        msg: SinkMsg,
        count: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SinkMsg::Data(_) => *count += 1,
            SinkMsg::Count(reply) => {
                let _ = reply.send(*count);
            }
            SinkMsg::Ping(n, reply) => {
                let _ = reply.send(n);
            }
        }
        Ok(())
    }
}

fn arg(args: &[String], i: usize, what: &str) -> u64 {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("argument {i}: {what} (a number)"))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port = arg(&args, 2, "this node's port") as u16;
    let server = ractor_cluster::NodeServer::new(
        port,
        "cookie".into(),
        format!("node-{port}"),
        "localhost".into(),
        None,
        None,
    );
    let (node, _node_handle) = Actor::spawn(None, server, ()).await.expect("NodeServer");
    let (_sink, _sink_handle) = Actor::spawn(None, Sink, ()).await.expect("sink");
    if args.get(1).map(String::as_str) == Some("server") {
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
    let server_port = arg(&args, 3, "the server's port");
    let messages = arg(&args, 4, "messages");
    let round_trips = arg(&args, 5, "round trips");
    ractor_cluster::client_connect(&node, format!("127.0.0.1:{server_port}"))
        .await
        .expect("connect");
    let remote = loop {
        let far: Vec<ActorRef<SinkMsg>> = ractor::pg::get_members(&GROUP.to_string())
            .into_iter()
            .filter(|a| !a.get_id().is_local())
            .map(ActorRef::from)
            .collect();
        if let Some(r) = far.into_iter().next() {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let started = Instant::now();
    let windows = messages.div_ceil(WINDOW);
    for w in 0..windows {
        for i in 0..WINDOW {
            remote.cast(SinkMsg::Data(w * WINDOW + i)).expect("cast");
        }
        let want = (w + 1) * WINDOW;
        loop {
            let got = ractor::call_t!(remote, SinkMsg::Count, 10_000).expect("count");
            if got >= want {
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let sent = windows * WINDOW;
    let mut rtts_us = Vec::with_capacity(round_trips as usize);
    for i in 0..round_trips {
        let t = Instant::now();
        let back = ractor::call_t!(remote, SinkMsg::Ping, 10_000, i).expect("ping");
        assert_eq!(back, i);
        rtts_us.push(t.elapsed().as_micros() as u64);
    }
    rtts_us.sort_unstable();
    let pct = |p: f64| rtts_us[((rtts_us.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    println!(
        "ractor_cluster over TCP (no TLS), loopback: {:.0} messages/s one way ({sent} in {secs:.2} s, \
         windows of {WINDOW}); round trip (RPC) p50 {:.3} ms, p99 {:.3} ms over {}",
        sent as f64 / secs,
        pct(0.5),
        pct(0.99),
        rtts_us.len()
    );
    std::process::exit(0);
}
