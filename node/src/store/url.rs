//! Backends by URL: `mem://`, `redb:///path/to/file.redb`,
//! `etcd://host:port[,host:port...]/prefix`, `fdb://[cluster-file]?prefix=NAME`
//! (with the `fdb` feature).

use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    Mem,
    Redb(PathBuf),
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
    /// `cluster_file: None`: FoundationDB's default cluster file.
    Fdb {
        cluster_file: Option<PathBuf>,
        prefix: String,
    },
}

const KNOWN: &str = "mem://, redb:///path/to/file.redb, etcd://host:port[,host:port...]/prefix or fdb://[cluster-file]?prefix=NAME";

impl std::str::FromStr for StoreUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<StoreUrl, String> {
        if s == "mem://" {
            return Ok(StoreUrl::Mem);
        }
        if let Some(path) = s.strip_prefix("redb://") {
            if path.is_empty() {
                return Err(format!(
                    "store URL {s:?}: redb:// needs a file path, like redb:///var/lib/reelfleet/fleet.redb"
                ));
            }
            return Ok(StoreUrl::Redb(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("etcd://") {
            let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let endpoints: Vec<String> = hosts
                .split(',')
                .filter(|h| !h.is_empty())
                .map(str::to_string)
                .collect();
            if endpoints.is_empty() {
                return Err(format!(
                    "store URL {s:?}: etcd:// needs at least one host:port"
                ));
            }
            for e in &endpoints {
                let port = e.rsplit_once(':').map(|(_, p)| p);
                if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
                    return Err(format!("store URL {s:?}: endpoint {e:?} is not host:port"));
                }
            }
            if prefix.is_empty() {
                return Err(format!(
                    "store URL {s:?}: etcd:// needs a key prefix, like etcd://127.0.0.1:2379/reelfleet"
                ));
            }
            return Ok(StoreUrl::Etcd {
                endpoints,
                prefix: format!("/{prefix}"),
            });
        }
        if let Some(rest) = s.strip_prefix("fdb://") {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            let prefix = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("prefix="))
                .filter(|p| !p.is_empty())
                .ok_or_else(|| format!("store URL {s:?}: fdb:// needs ?prefix=NAME, like fdb:///etc/foundationdb/fdb.cluster?prefix=reelfleet"))?;
            if let Some(bad) = query.split('&').find(|kv| !kv.starts_with("prefix=")) {
                return Err(format!(
                    "store URL {s:?}: unknown fdb option {bad:?}; only prefix= is known"
                ));
            }
            return Ok(StoreUrl::Fdb {
                cluster_file: (!path.is_empty()).then(|| PathBuf::from(path)),
                prefix: prefix.to_string(),
            });
        }
        let scheme = s.split("://").next().unwrap_or(s);
        Err(format!(
            "store URL {s:?}: unknown scheme {scheme:?}; expected {KNOWN}"
        ))
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
        assert_eq!(
            "etcd://127.0.0.1:2379,127.0.0.1:2380/fleet".parse::<StoreUrl>(),
            Ok(StoreUrl::Etcd {
                endpoints: vec!["127.0.0.1:2379".into(), "127.0.0.1:2380".into()],
                prefix: "/fleet".into()
            })
        );
        assert!("etcd://host/fleet"
            .parse::<StoreUrl>()
            .unwrap_err()
            .contains("not host:port"));
        assert!("etcd://127.0.0.1:1/"
            .parse::<StoreUrl>()
            .unwrap_err()
            .contains("needs a key prefix"));
    }
}
