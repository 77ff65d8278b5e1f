//! Envoy stats for the names in `crate::metrics`, defined once per configuration.

use super::ffi::{self, MetricKind};
use crate::metrics::{entries_stat, profile_stat, FilterCounter, ProfileCounter};
use crate::profile::Profile;

pub struct Metrics {
    filter: Vec<Option<u32>>,
    /// Per profile (same order as `Config::profiles`), per `ProfileCounter` (None: not defined).
    profiles: Vec<Vec<Option<u32>>>,
    /// Per profile: the entries gauge of table-backed profiles.
    entries: Vec<Option<u32>>,
}

pub fn define(kind: MetricKind, name: &str) -> Option<u32> {
    match ffi::define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(status) => {
            log::warn!("could not define stat {name} (status {}); it will not be counted", status.0);
            None
        }
    }
}

impl Metrics {
    pub fn filter_only() -> Metrics {
        Metrics { filter: FilterCounter::ALL.iter().map(|c| define(MetricKind::Counter, c.name())).collect(), profiles: Vec::new(), entries: Vec::new() }
    }

    pub fn new(profiles: &[Profile]) -> Metrics {
        let mut metrics = Metrics::filter_only();
        metrics.profiles = profiles
            .iter()
            .map(|p| {
                ProfileCounter::ALL.iter().map(|c| c.applies_to(&p.kind).then(|| define(MetricKind::Counter, &profile_stat(&p.name, *c))).flatten()).collect()
            })
            .collect();
        metrics.entries = profiles.iter().map(|p| p.kind.uses_table().then(|| define(MetricKind::Gauge, &entries_stat(&p.name))).flatten()).collect();
        metrics
    }

    pub fn count(&self, counter: FilterCounter) {
        add(self.filter.get(counter.index()).copied().flatten(), 1);
    }

    pub fn count_profile(&self, profile: usize, counter: ProfileCounter) {
        self.add_profile(profile, counter, 1);
    }

    pub fn add_profile(&self, profile: usize, counter: ProfileCounter, n: u32) {
        if n > 0 {
            add(self.profiles.get(profile).and_then(|ids| ids.get(counter.index())).copied().flatten(), i64::from(n));
        }
    }

    /// Moves the entries gauge of `profile` (all workers add to the same gauge).
    pub fn entries_changed(&self, profile: usize, delta: i64) {
        if delta != 0 {
            add(self.entries.get(profile).copied().flatten(), delta);
        }
    }
}

pub fn add(id: Option<u32>, delta: i64) {
    if let Some(id) = id {
        // A failed stat update is not worth failing a request over.
        let _ = ffi::increment_metric(id, delta);
    }
}
