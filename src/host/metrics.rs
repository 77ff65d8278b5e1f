//! Envoy stats for the names in `crate::metrics`, defined once per configuration.

use super::ffi::{self, MetricKind};
use crate::metrics::{profile_stat, FilterCounter, ProfileCounter};

pub struct Metrics {
    filter: Vec<Option<u32>>,
    /// Per profile (same order as `Config::profiles`), per `ProfileCounter`.
    profiles: Vec<Vec<Option<u32>>>,
}

fn define(kind: MetricKind, name: &str) -> Option<u32> {
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
        Metrics { filter: FilterCounter::ALL.iter().map(|c| define(MetricKind::Counter, c.name())).collect(), profiles: Vec::new() }
    }

    pub fn new<'a>(profile_names: impl Iterator<Item = &'a str>) -> Metrics {
        let mut metrics = Metrics::filter_only();
        metrics.profiles = profile_names
            .map(|profile| ProfileCounter::ALL.iter().map(|c| define(MetricKind::Counter, &profile_stat(profile, *c))).collect())
            .collect();
        metrics
    }

    pub fn count(&self, counter: FilterCounter) {
        increment(self.filter.get(counter.index()).copied().flatten());
    }

    pub fn count_profile(&self, profile: usize, counter: ProfileCounter) {
        increment(self.profiles.get(profile).and_then(|ids| ids.get(counter.index())).copied().flatten());
    }
}

fn increment(id: Option<u32>) {
    if let Some(id) = id {
        // A failed increment is not worth failing a request over.
        let _ = ffi::increment_metric(id, 1);
    }
}
