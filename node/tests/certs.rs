//! Certificates checked by an independent implementation (OpenSSL): node
//! and admin certificates chain to the cluster CA with the right purposes;
//! a certificate from another CA does not.

use std::process::Command;

use reelfleet::certs::{init, issue, Role};

fn openssl_verify(ca: &std::path::Path, cert: &std::path::Path, purpose: &str) -> bool {
    let out = Command::new("openssl")
        .args(["verify", "-purpose", purpose, "-CAfile"])
        .arg(ca)
        .arg(cert)
        .output()
        .expect("openssl runs");
    out.status.success()
}

fn have_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn node_and_admin_certificates_chain_to_the_cluster_ca_only() {
    if !have_openssl() {
        eprintln!("skipped: no openssl binary to verify with");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let ours = dir.path().join("ours");
    let theirs = dir.path().join("theirs");
    let ca = init(&ours, "prod").expect("init");
    init(&theirs, "other").expect("init another cluster");
    let node = issue(&ours, Role::Node, "use-1").expect("node cert");
    let admin = issue(&ours, Role::Admin, "alice").expect("admin cert");
    let stranger = issue(&theirs, Role::Node, "use-1").expect("a node of another cluster");
    assert!(openssl_verify(&ca, &node, "sslserver"), "node as server");
    assert!(openssl_verify(&ca, &node, "sslclient"), "node as client");
    assert!(openssl_verify(&ca, &admin, "sslclient"), "admin as client");
    assert!(
        !openssl_verify(&ca, &admin, "sslserver"),
        "an admin cannot serve"
    );
    assert!(
        !openssl_verify(&ca, &stranger, "sslclient"),
        "another cluster's node is refused"
    );
    // Keys are private, and nothing is overwritten.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ours.join("nodes/use-1.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
    assert!(
        issue(&ours, Role::Node, "use-1").is_err(),
        "a second use-1 must not replace the first"
    );
    assert!(
        init(&ours, "prod").is_err(),
        "a second CA must not replace the first"
    );
    assert!(issue(&ours, Role::Node, "../evil").is_err());
}
