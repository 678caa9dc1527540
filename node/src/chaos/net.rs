//! The chaos fleet's network, for real: every node in a network namespace
//! of its own, joined by a veth pair to one bridge whose address is where
//! etcd and the emulators listen; links are cut with nftables rules in a
//! `bridge` table of the run's own (node to node in the `forward` hook,
//! node to store in the `input` hook), both ways or one way.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables). Where any is missing
//! the runner keeps the fleet on loopback and draws no network fault (the
//! report says which). Delays are not emulated: `tc netem` is not in every
//! kernel these runs meet, so a link is either up or cut.
//!
//! Names carry the runner's pid, so that two runs never share a namespace,
//! an interface or a table, and everything is removed on drop (a run killed
//! with SIGKILL leaves `reelfleet-<pid>-*` namespaces and a `rf<pid>b`
//! bridge, which `ip netns del` and `ip link del` remove).

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

pub struct Net {
    /// The run's short id (its pid, in hex).
    id: String,
    pub bridge_ip: Ipv4Addr,
    pub node_ips: Vec<Ipv4Addr>,
    /// Namespace of each node.
    pub namespaces: Vec<String>,
    table: String,
    bridge: String,
}

/// Runs `program args`; its stderr as the error.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn nft(script: &str) -> Result<(), String> {
    run("nft", &[script])
}

/// Why this machine cannot host a namespaced fleet, if it cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces and nftables need it)".into());
    }
    for (tool, pkg) in [("ip", "iproute2"), ("nft", "nftables")] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!("no `{tool}` (apt-get install {pkg})"));
        }
    }
    // Root is not always enough (a container without CAP_NET_ADMIN): try.
    let probe = format!("reelfleet-probe-{}", std::process::id());
    if let Err(e) = run("ip", &["netns", "add", &probe]) {
        return Some(format!("cannot create a network namespace: {e}"));
    }
    let _ = run("ip", &["netns", "del", &probe]);
    if let Err(e) = run("nft", &["list", "tables"]) {
        return Some(format!("nftables does not answer: {e}"));
    }
    None
}

impl Net {
    /// A bridge and one namespace per node, all up, with an empty
    /// nftables table ready for cuts.
    pub fn create(nodes: usize) -> Result<Net, String> {
        assert!(nodes < 200, "one /24 holds the bridge and the nodes");
        let pid = std::process::id();
        let id = format!("{:x}", pid % 0x10_0000);
        // 10.A.B.0/24 from the pid: two runs at once get two subnets, and
        // nothing of 192.0.2.0/24, 172.16/12 or 10.0/16 is taken.
        let (a, b) = (100 + (pid % 100) as u8, ((pid / 100) % 250) as u8);
        let mut net = Net {
            bridge_ip: Ipv4Addr::new(10, a, b, 1),
            node_ips: (0..nodes)
                .map(|i| Ipv4Addr::new(10, a, b, 10 + i as u8))
                .collect(),
            namespaces: (0..nodes).map(|i| format!("reelfleet-{id}-n{i}")).collect(),
            table: format!("reelfleet_{id}"),
            bridge: format!("rf{id}b"),
            id,
        };
        // From here on, drop removes whatever was made.
        net.build()?;
        Ok(net)
    }

    fn build(&mut self) -> Result<(), String> {
        let br = self.bridge.clone();
        run("ip", &["link", "add", &br, "type", "bridge"])?;
        run(
            "ip",
            &["addr", "add", &format!("{}/24", self.bridge_ip), "dev", &br],
        )?;
        run("ip", &["link", "set", &br, "up"])?;
        for (i, ns) in self.namespaces.iter().enumerate() {
            let (host, peer) = (format!("rf{}h{i}", self.id), format!("rf{}p{i}", self.id));
            run("ip", &["netns", "add", ns])?;
            run(
                "ip",
                &["link", "add", &host, "type", "veth", "peer", "name", &peer],
            )?;
            run("ip", &["link", "set", &peer, "netns", ns])?;
            run("ip", &["link", "set", &host, "master", &br, "up"])?;
            let addr = format!("{}/24", self.node_ips[i]);
            run("ip", &["-n", ns, "addr", "add", &addr, "dev", &peer])?;
            run("ip", &["-n", ns, "link", "set", &peer, "up"])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        let t = &self.table;
        nft(&format!(
            "add table bridge {t}\n\
             add chain bridge {t} links {{ type filter hook forward priority 0; }}\n\
             add chain bridge {t} store {{ type filter hook input priority 0; }}"
        ))
    }

    /// The rules that drop packets from every node of `from` to every node
    /// of `to` (one way; both ways takes them twice).
    pub fn cut_rules(&self, from: &[usize], to: &[usize]) -> String {
        let t = &self.table;
        let mut script = String::new();
        for a in from {
            for b in to {
                script.push_str(&format!(
                    "add rule bridge {t} links ip saddr {} ip daddr {} drop\n",
                    self.node_ips[*a], self.node_ips[*b]
                ));
            }
        }
        script
    }

    /// The rule that cuts node `i` from the store (the etcd members' client
    /// `ports` on the bridge's address); its peers still reach it.
    pub fn store_rules(&self, i: usize, ports: &[u16]) -> String {
        let t = &self.table;
        let ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        format!(
            "add rule bridge {t} store ip saddr {} ip daddr {} tcp dport {{ {} }} drop\n",
            self.node_ips[i],
            self.bridge_ip,
            ports.join(", ")
        )
    }

    /// Adds rules (from [`Net::cut_rules`], [`Net::store_rules`]).
    pub fn apply(&self, script: &str) -> Result<(), String> {
        if script.trim().is_empty() {
            return Ok(());
        }
        nft(script)
    }

    /// Every link whole again, then `keep`'s rules back (the faults still
    /// under way), in one nftables transaction.
    pub fn reset<'a>(&self, keep: impl Iterator<Item = &'a String>) -> Result<(), String> {
        let t = &self.table;
        let mut script = format!("flush chain bridge {t} links\nflush chain bridge {t} store\n");
        keep.for_each(|k| script.push_str(k));
        nft(&script)
    }

    /// Every link whole again.
    pub fn heal(&self) -> Result<(), String> {
        self.reset(std::iter::empty())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = nft(&format!("delete table bridge {}", self.table));
        for ns in &self.namespaces {
            let _ = run("ip", &["netns", "del", ns]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}
