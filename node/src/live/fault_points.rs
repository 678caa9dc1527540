//! Fault points: places inside the node where a test of the whole program
//! can make the worst thing happen at the worst moment, as FoundationDB's
//! BUGGIFY sites do in simulation. They exist only in a node started with
//! `--allow-faults`; in any other node `hit` is one branch on a constant.
//!
//! A point is armed from outside by creating a file named after it in the
//! node's fault folder (`<data_dir>/faults/<point>`, content ignored); the
//! next time the node passes the point it removes the file (each arming
//! fires once) and stops its own process with SIGSTOP, exactly as an
//! operator's freeze would. Whoever armed it sends SIGCONT when it wants
//! the node to go on (`reelfleet chaos` waits until it sees the process
//! stopped, then holds it longer than the lease and the publish timeout).

use std::path::{Path, PathBuf};

/// Right after the publisher's guard said the upload may finish (lease,
/// ownership, the machine's timeout all held) and before the request that
/// makes the video visible: the last moment a time-based guard covers.
pub const PUBLISH_AFTER_GUARD: &str = "publish-after-guard";

/// Every fault point, for `--help` and for checks of armed names.
pub const ALL: [&str; 1] = [PUBLISH_AFTER_GUARD];

#[derive(Clone, Debug, Default)]
pub struct FaultPoints {
    /// `Some(folder)` only under `--allow-faults`.
    dir: Option<PathBuf>,
}

impl FaultPoints {
    /// No fault point ever fires (every production node).
    pub fn off() -> FaultPoints {
        FaultPoints { dir: None }
    }

    /// Fault points armed through files in `dir` (created here).
    pub fn allowed(dir: &Path) -> Result<FaultPoints, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the fault folder {}: {e}", dir.display()))?;
        Ok(FaultPoints {
            dir: Some(dir.to_path_buf()),
        })
    }

    /// Passes the point `name`: if it is armed, disarms it and stops this
    /// process until someone sends SIGCONT.
    pub fn hit(&self, name: &str) {
        debug_assert!(ALL.contains(&name), "unknown fault point {name}");
        let Some(dir) = &self.dir else {
            return;
        };
        let armed = dir.join(name);
        // Only the thread that removes the file fires: two uploads passing
        // the point at once stop the process once.
        if std::fs::remove_file(&armed).is_err() {
            return;
        }
        tracing::warn!(
            point = name,
            "fault point fired: stopping this process (SIGSTOP)"
        );
        // SAFETY: raise(3) with a valid signal number has no preconditions.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
        tracing::warn!(point = name, "fault point: continued");
    }
}

/// Arms `point` of the node whose fault folder is `dir` (the chaos runner,
/// tests).
pub fn arm(dir: &Path, point: &str) -> Result<(), String> {
    if !ALL.contains(&point) {
        return Err(format!(
            "no fault point {point:?} (known: {})",
            ALL.join(", ")
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(dir.join(point), b"armed\n").map_err(|e| format!("{}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unarmed_or_disallowed_point_does_nothing_and_arming_checks_the_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Off: even an armed file is ignored (and left in place).
        arm(dir.path(), PUBLISH_AFTER_GUARD).expect("arm");
        FaultPoints::off().hit(PUBLISH_AFTER_GUARD);
        assert!(dir.path().join(PUBLISH_AFTER_GUARD).exists());
        // Allowed but not armed: returns at once.
        std::fs::remove_file(dir.path().join(PUBLISH_AFTER_GUARD)).expect("rm");
        FaultPoints::allowed(dir.path())
            .expect("allowed")
            .hit(PUBLISH_AFTER_GUARD);
        let e = arm(dir.path(), "publish-before-guard").expect_err("unknown point");
        assert!(e.contains("publish-after-guard"), "{e}");
    }
}
