//! The root contexts. The module has two roles, chosen by the plugin's `root_id`:
//! - the HTTP filter (any root id but `persistence_connections`): reads and validates the
//!   configuration once, builds keys, tables and stats, and sweeps expired table entries;
//! - `persistence_connections`, the network filter: counts each client's open connections for
//!   client IP persistence. It needs no configuration: what to count comes from the HTTP plugins
//!   through shared data.

use super::ffi;
use super::http::Http;
use super::metrics::{self, Metrics};
use super::store::SharedData;
use super::stream::ConnectionCounter;
use crate::config::{Config, DEFAULT_OVERRIDE_HEADER};
use crate::keyring::{Keyring, GENERATED_KEY_ID, KEY_LEN};
use crate::metrics::{FilterCounter, ProfileCounter, CONNECTION_CONFLICTS, TRACKED_CLIENTS};
use crate::profile::client_ip::{self, Tracking};
use crate::profile::{table_backed, Kind};
use crate::table::{self, hash_key, Entry, Store, Table};
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::ContextType;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

pub const CONNECTIONS_ROOT_ID: &str = "persistence_connections";
/// Where HTTP plugins publish what the connection counter must track.
pub const TRACKING_KEY: &str = "persistence.connections.layout";
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(1);
/// Buckets each root context sweeps per tick (workers and the main thread share the work). Most
/// buckets of a large table were never written and cost one failed lookup: a pass over 65536
/// buckets takes a few seconds, then the table rests for its `sweep_interval`.
const SWEEP_BUCKETS_PER_TICK: u32 = 4096;

/// Everything an HTTP stream needs, built once per configuration.
pub struct Plugin {
    pub config: Config,
    pub keyring: Keyring,
    pub metrics: Metrics,
    /// Per profile (same order as `config.profiles`): the shared table of table-backed profiles.
    pub tables: Vec<Option<Table>>,
    /// Open connections per client, written by the connection counter.
    pub connections: Table,
    /// Route-metadata profile names already reported as unknown (one log line per name, not per request).
    pub warned_profiles: RefCell<Vec<String>>,
    /// Client IP keys refused for an untrusted or missing client address already logged (once per VM).
    pub warned_untrusted_address: Cell<bool>,
    pub warned_no_peer: Cell<bool>,
    /// Per profile: used by this VM (referenced by the configuration or seen in route metadata).
    /// Only used profiles have their tables swept and their client grouping tracked.
    pub used: Vec<Cell<bool>>,
    /// Nonces for the tokens this VM seals (a new random sequence when used up).
    pub nonces: RefCell<Option<crate::token::NonceSequence>>,
}

impl Plugin {
    /// Notes that a request selected `profile`. The first time (for a profile only route metadata
    /// names) its client grouping is published to the connection counter.
    pub fn note_use(&self, profile: usize) {
        let Some(used) = self.used.get(profile) else { return };
        if used.get() {
            return;
        }
        if let Some(tracking) = self.config.profiles.get(profile).and_then(|p| p.kind.tracking()) {
            publish_tracking(&tracking);
        }
        used.set(true);
    }
}

/// The connection table, the same for every plugin of the process (fixed size and name).
pub fn connection_table() -> Table {
    Table::new("persistence.connections", client_ip::CONNECTION_TABLE_ENTRIES)
}

enum Role {
    Unconfigured,
    #[cfg(feature = "bench")]
    Bench(&'static str),
    Http(Rc<Plugin>),
    Connections(Rc<ConnectionCounter>),
}

pub struct Root {
    role: Role,
}

impl Default for Root {
    fn default() -> Root {
        Root { role: Role::Unconfigured }
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        super::adopt_envoy_log_level();
        let root_id = ffi::property(&["plugin_root_id"]).ok().flatten().unwrap_or_default();
        #[cfg(feature = "bench")]
        for role in ["persistence_bench", "bench_noop", "bench_copy", "bench_learn", "bench_learn_cookie"] {
            if root_id == role.as_bytes() {
                self.role = Role::Bench(role);
                return true;
            }
        }
        if root_id == CONNECTIONS_ROOT_ID.as_bytes() {
            if size > 0 {
                log::info!("{CONNECTIONS_ROOT_ID}: counts client connections for client IP persistence; it takes no configuration (ignored)");
            }
            let counter = ConnectionCounter {
                table: connection_table(),
                clients: metrics::define(ffi::MetricKind::Gauge, TRACKED_CLIENTS),
                conflicts: metrics::define(ffi::MetricKind::Counter, CONNECTION_CONFLICTS),
            };
            self.role = Role::Connections(Rc::new(counter));
            let _ = ffi::set_tick_period(HOUSEKEEPING_PERIOD);
            return true;
        }
        match configure_http(size) {
            Some(plugin) => {
                if plugin.tables.iter().any(Option::is_some) {
                    let _ = ffi::set_tick_period(HOUSEKEEPING_PERIOD);
                }
                self.role = Role::Http(Rc::new(plugin));
                true
            }
            None => {
                Metrics::filter_only().count(FilterCounter::ConfigErrors);
                false
            }
        }
    }

