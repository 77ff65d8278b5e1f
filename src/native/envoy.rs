//! The host interface on Envoy's dynamic-module ABI: what `crate::host` asks for, as callbacks.
//! Tables live in process-wide native memory shared by every worker (`SharedStore`), with the
//! same compare-and-swap contract as proxy-wasm shared data, so `crate::table` runs unchanged.

use super::abi::{self, attribute, EnvoyBuffer, EnvoyHeader, FilterEnvoyPtr, ModuleBuffer};
use crate::endpoint::Endpoint;
use crate::header_pairs::Headers;
use crate::host::{Attribute, Host, HostError, HttpStream, MetricId, MetricKind};
use crate::metrics::HOST_PINNED;
use crate::route_settings::RouteSettings;
use crate::table::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Key -> (value, CAS), and the last CAS handed out.
struct Entries {
    map: HashMap<String, (Vec<u8>, u32)>,
    last_cas: u32,
}

/// The process's key/value store: one map for every worker and configuration.
pub struct SharedStore {
    entries: Mutex<Entries>,
}

pub static STORE: LazyLock<SharedStore> = LazyLock::new(|| SharedStore { entries: Mutex::new(Entries { map: HashMap::new(), last_cas: 0 }) });

impl SharedStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock left a consistent map (every write is one insert).
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store for SharedStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.lock().map.get(key).cloned())
    }

    /// Envoy's shared-data rule: a missing key is written whatever `cas` says; an existing one only
    /// when `cas` is 0 or its current CAS.
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        let mut entries = self.lock();
        if let Some((_, current)) = entries.map.get(key) {
            if cas != 0 && cas != *current {
                return Err(StoreError::CasMismatch);
            }
        }
        let next = entries.last_cas.wrapping_add(1).max(1);
        entries.last_cas = next;
        entries.map.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }
}

/// Stats are defined on the main thread, when Envoy creates the filter configuration; workers
/// find them here by name. Gauge ids are marked with the top bit (Envoy numbers counters and
/// gauges separately).
#[derive(Default)]
pub struct DefinedStats {
    pub by_name: HashMap<String, MetricId>,
    /// `host_stats`: Envoy fixes a module's stats once its configuration is made, so the per-host
    /// counters are one counter, `metrics::HOST_PINNED`, with the host as a label (`host`).
    pub host_pinned: Option<usize>,
}

const GAUGE: u32 = 1 << 31;
/// Marks a per-host counter: the rest of the id is the host's place in `HOST_LABELS`.
const HOST_LABEL: u32 = 1 << 30;

/// Our id for the stat Envoy numbered `id` with `status` (gauges marked: Envoy numbers counters
/// and gauges separately).
fn metric_id(kind: MetricKind, status: u32, id: usize) -> Result<MetricId, HostError> {
    match (status, u32::try_from(id).ok().filter(|id| *id < HOST_LABEL)) {
        (abi::METRICS_SUCCESS, Some(id)) => Ok(MetricId(if kind == MetricKind::Gauge { id | GAUGE } else { id })),
        (status, _) => Err(HostError { call: "define_metric", status }),
    }
}

/// How Envoy counts `delta` on our stat `id`.
enum Count {
    Counter,
    GaugeUp,
    GaugeDown,
}

/// The callback, Envoy's index and the amount for `delta` on `id`.
fn count_of(id: MetricId, delta: i64) -> (Count, usize, u64) {
    let how = match (id.0 & GAUGE == 0, delta >= 0) {
        (true, _) => Count::Counter,
        (false, true) => Count::GaugeUp,
        (false, false) => Count::GaugeDown,
    };
    (how, (id.0 & !GAUGE) as usize, delta.unsigned_abs())
}

