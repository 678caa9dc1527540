//! `reelfleet certs init --out DIR` and `reelfleet certs issue --node NAME |
//! --admin NAME [--dir DIR]`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use reelfleet::certs::{self, Role};

#[derive(Args, Debug)]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Subcommand, Debug)]
enum CertsCommand {
    /// Make a new cluster CA.
    Init {
        #[arg(long)]
        out: PathBuf,
        /// The cluster's name, written into the CA's subject.
        #[arg(long, default_value = "fleet")]
        cluster: String,
    },
    /// Issue a node or an admin certificate signed by the cluster CA.
    Issue {
        /// The folder `certs init` made.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        #[arg(long, conflicts_with = "admin", required_unless_present = "admin")]
        node: Option<String>,
        #[arg(long)]
        admin: Option<String>,
        /// What an admin certificate may do: viewer (read), operator (also
        /// pause, resume, drain, maintenance) or admin (everything).
        #[arg(long, default_value = "admin", requires = "admin")]
        role: String,
    },
}

pub fn run(args: CertsArgs) -> i32 {
    let result = match args.command {
        CertsCommand::Init { out, cluster } => certs::init(&out, &cluster),
        CertsCommand::Issue {
            dir,
            node,
            admin,
            role,
        } => match (node, admin) {
            (Some(n), _) => certs::issue(&dir, Role::Node, &n),
            (None, Some(a)) => match role.as_str() {
                "admin" => certs::issue(&dir, Role::Admin, &a),
                "operator" => certs::issue(&dir, Role::Operator, &a),
                "viewer" => certs::issue(&dir, Role::Viewer, &a),
                other => Err(certs::CertError(format!(
                    "--role {other:?}: expected viewer, operator or admin"
                ))),
            },
            (None, None) => Err(certs::CertError("give --node NAME or --admin NAME".into())),
        },
    };
    match result {
        Ok(path) => {
            println!("wrote {}", path.display());
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
