//! `reelfleet`: the one binary: the live node (`node`, `up`), the
//! deterministic simulator, backup and restore, store benchmarks and the
//! cluster's certificates.

mod cli_bench;
mod cli_bench_dispatch;
mod cli_bench_quic;
mod cli_certs;
mod cli_chaos;
mod cli_console;
mod cli_ctl;
mod cli_emulate;
mod cli_node;
mod cli_replay;
mod cli_sim;
mod cli_store;
mod cli_up;

use reelfleet::{allocator, logs};

#[global_allocator]
static ALLOCATOR: allocator::MiMalloc = allocator::MiMalloc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "reelfleet",
    version,
    about = "Fault-tolerant control plane for video fleets"
)]
struct Cli {
    /// Log lines as readable text or as JSON objects (RUST_LOG filters).
    #[arg(long, global = true, value_enum, default_value_t = logs::LogFormat::Text)]
    log_format: logs::LogFormat,
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
    /// Benchmark one live node: durable job transitions per second.
    BenchDispatch(cli_bench_dispatch::DispatchArgs),
    /// Benchmark node-to-node messaging over QUIC: messages/s, round trip.
    BenchQuic(cli_bench_quic::QuicArgs),
    /// Make the cluster CA and node and admin certificates.
    Certs(cli_certs::CertsArgs),
    /// The admin console: line editing, history, completion.
    Console(cli_console::ConsoleArgs),
    /// One admin command to a running fleet through any node.
    Ctl(cli_ctl::CtlArgs),
    /// Break a real fleet of processes on this machine and audit it.
    Chaos(cli_chaos::ChaosArgs),
    /// A local emulator of an outside service (YouTube), for rehearsals.
    Emulate(cli_emulate::EmulateArgs),
    /// Replay a flight recording through this build's machines.
    Replay(cli_replay::ReplayArgs),
    /// Run one live node (see README, "Running nodes").
    Node(cli_node::NodeArgs),
    /// The demo fleet in one process: six nodes over QUIC, redb under ./data.
    Up(cli_up::UpArgs),
}

fn main() {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Sim(_)) {
        allocator::tune_for_the_simulator();
    } else {
        allocator::tune_for_a_long_running_process();
    }
    if let Err(e) = logs::init(cli.log_format) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let code = match cli.command {
        Command::Sim(args) => cli_sim::run(args),
        Command::Backup(args) => cli_store::backup(args),
        Command::Restore(args) => cli_store::restore(args),
        Command::BenchStore(args) => cli_bench::run(args),
        Command::BenchDispatch(args) => cli_bench_dispatch::run(args),
        Command::BenchQuic(args) => cli_bench_quic::run(args),
        Command::Certs(args) => cli_certs::run(args),
        Command::Console(args) => cli_console::run(args),
        Command::Ctl(args) => cli_ctl::run(args),
        Command::Emulate(args) => cli_emulate::run(args),
        Command::Chaos(args) => cli_chaos::run(args),
        Command::Node(args) => cli_node::run(args),
        Command::Replay(args) => cli_replay::run(args),
        Command::Up(args) => cli_up::run(args),
    };
    std::process::exit(code);
}
