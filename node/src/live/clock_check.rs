//! Whether this node's calendar agrees with its peers'.
//!
//! The machines plan slots by calendar ([`super::clock`]): a node whose
//! clock is an hour ahead plans and publishes the next hour of its
//! channels' slots now, and the fleet cannot take that back. Leases and
//! epochs keep such a node from doing harm to ownership (no decision
//! compares two nodes' clocks), but not from publishing early. So, as
//! CockroachDB does with its maximum clock offset, a node measures its
//! clock against its peers' over QUIC and refuses to run far from them:
//!
//! - **at start**, before it claims a channel: if most of the peers that
//!   answer (at least one) are further than `timing.clock_offset_max_ms`
//!   away, the node exits with an error that names the offset and the
//!   peers. A node with a stepped clock stays out until its time is set
//!   right (a service manager restarting it gets the same refusal).
//! - **while it runs**, every [`CHECK_INTERVAL`]: if most of the peers that
//!   answer (at least [`RUNNING_QUORUM`], so that two nodes that disagree
//!   do not both stop) are too far away, the node stops as a crash would:
//!   its lease lapses and survivors take its channels. A clock that drifts
//!   is caught this way.
//!
//! One probe is a QUIC connection with ALPN [`ALPN`] (mutual TLS with the
//! fleet's certificates, as every connection): the prober sends one byte
//! and the peer answers with its clock's Unix milliseconds (8 bytes, little
//! endian). The offset is the peer's time minus the midpoint of the round
//! trip; its error is at most half the round trip, which is allowed for.
//! Each round asks at most [`PEERS_PER_ROUND`] peers, so that a large fleet
//! does not make a handshake storm.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::clock::Clock;

/// The ALPN of a clock probe.
pub const ALPN: &[u8] = b"reelfleet-clock/1";
/// How long a probe may take (connect, ask, answer).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a running node checks.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Peers asked per round (rotating through the fleet).
pub const PEERS_PER_ROUND: usize = 7;
/// Answers a running node needs before it stops itself on a verdict.
pub const RUNNING_QUORUM: usize = 2;
/// Rounds at start before a node that no peer answered starts unchecked.
pub const START_ROUNDS: usize = 2;

const REQUEST: u8 = 0xC1;

/// One peer's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub peer: String,
    /// The peer's clock minus this node's (positive: the peer is ahead).
    pub offset_ms: i64,
    pub rtt_ms: u64,
}

impl Sample {
    /// Whether this answer proves the clocks further apart than
    /// `max_offset_ms` (allowing for half the round trip).
    pub fn beyond(&self, max_offset_ms: u64) -> bool {
        self.offset_ms
            .unsigned_abs()
            .saturating_sub(self.rtt_ms / 2)
            > max_offset_ms
    }
}

/// What a round of probes says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Fewer answers than needed to judge.
    Unchecked { answered: usize },
    /// Most answers are within the bound.
    Agrees { answered: usize },
    /// Most answers are beyond it: this node's clock is the odd one out.
    Off {
        beyond: usize,
        answered: usize,
        /// This node's clock minus the median peer's (positive: ahead).
        ahead_ms: i64,
    },
}

/// Judges a round: pure, so the rule is tested without a network.
pub fn judge(samples: &[Sample], max_offset_ms: u64, quorum: usize) -> Verdict {
    let answered = samples.len();
    if answered < quorum.max(1) {
        return Verdict::Unchecked { answered };
    }
    let beyond = samples.iter().filter(|s| s.beyond(max_offset_ms)).count();
    if beyond * 2 <= answered {
        return Verdict::Agrees { answered };
    }
    let mut offsets: Vec<i64> = samples.iter().map(|s| s.offset_ms).collect();
    offsets.sort_unstable();
    Verdict::Off {
        beyond,
        answered,
        ahead_ms: -offsets[answered / 2],
    }
}

/// The message an operator reads when the node refuses or stops.
pub fn explain(v: &Verdict, samples: &[Sample], max_offset_ms: u64) -> String {
    let Verdict::Off {
        beyond,
        answered,
        ahead_ms,
    } = v
    else {
        return format!("{v:?}");
    };
    let side = if *ahead_ms >= 0 { "ahead of" } else { "behind" };
    let each: Vec<String> = samples
        .iter()
        .map(|s| format!("{} {:+.3} s", s.peer, s.offset_ms as f64 / 1000.0))
        .collect();
    format!(
        "this node's clock is {:.3} s {side} {beyond} of the {answered} peers that answered \
         (their offsets: {}); at most {:.3} s is allowed (timing.clock_offset_max_ms): \
         set this machine's time right (NTP) and start the node again",
        ahead_ms.unsigned_abs() as f64 / 1000.0,
        each.join(", "),
        max_offset_ms as f64 / 1000.0
    )
}

/// Answers one probe connection with `clock`'s time.
pub async fn answer(conn: quinn::Connection, clock: Clock) {
    let serve = async {
        let (mut send, mut recv) = conn.accept_bi().await.ok()?;
        let mut req = [0u8; 1];
        recv.read_exact(&mut req).await.ok()?;
        if req[0] != REQUEST {
            conn.close(quinn::VarInt::from_u32(2), b"not a clock probe");
            return None;
        }
        send.write_all(&clock.now_ms().to_le_bytes()).await.ok()?;
        send.finish().ok()?;
        // The prober closes once it has read the answer.
        conn.closed().await;
        Some(())
    };
    let _ = tokio::time::timeout(PROBE_TIMEOUT, serve).await;
}

