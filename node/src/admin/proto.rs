//! The admin RPC's wire format, version 1: one request per QUIC
//! bidirectional stream, each way one frame (a `u32` little-endian length,
//! then that many bytes of JSON). A request is `{"v": 1, "id": N, "cmd":
//! "...", ...arguments}`; an answer `{"v": 1, "id": N, "ok": true,
//! "result": ...}` or `{"v": 1, "id": N, "ok": false, "error": "..."}`.
//!
//! Versioned so that nothing is misread: a request or an answer from a
//! newer version is refused with an error that says so. Bounded: a frame
//! over `MAX_FRAME_BYTES` is refused before it is read.
//!
//! Who may do what comes from the caller's client certificate: a viewer
//! reads; an operator also pauses, resumes, drains and sets maintenance;
//! an admin also flips the kill switch, excludes nodes and changes budgets
//! and quotas. A node's own certificate is not an operator's: it may read.

use serde::{Deserialize, Serialize};

/// The ALPN of admin connections (nodes talk to each other without one).
pub const ALPN: &[u8] = b"reelfleet-admin/1";
/// The version this build speaks.
pub const VERSION: u32 = 1;
/// Largest request or answer frame, in bytes.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// What a command acts on: one channel, or every channel of a region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Channel(String),
    Region(String),
}

/// Every command, with its arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Command {
    Status,
    Nodes,
    Regions,
    Channels {
        region: Option<String>,
    },
    Channel {
        name: String,
    },
    Gpus,
    Jobs,
    Audit {
        since_ms: Option<u64>,
    },
    Pause {
        target: Target,
    },
    Resume {
        target: Target,
    },
    Kill {
        channel: String,
    },
    Killswitch {
        on: bool,
        reason: String,
    },
    Drain {
        node: String,
    },
    Undrain {
        node: String,
    },
    Exclude {
        node: String,
    },
    Include {
        node: String,
    },
    Maintenance {
        target: String,
        seconds: u64,
    },
    MaintenanceOff,
    Budget {
        channel: String,
        daily_hard_usd: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        daily_soft_usd: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        per_video_hard_usd: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        per_video_soft_usd: Option<f64>,
    },
    Quota {
        project: String,
        bucket: String,
        units_per_day: u64,
    },
    Backup,
}

/// Who the caller is, from its certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// A node of the cluster: reads only.
    Node,
    Viewer,
    Operator,
    Admin,
}

impl Role {
    /// The role a certificate's organisational unit names.
    pub fn from_ou(ou: &str) -> Option<Role> {
        match ou {
            "nodes" => Some(Role::Node),
            "viewers" => Some(Role::Viewer),
            "operators" => Some(Role::Operator),
            // Admin certificates made before roles existed say "admins".
            "admins" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl Command {
    /// The least role that may run this command.
    pub fn needs(&self) -> Role {
        use Command::*;
        match self {
            Status
            | Nodes
            | Regions
            | Channels { .. }
            | Channel { .. }
            | Gpus
            | Jobs
            | Audit { .. }
            | Backup => Role::Node,
            Pause { .. }
            | Resume { .. }
            | Kill { .. }
            | Drain { .. }
            | Undrain { .. }
            | Maintenance { .. }
            | MaintenanceOff => Role::Operator,
            Killswitch { .. } | Exclude { .. } | Include { .. } | Budget { .. } | Quota { .. } => {
                Role::Admin
            }
        }
    }

    /// Whether it changes anything (and so is written to the audit log).
    pub fn mutates(&self) -> bool {
        self.needs() > Role::Viewer
    }

    /// `Err` with the reason when `role` may not run it.
    pub fn allowed_for(&self, role: Role) -> Result<(), String> {
        let needs = self.needs();
        // A node may read; reading needs no more than a viewer.
        let ok = match needs {
            Role::Node | Role::Viewer => true,
            _ => role != Role::Node && role >= needs,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "permission denied: this command needs the {} role; the caller's certificate is a {}",
                needs.name(),
                role.name()
            ))
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    pub id: u64,
    #[serde(flatten)]
    pub cmd: Command,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub v: u32,
    pub id: u64,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Answer {
    pub fn ok(id: u64, result: serde_json::Value) -> Answer {
        Answer {
            v: VERSION,
            id,
            ok: true,
            result: Some(result),
            error: None,
        }
    }
    pub fn error(id: u64, error: impl Into<String>) -> Answer {
        Answer {
            v: VERSION,
            id,
            ok: false,
            result: None,
            error: Some(error.into()),
        }
    }
}

/// Reads a request, refusing (with a reason fit to send back, and the id
/// when one could be read) what is malformed or from a newer version.
pub fn decode_request(body: &[u8]) -> Result<Request, (u64, String)> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| (0, format!("malformed request: not JSON ({e})")))?;
    let id = value
        .get("id")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let v = value
        .get("v")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| (id, "malformed request: no version \"v\"".to_string()))?;
    check_version(v).map_err(|e| (id, e))?;
    serde_json::from_value(value).map_err(|e| (id, format!("malformed request: {e}")))
}

/// Reads an answer, refusing one from a newer version.
pub fn decode_answer(body: &[u8]) -> Result<Answer, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("malformed answer: not JSON ({e})"))?;
    let v = value
        .get("v")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| "malformed answer: no version \"v\"".to_string())?;
    check_version(v)?;
    serde_json::from_value(value).map_err(|e| format!("malformed answer: {e}"))
}

