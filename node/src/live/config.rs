//! The node config: what one `reelfleet node` process needs beyond the
//! cluster config (which says what the fleet is): its name, where the store
//! is, where it listens, its certificates, timings, the publisher and how
//! each stage runs. Parsed with serde and `deny_unknown_fields`, so a typo'd
//! key is an error naming the key, its line and column.
//!
//! ```toml
//! node = "n1"                          # a node of the cluster config
//! cluster = "cluster.toml"             # relative paths: to this file
//! store = "etcd://127.0.0.1:2379/rf"   # or redb:///path, mem://
//! listen = "127.0.0.1:7101"            # QUIC (UDP); port 0: any
//! certs = "certs"                      # from `reelfleet certs init`
//! data_dir = "data/n1"
//! artifacts = "shared/artifacts"       # optional, default <data_dir>/artifacts;
//!                                      # nodes that publish each other's
//!                                      # renders must share it
//! metrics = "127.0.0.1:9101"           # optional: Prometheus text on /metrics
//! metrics_channels_max = 1000          # optional: per-channel ledger series
//!                                      # while the node owns at most this
//!                                      # many channels (node totals always)
//!
//! [timing]                             # optional; defaults shown
//! lease_ms = 2000
//! renew_ms = 500
//! plan_lead_ms = 1800000
//! publish_timeout_ms = 30000
//! dispatch_timeout_ms = 120000          # a job not started by then is asked
//!                                      # for again; a GPU drops a job queued
//!                                      # longer (it would run for nobody)
//! job_grace_ms = 30000
//! retry_base_ms = 1000
//! active_videos_max = 64
//! clock_offset_max_ms = 2000           # 0: no clock check against peers
//!
//! [publisher]                          # optional, default directory <data_dir>/published
//! kind = "directory"
//! path = "published"
//! # kind = "youtube": api_base, upload_base, token_url, client_id,
//! # client_secret, refresh_token_file, chunk_bytes
//!
//! [record]                            # optional: the flight recorder
//! dir = "record"                       # records into <dir>/<node>/
//! segment_bytes = 67108864             # a new segment at this size ...
//! segment_age_ms = 3600000             # ... or age
//! total_bytes_max = 1073741824         # oldest segments deleted past this
//! fsync_interval_ms = 200
//!
//! [executors.render]                   # per stage name; default synthetic
//! kind = "command"                     # synthetic | command | http
//! program = "sh"                       # {config_dir}: this file's folder
//! args = ["{config_dir}/render.sh", "{input_dir}", "{artifact_dir}"]
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The default of `metrics_channels_max`.
pub const METRICS_CHANNELS_MAX: usize = 1_000;

