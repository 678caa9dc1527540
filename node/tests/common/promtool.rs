//! `promtool`, Prometheus's own checker, where installed (CI installs it
//! with the `prometheus` package and must run these checks).
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

/// `promtool`, or `None` outside CI where it is not installed.
pub fn promtool_path() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "promtool is not installed but CI must run this check"
        );
        eprintln!("skipped promtool: not installed (apt-get install prometheus)");
        return None;
    }
    Some("promtool")
}

/// `promtool check metrics` on `text`: its complaints, if any.
pub fn promtool_complaints(text: &str) -> Option<String> {
    let tool = promtool_path()?;
    let mut c = Command::new(tool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = c.wait_with_output().expect("promtool output");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some(if out.status.success() && said.trim().is_empty() {
        String::new()
    } else {
        said
    })
}
