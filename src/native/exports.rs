//! The event hooks Envoy 1.40 resolves in the module (it rejects a module that lacks one of
//! them). Each is a thin adapter: it finds its objects, hands the event to `crate::flow`, and
//! catches any panic, since a panic here would take Envoy down with it.

use super::abi::{ConfigEnvoyPtr, FilterEnvoyPtr};
use super::envoy::{ConfigHost, DefinedStats, StreamHost};
use crate::flow::Stream;
use crate::plugin::Plugin;
use std::cell::RefCell;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Runs `f`, turning a panic into `fallback` (logged). No panic may unwind into Envoy.
fn guarded<T>(hook: &str, fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        log::error!("{hook}: internal error (a panic, caught): the request continues without persistence");
        fallback
    })
}

/// A filter configuration, created on the main thread and read by every worker. Workers build
/// their own `Plugin` from the same text (it is not thread-safe, like one Wasm VM per worker).
struct FilterConfig {
    /// Benchmark builds: filter name `bench_noop` makes a filter that does nothing at all.
    noop: bool,
    id: u64,
    envoy: ConfigEnvoyPtr,
    text: Vec<u8>,
    stats: DefinedStats,
}

static NEXT_CONFIG: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This worker's plugin for each configuration it has served.
    static PLUGINS: RefCell<Vec<(u64, Rc<Plugin>)>> = const { RefCell::new(Vec::new()) };
}

/// One HTTP stream.
struct Filter {
    config: *const FilterConfig,
    /// None for a `bench_noop` filter.
    stream: Option<Stream>,
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const u8 {
    guarded("program_init", std::ptr::null(), || {
        super::install_logger();
        super::ABI_VERSION.as_ptr()
    })
}

/// The plugin configuration is the filter_config StringValue: the same JSON as the Wasm build.
/// Null rejects the configuration (Envoy logs that; the errors are logged here first).
///
/// # Safety
/// Envoy passes its configuration pointer and two valid buffers.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: ConfigEnvoyPtr,
    name_ptr: *const u8,
    name_length: usize,
    config_ptr: *const u8,
    config_length: usize,
) -> *const c_void {
    guarded("http_filter_config_new", std::ptr::null(), || {
        super::adopt_envoy_log_level();
        let name = if name_ptr.is_null() { &[][..] } else { std::slice::from_raw_parts(name_ptr, name_length) };
        let noop = cfg!(feature = "bench") && name == b"bench_noop";
        let text = if config_ptr.is_null() { Vec::new() } else { std::slice::from_raw_parts(config_ptr, config_length).to_vec() };
        let host = ConfigHost { config: config_envoy, defined: RefCell::new(DefinedStats::default()) };
        if !noop && Plugin::configure(&text, &host).is_none() {
            return std::ptr::null();
        }
        let config = FilterConfig { noop, id: NEXT_CONFIG.fetch_add(1, Ordering::Relaxed), envoy: config_envoy, text, stats: host.defined.into_inner() };
        Box::into_raw(Box::new(config)) as *const c_void
    })
}

/// # Safety
/// `config` is a pointer `envoy_dynamic_module_on_http_filter_config_new` returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    guarded("http_filter_config_destroy", (), || {
        if !config.is_null() {
            drop(Box::from_raw(config as *mut FilterConfig));
        }
    })
}

/// This worker's plugin for `config`, built on first use.
fn plugin_for(config: &FilterConfig, filter: FilterEnvoyPtr) -> Option<Rc<Plugin>> {
    PLUGINS.with(|plugins| {
        let mut plugins = plugins.borrow_mut();
        if let Some((_, plugin)) = plugins.iter().find(|(id, _)| *id == config.id) {
            return Some(plugin.clone());
        }
        let host = StreamHost { filter, config: config.envoy, stats: &config.stats };
        let plugin = Rc::new(Plugin::configure(&config.text, &host)?);
        plugins.push((config.id, plugin.clone()));
        Some(plugin)
    })
}

/// # Safety
/// `config` is a pointer `envoy_dynamic_module_on_http_filter_config_new` returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(config: *const c_void, filter: FilterEnvoyPtr) -> *mut c_void {
    guarded("http_filter_new", std::ptr::null_mut(), || {
        let config = config as *const FilterConfig;
        let Some(config_ref) = config.as_ref() else { return std::ptr::null_mut() };
        let stream = (!config_ref.noop).then(|| Stream::new(plugin_for(config_ref, filter)));
        Box::into_raw(Box::new(Filter { config, stream })) as *mut c_void
    })
}

/// # Safety
/// `filter` is a pointer `envoy_dynamic_module_on_http_filter_new` returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: *mut c_void) {
    guarded("http_filter_destroy", (), || {
        if !filter.is_null() {
            drop(Box::from_raw(filter as *mut Filter));
        }
    })
}

/// Runs `event` on the stream's flow with a host for this hook.
unsafe fn on_stream(hook: &str, envoy: FilterEnvoyPtr, filter: *mut c_void, event: fn(&mut Stream, &mut StreamHost)) -> u32 {
    guarded(hook, CONTINUE, || {
        let Some(filter) = (filter as *mut Filter).as_mut() else { return CONTINUE };
        let Some(config) = filter.config.as_ref() else { return CONTINUE };
        let Some(stream) = filter.stream.as_mut() else { return CONTINUE };
        let mut host = StreamHost { filter: envoy, config: config.envoy, stats: &config.stats };
        event(stream, &mut host);
        CONTINUE
    })
}

/// `..._status_Continue` of every status enum.
const CONTINUE: u32 = 0;

/// # Safety
/// Envoy's stream pointer and the pointer `envoy_dynamic_module_on_http_filter_new` returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(envoy: FilterEnvoyPtr, filter: *mut c_void, _end_of_stream: bool) -> u32 {
    on_stream("request_headers", envoy, filter, |stream, host| stream.on_request_headers(host))
}

/// # Safety
/// Envoy's stream pointer and the pointer `envoy_dynamic_module_on_http_filter_new` returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(envoy: FilterEnvoyPtr, filter: *mut c_void, _end_of_stream: bool) -> u32 {
    on_stream("response_headers", envoy, filter, |stream, host| stream.on_response_headers(host))
}

// The hooks this filter has nothing to do in: Envoy requires them all. Bodies and trailers pass
// through; the module starts no callouts, streams or schedules, so those are never called.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(_envoy: FilterEnvoyPtr, _filter: *mut c_void, _end_of_stream: bool) -> u32 {
    CONTINUE
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(_envoy: FilterEnvoyPtr, _filter: *mut c_void) -> u32 {
    CONTINUE
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(_envoy: FilterEnvoyPtr, _filter: *mut c_void, _end_of_stream: bool) -> u32 {
    CONTINUE
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(_envoy: FilterEnvoyPtr, _filter: *mut c_void) -> u32 {
    CONTINUE
}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(_envoy: FilterEnvoyPtr, _filter: *mut c_void) {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark() {}
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark() {}