    fn on_tick(&mut self) {
        match &self.role {
            Role::Http(plugin) => sweep_profiles(plugin),
            Role::Connections(counter) => counter.sweep(SWEEP_BUCKETS_PER_TICK),
            _ => {}
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        match self.role {
            Role::Connections(_) => Some(ContextType::StreamContext),
            _ => Some(ContextType::HttpContext),
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        #[cfg(feature = "bench")]
        if let Role::Bench(role) = self.role {
            return Some(match role {
                "bench_noop" => Box::new(super::bench::Noop),
                "bench_copy" => Box::new(super::bench::CopyHeader),
                "bench_learn" => Box::new(super::bench::Ceiling { sets_cookie: false }),
                "bench_learn_cookie" => Box::new(super::bench::Ceiling { sets_cookie: true }),
                _ => Box::new(super::bench::TableDriver),
            });
        }
        // Never None: the SDK panics on None. Without a valid configuration (Envoy should have
        // rejected the plugin) the stream still removes client-supplied override headers.
        let plugin = match &self.role {
            Role::Http(plugin) => Some(plugin.clone()),
            _ => None,
        };
        Some(Box::new(Http::new(plugin)))
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        let counter = match &self.role {
            Role::Connections(counter) => counter.clone(),
            // Not reachable (get_type says HTTP), but never None: the SDK panics on None.
            _ => Rc::new(ConnectionCounter { table: connection_table(), clients: None, conflicts: None }),
        };
        Some(Box::new(super::stream::Connection::new(counter)))
    }
}

fn configure_http(size: usize) -> Option<Plugin> {
    let text = match ffi::plugin_configuration(size) {
        Ok(text) => text,
        Err(status) => {
            log::error!("cannot read the plugin configuration (status {}); plugin rejected", status.0);
            return None;
        }
    };
    let config = match Config::parse(&text) {
        Ok(config) => config,
        Err(errors) => {
            for error in &errors {
                log::error!("invalid configuration: {error}");
            }
            log::error!("plugin rejected: {} configuration error(s); see README, \"Configuration\"", errors.len());
            return None;
        }
    };
    let keyring = match keyring_for(&config) {
        Ok(keyring) => keyring,
        Err(message) => {
            log::error!("plugin rejected: {message}");
            return None;
        }
    };
    let used: Vec<Cell<bool>> = (0..config.profiles.len()).map(|i| Cell::new(config.in_use(i))).collect();
    let mut in_use = Tracking::default();
    for (profile, _) in config.profiles.iter().zip(&used).filter(|(_, u)| u.get()) {
        if let Some(tracking) = profile.kind.tracking() {
            in_use.merge(&tracking);
        }
    }
    publish_tracking(&in_use);
    log_summary(&config);
    let metrics = Metrics::new(&config.profiles);
    let tables = config
        .profiles
        .iter()
        .map(|p| {
            let max_entries = match &p.kind {
                Kind::ClientIp(settings) => settings.max_entries,
                Kind::AppCookie(settings) if p.kind.uses_table() => settings.max_entries,
                Kind::Tls(settings) => settings.max_entries,
                Kind::AppCookie(_) | Kind::HttpCookie(_) | Kind::HttpHeader(_) => return None,
            };
            Some(Table::new(&format!("persistence.p{:016x}", hash_key(&[b"profile", p.name.as_bytes()])), max_entries))
        })
        .collect();
    Some(Plugin {
        config,
        keyring,
        metrics,
        tables,
        connections: connection_table(),
        warned_profiles: RefCell::default(),
        warned_untrusted_address: Cell::default(),
        warned_no_peer: Cell::default(),
        used,
        nonces: RefCell::default(),
    })
}

/// Adds client groupings to what the connection counter tracks (a CAS-merged union).
fn publish_tracking(mine: &Tracking) {
    if mine.granularities.is_empty() {
        return;
    }
    let store = SharedData;
    for _ in 0..16 {
        let (mut merged, cas) = match store.get(TRACKING_KEY) {
            Ok(Some((bytes, cas))) => (Tracking::decode(&bytes).unwrap_or_default(), cas),
            Ok(None) => (Tracking::default(), table::CREATE),
            Err(_) => break,
        };
        let before = merged.clone();
        merged.merge(mine);
        if merged == before {
            return;
        }
        match store.set(TRACKING_KEY, &merged.encode(), cas) {
            Ok(()) => return,
            Err(table::StoreError::CasMismatch) => continue,
            Err(_) => break,
        }
    }
    log::warn!("could not publish the connection tracking layout: client IP timeouts count from the last request");
}

/// Reclaims expired entries of every table-backed profile, a slice of buckets per tick.
fn sweep_profiles(plugin: &Plugin) {
    let store = SharedData;
    let now = ffi::now_seconds() as u32;
    for (index, (profile, table)) in plugin.config.profiles.iter().zip(&plugin.tables).enumerate() {
        // An unused profile's table is empty (the built-in ones usually are): sweeping it would
        // cost thousands of host calls per tick for nothing.
        let Some(table) = table.as_ref().filter(|_| plugin.used.get(index).is_some_and(Cell::get)) else { continue };
        let (timeout, connection_aware) = match &profile.kind {
            Kind::ClientIp(settings) => (settings.timeout, true),
            Kind::AppCookie(settings) => (settings.timeout, false),
            Kind::Tls(settings) => (settings.timeout, settings.fallback == crate::profile::tls::Fallback::ClientIp),
            Kind::HttpCookie(_) | Kind::HttpHeader(_) => continue,
        };
        let Ok(Some(range)) = table.claim_sweep(&store, SWEEP_BUCKETS_PER_TICK, now, table_backed::sweep_interval(timeout)) else { continue };
        let expired = |hash: u64, entry: &Entry<crate::endpoint::Endpoint>| {
            if table_backed::alive(entry, timeout, now) {
                return false;
            }
            // A client IP entry whose client still has a connection open (or closed one recently) stays.
            !connection_aware || {
                let connections = plugin.connections.read(&store, hash).ok().and_then(|s| plugin.connections.find(&s, hash));
                !client_ip::connections_keep_alive(connections.as_ref(), timeout, now)
            }
        };
        let mut removed = 0;
        for bucket in range {
            match table.sweep(&store, bucket, expired) {
                Ok(n) => removed += n,
                Err(table::TableError::Conflict) => plugin.metrics.count_profile(index, ProfileCounter::TableConflicts),
                Err(table::TableError::Store(_)) => plugin.metrics.count(FilterCounter::HostErrors),
            }
        }
        plugin.metrics.add_profile(index, ProfileCounter::Expired, removed);
        plugin.metrics.entries_changed(index, -i64::from(removed));
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

const GENERATED_KEY: &str = "persistence.generated_key.v1";

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
    getrandom::fill(&mut key).map_err(|_| "no randomness from the host for a generated key".to_string())?;
    match SharedData.set(GENERATED_KEY, &key, table::CREATE) {
        Ok(()) => Ok((key, true)),
        Err(table::StoreError::CasMismatch) => Ok((read()?.ok_or_else(|| "generated key vanished".to_string())?, false)),
        Err(table::StoreError::Host(status)) => Err(format!("cannot write shared data (status {status})")),
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
                Kind::ClientIp(s) => format!("timeout {}s, /{} /{}, {} entries", s.timeout, s.ipv4_prefix, s.ipv6_prefix, s.max_entries),
                Kind::AppCookie(s) => match s.mode {
                    crate::profile::app_cookie::Mode::Table => format!("cookie {}, table, idle timeout {}s, {} entries", s.name, s.timeout, s.max_entries),
                    crate::profile::app_cookie::Mode::Prefix => format!("cookie {}, prefix", s.name),
                },
                Kind::HttpHeader(s) => format!("header {}, {} value(s)", s.name, s.servers.len()),
                Kind::Tls(s) => format!("key {}, fallback {}, timeout {}s, {} entries", s.key.name(), s.fallback.name(), s.timeout, s.max_entries),
            };
            match &p.description {
                Some(description) => format!("{} ({type_name}, {detail}, server_down {}: {description})", p.name, p.server_down.name()),
                None => format!("{} ({type_name}, {detail}, server_down {})", p.name, p.server_down.name()),
            }
        })
        .collect();
    let default = config.default_profile.and_then(|i| config.profiles.get(i)).map_or("none", |p| p.name.as_str());
    let header = if config.override_header == DEFAULT_OVERRIDE_HEADER { "" } else { " (not the default: stateful_session must use the same name)" };
    log::info!(
        "configured {} profile(s): {}; default profile: {default}; {} route mapping(s); override header {}{header}; {} key(s); client address {}",
        config.profiles.len(),
        profiles.join("; "),
        config.routes.len(),
        config.override_header,
        config.keys.len().max(1),
        config.client_address.name(),
    );
}
