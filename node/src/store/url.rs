//! Backends by URL: `mem://` and `redb:///path/to/file.redb`. Later:
//! `etcd://host:port[,host:port...]/prefix` and `fdb://[cluster-file]?prefix=`.

use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    Mem,
    Redb(PathBuf),
}

impl std::str::FromStr for StoreUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<StoreUrl, String> {
        if s == "mem://" {
            return Ok(StoreUrl::Mem);
        }
        if let Some(path) = s.strip_prefix("redb://") {
            if path.is_empty() {
                return Err(format!("store URL {s:?}: redb:// needs a file path, like redb:///var/lib/reelfleet/fleet.redb"));
            }
            return Ok(StoreUrl::Redb(PathBuf::from(path)));
        }
        let scheme = s.split("://").next().unwrap_or(s);
        match scheme {
            "etcd" | "fdb" => Err(format!(
                "store URL {s:?}: the {scheme} backend is not built yet; available: mem://, redb:///path"
            )),
            _ => Err(format!(
                "store URL {s:?}: unknown scheme {scheme:?}; expected mem:// or redb:///path/to/file.redb"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_bad_ones_say_why() {
        assert_eq!("mem://".parse::<StoreUrl>(), Ok(StoreUrl::Mem));
        assert_eq!(
            "redb:///tmp/x.redb".parse::<StoreUrl>(),
            Ok(StoreUrl::Redb(PathBuf::from("/tmp/x.redb")))
        );
        let e = "postgres://db".parse::<StoreUrl>().unwrap_err();
        assert!(e.contains("unknown scheme \"postgres\""), "{e}");
        assert!("redb://"
            .parse::<StoreUrl>()
            .unwrap_err()
            .contains("needs a file path"));
    }
}
