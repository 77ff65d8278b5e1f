//! The part of Envoy 1.40's dynamic-module ABI (v0.2.0) this module uses, declared by hand: the
//! Rust SDK is not on crates.io. Types are C's: buffers are `{pointer, length}` pairs, enums are
//! C `int`s. Every callback here is exported by the PyPI Envoy 1.40 binary (`make test` loads the
//! module into it, so a missing or renamed one fails at load, not at request time).

use std::ffi::c_void;

/// Bytes owned by the module, lent to Envoy for the duration of a call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl ModuleBuffer {
    pub fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer { ptr: bytes.as_ptr(), length: bytes.len() }
    }

    /// A null buffer: `set_header` removes the header.
    pub fn null() -> ModuleBuffer {
        ModuleBuffer { ptr: std::ptr::null(), length: 0 }
    }
}

/// Bytes owned by Envoy, valid until the hook that asked for them returns.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl EnvoyBuffer {
    pub fn empty() -> EnvoyBuffer {
        EnvoyBuffer { ptr: std::ptr::null(), length: 0 }
    }

    /// A copy of the bytes (None for a null pointer).
    ///
    /// # Safety
    /// Envoy filled this buffer in the current hook, so `ptr` points at `length` readable bytes.
    pub unsafe fn to_vec(self) -> Option<Vec<u8>> {
        if self.ptr.is_null() {
            return None;
        }
        Some(std::slice::from_raw_parts(self.ptr, self.length).to_vec())
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

pub type ConfigEnvoyPtr = *mut c_void;
pub type FilterEnvoyPtr = *mut c_void;

/// `envoy_dynamic_module_type_http_header_type`.
pub const REQUEST_HEADERS: u32 = 0;
pub const RESPONSE_HEADERS: u32 = 2;

/// `envoy_dynamic_module_type_metadata_source_Route`.
pub const METADATA_ROUTE: u32 = 1;

/// `envoy_dynamic_module_type_attribute_id` values (checked against 1.40 in tests/native.rs).
pub mod attribute {
    pub const SOURCE_ADDRESS: u32 = 24;
    pub const CONNECTION_TLS_VERSION: u32 = 31;
    pub const CONNECTION_SHA256_PEER_CERTIFICATE_DIGEST: u32 = 38;
    pub const UPSTREAM_ADDRESS: u32 = 41;
    pub const XDS_CLUSTER_NAME: u32 = 57;
    pub const XDS_ROUTE_NAME: u32 = 61;
}

/// `envoy_dynamic_module_type_log_level`.
pub mod level {
    pub const TRACE: u32 = 0;
    pub const DEBUG: u32 = 1;
    pub const INFO: u32 = 2;
    pub const WARN: u32 = 3;
    pub const ERROR: u32 = 4;
}

/// `envoy_dynamic_module_type_metrics_result_Success`.
pub const METRICS_SUCCESS: u32 = 0;

extern "C" {
    pub fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);
    pub fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool;

    pub fn envoy_dynamic_module_callback_http_get_headers_size(filter: FilterEnvoyPtr, header_type: u32) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_headers(filter: FilterEnvoyPtr, header_type: u32, result: *mut EnvoyHeader) -> bool;
    pub fn envoy_dynamic_module_callback_http_set_header(filter: FilterEnvoyPtr, header_type: u32, key: ModuleBuffer, value: ModuleBuffer) -> bool;
    pub fn envoy_dynamic_module_callback_http_add_header(filter: FilterEnvoyPtr, header_type: u32, key: ModuleBuffer, value: ModuleBuffer) -> bool;

    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(filter: FilterEnvoyPtr, attribute: u32, result: *mut EnvoyBuffer) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_metadata_string(
        filter: FilterEnvoyPtr,
        source: u32,
        namespace: ModuleBuffer,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_filter_state_bytes(filter: FilterEnvoyPtr, key: ModuleBuffer, result: *mut EnvoyBuffer) -> bool;
    pub fn envoy_dynamic_module_callback_http_set_filter_state_bytes(filter: FilterEnvoyPtr, key: ModuleBuffer, value: ModuleBuffer) -> bool;

    pub fn envoy_dynamic_module_callback_http_clear_route_cache(filter: FilterEnvoyPtr);

    /// The per-route configuration (`on_http_filter_per_route_config_new`'s pointer) of the
    /// route the request matched, or null.
    pub fn envoy_dynamic_module_callback_get_most_specific_route_config(filter: FilterEnvoyPtr) -> *const c_void;

    pub fn envoy_dynamic_module_callback_http_set_upstream_override_host(filter: FilterEnvoyPtr, host: ModuleBuffer, strict: bool) -> bool;

    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_gauge(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_decrement_gauge(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;

    /// A scheduler that runs `on_http_filter_config_scheduled` on the main thread for each event
    /// committed (from any thread); events committed after its configuration is gone are dropped.
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(config: ConfigEnvoyPtr) -> *mut c_void;
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(scheduler: *mut c_void, event_id: u64);
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: *mut c_void);

    pub fn envoy_dynamic_module_callback_network_filter_config_scheduler_new(config: ConfigEnvoyPtr) -> *mut c_void;
    pub fn envoy_dynamic_module_callback_network_filter_config_scheduler_commit(scheduler: *mut c_void, event_id: u64);
    pub fn envoy_dynamic_module_callback_network_filter_config_scheduler_delete(scheduler: *mut c_void);

    /// The connection's remote address, the IP alone (false for a pipe and the like).
    pub fn envoy_dynamic_module_callback_network_filter_get_remote_address(filter: FilterEnvoyPtr, address: *mut EnvoyBuffer, port: *mut u32) -> bool;
    // The network filter's stats take no labels.
    pub fn envoy_dynamic_module_callback_network_filter_config_define_counter(config: ConfigEnvoyPtr, name: ModuleBuffer, id: *mut usize) -> u32;
    pub fn envoy_dynamic_module_callback_network_filter_config_define_gauge(config: ConfigEnvoyPtr, name: ModuleBuffer, id: *mut usize) -> u32;
    pub fn envoy_dynamic_module_callback_network_filter_config_increment_counter(config: ConfigEnvoyPtr, id: usize, value: u64) -> u32;
    pub fn envoy_dynamic_module_callback_network_filter_config_increment_gauge(config: ConfigEnvoyPtr, id: usize, value: u64) -> u32;
    pub fn envoy_dynamic_module_callback_network_filter_config_decrement_gauge(config: ConfigEnvoyPtr, id: usize, value: u64) -> u32;

    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_increment_gauge(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_decrement_gauge(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
}
