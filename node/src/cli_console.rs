//! `reelfleet console`: the admin RPC interactively, with line editing,
//! history (`~/.reelfleet_history`) and completion of commands and of node,
//! region and channel names (read from the cluster when it starts). The
//! commands are `reelfleet ctl`'s.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser};
use reelfleet::admin::client::AdminClient;
use reelfleet::admin::proto::Command;
use reelfleet::live::transport::TlsIdentity;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use crate::cli_ctl::{command, render, CtlCommand};

#[derive(Args)]
pub struct ConsoleArgs {
    /// A node's QUIC address (its `listen`).
    #[arg(long)]
    node: SocketAddr,
    /// The folder `reelfleet certs` made.
    #[arg(long, default_value = "certs")]
    cert: PathBuf,
    /// Whose certificate to use: admins/NAME.
    #[arg(long = "as")]
    name: String,
    /// A name the node's certificate holds.
    #[arg(long, default_value = "localhost")]
    server_name: String,
}

/// One console line, parsed as `ctl` parses its arguments.
#[derive(Parser)]
#[command(name = "", no_binary_name = true, disable_help_flag = true)]
struct Line {
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

const COMMANDS: [&str; 23] = [
    "status",
    "nodes",
    "regions",
    "channels",
    "channel",
    "gpus",
    "jobs",
    "drain",
    "undrain",
    "exclude",
    "include",
    "maintenance",
    "budget",
    "quota",
    "backup",
    "pause",
    "resume",
    "kill",
    "killswitch",
    "audit",
    "help",
    "quit",
    "exit",
];

const HELP: &str = "commands:
  status                          the cluster: nodes, ownership, kill switch, paused channels
  nodes                           every node: region, member, draining, channels owned
  regions                         every region: nodes, members, channels
  channels [--region R]           every channel: owner, epoch, paused
  channel NAME                    one channel: owner, control, videos in progress
  gpus                            every GPU: node, model, memory, utilisation, health, jobs
  jobs                            every running job: node, channel, slot, stage, where, for how long
  drain NODE                      hand its channels away and stop it until undrain (operator)
  undrain NODE                    let a drained node run again (operator)
  exclude NODE                    give it no channels while it runs; they move away (admin)
  include NODE                    undo an exclude (admin)
  maintenance NODE|ZONE SECONDS   they may restart without their channels moving (operator)
  maintenance off                 end the window now (operator)
  budget CHANNEL --daily-hard USD [--daily-soft USD] [--per-video-hard USD] [--per-video-soft USD]
                                  the channel's budget from now on (admin)
  quota PROJECT BUCKET --units-per-day N
                                  a project's daily units, as the API now grants them (admin)
  backup --out FILE               a consistent backup of the store, through this node
  kill CHANNEL                    pause it and cancel its running jobs (operator)
  pause CHANNEL | --region R      stop starting work (operator)
  resume CHANNEL | --region R     undo a pause (operator)
  killswitch on|off --reason T    the fleet-wide stop (admin)
  audit [--since MS]              every change: who, role, what, when
  --json before a command prints JSON; Tab completes; quit or Ctrl-D leaves
";

/// Completes commands first, then names: channels after pause/resume,
/// regions after --region.
struct Names {
    channels: Vec<String>,
    regions: Vec<String>,
    nodes: Vec<String>,
}

impl Completer for Names {
    type Candidate = Pair;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        let start = head.rfind(' ').map(|i| i + 1).unwrap_or(0);
        let word = &head[start..];
        let before: Vec<&str> = head[..start].split_whitespace().collect();
        let pool: Vec<&str> = match before.last().copied() {
            None => COMMANDS.to_vec(),
            Some("--region") => self.regions.iter().map(String::as_str).collect(),
            Some("channel") | Some("kill") | Some("budget") => {
                self.channels.iter().map(String::as_str).collect()
            }
            Some("pause") | Some("resume") => self
                .channels
                .iter()
                .map(String::as_str)
                .chain(["--region"])
                .collect(),
            Some("killswitch") => vec!["on", "off"],
            Some("drain") | Some("undrain") | Some("exclude") | Some("include") => {
                self.nodes.iter().map(String::as_str).collect()
            }
            Some("maintenance") => self
                .nodes
                .iter()
                .map(String::as_str)
                .chain(["off"])
                .collect(),
            Some("backup") => vec!["--out"],
            Some("channels") => vec!["--region"],
            _ => Vec::new(),
        };
        let pairs = pool
            .into_iter()
            .filter(|c| c.starts_with(word))
            .map(|c| Pair {
                display: c.to_string(),
                replacement: format!("{c} "),
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for Names {
    type Hint = String;
}
impl Highlighter for Names {}
impl Validator for Names {}
impl Helper for Names {}

pub fn run(args: ConsoleArgs) -> i32 {
    match run_inner(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn run_inner(args: ConsoleArgs) -> Result<(), String> {
    let id = TlsIdentity::load(&args.cert, "admins", &args.name)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let mut client = rt.block_on(AdminClient::connect(args.node, &args.server_name, &id))?;
    let names = rt.block_on(names(&mut client));
    let mut ed: Editor<Names, rustyline::history::DefaultHistory> =
        Editor::new().map_err(|e| format!("no terminal: {e}"))?;
    ed.set_helper(Some(names));
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".reelfleet_history"));
    if let Some(h) = &history {
        let _ = ed.load_history(h);
    }
    println!(
        "connected to {} as {}; help lists the commands",
        args.node, args.name
    );
    loop {
        let line = match ed.readline("reelfleet> ") {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(format!("terminal: {e}")),
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let _ = ed.add_history_entry(line.as_str());
        match words[0] {
            "quit" | "exit" => break,
            "help" => {
                print!("{HELP}");
                continue;
            }
            _ => {}
        }
        match Line::try_parse_from(&words) {
            Err(e) => println!("{}", e.to_string().lines().next().unwrap_or("bad command")),
            Ok(Line {
                command: CtlCommand::Backup { out },
                json,
            }) => {
                let a = rt.block_on(crate::cli_ctl::backup_to(&mut client, &out));
                println!("{}", shown(a, json));
            }
            Ok(l) => match command(l.command) {
                Err(e) => println!("error: {e}"),
                Ok(cmd) => println!("{}", one(&rt, &mut client, cmd, l.json)),
            },
        }
    }
    if let Some(h) = &history {
        let _ = ed.save_history(h);
    }
    Ok(())
}

/// Runs one command; its answer as text.
fn one(rt: &tokio::runtime::Runtime, c: &mut AdminClient, cmd: Command, json: bool) -> String {
    shown(rt.block_on(c.call(cmd)), json)
}

/// An answer as text.
fn shown(answer: Result<reelfleet::admin::proto::Answer, String>, json: bool) -> String {
    match answer {
        Err(e) => format!("error: {e}"),
        Ok(a) if !a.ok => format!("error: {}", a.error.unwrap_or_default()),
        Ok(a) => {
            let v = a.result.unwrap_or_default();
            if json {
                v.to_string()
            } else {
                render(&v).trim_end().to_string()
            }
        }
    }
}

/// Channel, region and node names for completion (none if a read fails).
async fn names(c: &mut AdminClient) -> Names {
    let nodes = match c.call(Command::Nodes).await.ok().and_then(|a| a.result) {
        Some(serde_json::Value::Array(rows)) => rows
            .iter()
            .filter_map(|r| r["node"].as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let rows = match c
        .call(Command::Channels { region: None })
        .await
        .ok()
        .and_then(|a| a.result)
    {
        Some(serde_json::Value::Array(rows)) => rows,
        _ => Vec::new(),
    };
    let pick = |k: &str| {
        let mut v: Vec<String> = rows
            .iter()
            .filter_map(|r| r[k].as_str().map(str::to_string))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    Names {
        channels: pick("channel"),
        regions: pick("region"),
        nodes,
    }
}
