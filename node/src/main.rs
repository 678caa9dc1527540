//! `reelfleet`: the one binary. Today it runs the deterministic simulator
//! and backs up and restores stores; the live node, console and chaos runner
//! come with later issues.

mod cli_bench;
mod cli_certs;
mod cli_sim;
mod cli_store;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "reelfleet",
    version,
    about = "Fault-tolerant control plane for video fleets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the deterministic simulator.
    Sim(cli_sim::SimArgs),
    /// Write a consistent snapshot of a store to a file, or check one.
    Backup(cli_store::BackupArgs),
    /// Load a backup into an empty store.
    Restore(cli_store::RestoreArgs),
    /// Benchmark a store backend: commits per second and latency.
    BenchStore(cli_bench::BenchArgs),
    /// Make the cluster CA and node and admin certificates.
    Certs(cli_certs::CertsArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Sim(args) => cli_sim::run(args),
        Command::Backup(args) => cli_store::backup(args),
        Command::Restore(args) => cli_store::restore(args),
        Command::BenchStore(args) => cli_bench::run(args),
        Command::Certs(args) => cli_certs::run(args),
    };
    std::process::exit(code);
}
