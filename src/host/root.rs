//! The root context: reads and validates the configuration once, builds the keyring and the stats,
//! and hands them to every HTTP stream of this worker.

use super::ffi;
use super::http::Http;
use super::metrics::Metrics;
use crate::config::{Config, DEFAULT_OVERRIDE_HEADER};
use crate::keyring::{Keyring, GENERATED_KEY_ID, KEY_LEN};
use crate::metrics::FilterCounter;
use crate::profile::Kind;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

/// Everything a request needs, built once per configuration.
pub struct Plugin {
    pub config: Config,
    pub keyring: Keyring,
    pub metrics: Metrics,
    /// Route-metadata profile names already reported as unknown (one log line per name, not per request).
    pub warned_profiles: RefCell<HashSet<String>>,
}

#[derive(Default)]
pub struct Root {
    plugin: Option<Rc<Plugin>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        super::adopt_envoy_log_level();
        let text = match ffi::plugin_configuration(size) {
            Ok(text) => text,
            Err(status) => {
                log::error!("cannot read the plugin configuration (status {}); plugin rejected", status.0);
                return false;
            }
        };
        let config = match Config::parse(&text) {
            Ok(config) => config,
            Err(errors) => {
                for error in &errors {
                    log::error!("invalid configuration: {error}");
                }
                log::error!("plugin rejected: {} configuration error(s); see README, \"Configuration\"", errors.len());
                Metrics::filter_only().count(FilterCounter::ConfigErrors);
                return false;
            }
        };
        let keyring = match keyring_for(&config) {
            Ok(keyring) => keyring,
            Err(message) => {
                log::error!("plugin rejected: {message}");
                Metrics::filter_only().count(FilterCounter::ConfigErrors);
                return false;
            }
        };
        log_summary(&config);
        let metrics = Metrics::new(config.profiles.iter().map(|p| p.name.as_str()));
        self.plugin = Some(Rc::new(Plugin { config, keyring, metrics, warned_profiles: RefCell::default() }));
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never None: the SDK panics on None. Without a valid configuration (Envoy should have
        // rejected the plugin) the stream still removes client-supplied override headers.
        Some(Box::new(Http::new(self.plugin.clone())))
    }
}

fn keyring_for(config: &Config) -> Result<Keyring, String> {
    match config.primary_key_id {
        Some(primary) => Keyring::new(&config.keys, primary).ok_or_else(|| "keys and primary_key_id disagree".to_string()),
        None => {
            let (key, created) = generated_key()?;
            if created {
                log::warn!(
                    "no keys configured: generated a key for this Envoy process, shared by all its workers. Cookies \
                     will not survive an Envoy restart and will not work across replicas; configure \"keys\" (see README, \"Keys\")"
                );
            }
            Keyring::new(&[(GENERATED_KEY_ID, key)], GENERATED_KEY_ID).ok_or_else(|| "generated key unusable".to_string())
        }
    }
}

const GENERATED_KEY: &str = "envoy_persistence.generated_key.v1";

/// One key per Envoy process, shared by every worker through shared data so that each worker
/// opens the others' cookies. The first worker to get here creates it; the rest adopt it.
fn generated_key() -> Result<([u8; KEY_LEN], bool), String> {
    let read = || -> Result<Option<[u8; KEY_LEN]>, String> {
        match ffi::shared_data(GENERATED_KEY) {
            Ok(Some((bytes, _))) => bytes.try_into().map(Some).map_err(|_| "stored generated key has the wrong size".to_string()),
            Ok(None) => Ok(None),
            Err(status) => Err(format!("cannot read shared data (status {})", status.0)),
        }
    };
    if let Some(key) = read()? {
        return Ok((key, false));
    }
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| format!("no randomness for a generated key: {e}"))?;
    // A non-zero CAS on a missing key creates it, and fails if another worker created it first:
    // "create if absent" without a race.
    match ffi::set_shared_data(GENERATED_KEY, &key, u32::MAX) {
        Ok(()) => Ok((key, true)),
        Err(ffi::Status(ffi::CAS_MISMATCH)) => Ok((read()?.ok_or_else(|| "generated key vanished".to_string())?, false)),
        Err(status) => Err(format!("cannot write shared data (status {})", status.0)),
    }
}

fn log_summary(config: &Config) {
    let profiles: Vec<String> = config
        .profiles
        .iter()
        .map(|p| {
            let type_name = p.kind.type_name();
            let detail = match &p.kind {
                Kind::HttpCookie(s) => format!("cookie {}", s.name),
            };
            match &p.description {
                Some(description) => format!("{} ({type_name}, {detail}, server_down {:?}: {description})", p.name, p.server_down),
                None => format!("{} ({type_name}, {detail}, server_down {:?})", p.name, p.server_down),
            }
        })
        .collect();
    let default = config.default_profile.and_then(|i| config.profiles.get(i)).map_or("none", |p| p.name.as_str());
    let header = if config.override_header == DEFAULT_OVERRIDE_HEADER { "" } else { " (not the default: stateful_session must use the same name)" };
    log::info!(
        "configured {} profile(s): {}; default profile: {default}; {} route mapping(s); override header {}{header}; {} key(s)",
        config.profiles.len(),
        profiles.join("; "),
        config.routes.len(),
        config.override_header,
        config.keys.len().max(1),
    );
}
