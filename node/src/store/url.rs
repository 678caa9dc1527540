//! Backends by URL: `mem://`, `redb:///path/to/file.redb`,
//! `etcd://[user[:password]@]host:port[,host:port...]/prefix[?options]`,
//! `fdb://[cluster-file]?prefix=NAME` (with the `fdb` feature).
//!
//! etcd options: `ca=FILE` (TLS to the members, verified against this CA),
//! `cert=FILE&key=FILE` (a client certificate, for `--client-cert-auth`),
//! `user=NAME` and `password_file=FILE` (etcd's user/password auth; a
//! password may also be given inline as `user:password@`, which shows in
//! process lists). Relative files are relative to the working directory.

use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    Mem,
    Redb(PathBuf),
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
        options: EtcdOptions,
    },
    /// `cluster_file: None`: FoundationDB's default cluster file.
    Fdb {
        cluster_file: Option<PathBuf>,
        prefix: String,
    },
}

/// How to reach etcd beyond its addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdOptions {
    /// TLS: the CA the members' certificates are checked against.
    pub ca: Option<PathBuf>,
    /// A client certificate and its key (both or neither; needs `ca`).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<Password>,
}

/// An etcd password: inline, or a file to read it from at connect.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    Inline(String),
    File(PathBuf),
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Password::Inline(_) => write!(f, "Inline(***)"),
            Password::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

/// Splits `user[:password]@` off the hosts, and reads the query.
fn etcd_options(s: &str, userinfo: Option<&str>, query: &str) -> Result<EtcdOptions, String> {
    let mut o = EtcdOptions::default();
    if let Some(info) = userinfo {
        let (user, password) = match info.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (info, None),
        };
        if user.is_empty() {
            return Err(format!("store URL {s:?}: an empty user name before '@'"));
        }
        o.user = Some(user.to_string());
        o.password = password.map(|p| Password::Inline(p.to_string()));
    }
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("store URL: etcd option {kv:?} is not name=value"))?;
        if v.is_empty() {
            return Err(format!("store URL: etcd option {k}= has no value"));
        }
        let file = Some(PathBuf::from(v));
        match k {
            "ca" => o.ca = file,
            "cert" => o.cert = file,
            "key" => o.key = file,
            "user" => o.user = Some(v.to_string()),
            "password_file" => o.password = Some(Password::File(PathBuf::from(v))),
            _ => {
                return Err(format!(
                "store URL: unknown etcd option {k:?}; known: ca, cert, key, user, password_file"
            ))
            }
        }
    }
    if o.cert.is_some() != o.key.is_some() {
        return Err("store URL: etcd options cert= and key= go together".into());
    }
    if o.cert.is_some() && o.ca.is_none() {
        return Err("store URL: a client certificate (cert=, key=) needs ca= (TLS)".into());
    }
    if o.password.is_some() && o.user.is_none() {
        return Err("store URL: an etcd password needs a user (user= or user@)".into());
    }
    Ok(o)
}

/// `etcd://…` with `rest` after the scheme.
fn parse_etcd(s: &str, rest: &str) -> Result<StoreUrl, String> {
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match hosts.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, hosts),
    };
    // Never echo an inline password back in an error message.
    let shown = match userinfo {
        Some(_) => format!("etcd://…@{hosts}/{prefix}"),
        None => s.to_string(),
    };
    let s = shown.as_str();
    let options = etcd_options(s, userinfo, query)?;
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
    Ok(StoreUrl::Etcd {
        endpoints,
        prefix: format!("/{prefix}"),
        options,
    })
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
            return parse_etcd(s, rest);
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
                prefix: "/fleet".into(),
                options: EtcdOptions::default(),
            })
        );
        let tls = "etcd://rf:s3cret@10.0.0.1:2379/prod?ca=/c/ca.pem&cert=/c/me.pem&key=/c/me.key"
            .parse::<StoreUrl>();
        let Ok(StoreUrl::Etcd { options, .. }) = tls else {
            panic!("{tls:?}");
        };
        assert_eq!(options.ca, Some(PathBuf::from("/c/ca.pem")));
        assert_eq!(options.user.as_deref(), Some("rf"));
        assert!(!format!("{options:?}").contains("s3cret"));
        for (bad, says) in [
            ("etcd://h:1/p?cert=/a", "go together"),
            ("etcd://h:1/p?cert=/a&key=/b", "needs ca="),
            ("etcd://h:1/p?password_file=/a", "needs a user"),
            ("etcd://h:1/p?sslmode=on", "unknown etcd option \"sslmode\""),
            ("etcd://:pw@h:1/p", "empty user name"),
        ] {
            let e = bad.parse::<StoreUrl>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = "etcd://rf:s3cret@h/p".parse::<StoreUrl>().unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
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