/// Asks `peer` at `addr` for its time.
pub async fn probe(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    peer: &str,
    addr: SocketAddr,
    clock: &Clock,
) -> Result<Sample, String> {
    let ask = async {
        let conn = endpoint
            .connect_with(config, addr, peer)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let t0 = clock.now_ms();
        send.write_all(&[REQUEST])
            .await
            .map_err(|e| e.to_string())?;
        let mut ans = [0u8; 8];
        recv.read_exact(&mut ans).await.map_err(|e| e.to_string())?;
        let t1 = clock.now_ms();
        conn.close(quinn::VarInt::from_u32(0), b"thanks");
        let peer_ms = u64::from_le_bytes(ans) as i128;
        let mid = (i128::from(t0) + i128::from(t1)) / 2;
        let offset_ms = (peer_ms - mid).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        Ok::<_, String>(Sample {
            peer: peer.to_string(),
            offset_ms,
            rtt_ms: t1.saturating_sub(t0),
        })
    };
    tokio::time::timeout(PROBE_TIMEOUT, ask)
        .await
        .map_err(|_| format!("no answer within {} s", PROBE_TIMEOUT.as_secs()))?
}

/// The peers asked in round `round`: at most [`PEERS_PER_ROUND`], rotating.
pub fn peers_for_round(peers: &[String], round: usize) -> Vec<String> {
    if peers.len() <= PEERS_PER_ROUND {
        return peers.to_vec();
    }
    (0..PEERS_PER_ROUND)
        .map(|k| peers[(round * PEERS_PER_ROUND + k) % peers.len()].clone())
        .collect()
}

/// One round: every chosen peer with a known address asked at once; the
/// answers (peers that did not answer are left out).
pub async fn round(
    net: &Arc<super::transport::Transport>,
    resolve: &super::transport::Resolve,
    peers: Vec<String>,
    clock: Clock,
) -> Vec<Sample> {
    let mut asks = tokio::task::JoinSet::new();
    for peer in peers {
        let net = Arc::clone(net);
        let resolve = Arc::clone(resolve);
        asks.spawn(async move {
            let addr = resolve(peer.clone()).await?;
            net.probe_clock(&peer, addr, &clock).await.ok()
        });
    }
    let mut got = Vec::new();
    while let Some(r) = asks.join_next().await {
        if let Ok(Some(s)) = r {
            got.push(s);
        }
    }
    // In the order of the peers' names, whatever order they answered in.
    got.sort_by(|a, b| a.peer.cmp(&b.peer));
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(peer: &str, offset_ms: i64, rtt_ms: u64) -> Sample {
        Sample {
            peer: peer.into(),
            offset_ms,
            rtt_ms,
        }
    }

    #[test]
    fn a_node_an_hour_ahead_of_every_peer_is_off() {
        let got = judge(
            &[
                s("a", -3_600_000, 1),
                s("b", -3_600_010, 2),
                s("c", -3_599_990, 1),
            ],
            2_000,
            1,
        );
        assert_eq!(
            got,
            Verdict::Off {
                beyond: 3,
                answered: 3,
                ahead_ms: 3_600_000
            }
        );
        let text = explain(&got, &[s("a", -3_600_000, 1)], 2_000);
        assert!(
            text.contains("3600.000 s ahead of 3 of the 3 peers"),
            "{text}"
        );
    }

    #[test]
    fn one_odd_peer_does_not_make_this_node_off() {
        let got = judge(
            &[s("a", 5, 1), s("b", 3_600_000, 1), s("c", -7, 1)],
            2_000,
            2,
        );
        assert_eq!(got, Verdict::Agrees { answered: 3 });
    }

    #[test]
    fn half_the_round_trip_is_allowed_for() {
        // 2.4 s off with a 1 s round trip: could be 1.9 s, within 2 s.
        assert!(!s("a", 2_400, 1_000).beyond(2_000));
        assert!(s("a", -2_600, 1_000).beyond(2_000));
    }

    #[test]
    fn too_few_answers_decide_nothing() {
        assert_eq!(
            judge(&[s("a", 9_999_999, 1)], 2_000, 2),
            Verdict::Unchecked { answered: 1 }
        );
        assert_eq!(judge(&[], 2_000, 1), Verdict::Unchecked { answered: 0 });
        // A tie is not a majority.
        assert_eq!(
            judge(&[s("a", 9_999_999, 1), s("b", 0, 1)], 2_000, 2),
            Verdict::Agrees { answered: 2 }
        );
    }

    #[test]
    fn rounds_rotate_through_a_large_fleet() {
        let peers: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
        let seen: std::collections::BTreeSet<String> =
            (0..3).flat_map(|r| peers_for_round(&peers, r)).collect();
        assert_eq!(seen.len(), 20);
        assert_eq!(peers_for_round(&peers[..3], 5), peers[..3].to_vec());
    }
}
