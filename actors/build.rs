//! `MACHINES_VERSION`: a digest of the machines' source, so that a
//! recording made by one build is not replayed through machines that
//! decide differently (a flight recording's header carries it).

use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=src");
    let root = Path::new("src");
    let mut all = Vec::new();
    files(root, &mut all);
    all.sort();
    // FNV-1a over each file's path and bytes, in path order.
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for p in &all {
        let name = p.to_string_lossy().replace('\\', "/");
        let bytes = std::fs::read(p).unwrap_or_default();
        for b in name.as_bytes().iter().chain(bytes.iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01B3);
        }
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into()));
    let _ = std::fs::write(out.join("machines_version.rs"), format!("0x{h:016X}"));
}
