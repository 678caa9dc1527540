//! `reelfleet`: the one binary. Today it runs the deterministic simulator;
//! the live node, console and chaos runner come with later issues.

mod cli_sim;

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
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Sim(args) => cli_sim::run(args),
    };
    std::process::exit(code);
}
