//! `reelfleet backup` and `reelfleet restore`.

use std::path::PathBuf;

use clap::Args;
use reelfleet::store::any::AnyStore;
use reelfleet::store::backup;
use reelfleet::store::url::StoreUrl;

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The store to back up, e.g. redb:///var/lib/reelfleet/fleet.redb
    #[arg(long, required_unless_present = "verify")]
    store: Option<String>,
    /// Where to write the backup.
    #[arg(long, required_unless_present = "verify")]
    out: Option<PathBuf>,
    /// Check a backup file instead of writing one.
    #[arg(long, conflicts_with_all = ["store", "out"])]
    verify: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The store to load into; must be empty unless --force.
    #[arg(long)]
    store: String,
    /// The backup file.
    #[arg(long = "in")]
    input: PathBuf,
    /// Write into a store that is not empty.
    #[arg(long)]
    force: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

pub fn backup(args: BackupArgs) -> i32 {
    let result = (|| -> Result<String, String> {
        if let Some(path) = &args.verify {
            let file = std::fs::File::open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            let (count, version) =
                backup::verify(file).map_err(|e| format!("{}: {e}", path.display()))?;
            return Ok(format!(
                "{}: ok, {count} records at store version {version}\n",
                path.display()
            ));
        }
        let (Some(url), Some(out)) = (&args.store, &args.out) else {
            return Err("backup needs --store and --out (or --verify FILE)".into());
        };
        let url: StoreUrl = url.parse()?;
        let tmp = out.with_extension("partial");
        let rt = runtime()?;
        let (count, version) = rt
            .block_on(async {
                let store = AnyStore::open_existing(&url)
                    .await
                    .map_err(|e| backup::BackupError(format!("cannot open the store: {e}")))?;
                // Created only once the store opened: a mistyped store
                // leaves no file behind.
                let file = std::fs::File::create(&tmp).map_err(|e| {
                    backup::BackupError(format!("cannot create {}: {e}", tmp.display()))
                })?;
                backup::backup(&store, file).await
            })
            .map_err(|e| e.to_string())?;
        // Only a complete backup takes the real name.
        std::fs::rename(&tmp, out)
            .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), out.display()))?;
        Ok(format!(
            "{}: {count} records at store version {version}\n",
            out.display()
        ))
    })();
    finish(result)
}

pub fn restore(args: RestoreArgs) -> i32 {
    let result = (|| -> Result<String, String> {
        let url: StoreUrl = args.store.parse()?;
        // The whole backup is checked before the target is opened (and,
        // for redb, created): a corrupt or truncated file writes nothing.
        let file = std::fs::File::open(&args.input)
            .map_err(|e| format!("cannot open {}: {e}", args.input.display()))?;
        backup::verify(file).map_err(|e| format!("{}: {e}", args.input.display()))?;
        let path = args.input.clone();
        let open = move || std::fs::File::open(&path);
        let rt = runtime()?;
        let count = rt
            .block_on(async {
                let store = AnyStore::open(&url)
                    .await
                    .map_err(|e| backup::BackupError(format!("cannot open the store: {e}")))?;
                backup::restore(&store, open, args.force).await
            })
            .map_err(|e| format!("{}: {e}", args.input.display()))?;
        Ok(format!("restored {count} records into {}\n", args.store))
    })();
    finish(result)
}

fn finish(result: Result<String, String>) -> i32 {
    match result {
        Ok(msg) => {
            print!("{msg}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