fn default_metrics_channels_max() -> usize {
    METRICS_CHANNELS_MAX
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node: String,
    pub cluster: PathBuf,
    pub store: String,
    pub listen: SocketAddr,
    pub certs: PathBuf,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub artifacts: Option<PathBuf>,
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    /// Per-channel ledger series only while the node owns at most this
    /// many channels (memory and cardinality: `live::ledger_metrics`).
    #[serde(default = "default_metrics_channels_max")]
    pub metrics_channels_max: usize,
    #[serde(default)]
    pub timing: Timing,
    #[serde(default)]
    pub publisher: Option<PublisherConfig>,
    #[serde(default)]
    pub executors: BTreeMap<String, ExecutorConfig>,
    #[serde(default)]
    pub gpu: GpuConfig,
    /// The flight recorder (`crate::record`): off unless given.
    #[serde(default)]
    pub record: Option<crate::record::RecordConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    pub lease_ms: u64,
    pub renew_ms: u64,
    pub plan_lead_ms: u64,
    pub publish_timeout_ms: u64,
    pub dispatch_timeout_ms: u64,
    pub job_grace_ms: u64,
    pub retry_base_ms: u64,
    pub active_videos_max: usize,
    /// How far this node's clock may be from most of its peers' before it
    /// refuses to start, or stops (0: never checked). See `clock_check`.
    pub clock_offset_max_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_ms: 2_000,
            renew_ms: 500,
            plan_lead_ms: 30 * 60_000,
            publish_timeout_ms: 30_000,
            dispatch_timeout_ms: 120_000,
            job_grace_ms: 30_000,
            retry_base_ms: 1_000,
            active_videos_max: 64,
            clock_offset_max_ms: 2_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpuConfig {
    /// Ask NVML for the GPUs (when its library is present).
    pub probe: bool,
    pub overheat_c: u32,
    pub sample_interval_ms: u64,
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            probe: true,
            overheat_c: 90,
            sample_interval_ms: 5_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum PublisherConfig {
    Directory {
        path: PathBuf,
    },
    Youtube {
        #[serde(default)]
        api_base: Option<String>,
        #[serde(default)]
        upload_base: Option<String>,
        #[serde(default)]
        token_url: Option<String>,
        client_id: String,
        client_secret: String,
        /// A file holding the OAuth refresh token (kept out of the config).
        refresh_token_file: PathBuf,
        #[serde(default)]
        chunk_bytes: Option<usize>,
        /// The cluster config's project whose quota buckets this
        /// publisher's per-call costs are counted in (metrics).
        #[serde(default)]
        project: Option<String>,
    },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ExecutorConfig {
    Synthetic,
    Command {
        program: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        #[serde(default)]
        permanent_exit_codes: Vec<i32>,
    },
    Http {
        url: String,
        #[serde(default)]
        body: Option<serde_json::Value>,
        #[serde(default)]
        timeout_ms: Option<u64>,
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
}

impl NodeConfig {
    /// Reads and checks `path`; relative paths inside are made relative to
    /// the file's folder.
    pub fn load(path: &Path) -> Result<NodeConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut cfg: NodeConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        // Absolute, because jobs run in their own folders.
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        cfg.rebase(&base);
        cfg.check()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(cfg)
    }

    fn rebase(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.cluster);
        fix(&mut self.certs);
        fix(&mut self.data_dir);
        if let Some(a) = self.artifacts.as_mut() {
            fix(a);
        }
        if let Some(r) = self.record.as_mut() {
            fix(&mut r.dir);
        }
        match self.publisher.as_mut() {
            Some(PublisherConfig::Directory { path }) => fix(path),
            Some(PublisherConfig::Youtube {
                refresh_token_file, ..
            }) => fix(refresh_token_file),
            None => {}
        }
        // `{config_dir}` in a command names this file's folder, so that a
        // config can ship beside its scripts (jobs run in their artifact
        // folder, where a relative script path would not resolve).
        let dir = base.to_string_lossy().into_owned();
        for e in self.executors.values_mut() {
            if let ExecutorConfig::Command {
                program, args, env, ..
            } = e
            {
                *program = program.replace("{config_dir}", &dir);
                for a in args.iter_mut() {
                    *a = a.replace("{config_dir}", &dir);
                }
                for v in env.values_mut() {
                    *v = v.replace("{config_dir}", &dir);
                }
            }
        }
        if let Some(rest) = self.store.strip_prefix("redb://") {
            let p = Path::new(rest);
            if p.is_relative() {
                self.store = format!("redb://{}", base.join(p).display());
            }
        }
    }

    pub fn check(&self) -> Result<(), String> {
        let t = &self.timing;
        if t.renew_ms == 0 || t.renew_ms >= t.lease_ms {
            return Err(format!(
                "timing.renew_ms ({}) must be > 0 and < timing.lease_ms ({})",
                t.renew_ms, t.lease_ms
            ));
        }
        if t.lease_ms <= 200 {
            return Err(format!(
                "timing.lease_ms ({}) must be > 200 (the drift margin)",
                t.lease_ms
            ));
        }
        if t.publish_timeout_ms == 0 || t.active_videos_max == 0 {
            return Err(
                "timing.publish_timeout_ms and timing.active_videos_max must be > 0".into(),
            );
        }
        if let Some(r) = &self.record {
            r.check()?;
        }
        if t.clock_offset_max_ms != 0 && t.clock_offset_max_ms < 100 {
            return Err(format!(
                "timing.clock_offset_max_ms ({}) must be 0 (no check) or at least 100: \
                 a probe's round trip alone can take that long",
                t.clock_offset_max_ms
            ));
        }
        Ok(())
    }

    pub fn artifacts_dir(&self) -> PathBuf {
        self.artifacts
            .clone()
            .unwrap_or_else(|| self.data_dir.join("artifacts"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_timings_are_named() {
        let base = "node = \"n1\"\ncluster = \"c.toml\"\nstore = \"mem://\"\nlisten = \"127.0.0.1:0\"\ncerts = \"certs\"\ndata_dir = \"d\"\n";
        let ok: NodeConfig = toml::from_str(base).expect("minimal config");
        assert!(ok.check().is_ok());
        let e = toml::from_str::<NodeConfig>(&format!("{base}lease = 3\n"))
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("lease"), "{e}");
        let e = toml::from_str::<NodeConfig>(&format!("{base}[timing]\nrenw_ms = 3\n"))
            .expect_err("unknown timing key")
            .to_string();
        assert!(e.contains("renw_ms"), "{e}");
        let bad: NodeConfig =
            toml::from_str(&format!("{base}[timing]\nlease_ms = 400\nrenew_ms = 500\n"))
                .expect("parses");
        assert!(bad
            .check()
            .expect_err("renew >= lease")
            .contains("renew_ms"));
        let e =
            toml::from_str::<NodeConfig>(&format!("{base}[executors.render]\nkind = \"comand\"\n"))
                .expect_err("unknown executor kind")
                .to_string();
        assert!(e.contains("comand"), "{e}");
    }
}
