//! The proxy-wasm host calls this filter uses, returning every status to the caller.
//!
//! The SDK's `hostcalls` panic on statuses they do not expect (and `get_map_value` panics on
//! non-UTF-8 header bytes); a panic kills the VM for every request on the worker. These wrappers
//! never panic: whatever Envoy answers becomes an `Err(status)` the caller handles.
//!
//! `take` relies on how the SDK allocates the buffers Envoy returns (its exported
//! `proxy_on_memory_allocate` makes a buffer of exactly the size asked): Cargo.toml pins the SDK
//! version, so an upgrade gets a deliberate re-read of `take`.

use std::ptr::{null, null_mut};

/// A proxy-wasm status code other than Ok.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(pub u32);

pub const OK: u32 = 0;
pub const NOT_FOUND: u32 = 1;
pub const CAS_MISMATCH: u32 = 8;

#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Map {
    RequestHeaders = 0,
    ResponseHeaders = 2,
}

#[derive(Clone, Copy)]
#[repr(u32)]
pub enum MetricKind {
    Counter = 0,
    Gauge = 1,
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    #[cfg(feature = "bench")]
    fn proxy_get_header_map_value(map: u32, key: *const u8, key_size: usize, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_replace_header_map_value(map: u32, key: *const u8, key_size: usize, value: *const u8, value_size: usize) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_add_header_map_value(map: u32, key: *const u8, key_size: usize, value: *const u8, value_size: usize) -> u32;
    fn proxy_get_property(path: *const u8, path_size: usize, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_set_property(path: *const u8, path_size: usize, value: *const u8, value_size: usize) -> u32;
    fn proxy_get_shared_data(key: *const u8, key_size: usize, data: *mut *mut u8, size: *mut usize, cas: *mut u32) -> u32;
    fn proxy_set_shared_data(key: *const u8, key_size: usize, value: *const u8, value_size: usize, cas: u32) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_get_current_time_nanoseconds(nanos: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(buffer: u32, start: usize, max_size: usize, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_get_log_level(level: *mut u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    #[cfg(feature = "bench")]
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
}

/// Answers the request from the filter (benchmark driver only).
#[cfg(feature = "bench")]
pub fn send_response(status: u32, body: &str) -> Result<(), Status> {
    let headers = 0u32.to_le_bytes();
    // SAFETY: pointers and lengths of live slices; an empty header map is a zero count.
    check(unsafe { proxy_send_local_response(status, [].as_ptr(), 0, body.as_ptr(), body.len(), headers.as_ptr(), headers.len(), -1) })
}

pub fn set_tick_period(period: std::time::Duration) -> Result<(), Status> {
    let millis = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: plain value.
    check(unsafe { proxy_set_tick_period_milliseconds(millis) })
}

const PLUGIN_CONFIGURATION: u32 = 7;

/// The plugin's `configuration` bytes.
pub fn plugin_configuration(size: usize) -> Result<Vec<u8>, Status> {
    let mut data = null_mut();
    let mut size_out = 0;
    // SAFETY: as in `header_values`.
    unsafe {
        match proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, size, &mut data, &mut size_out) {
            OK => Ok(take(data, size_out)),
            NOT_FOUND => Ok(Vec::new()),
            status => Err(Status(status)),
        }
    }
}

/// Envoy's level for wasm logs (0 trace .. 5 critical, 6 off), so disabled levels cost nothing.
pub fn log_level() -> Option<u32> {
    let mut level = 0;
    // SAFETY: `level` is a valid out-pointer.
    (unsafe { proxy_get_log_level(&mut level) } == OK).then_some(level)
}

fn check(status: u32) -> Result<(), Status> {
    if status == OK {
        Ok(())
    } else {
        Err(Status(status))
    }
}

/// Takes ownership of a buffer the host allocated through the SDK's `proxy_on_memory_allocate`.
///
/// # Safety
/// `data`/`size` must come from a host call that just returned Ok.
unsafe fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        // SAFETY: the SDK's allocator made this buffer with exactly `size` bytes for us to own.
        unsafe { Vec::from_raw_parts(data, size, size) }
    }
}

/// Every header of `map`, serialized (see `crate::header_pairs`), with one host call.
pub fn header_pairs(map: Map) -> Result<Vec<u8>, Status> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: out-pointers are valid locals; the buffer is taken only on Ok.
    unsafe {
        check(proxy_get_header_map_pairs(map as u32, &mut data, &mut size))?;
        Ok(take(data, size))
    }
}

/// The first value of header `name`, None when absent (the benchmark floor's single read).
#[cfg(feature = "bench")]
pub fn header(map: Map, name: &str) -> Result<Option<Vec<u8>>, Status> {
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: as in `header_values`.
    unsafe {
        match proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size) {
            OK => Ok(Some(take(data, size))),
            NOT_FOUND => Ok(None),
            status => Err(Status(status)),
        }
    }
}

pub fn replace_header(map: Map, name: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointers and lengths of live slices.
    check(unsafe { proxy_replace_header_map_value(map as u32, name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
}

pub fn add_header(map: Map, name: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointers and lengths of live slices.
    check(unsafe { proxy_add_header_map_value(map as u32, name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
}

pub fn remove_header(map: Map, name: &str) -> Result<(), Status> {
    // SAFETY: pointer and length of a live slice.
    check(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
}

/// Property paths are their segments joined by NUL bytes.
fn property_path(path: &[&str]) -> Vec<u8> {
    path.join("\0").into_bytes()
}

/// A property's bytes; None when Envoy does not have it here.
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    let path = property_path(path);
    let mut data = null_mut();
    let mut size = 0;
    // SAFETY: as in `header_values`.
    unsafe {
        match proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) {
            OK if data.is_null() => Ok(None),
            OK => Ok(Some(take(data, size))),
            NOT_FOUND => Ok(None),
            status => Err(Status(status)),
        }
    }
}

pub fn set_property(path: &[&str], value: &[u8]) -> Result<(), Status> {
    let path = property_path(path);
    // SAFETY: pointers and lengths of live slices.
    check(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

/// A shared-data value and its CAS token; None when the key was never written.
pub fn shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, Status> {
    let mut data = null_mut();
    let mut size = 0;
    let mut cas = 0;
    // SAFETY: as in `header_values`.
    unsafe {
        match proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) {
            OK => Ok(Some((take(data, size), cas))),
            NOT_FOUND => Ok(None),
            status => Err(Status(status)),
        }
    }
}

/// Writes shared data. `cas` 0 writes unconditionally; otherwise a concurrent write since that CAS
/// token makes this fail with `CAS_MISMATCH`.
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    let value_ptr = if value.is_empty() { null() } else { value.as_ptr() };
    // SAFETY: pointers and lengths of live slices (or null with length 0).
    check(unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value_ptr, value.len(), cas) })
}

pub fn define_metric(kind: MetricKind, name: &str) -> Result<u32, Status> {
    let mut id = 0;
    // SAFETY: pointer and length of a live slice; `id` is a valid out-pointer.
    check(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, offset: i64) -> Result<(), Status> {
    // SAFETY: plain values.
    check(unsafe { proxy_increment_metric(id, offset) })
}

/// Wall-clock time, unix seconds (Envoy's clock; WASI's if Envoy ever refuses).
pub fn now_seconds() -> u64 {
    let mut nanos = 0u64;
    // SAFETY: `nanos` is a valid out-pointer.
    match unsafe { proxy_get_current_time_nanoseconds(&mut nanos) } {
        OK => nanos / 1_000_000_000,
        _ => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    }
}
