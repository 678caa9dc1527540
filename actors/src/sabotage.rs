//! Test-only switches that break one safety mechanism each, so that tests
//! can show the simulator catching the violation the mechanism prevents.
//!
//! Architecture invariant: without the `sabotage` cargo feature no switch
//! can be turned on; `Sabotage::default()` is all off and production code
//! only ever builds the default.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sabotage {
    /// Channel writes carry no owner/epoch checks.
    pub no_epoch_fencing: bool,
    /// Uploads start without reserving quota first.
    pub no_quota_reservation: bool,
    /// An upload with an unknown outcome is retried without a lookup.
    pub no_reconciliation: bool,
    /// GPUs admit jobs whatever their free memory.
    pub no_vram_admission: bool,
    /// The retry accounting before failure reasons were made true: every
    /// job started at a stage (by any owner) spends its retry budget, and a
    /// lost job counts as a failure.
    pub no_true_retry_accounting: bool,
    /// Any answer about the lease wakes the videos waiting for it and
    /// allows another ask at once, good enough or not: with the lease
    /// lapsed, asking and waking spin without time moving.
    pub no_lease_ask_throttle: bool,
    /// A release waiting for an upload counts as a write due now, so the
    /// channel machine asks for a tick every millisecond until the upload
    /// settles (the bug `dense-drain` found).
    pub no_release_sleep: bool,
    /// Membership places channels on excluded nodes as on any member.
    pub no_exclusion: bool,
    /// Membership removes an expired peer inside a maintenance window.
    pub no_maintenance: bool,
}

impl Sabotage {
    /// Parses a switch name (one of [`Sabotage::NAMES`]) into the sabotage
    /// that removes it.
    #[cfg(feature = "sabotage")]
    pub fn by_name(name: &str) -> Option<Sabotage> {
        let mut s = Sabotage::default();
        match name {
            "epoch-fencing" => s.no_epoch_fencing = true,
            "quota-reservation" => s.no_quota_reservation = true,
            "reconciliation" => s.no_reconciliation = true,
            "vram-admission" => s.no_vram_admission = true,
            "true-retry-accounting" => s.no_true_retry_accounting = true,
            "lease-ask-throttle" => s.no_lease_ask_throttle = true,
            "release-sleep" => s.no_release_sleep = true,
            "exclusion" => s.no_exclusion = true,
            "maintenance" => s.no_maintenance = true,
            _ => return None,
        }
        Some(s)
    }

    /// Every switch off (what production builds).
    pub const OFF: Sabotage = Sabotage {
        no_epoch_fencing: false,
        no_quota_reservation: false,
        no_reconciliation: false,
        no_vram_admission: false,
        no_true_retry_accounting: false,
        no_lease_ask_throttle: false,
        no_release_sleep: false,
        no_exclusion: false,
        no_maintenance: false,
    };

    pub const NAMES: [&'static str; 9] = [
        "epoch-fencing",
        "quota-reservation",
        "reconciliation",
        "vram-admission",
        "true-retry-accounting",
        "lease-ask-throttle",
        "release-sleep",
        "exclusion",
        "maintenance",
    ];

    pub fn any(&self) -> bool {
        self.no_epoch_fencing
            || self.no_quota_reservation
            || self.no_reconciliation
            || self.no_vram_admission
            || self.no_true_retry_accounting
            || self.no_lease_ask_throttle
            || self.no_release_sleep
            || self.no_exclusion
            || self.no_maintenance
    }
}
