//! The simulated publishing API (a YouTube Data API stand-in): it enforces
//! each project's daily quota itself, answers with 5xx and 429 when told to,
//! can lose the response of an upload that succeeded, and finds an earlier
//! upload by the idempotency key stored in its metadata.
//!
//! An upload completes `upload_ms` after it arrives, and only if that is no
//! later than the moment its client gives up (`sent + timeout`): a client
//! that stops sending bytes cannot have its upload finish afterwards.

use std::collections::BTreeMap;

use topology::{ChannelId, ProjectId, PublishingProject};

#[derive(Clone, Debug)]
pub struct Upload {
    pub remote_id: String,
    pub channel: ChannelId,
    pub slot: u64,
    pub project: ProjectId,
    pub completed_ms: u64,
}

#[derive(Clone, Debug, Default)]
pub struct ApiFaults {
    pub error_5xx_ppm: u32,
    pub rate_limited_ppm: u32,
    pub lost_response_ppm: u32,
}

#[derive(Default)]
pub struct PublishApi {
    /// Completed uploads by idempotency key.
    pub uploads: BTreeMap<String, Upload>,
    /// Units taken per (project, API quota day), per bucket: charged, plus
    /// uploads in progress (admitted against the quota, charged when they
    /// complete, released if they die).
    pub charged: BTreeMap<(ProjectId, u64), Vec<u64>>,
    /// Units actually charged per project, all days: completed uploads and
    /// lookups.
    pub charged_total: BTreeMap<ProjectId, u64>,
    /// Uploads the API accepted more than once for the same key.
    pub duplicates: Vec<String>,
    pub faults: ApiFaults,
    pub next_remote: u64,
    pub upload_calls: u64,
    pub lookup_calls: u64,
    pub quota_refusals: u64,
    /// Daily units per bucket granted since the config was written (the
    /// operator's `quota` command tells reelfleet what the API allows).
    pub limits: BTreeMap<ProjectId, Vec<u64>>,
}

impl PublishApi {
    /// Daily units of bucket `i`: as granted later, else as configured.
    fn limit(&self, project: ProjectId, spec: &PublishingProject, i: usize) -> u64 {
        self.limits
            .get(&project)
            .and_then(|l| l.get(i).copied())
            .unwrap_or(spec.buckets[i].units_per_day)
    }

    /// Takes `units` (per bucket) if the project's day still has room; the
    /// caller charges them with [`PublishApi::settle`] or gives them back
    /// with [`PublishApi::refund`].
    pub fn try_take(
        &mut self,
        project: ProjectId,
        spec: &PublishingProject,
        day: u64,
        units: &[u64],
    ) -> bool {
        let used = self
            .charged
            .entry((project, day))
            .or_insert_with(|| vec![0; spec.buckets.len()]);
        let used = used.clone();
        let fits = used
            .iter()
            .zip(units)
            .enumerate()
            .all(|(i, (u, add))| u + add <= self.limit(project, spec, i));
        if !fits {
            self.quota_refusals += 1;
            return false;
        }
        if let Some(used) = self.charged.get_mut(&(project, day)) {
            for (u, add) in used.iter_mut().zip(units) {
                *u += add;
            }
        }
        true
    }

    /// Charges units taken earlier.
    pub fn settle(&mut self, project: ProjectId, units: &[u64]) {
        *self.charged_total.entry(project).or_default() += units.iter().sum::<u64>();
    }

    pub fn refund(&mut self, project: ProjectId, day: u64, units: &[u64]) {
        if let Some(used) = self.charged.get_mut(&(project, day)) {
            for (u, sub) in used.iter_mut().zip(units) {
                *u = u.saturating_sub(*sub);
            }
        }
    }

    /// Another client of the project (a manual upload, another tool) uses
    /// `units` of each bucket today: room reelfleet's ledger does not know
    /// is gone. Not part of `charged_total`, which only counts reelfleet.
    pub fn used_elsewhere(
        &mut self,
        project: ProjectId,
        spec: &PublishingProject,
        day: u64,
        units: u64,
    ) {
        let limits: Vec<u64> = (0..spec.buckets.len())
            .map(|i| self.limit(project, spec, i))
            .collect();
        let used = self
            .charged
            .entry((project, day))
            .or_insert_with(|| vec![0; spec.buckets.len()]);
        for (u, limit) in used.iter_mut().zip(&limits) {
            *u = (*u + units).min(*limit);
        }
    }

    /// Records a completed upload; a second upload of the same key is the
    /// double publish invariant 1 forbids.
    pub fn complete(
        &mut self,
        key: String,
        channel: ChannelId,
        slot: u64,
        project: ProjectId,
        now_ms: u64,
    ) -> String {
        if let Some(existing) = self.uploads.get(&key) {
            self.duplicates.push(key.clone());
            return existing.remote_id.clone();
        }
        self.next_remote += 1;
        let remote_id = format!("yt-{:08x}", self.next_remote);
        self.uploads.insert(
            key,
            Upload {
                remote_id: remote_id.clone(),
                channel,
                slot,
                project,
                completed_ms: now_ms,
            },
        );
        remote_id
    }
}