thread_local! {
    /// This worker's host labels (`127_0_0_1_8080`), as defined by its plugins' `HostStats`.
    static HOST_LABELS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What both hosts answer the same way: the process's store, clock, randomness and environment
/// (the module reads Envoy's own environment variables).
macro_rules! process_host {
    () => {
        type Store = SharedStore;

        fn store(&self) -> &SharedStore {
            &STORE
        }
        fn now(&self) -> u64 {
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
        }
        fn fill_random(&self, bytes: &mut [u8]) -> Result<(), HostError> {
            getrandom::fill(bytes).map_err(|_| HostError { call: "getrandom", status: 0 })
        }
        fn environment_variable(&self, name: &str) -> Option<String> {
            std::env::var(name).ok()
        }
    };
}

/// The host while Envoy creates a filter configuration (main thread): defines stats.
pub struct ConfigHost {
    pub config: abi::ConfigEnvoyPtr,
    pub defined: std::cell::RefCell<DefinedStats>,
}

impl Host for ConfigHost {
    process_host!();

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<MetricId, HostError> {
        if let Some(id) = self.defined.borrow().by_name.get(name) {
            return Ok(*id);
        }
        let id = define(self.config, kind, name)?;
        self.defined.borrow_mut().by_name.insert(name.to_string(), id);
        Ok(id)
    }

    /// Configuration time (`config_errors`) and housekeeping (`expired`, `entries`), on the main thread.
    fn increment_metric(&self, id: MetricId, delta: i64) {
        let (how, index, value) = count_of(id, delta);
        let no_labels = std::ptr::null_mut();
        // SAFETY: the configuration pointer is Envoy's and alive during the hook; no labels are passed.
        unsafe {
            match how {
                Count::Counter => abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(self.config, index, no_labels, 0, value),
                Count::GaugeUp => abi::envoy_dynamic_module_callback_http_filter_config_increment_gauge(self.config, index, no_labels, 0, value),
                Count::GaugeDown => abi::envoy_dynamic_module_callback_http_filter_config_decrement_gauge(self.config, index, no_labels, 0, value),
            };
        }
    }
}

/// Defines `metrics::HOST_PINNED` with its `host` label (configuration time, main thread).
pub fn define_host_pinned(config: abi::ConfigEnvoyPtr) -> Result<usize, HostError> {
    let mut id = 0usize;
    let mut labels = [ModuleBuffer::of(b"host")];
    // SAFETY: the configuration pointer is Envoy's during the hook; the name and label outlive the call.
    let result = unsafe {
        abi::envoy_dynamic_module_callback_http_filter_config_define_counter(config, ModuleBuffer::of(HOST_PINNED.as_bytes()), labels.as_mut_ptr(), 1, &mut id)
    };
    match result {
        abi::METRICS_SUCCESS => Ok(id),
        status => Err(HostError { call: "define_metric (host_stats)", status }),
    }
}

/// Defines a stat with the configuration's pointer (main thread, or a worker for stats named at
/// run time such as `host_stats`).
fn define(config: abi::ConfigEnvoyPtr, kind: MetricKind, name: &str) -> Result<MetricId, HostError> {
    let mut id = 0usize;
    let name_buffer = ModuleBuffer::of(name.as_bytes());
    // SAFETY: the configuration pointer is Envoy's and outlives its filters; `id` is a valid out pointer.
    let result = unsafe {
        match kind {
            MetricKind::Counter => abi::envoy_dynamic_module_callback_http_filter_config_define_counter(config, name_buffer, std::ptr::null_mut(), 0, &mut id),
            MetricKind::Gauge => abi::envoy_dynamic_module_callback_http_filter_config_define_gauge(config, name_buffer, std::ptr::null_mut(), 0, &mut id),
        }
    };
    metric_id(kind, result, id)
}

/// A route's settings as Envoy holds them (`DynamicModuleFilterPerRoute`), tagged so that the
/// pointer Envoy hands back for a route is checked to be one of ours before it is read.
pub struct RouteConfig {
    tag: u64,
    pub settings: RouteSettings,
}

const ROUTE_CONFIG_TAG: u64 = 0x7065_7273_6973_7431;

/// Whether any route of the process was given settings (never unset: a later lookup that finds
/// none answers the defaults).
static ROUTE_SETTINGS_IN_USE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl RouteConfig {
    pub fn new(settings: RouteSettings) -> RouteConfig {
        ROUTE_SETTINGS_IN_USE.store(true, std::sync::atomic::Ordering::Relaxed);
        RouteConfig { tag: ROUTE_CONFIG_TAG, settings }
    }
}

/// The host of the connection-counting network filter: its configuration's stats, counted with
/// the configuration-level callbacks (Envoy's stats are atomic), from any thread.
pub struct NetworkHost {
    pub config: abi::ConfigEnvoyPtr,
}

impl Host for NetworkHost {
    process_host!();

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<MetricId, HostError> {
        let mut id = 0usize;
        let name_buffer = ModuleBuffer::of(name.as_bytes());
        // SAFETY: the configuration pointer is Envoy's during the configuration hook; `id` is a valid out pointer.
        let result = unsafe {
            match kind {
                MetricKind::Counter => abi::envoy_dynamic_module_callback_network_filter_config_define_counter(self.config, name_buffer, &mut id),
                MetricKind::Gauge => abi::envoy_dynamic_module_callback_network_filter_config_define_gauge(self.config, name_buffer, &mut id),
            }
        };
        metric_id(kind, result, id)
    }

    fn increment_metric(&self, id: MetricId, delta: i64) {
        let (how, index, value) = count_of(id, delta);
        // SAFETY: the configuration pointer is Envoy's and outlives its filters.
        unsafe {
            match how {
                Count::Counter => abi::envoy_dynamic_module_callback_network_filter_config_increment_counter(self.config, index, value),
                Count::GaugeUp => abi::envoy_dynamic_module_callback_network_filter_config_increment_gauge(self.config, index, value),
                Count::GaugeDown => abi::envoy_dynamic_module_callback_network_filter_config_decrement_gauge(self.config, index, value),
            };
        }
    }
}

/// The IP of a network filter's connection (None for a pipe and the like).
pub fn remote_ip(filter: FilterEnvoyPtr) -> Option<std::net::IpAddr> {
    let (mut address, mut port) = (EnvoyBuffer::empty(), 0u32);
    // SAFETY: `filter` is Envoy's during the hook; both out pointers are valid; the bytes are
    // copied before the hook returns.
    let text =
        unsafe { abi::envoy_dynamic_module_callback_network_filter_get_remote_address(filter, &mut address, &mut port).then(|| address.to_vec()).flatten()? };
    std::str::from_utf8(&text).ok()?.parse().ok()
}

/// One HTTP stream on a worker.
pub struct StreamHost<'a> {
    pub filter: FilterEnvoyPtr,
    pub config: abi::ConfigEnvoyPtr,
    pub stats: &'a DefinedStats,
}

