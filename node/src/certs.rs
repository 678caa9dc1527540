//! The cluster's certificates: one CA per cluster, node certificates (for
//! QUIC between nodes, both ways: mutual TLS) and admin certificates (for
//! the console). Made with rcgen; ECDSA P-256 keys.
//!
//! Layout of the folder `reelfleet certs init --out DIR` makes:
//! `ca.pem`, `ca.key` (keep it offline), then per name
//! `nodes/<name>.pem`, `nodes/<name>.key` and `admins/<name>.pem`,
//! `admins/<name>.key`. Keys are written with mode 0600.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

#[derive(Debug)]
pub struct CertError(pub String);

impl std::fmt::Display for CertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CertError {}

fn err(s: impl Into<String>) -> CertError {
    CertError(s.into())
}

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A `reelfleet node`: serves and dials QUIC, so both server and client.
    Node,
    /// An operator's console with every right: client only.
    Admin,
    /// A console that may also pause, resume, drain and set maintenance.
    Operator,
    /// A console that may only read.
    Viewer,
}

impl Role {
    /// Where its certificate is written: `nodes/` or `admins/`.
    pub fn folder(self) -> &'static str {
        match self {
            Role::Node => "nodes",
            Role::Admin | Role::Operator | Role::Viewer => "admins",
        }
    }

    /// The organisational unit its certificate carries: the admin RPC
    /// reads the caller's role from it.
    pub fn ou(self) -> &'static str {
        match self {
            Role::Node => "nodes",
            Role::Admin => "admins",
            Role::Operator => "operators",
            Role::Viewer => "viewers",
        }
    }
}

fn write_secret(path: &Path, text: &str) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| err(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| err(format!("cannot write {}: {e}", path.display())))
}

fn write_public(path: &Path, text: &str) -> Result<(), CertError> {
    if path.exists() {
        return Err(err(format!(
            "{} exists already; refusing to overwrite it",
            path.display()
        )));
    }
    std::fs::write(path, text).map_err(|e| err(format!("cannot write {}: {e}", path.display())))
}

/// A name usable as a file name and a DNS name: letters, digits, `-`, `.`.
fn check_name(name: &str) -> Result<(), CertError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(err(format!(
            "name {name:?}: use 1 to 63 letters, digits, '-' or '.', not starting with '-' or '.'"
        )))
    }
}

/// Makes a new cluster CA in `dir` (which must not hold one already).
pub fn init(dir: &Path, cluster: &str) -> Result<PathBuf, CertError> {
    check_name(cluster)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    let key = KeyPair::generate().map_err(|e| err(format!("cannot make a key: {e}")))?;
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| err(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "reelfleet");
    dn.push(
        DnType::CommonName,
        format!("reelfleet cluster CA {cluster}"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params
        .self_signed(&key)
        .map_err(|e| err(format!("cannot sign the CA: {e}")))?;
    let ca_pem = dir.join("ca.pem");
    write_public(&ca_pem, &cert.pem())?;
    write_secret(&dir.join("ca.key"), &key.serialize_pem())?;
    Ok(ca_pem)
}

/// Issues a certificate for `name` in `role`, signed by the CA in `dir`.
/// Returns the certificate's path (the key sits beside it).
pub fn issue(dir: &Path, role: Role, name: &str) -> Result<PathBuf, CertError> {
    check_name(name)?;
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p).map_err(|e| err(format!("cannot read {}: {e}", p.display())))
    };
    let ca_key =
        KeyPair::from_pem(&read(dir.join("ca.key"))?).map_err(|e| err(format!("ca.key: {e}")))?;
    let issuer = Issuer::from_ca_cert_pem(&read(dir.join("ca.pem"))?, ca_key)
        .map_err(|e| err(format!("ca.pem: {e}")))?;
    let key = KeyPair::generate().map_err(|e| err(format!("cannot make a key: {e}")))?;
    let sans = match role {
        Role::Node => vec![name.to_string(), "localhost".to_string()],
        _ => vec![name.to_string()],
    };
    let mut params = CertificateParams::new(sans).map_err(|e| err(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "reelfleet");
    dn.push(DnType::OrganizationalUnitName, role.ou());
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match role {
        Role::Node => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| err(format!("cannot sign {name}: {e}")))?;
    let folder = dir.join(role.folder());
    std::fs::create_dir_all(&folder)
        .map_err(|e| err(format!("cannot create {}: {e}", folder.display())))?;
    let pem = folder.join(format!("{name}.pem"));
    write_public(&pem, &cert.pem())?;
    write_secret(&folder.join(format!("{name}.key")), &key.serialize_pem())?;
    Ok(pem)
}
