//! etcd as production runs it: a real member serving TLS only and asking
//! for client certificates, then user/password auth on top. The store URL
//! carries the CA, the client certificate and the credentials; a wrong CA,
//! a missing client certificate and a wrong password each fail at connect
//! with a clear error, and the backend conforms over TLS. A member left at
//! etcd's default transaction limit is named at connect.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actors::store::{Txn, Write};
use common::etcd_cluster::etcd_available;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use reelfleet::store::any::AnyStore;
use reelfleet::store::url::StoreUrl;
use reelfleet::store::Store;

/// A CA's certificate, and an issuer for more.
fn ca(dir: &Path, name: &str) -> (PathBuf, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = p.self_signed(&key).expect("CA");
    let pem = dir.join(format!("{name}.pem"));
    std::fs::write(&pem, cert.pem()).expect("write");
    (pem, Issuer::new(p, key))
}

/// A leaf certificate for `sans`, written as `<name>.pem` and `<name>.key`.
fn leaf(
    dir: &Path,
    issuer: &Issuer<'static, KeyPair>,
    name: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().expect("key");
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut p = CertificateParams::new(sans).expect("params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![usage];
    let cert = p.signed_by(&key, issuer).expect("sign");
    let (pem, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&pem, cert.pem()).expect("write");
    std::fs::write(&k, key.serialize_pem()).expect("write");
    (pem, k)
}

/// The cluster's CA, the member's server certificate (for 127.0.0.1) and
/// a client certificate for `root`.
fn cluster_certs(dir: &Path) -> (PathBuf, (PathBuf, PathBuf), (PathBuf, PathBuf)) {
    let (ca_pem, issuer) = ca(dir, "etcd-ca");
    let server = leaf(
        dir,
        &issuer,
        "server",
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let client = leaf(
        dir,
        &issuer,
        "root",
        &["root"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    (ca_pem, server, client)
}

struct Member(Child);

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One etcd member serving clients over TLS with client-certificate auth,
/// with the limits the README asks for, or with etcd's defaults.
fn start_tls_member(
    dir: &Path,
    server: &(PathBuf, PathBuf),
    ca: &Path,
    defaults: bool,
) -> (Member, u16) {
    let (client, peer) = (free_port(), free_port());
    let limits: &[&str] = match defaults {
        true => &[],
        false => &["--max-txn-ops", "20000", "--max-request-bytes", "11000000"],
    };
    let child = Command::new("etcd")
        .args(["--name", "tls0", "--data-dir"])
        .arg(dir.join("member"))
        .args(limits)
        .args([
            "--listen-client-urls",
            &format!("https://127.0.0.1:{client}"),
            "--advertise-client-urls",
            &format!("https://127.0.0.1:{client}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("tls0=http://127.0.0.1:{peer}"),
            "--client-cert-auth",
        ])
        .arg("--cert-file")
        .arg(&server.0)
        .arg("--key-file")
        .arg(&server.1)
        .arg("--trusted-ca-file")
        .arg(ca)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    let member = Member(child);
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "etcd did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (member, client)
}

async fn open(url: &str) -> Result<AnyStore, String> {
    let url: StoreUrl = url.parse()?;
    AnyStore::open(&url).await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_client_certificates_and_passwords() {
    if !etcd_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("dir");
    let dir = tmp.path();
    let (ca_pem, server, client) = cluster_certs(dir);
    let (wrong_ca, _) = ca(dir, "someone-elses-ca");
    let (_member, port) = start_tls_member(dir, &server, &ca_pem, false);
    let base = format!("etcd://127.0.0.1:{port}/tls");
    let tls = format!(
        "ca={}&cert={}&key={}",
        ca_pem.display(),
        client.0.display(),
        client.1.display()
    );

    // The right CA and a client certificate: the backend conforms.
    let mut store = None;
    let t0 = Instant::now();
    while store.is_none() {
        match open(&format!("{base}?{tls}")).await {
            Ok(s) => store = Some(s),
            Err(e) => {
                assert!(t0.elapsed() < Duration::from_secs(20), "TLS connect: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let store = store.expect("store");
    common::conformance::differential_against_the_model(&store, 7, 300).await;

    check_refusals(&base, port, &wrong_ca, &ca_pem, &client).await;
    enable_auth(port, &ca_pem, &client).await;
    let pw = dir.join("password");
    std::fs::write(&pw, "s3cret\n").expect("write");
    let s = open(&format!(
        "{base}?{tls}&user=root&password_file={}",
        pw.display()
    ))
    .await
    .expect("user and password over TLS");
    s.commit(&Txn {
        checks: vec![],
        writes: vec![Write::Put(actors::store::key(b"k"), b"v".to_vec())],
    })
    .await
    .expect("commit with auth");
    let e = open(&format!("{base}?{tls}&user=root"))
        .await
        .err()
        .expect("a wrong password was accepted");
    eprintln!("wrong password: {e}");
    assert!(e.to_lowercase().contains("auth"), "{e}");
    assert!(!e.contains("s3cret"), "{e}");
}

/// A member left at etcd's default `--max-txn-ops` (128) is refused at
/// connect, with the flag named: a node's claims take 512 operations, and
/// a node whose claims were refused would leave its channels unowned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_at_the_default_transaction_limit_is_named_at_connect() {
    if !etcd_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("dir");
    let dir = tmp.path();
    let (ca_pem, server, client) = cluster_certs(dir);
    let (_member, port) = start_tls_member(dir, &server, &ca_pem, true);
    let url = format!(
        "etcd://127.0.0.1:{port}/tls?ca={}&cert={}&key={}",
        ca_pem.display(),
        client.0.display(),
        client.1.display()
    );
    let t0 = Instant::now();
    let e = loop {
        match open(&url).await {
            Ok(_) => panic!("a member at the default --max-txn-ops was accepted"),
            Err(e) if e.contains("max-txn-ops") => break e,
            Err(e) => {
                assert!(t0.elapsed() < Duration::from_secs(20), "connect: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    eprintln!("default limits: {e}");
    assert!(e.contains("1024 operations"), "{e}");
}

/// Users and passwords on top: a root user, then auth on.
async fn enable_auth(port: u16, ca_pem: &Path, client: &(PathBuf, PathBuf)) {
    let mut admin = etcd_client::Client::connect(
        [format!("127.0.0.1:{port}")],
        Some(
            etcd_client::ConnectOptions::new().with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(
                        std::fs::read(ca_pem).expect("ca"),
                    ))
                    .identity(etcd_client::Identity::from_pem(
                        std::fs::read(&client.0).expect("cert"),
                        std::fs::read(&client.1).expect("key"),
                    )),
            ),
        ),
    )
    .await
    .expect("admin client");
    admin.user_add("root", "s3cret", None).await.expect("user");
    admin.role_add("root").await.expect("role");
    admin.user_grant_role("root", "root").await.expect("grant");
    admin.auth_enable().await.expect("auth on");
}

/// A wrong CA, and no client certificate, are refused with clear errors.
async fn check_refusals(
    base: &str,
    port: u16,
    wrong_ca: &Path,
    ca_pem: &Path,
    client: &(PathBuf, PathBuf),
) {
    // A CA that did not sign the member's certificate.
    let e = open(&format!(
        "{base}?ca={}&cert={}&key={}",
        wrong_ca.display(),
        client.0.display(),
        client.1.display()
    ))
    .await
    .err()
    .expect("a wrong CA was accepted");
    eprintln!("wrong CA: {e}");
    assert!(
        e.contains(&format!("127.0.0.1:{port}")) && e.contains("TLS"),
        "{e}"
    );
    assert!(!e.contains("Status {"), "Rust debug output: {e}");
    // No client certificate, where the member asks for one.
    let e = open(&format!("{base}?ca={}", ca_pem.display()))
        .await
        .err()
        .expect("a client without a certificate was accepted");
    eprintln!("no client certificate: {e}");
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
}