fn failed(call: &'static str) -> HostError {
    HostError { call, status: 0 }
}

impl StreamHost<'_> {
    fn headers(&self, header_type: u32) -> Result<Headers, HostError> {
        // SAFETY: `filter` is the stream's Envoy pointer, valid during the hook.
        let count = unsafe { abi::envoy_dynamic_module_callback_http_get_headers_size(self.filter, header_type) };
        let empty = EnvoyHeader { key_ptr: std::ptr::null(), key_length: 0, value_ptr: std::ptr::null(), value_length: 0 };
        // Requests rarely carry more headers than this: no allocation for the pointers then.
        let mut on_stack = [empty; 32];
        let mut on_heap = Vec::new();
        let raw: &mut [EnvoyHeader] = match on_stack.get_mut(..count) {
            Some(slots) => slots,
            None => {
                on_heap.resize(count, empty);
                &mut on_heap
            }
        };
        // SAFETY: `raw` holds exactly `count` entries, as Envoy was asked for.
        if count > 0 && !unsafe { abi::envoy_dynamic_module_callback_http_get_headers(self.filter, header_type, raw.as_mut_ptr()) } {
            return Err(failed("http_get_headers"));
        }
        let pairs = raw.iter().filter(|header| !header.key_ptr.is_null()).map(|header| {
            // SAFETY: Envoy filled each entry with pointers into its header map, valid during the hook.
            unsafe {
                let value = if header.value_ptr.is_null() { &[][..] } else { std::slice::from_raw_parts(header.value_ptr, header.value_length) };
                (std::slice::from_raw_parts(header.key_ptr, header.key_length), value)
            }
        });
        Ok(Headers::from_pairs_iter(pairs))
    }

    fn set_header(&self, header_type: u32, name: &str, value: Option<&[u8]>, call: &'static str) -> Result<(), HostError> {
        let value = value.map_or(ModuleBuffer::null(), ModuleBuffer::of);
        // SAFETY: both buffers outlive the call; `filter` is valid during the hook.
        match unsafe { abi::envoy_dynamic_module_callback_http_set_header(self.filter, header_type, ModuleBuffer::of(name.as_bytes()), value) } {
            true => Ok(()),
            false => Err(failed(call)),
        }
    }

    /// The settings of the route the request matched (defaults when it has none). Envoy is not
    /// asked when no route of the process has settings (the common case, a few hundred
    /// instructions per pinned request).
    fn route_settings(&self) -> RouteSettings {
        if !ROUTE_SETTINGS_IN_USE.load(std::sync::atomic::Ordering::Relaxed) {
            return RouteSettings::default();
        }
        // SAFETY: `filter` is valid during the hook; a non-null answer is a pointer this module's
        // `on_http_filter_per_route_config_new` returned, alive while the route is.
        let config = unsafe { abi::envoy_dynamic_module_callback_get_most_specific_route_config(self.filter) as *const RouteConfig };
        // SAFETY: as above; the tag is checked before the settings are trusted.
        match unsafe { config.as_ref() } {
            Some(route) if route.tag == ROUTE_CONFIG_TAG => route.settings,
            _ => RouteSettings::default(),
        }
    }

    fn string_attribute(&self, id: u32) -> Option<Vec<u8>> {
        let mut out = EnvoyBuffer::empty();
        // SAFETY: `out` is a valid out pointer; Envoy's bytes are copied before the hook returns.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(self.filter, id, &mut out).then(|| out.to_vec()).flatten() }
    }
}