fn check_version(v: u64) -> Result<(), String> {
    if v > u64::from(VERSION) {
        return Err(format!(
            "version {v} is newer than this build's {VERSION}: upgrade it to talk to that peer"
        ));
    }
    if v == 0 {
        return Err("version 0 does not exist".into());
    }
    Ok(())
}

/// One frame: length, then body. `Err` if the body is over the limit.
pub fn frame(body: &[u8]) -> Result<Vec<u8>, String> {
    if body.len() > MAX_FRAME_BYTES {
        return Err(format!(
            "a frame of {} bytes is over the limit of {MAX_FRAME_BYTES}",
            body.len()
        ));
    }
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(body);
    Ok(out)
}

/// The body length a frame header announces, refused over the limit
/// before anything more is read.
pub fn frame_len(header: [u8; 4]) -> Result<usize, String> {
    let n = u32::from_le_bytes(header) as usize;
    if n > MAX_FRAME_BYTES {
        return Err(format!(
            "a frame of {n} bytes is over the limit of {MAX_FRAME_BYTES}"
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_say_why() {
        let r = Request {
            v: VERSION,
            id: 7,
            cmd: Command::Pause {
                target: Target::Region("eu-west".into()),
            },
        };
        let body = serde_json::to_vec(&r).expect("encode");
        assert_eq!(decode_request(&body), Ok(r));
        let newer = br#"{"v": 2, "id": 3, "cmd": "status"}"#;
        let (id, e) = decode_request(newer).unwrap_err();
        assert_eq!(id, 3);
        assert!(e.contains("version 2 is newer"), "{e}");
        let (_, e) = decode_request(br#"{"v": 1, "id": 4, "cmd": "reboot"}"#).unwrap_err();
        assert!(e.contains("reboot"), "{e}");
        let (_, e) = decode_request(b"\x00\xffgarbage").unwrap_err();
        assert!(e.contains("not JSON"), "{e}");
        let (_, e) = decode_request(br#"{"id": 4, "cmd": "status"}"#).unwrap_err();
        assert!(e.contains("no version"), "{e}");
        let e = decode_answer(br#"{"v": 9, "id": 1, "ok": true}"#).unwrap_err();
        assert!(e.contains("newer"), "{e}");
    }

    #[test]
    fn frames_are_bounded() {
        assert!(frame(&vec![0; MAX_FRAME_BYTES]).is_ok());
        assert!(frame(&vec![0; MAX_FRAME_BYTES + 1])
            .unwrap_err()
            .contains("over the limit"));
        let big = ((MAX_FRAME_BYTES + 1) as u32).to_le_bytes();
        assert!(frame_len(big).is_err());
        assert_eq!(frame_len(5u32.to_le_bytes()), Ok(5));
    }

    #[test]
    fn each_role_may_do_what_it_should_and_no_more() {
        let read = Command::Status;
        let operate = Command::Drain { node: "n1".into() };
        let admin = Command::Killswitch {
            on: true,
            reason: "runaway".into(),
        };
        for role in [Role::Node, Role::Viewer, Role::Operator, Role::Admin] {
            assert!(read.allowed_for(role).is_ok(), "{role:?} reads");
        }
        assert!(operate.allowed_for(Role::Viewer).is_err());
        assert!(operate.allowed_for(Role::Node).is_err());
        assert!(operate.allowed_for(Role::Operator).is_ok());
        let e = admin.allowed_for(Role::Operator).unwrap_err();
        assert!(
            e.contains("needs the admin role") && e.contains("operator"),
            "{e}"
        );
        assert!(
            admin.allowed_for(Role::Node).is_err(),
            "a node certificate is not an admin"
        );
        assert!(admin.allowed_for(Role::Admin).is_ok());
        assert!(admin.mutates() && operate.mutates() && !read.mutates());
        assert_eq!(Role::from_ou("operators"), Some(Role::Operator));
        assert_eq!(Role::from_ou("admins"), Some(Role::Admin));
        assert_eq!(Role::from_ou("strangers"), None);
    }
}
