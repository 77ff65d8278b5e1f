//! One configuration of the filter, ready for requests: the validated settings (`Config`) and
//! what was built from them (`State`). Built once per configuration and per VM; either all of it
//! is valid or the plugin is rejected (logged with every reason, counted).

use crate::config::Config;
use crate::connections::{self, Tracking};
use crate::host::Host;
use crate::keyring::{self, Keyring, Secret, GENERATED_KEY_ID};
use crate::metrics::{FilterCounter, HostStats, Metrics, ProfileStats};
use crate::state::{State, Warned};
use crate::table::{hash_key, Table};
use crate::token::Tokens;
use std::cell::{Cell, RefCell};
use std::fmt;

pub struct Plugin {
    pub config: Config,
    pub state: State,
}

/// Why a configuration that parsed could still not be used.
#[derive(Debug)]
enum Unusable {
    KeysDisagree,
    GeneratedKey(keyring::GeneratedKeyError),
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::KeysDisagree => f.write_str("keys and primary_key_id disagree"),
            Unusable::GeneratedKey(error) => error.fmt(f),
        }
    }
}

impl Plugin {
    /// Reads the plugin configuration `text` and builds everything a request needs. None when
    /// Envoy must reject the plugin: every error is logged (field path and rule) and counted in
    /// `persistence.config_errors`.
    pub fn configure(text: &[u8], host: &impl Host) -> Option<Plugin> {
        let plugin = match Config::parse_with_environment(text, &|name| host.environment_variable(name)) {
            Ok(config) => Plugin::build(config, host).map_err(|unusable| log::error!("plugin rejected: {unusable}")).ok(),
            Err(errors) => {
                for error in &errors {
                    log::error!("invalid configuration: {error}");
                }
                log::error!("plugin rejected: {} configuration error(s); see README, \"Configuration\"", errors.len());
                None
            }
        };
        if plugin.is_none() {
            Metrics::filter_only(host).count(host, FilterCounter::ConfigErrors);
        }
        plugin
    }

    fn build(mut config: Config, host: &impl Host) -> Result<Plugin, Unusable> {
        log::info!("{}", config.summary());
        // The raw secrets are dropped (and overwritten) here, once the ciphers exist.
        let keys = std::mem::take(&mut config.keys);
        let tokens = Tokens::new(keyring_for(&keys, config.primary_key_id, host)?);
        let used: Vec<Cell<bool>> = (0..config.profiles.len()).map(|i| Cell::new(config.in_use(i))).collect();
        let mut tracked = Tracking::default();
        for (profile, _) in config.profiles.iter().zip(&used).filter(|(_, used)| used.get()) {
            if let Some(tracking) = profile.kind.tracking() {
                tracked.merge(&tracking);
            }
        }
        tracked.publish(host.store());
        let stats = config.profiles.iter().map(|p| ProfileStats { name: &p.name, counters: p.kind.counters(), table: p.kind.table().is_some() });
        let metrics = Metrics::define(host, stats);
        let tables = config
            .profiles
            .iter()
            .map(|p| {
                let spec = p.kind.table()?;
                Some(Table::new(&format!("persistence.p{:016x}", hash_key(&[b"profile", p.name.as_bytes()])), spec.max_entries))
            })
            .collect();
        let state = State {
            tokens,
            metrics,
            tables,
            connections: connections::connection_table(),
            used,
            nonces: RefCell::default(),
            warned: Warned::default(),
            host_stats: HostStats::default(),
        };
        Ok(Plugin { config, state })
    }

    /// Notes that a request selected `profile`. The first time (for a profile only route metadata
    /// names) its client grouping is published to the connection counter.
    pub fn note_use(&self, profile: usize, host: &impl Host) {
        let Some(used) = self.state.used.get(profile) else { return };
        if used.get() {
            return;
        }
        if let Some(tracking) = self.config.profiles.get(profile).and_then(|p| p.kind.tracking()) {
            tracking.publish(host.store());
        }
        used.set(true);
    }
}

/// The configured keys, or the process's generated key (with a warning when this VM made it).
fn keyring_for(keys: &[(u8, Secret)], primary: Option<u8>, host: &impl Host) -> Result<Keyring, Unusable> {
    if let Some(primary) = primary {
        return Keyring::from_secrets(keys, primary).ok_or(Unusable::KeysDisagree);
    }
    let (key, created) = keyring::shared_generated_key(host.store(), |bytes| host.fill_random(bytes).is_ok()).map_err(Unusable::GeneratedKey)?;
    if created {
        log::warn!(
            "no keys configured: generated a key for this Envoy process, shared by all its workers. Cookies \
             will not survive an Envoy restart and will not work across replicas; configure \"keys\" (see README, \"Keys\")"
        );
    }
    Keyring::from_secrets(&[(GENERATED_KEY_ID, key)], GENERATED_KEY_ID).ok_or(Unusable::KeysDisagree)
}