impl Host for StreamHost<'_> {
    process_host!();

    /// The configuration's stats by name (Envoy refuses stats named after configuration time).
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<MetricId, HostError> {
        match self.stats.by_name.get(name) {
            Some(id) => Ok(*id),
            None => define(self.config, kind, name),
        }
    }

    /// `host_stats`: the labelled `HOST_PINNED`, with this host's label remembered by the worker.
    fn define_labelled_counter(&self, name: &str, family: &str, label: &str) -> Result<MetricId, HostError> {
        if family != HOST_PINNED || self.stats.host_pinned.is_none() {
            return self.define_metric(MetricKind::Counter, name);
        }
        HOST_LABELS.with(|labels| {
            let mut labels = labels.borrow_mut();
            let index = labels.iter().position(|l| l == label).unwrap_or_else(|| {
                labels.push(label.to_string());
                labels.len() - 1
            });
            u32::try_from(index).ok().filter(|i| *i < HOST_LABEL).map(|i| MetricId(HOST_LABEL | i)).ok_or(failed("define_metric (host label)"))
        })
    }

    fn increment_metric(&self, id: MetricId, delta: i64) {
        if id.0 & (GAUGE | HOST_LABEL) == HOST_LABEL {
            let value = delta.unsigned_abs();
            let Some(counter) = self.stats.host_pinned else { return };
            HOST_LABELS.with(|labels| {
                if let Some(label) = labels.borrow().get((id.0 & !HOST_LABEL) as usize) {
                    let mut values = [ModuleBuffer::of(label.as_bytes())];
                    // SAFETY: `filter` is valid during the hook; one label value, as defined.
                    unsafe { abi::envoy_dynamic_module_callback_http_filter_increment_counter(self.filter, counter, values.as_mut_ptr(), 1, value) };
                }
            });
            return;
        }
        let (how, index, value) = count_of(id, delta);
        let no_labels = std::ptr::null_mut();
        // SAFETY: `filter` is valid during the hook; no labels are passed.
        unsafe {
            match how {
                Count::Counter => abi::envoy_dynamic_module_callback_http_filter_increment_counter(self.filter, index, no_labels, 0, value),
                Count::GaugeUp => abi::envoy_dynamic_module_callback_http_filter_increment_gauge(self.filter, index, no_labels, 0, value),
                Count::GaugeDown => abi::envoy_dynamic_module_callback_http_filter_decrement_gauge(self.filter, index, no_labels, 0, value),
            };
        }
    }
}

/// Filter state key of the access-log record: `%FILTER_STATE(envoy_persistence.record:PLAIN)%`.
pub const RECORD_KEY: &str = "envoy_persistence.record";

