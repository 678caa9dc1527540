//! `reelfleet ctl` as an operator runs it against one node of a live fleet,
//! as a given admin certificate: the admin tests' driver.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

pub struct Admin<'a> {
    /// The node's QUIC address.
    pub node: String,
    pub certs: &'a Path,
}

impl Admin<'_> {
    /// `ctl --json ARGS` as admin `who`, whatever its outcome.
    pub fn run(&self, who: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_reelfleet"))
            .args(["ctl", "--node", &self.node, "--cert"])
            .arg(self.certs)
            .args(["--as", who, "--json"])
            .args(args)
            .output()
            .expect("run ctl")
    }

    /// `ctl --json ARGS` as admin `who`, which must succeed: its answer.
    pub fn ok(&self, who: &str, args: &[&str]) -> Value {
        let o = self.run(who, args);
        assert!(
            o.status.success(),
            "ctl {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("JSON")
    }

    /// The commands in the audit log, in order.
    pub fn audited_commands(&self, who: &str) -> (Vec<String>, Value) {
        let log = self.ok(who, &["audit"]);
        let cmds = log
            .as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r["command"]["cmd"].as_str().map(str::to_string))
            .collect();
        (cmds, log)
    }
}
