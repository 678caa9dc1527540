//! `reelfleet emulate youtube`: the local YouTube emulator as a process of
//! its own, so that operators (and `reelfleet chaos`) can rehearse a fleet
//! against the real publisher client, with faults turned on through its
//! control endpoints.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use reelfleet::emulate::youtube::{EmulatorConfig, YoutubeEmulator};

#[derive(Args)]
pub struct EmulateArgs {
    #[command(subcommand)]
    service: Service,
}

#[derive(Subcommand)]
enum Service {
    /// The YouTube Data API endpoints the publisher uses: OAuth token,
    /// resumable videos.insert, channels.list, playlistItems.list.
    Youtube(YoutubeArgs),
}

#[derive(Args)]
struct YoutubeArgs {
    /// Where to listen (HTTP).
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
    /// Take the quota buckets and costs from this cluster config's project
    /// (with --project), so the emulator and the nodes agree.
    #[arg(long, requires = "project")]
    cluster: Option<PathBuf>,
    #[arg(long)]
    project: Option<String>,
    /// Write the refresh token here (for `refresh_token_file`).
    #[arg(long)]
    refresh_token_out: Option<PathBuf>,
}

pub fn run(args: EmulateArgs) -> i32 {
    let Service::Youtube(y) = args.service;
    match youtube(y) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn youtube(args: YoutubeArgs) -> Result<(), String> {
    let mut cfg = EmulatorConfig::default();
    if let (Some(path), Some(name)) = (&args.cluster, &args.project) {
        let topo = crate::cli_node::load_topology(path)?;
        cfg.project = topo
            .projects
            .iter()
            .find(|p| &p.name == name)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "{}: no project {name:?} (projects: {})",
                    path.display(),
                    topo.projects
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
    }
    if let Some(out) = &args.refresh_token_out {
        std::fs::write(out, &cfg.refresh_token)
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    rt.block_on(async move {
        let (emu, url) = YoutubeEmulator::listen(cfg.clone(), args.listen).await?;
        println!("youtube emulator on {url}");
        println!("[publisher] for a node config:");
        println!("kind = \"youtube\"");
        println!("api_base = \"{url}\"");
        println!("upload_base = \"{url}/upload\"");
        println!("token_url = \"{url}/token\"");
        println!("client_id = \"{}\"", cfg.client_id);
        println!("client_secret = \"{}\"", cfg.client_secret);
        match &args.refresh_token_out {
            Some(p) => println!("refresh_token_file = \"{}\"", p.display()),
            None => println!("# refresh_token_file: a file holding {}", cfg.refresh_token),
        }
        println!("control: GET {url}/emulator/videos, GET {url}/emulator/state, POST {url}/emulator/faults");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        emu.stop().await;
        Ok(())
    })
}