impl HttpStream for StreamHost<'_> {
    fn request_headers(&mut self) -> Result<Headers, HostError> {
        self.headers(abi::REQUEST_HEADERS)
    }
    fn set_request_header(&mut self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.set_header(abi::REQUEST_HEADERS, name, Some(value), "http_set_header")
    }
    fn remove_request_header(&mut self, name: &str) -> Result<(), HostError> {
        self.set_header(abi::REQUEST_HEADERS, name, None, "http_set_header (remove)")
    }
    fn response_headers(&mut self) -> Result<Headers, HostError> {
        self.headers(abi::RESPONSE_HEADERS)
    }
    fn add_response_header(&mut self, name: &str, value: &[u8]) -> Result<(), HostError> {
        // SAFETY: both buffers outlive the call; `filter` is valid during the hook.
        match unsafe {
            abi::envoy_dynamic_module_callback_http_add_header(self.filter, abi::RESPONSE_HEADERS, ModuleBuffer::of(name.as_bytes()), ModuleBuffer::of(value))
        } {
            true => Ok(()),
            false => Err(failed("http_add_header")),
        }
    }
    fn set_response_header(&mut self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.set_header(abi::RESPONSE_HEADERS, name, Some(value), "http_set_header")
    }
    fn remove_response_header(&mut self, name: &str) -> Result<(), HostError> {
        self.set_header(abi::RESPONSE_HEADERS, name, None, "http_set_header (remove)")
    }

    fn attribute(&mut self, attribute: Attribute) -> Result<Option<Vec<u8>>, HostError> {
        Ok(match attribute {
            Attribute::SourceAddress => self.string_attribute(attribute::SOURCE_ADDRESS),
            Attribute::UpstreamAddress => self.string_attribute(attribute::UPSTREAM_ADDRESS),
            Attribute::RouteName => self.string_attribute(attribute::XDS_ROUTE_NAME),
            Attribute::ClusterName => self.string_attribute(attribute::XDS_CLUSTER_NAME),
            Attribute::TlsVersion => self.string_attribute(attribute::CONNECTION_TLS_VERSION),
            Attribute::PeerCertificateDigest => self.string_attribute(attribute::CONNECTION_SHA256_PEER_CERTIFICATE_DIGEST),
            Attribute::RouteProfile => {
                let mut out = EnvoyBuffer::empty();
                let (namespace, key) = (ModuleBuffer::of(b"persistence"), ModuleBuffer::of(b"profile"));
                // SAFETY: valid buffers and out pointer; the bytes are copied during the hook.
                unsafe {
                    abi::envoy_dynamic_module_callback_http_get_metadata_string(self.filter, abi::METADATA_ROUTE, namespace, key, &mut out)
                        .then(|| out.to_vec())
                        .flatten()
                }
            }
            Attribute::FilterState(key) => {
                let mut out = EnvoyBuffer::empty();
                // SAFETY: valid buffer and out pointer; the bytes are copied during the hook.
                unsafe {
                    abi::envoy_dynamic_module_callback_http_get_filter_state_bytes(self.filter, ModuleBuffer::of(key.as_bytes()), &mut out)
                        .then(|| out.to_vec())
                        .flatten()
                }
            }
        })
    }

    /// Envoy keeps the route it matched until told: match again with the headers as they are now.
    fn reroute(&mut self) -> Result<(), HostError> {
        // SAFETY: `filter` is valid during the hook.
        unsafe { abi::envoy_dynamic_module_callback_http_clear_route_cache(self.filter) };
        Ok(())
    }

    /// Envoy's own override: the host must be in the routed cluster and its health in the
    /// cluster's `override_host_status`, else Envoy load balances, or answers 503 on a route
    /// whose settings say `strict`.
    fn pin(&mut self, endpoint: &Endpoint, _override_header: &str) -> Result<(), HostError> {
        let mut text = String::with_capacity(48);
        crate::text::push_endpoint(&mut text, endpoint);
        let strict = self.route_settings().strict;
        // SAFETY: the buffer outlives the call; `filter` is valid during the hook.
        match unsafe { abi::envoy_dynamic_module_callback_http_set_upstream_override_host(self.filter, ModuleBuffer::of(text.as_bytes()), strict) } {
            true => Ok(()),
            false => Err(failed("http_set_upstream_override_host")),
        }
    }

    fn record(&mut self, text: &str) -> Result<(), HostError> {
        // SAFETY: both buffers outlive the call; `filter` is valid during the hook.
        match unsafe {
            abi::envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.filter,
                ModuleBuffer::of(RECORD_KEY.as_bytes()),
                ModuleBuffer::of(text.as_bytes()),
            )
        } {
            true => Ok(()),
            false => Err(failed("http_set_filter_state_bytes")),
        }
    }
}
