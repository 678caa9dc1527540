//! `reelfleet ctl`: one admin command to a running fleet, through any of
//! its nodes, for scripts (`--json` prints the answer's result as JSON).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use reelfleet::admin::client::AdminClient;
use reelfleet::admin::proto::{Answer, Command, Target};
use reelfleet::live::transport::TlsIdentity;

#[derive(Args)]
pub struct CtlArgs {
    /// A node's QUIC address (its `listen`), e.g. 10.0.1.11:7100.
    #[arg(long)]
    node: SocketAddr,
    /// The folder `reelfleet certs` made (ca.pem, admins/NAME.pem|key).
    #[arg(long, default_value = "certs")]
    cert: PathBuf,
    /// Whose certificate to use: admins/NAME (or nodes/NAME with --as-node).
    #[arg(long = "as")]
    name: String,
    /// Use a node's certificate (it may only read).
    #[arg(long)]
    as_node: bool,
    /// A name the node's certificate holds (every node's holds localhost).
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
pub enum CtlCommand {
    /// The cluster: nodes, ownership, kill switch, paused channels.
    Status,
    /// Every node: region, member, draining, channels owned.
    Nodes,
    /// Every channel (or a region's): owner, epoch, paused.
    Channels {
        #[arg(long)]
        region: Option<String>,
    },
    /// Stop starting work on a channel, or on every channel of a region.
    Pause {
        channel: Option<String>,
        #[arg(long, conflicts_with = "channel")]
        region: Option<String>,
    },
    /// Undo a pause.
    Resume {
        channel: Option<String>,
        #[arg(long, conflicts_with = "channel")]
        region: Option<String>,
    },
    /// The fleet-wide stop (admins only).
    Killswitch {
        #[arg(value_parser = ["on", "off"])]
        state: String,
        #[arg(long)]
        reason: String,
    },
    /// Every region: nodes, members, channels homed there.
    Regions,
    /// One channel: owner, control, videos in progress.
    Channel { name: String },
    /// Pause a channel and cancel its running jobs (its videos in progress
    /// fail as killed).
    Kill { channel: String },
    /// The audit log (every change: who, role, what, when).
    Audit {
        /// Only records at or after this Unix time in milliseconds.
        #[arg(long)]
        since: Option<u64>,
    },
    /// Every GPU of every node: model, memory, utilisation, health, jobs.
    Gpus,
    /// Every job running on every node: channel, slot, stage, where, for how long.
    Jobs,
    /// Hand a node's channels to the others and stop it; it stays out until
    /// undrain (operators).
    Drain { node: String },
    /// Let a drained node run again (operators).
    Undrain { node: String },
    /// Give a node no channels even while it runs and holds its lease;
    /// its channels move to the others (admins).
    Exclude { node: String },
    /// Undo an exclude (admins).
    Include { node: String },
    /// A channel's budget from now on, in place of the config's (admins).
    Budget {
        channel: String,
        #[arg(long = "daily-hard")]
        daily_hard: f64,
        #[arg(long = "daily-soft")]
        daily_soft: Option<f64>,
        #[arg(long = "per-video-hard")]
        per_video_hard: Option<f64>,
        #[arg(long = "per-video-soft")]
        per_video_soft: Option<f64>,
    },
    /// A project's daily units of a quota bucket from now on, as the API
    /// now grants them (admins).
    Quota {
        project: String,
        bucket: String,
        #[arg(long = "units-per-day")]
        units_per_day: u64,
    },
    /// A maintenance window: a node (or every node of a zone) may restart
    /// without its channels moving for SECONDS; `maintenance off` ends it
    /// (operators).
    Maintenance {
        /// NODE or ZONE, or `off`.
        target: String,
        /// How long (1..=86400); not with `off`.
        seconds: Option<u64>,
    },
    /// A consistent backup of the whole store, taken through this node.
    Backup {
        /// Where to write it (checked, then renamed into place).
        #[arg(long)]
        out: PathBuf,
    },
}

fn target(channel: Option<String>, region: Option<String>) -> Result<Target, String> {
    match (channel, region) {
        (Some(c), None) => Ok(Target::Channel(c)),
        (None, Some(r)) => Ok(Target::Region(r)),
        _ => Err("give a CHANNEL or --region REGION".into()),
    }
}

pub fn command(c: CtlCommand) -> Result<Command, String> {
    Ok(match c {
        CtlCommand::Status => Command::Status,
        CtlCommand::Nodes => Command::Nodes,
        CtlCommand::Channels { region } => Command::Channels { region },
        CtlCommand::Pause { channel, region } => Command::Pause {
            target: target(channel, region)?,
        },
        CtlCommand::Resume { channel, region } => Command::Resume {
            target: target(channel, region)?,
        },
        CtlCommand::Killswitch { state, reason } => Command::Killswitch {
            on: state == "on",
            reason,
        },
        CtlCommand::Audit { since } => Command::Audit { since_ms: since },
        CtlCommand::Regions => Command::Regions,
        CtlCommand::Channel { name } => Command::Channel { name },
        CtlCommand::Kill { channel } => Command::Kill { channel },
        CtlCommand::Gpus => Command::Gpus,
        CtlCommand::Jobs => Command::Jobs,
        CtlCommand::Drain { node } => Command::Drain { node },
        CtlCommand::Undrain { node } => Command::Undrain { node },
        CtlCommand::Exclude { node } => Command::Exclude { node },
        CtlCommand::Include { node } => Command::Include { node },
        CtlCommand::Budget {
            channel,
            daily_hard,
            daily_soft,
            per_video_hard,
            per_video_soft,
        } => Command::Budget {
            channel,
            daily_hard_usd: daily_hard,
            daily_soft_usd: daily_soft,
            per_video_hard_usd: per_video_hard,
            per_video_soft_usd: per_video_soft,
        },
        CtlCommand::Quota {
            project,
            bucket,
            units_per_day,
        } => Command::Quota {
            project,
            bucket,
            units_per_day,
        },
        CtlCommand::Maintenance { target, seconds } => match (target.as_str(), seconds) {
            ("off", None) => Command::MaintenanceOff,
            ("off", Some(_)) => return Err("maintenance off takes no SECONDS".into()),
            (_, Some(seconds)) => Command::Maintenance { target, seconds },
            (_, None) => return Err("maintenance NODE|ZONE SECONDS (or maintenance off)".into()),
        },
        CtlCommand::Backup { .. } => Command::Backup,
    })
}

pub fn run(args: CtlArgs) -> i32 {
    match run_inner(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn run_inner(args: CtlArgs) -> Result<(), String> {
    let folder = if args.as_node { "nodes" } else { "admins" };
    let id = TlsIdentity::load(&args.cert, folder, &args.name)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let answer = rt.block_on(async {
        let mut c = AdminClient::connect(args.node, &args.server_name, &id).await?;
        match args.command {
            CtlCommand::Backup { out } => backup_to(&mut c, &out).await,
            other => c.call(command(other)?).await,
        }
    })?;
    if !answer.ok {
        return Err(answer.error.unwrap_or_else(|| "refused".into()));
    }
    let result = answer.result.unwrap_or_default();
    if args.json {
        println!("{result}");
    } else {
        print!("{}", render(&result));
    }
    Ok(())
}

/// A result as lines for a person: a list one row per item, an object one
/// `key: value` per field.
pub fn render(v: &serde_json::Value) -> String {
    let flat = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match v {
        serde_json::Value::Array(rows) => rows
            .iter()
            .map(|r| match r {
                serde_json::Value::Object(m) => {
                    let cells: Vec<String> =
                        m.iter().map(|(k, x)| format!("{k}={}", flat(x))).collect();
                    cells.join("  ") + "\n"
                }
                other => flat(other) + "\n",
            })
            .collect(),
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, x)| match x {
                serde_json::Value::Array(_) => format!("{k}:\n{}", indent(&render(x))),
                _ => format!("{k}: {}\n", flat(x)),
            })
            .collect(),
        other => flat(other) + "\n",
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

/// A backup through the admin RPC into `out`: written beside it, checked
/// whole (count, checksum), then renamed into place, so `out` is never a
/// partial backup.
pub async fn backup_to(c: &mut AdminClient, out: &std::path::Path) -> Result<Answer, String> {
    let tmp = out.with_extension("partial");
    let result = async {
        let mut file = std::fs::File::create(&tmp)
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let answer = c.backup(&mut file).await?;
        if !answer.ok {
            return Ok(answer);
        }
        std::io::Write::flush(&mut file).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let check = std::fs::File::open(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        reelfleet::store::backup::verify(check)
            .map_err(|e| format!("the backup that came is not whole: {e}"))?;
        std::fs::rename(&tmp, out)
            .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), out.display()))?;
        let mut answer = answer;
        if let Some(r) = answer.result.as_mut() {
            r["out"] = serde_json::json!(out.display().to_string());
        }
        Ok(answer)
    }
    .await;
    if !matches!(&result, Ok(a) if a.ok) {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
