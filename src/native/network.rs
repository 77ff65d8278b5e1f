//! The connection-counting network filter of the native build (`envoy.filters.network.dynamic_modules`,
//! `filter_name: persistence_connections`, no configuration), ahead of the HTTP connection manager:
//! `crate::connections::ConnectionCounter` counts each client's open connections in the process's
//! store, where client IP entries look them up (Avi's "timeout starts when all connections from
//! that IP are closed"). The same role as the Wasm build's network filter; a housekeeping tick
//! drops records that keep nothing alive. Envoy 1.40 requires every hook here.

use super::abi::{ConfigEnvoyPtr, FilterEnvoyPtr};
use super::envoy::{self, NetworkHost};
use super::exports::guarded;
use super::ticker::{self, Ticker};
use crate::connections::{ConnectionCounter, Counted};
use crate::housekeeping::BUCKETS_PER_TICK;
use std::ffi::c_void;

/// The filter name this role answers to.
const FILTER_NAME: &[u8] = b"persistence_connections";

/// A network filter configuration: the counter every connection of its listener uses.
struct NetworkConfig {
    envoy: ConfigEnvoyPtr,
    counter: ConnectionCounter,
    _ticker: Option<Ticker>,
}

/// One connection: where it was counted.
struct ConnectionFilter {
    config: *const NetworkConfig,
    counted: Option<Counted>,
}

/// `..._on_network_filter_data_status_Continue`.
const CONTINUE: u32 = 0;

/// # Safety
/// Envoy passes its configuration pointer and two valid buffers.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_config_new(
    config_envoy: ConfigEnvoyPtr,
    name_ptr: *const u8,
    name_length: usize,
    _config_ptr: *const u8,
    config_length: usize,
) -> *const c_void {
    guarded("network_filter_config_new", std::ptr::null(), || {
        super::adopt_envoy_log_level();
        let name = if name_ptr.is_null() { &[][..] } else { std::slice::from_raw_parts(name_ptr, name_length) };
        if name != FILTER_NAME {
            log::error!("network filter {:?}: this module's network filter is persistence_connections", String::from_utf8_lossy(name));
            return std::ptr::null();
        }
        if config_length > 0 {
            log::info!("persistence_connections: counts client connections for client IP persistence; it takes no configuration (ignored)");
        }
        let counter = ConnectionCounter::new(&NetworkHost { config: config_envoy });
        let config = NetworkConfig { envoy: config_envoy, counter, _ticker: Ticker::start(ticker::NETWORK, config_envoy) };
        Box::into_raw(Box::new(config)) as *const c_void
    })
}

/// # Safety
/// `config` is a pointer `envoy_dynamic_module_on_network_filter_config_new` returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_config_destroy(config: *const c_void) {
    guarded("network_filter_config_destroy", (), || {
        if !config.is_null() {
            drop(Box::from_raw(config as *mut NetworkConfig));
        }
    })
}

/// Housekeeping (main thread): drops connection records that keep nothing alive. (Unlike the
/// HTTP filter's, this hook gets no Envoy pointer: the configuration keeps its own.)
///
/// # Safety
/// `config` is a pointer `envoy_dynamic_module_on_network_filter_config_new` returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_config_scheduled(config: *const c_void, event_id: u64) {
    guarded("network_filter_config_scheduled", (), || {
        let Some(config) = (config as *const NetworkConfig).as_ref() else { return };
        if event_id == ticker::TICK {
            config.counter.sweep(&NetworkHost { config: config.envoy }, BUCKETS_PER_TICK);
        }
    })
}

/// # Safety
/// `config` is a pointer `envoy_dynamic_module_on_network_filter_config_new` returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_new(config: *const c_void, _filter: FilterEnvoyPtr) -> *const c_void {
    guarded("network_filter_new", std::ptr::null(), || {
        if config.is_null() {
            return std::ptr::null();
        }
        Box::into_raw(Box::new(ConnectionFilter { config: config as *const NetworkConfig, counted: None })) as *const c_void
    })
}

/// A connection opened: counted under the client's IP (a connection without one is not).
///
/// # Safety
/// Envoy's connection pointer and the pointer `envoy_dynamic_module_on_network_filter_new` returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_new_connection(envoy: FilterEnvoyPtr, filter: *mut c_void) -> u32 {
    guarded("network_filter_new_connection", CONTINUE, || {
        let Some(filter) = (filter as *mut ConnectionFilter).as_mut() else { return CONTINUE };
        let Some(config) = filter.config.as_ref() else { return CONTINUE };
        if let Some(ip) = envoy::remote_ip(envoy) {
            filter.counted = Some(config.counter.opened(&NetworkHost { config: config.envoy }, ip));
        }
        CONTINUE
    })
}

/// The connection is gone (Envoy destroys its filters then): no longer counted.
///
/// # Safety
/// `filter` is a pointer `envoy_dynamic_module_on_network_filter_new` returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_network_filter_destroy(filter: *mut c_void) {
    guarded("network_filter_destroy", (), || {
        if filter.is_null() {
            return;
        }
        let filter = Box::from_raw(filter as *mut ConnectionFilter);
        if let (Some(config), Some(counted)) = (filter.config.as_ref(), filter.counted) {
            config.counter.closed(&NetworkHost { config: config.envoy }, counted);
        }
    })
}

// The hooks this role has nothing to do in: data passes through untouched.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_read(_envoy: FilterEnvoyPtr, _filter: *mut c_void, _length: usize, _end_of_stream: bool) -> u32 {
    CONTINUE
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_write(_envoy: FilterEnvoyPtr, _filter: *mut c_void, _length: usize, _end_of_stream: bool) -> u32 {
    CONTINUE
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_event(_envoy: FilterEnvoyPtr, _filter: *mut c_void, _event: u32) {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_http_callout_done() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_scheduled() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_above_write_buffer_high_watermark() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_below_write_buffer_low_watermark() {}
