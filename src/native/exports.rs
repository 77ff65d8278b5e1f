//! The event hooks Envoy 1.40 resolves in the module (it rejects a module that lacks one of
//! them). Each is a thin adapter: it finds its objects, hands the event to `crate::flow`, and
//! catches any panic, since a panic here would take Envoy down with it.

use super::abi::{ConfigEnvoyPtr, FilterEnvoyPtr};
use super::envoy::{self, ConfigHost, DefinedStats, RouteConfig, StreamHost};
use super::ticker::{self, Ticker};
use crate::flow::Stream;
use crate::housekeeping;
use crate::plugin::Plugin;
use crate::route_settings::RouteSettings;
use std::cell::RefCell;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Runs `f`, turning a panic into `fallback` (logged). No panic may unwind into Envoy.
pub(super) fn guarded<T>(hook: &str, fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        log::error!("{hook}: internal error (a panic, caught): the request continues without persistence");
        fallback
    })
}

/// A filter configuration, created on the main thread and read by every worker. Workers build
/// their own `Plugin` from the same text (it is not thread-safe, like one Wasm VM per worker).
struct FilterConfig {
    role: Role,
    id: u64,
    envoy: ConfigEnvoyPtr,
    text: Vec<u8>,
    stats: DefinedStats,
    /// Profiles a worker has served a request with (housekeeping sweeps their tables).
    used: Vec<AtomicBool>,
    /// The housekeeping clock, for a configuration with tables.
    _ticker: Option<Ticker>,
}

/// What a filter of a configuration does: persistence, or (benchmark builds only, by filter
/// name) nothing at all (`bench_noop`), or the table benchmark's driver (`persistence_bench`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Persistence,
    Noop,
    TableDriver,
}

impl Role {
    fn of(filter_name: &[u8]) -> Role {
        match filter_name {
            b"bench_noop" if cfg!(feature = "bench") => Role::Noop,
            b"persistence_bench" if cfg!(feature = "bench") => Role::TableDriver,
            _ => Role::Persistence,
        }
    }
}

static NEXT_CONFIG: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This worker's plugin for each configuration it has served.
    static PLUGINS: RefCell<Vec<(u64, Rc<Plugin>)>> = const { RefCell::new(Vec::new()) };
    /// On the main thread: the plugin each configuration with tables sweeps them with.
    static HOUSEKEEPING: RefCell<Vec<(u64, Plugin)>> = const { RefCell::new(Vec::new()) };
}

/// One HTTP stream.
struct Filter {
    config: *const FilterConfig,
    /// None unless the role is persistence.
    stream: Option<Stream>,
    /// The table driver's answer, from the request to its response.
    answer: Option<String>,
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
        let role = Role::of(name);
        let text = if config_ptr.is_null() { Vec::new() } else { std::slice::from_raw_parts(config_ptr, config_length).to_vec() };
        let host = ConfigHost { config: config_envoy, defined: RefCell::new(DefinedStats::default()) };
        let id = NEXT_CONFIG.fetch_add(1, Ordering::Relaxed);
        let (mut used, mut ticker) = (Vec::new(), None);
        if role == Role::Persistence {
            let Some(plugin) = Plugin::configure(&text, &host) else { return std::ptr::null() };
            used = plugin.config.profiles.iter().map(|_| AtomicBool::new(false)).collect();
            if plugin.config.host_stats {
                match envoy::define_host_pinned(config_envoy) {
                    Ok(id) => host.defined.borrow_mut().host_pinned = Some(id),
                    Err(error) => log::warn!("host_stats: Envoy refused {} (status {}): hosts are not counted", crate::metrics::HOST_PINNED, error.status),
                }
            }
            if housekeeping::has_tables(&plugin) {
                ticker = Ticker::start(ticker::HTTP, config_envoy);
                HOUSEKEEPING.with(|plugins| plugins.borrow_mut().push((id, plugin)));
            }
        }
        let config = FilterConfig { role, id, envoy: config_envoy, text, stats: host.defined.into_inner(), used, _ticker: ticker };
        Box::into_raw(Box::new(config)) as *const c_void
    })
}

/// A housekeeping tick (`ticker`), on the main thread: sweeps the tables of the profiles any
/// worker has used.
///
/// # Safety
/// Envoy's configuration pointer and the pointer `envoy_dynamic_module_on_http_filter_config_new` returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(config_envoy: ConfigEnvoyPtr, config: *const c_void, event_id: u64) {
    guarded("http_filter_config_scheduled", (), || {
        let Some(config) = (config as *const FilterConfig).as_ref() else { return };
        if event_id != ticker::TICK {
            return;
        }
        let host = ConfigHost { config: config_envoy, defined: RefCell::new(DefinedStats::default()) };
        HOUSEKEEPING.with(|plugins| {
            let plugins = plugins.borrow();
            let Some((_, plugin)) = plugins.iter().find(|(id, _)| *id == config.id) else { return };
            for (index, used) in config.used.iter().enumerate() {
                if used.load(Ordering::Relaxed) {
                    plugin.note_use(index, &host);
                }
            }
            housekeeping::sweep(plugin, &host);
        });
    })
}

/// # Safety
/// `config` is a pointer `envoy_dynamic_module_on_http_filter_config_new` returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    guarded("http_filter_config_destroy", (), || {
        if !config.is_null() {
            let config = Box::from_raw(config as *mut FilterConfig);
            HOUSEKEEPING.with(|plugins| plugins.borrow_mut().retain(|(id, _)| *id != config.id));
        }
    })
}

/// A route's settings (`DynamicModuleFilterPerRoute`'s `filter_config`, JSON such as
/// `{"strict": true}`). Null rejects the route configuration, after each error is logged.
///
/// # Safety
/// Envoy passes two valid buffers.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name_ptr: *const u8,
    _name_length: usize,
    config_ptr: *const u8,
    config_length: usize,
) -> *const c_void {
    guarded("http_filter_per_route_config_new", std::ptr::null(), || {
        let text = if config_ptr.is_null() { &[][..] } else { std::slice::from_raw_parts(config_ptr, config_length) };
        match RouteSettings::parse(text) {
            Ok(settings) => Box::into_raw(Box::new(RouteConfig::new(settings))) as *const c_void,
            Err(errors) => {
                for error in errors {
                    log::error!("per-route configuration: {error}");
                }
                std::ptr::null()
            }
        }
    })
}

/// # Safety
/// `config` is a pointer `envoy_dynamic_module_on_http_filter_per_route_config_new` returned.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(config: *const c_void) {
    guarded("http_filter_per_route_config_destroy", (), || {
        if !config.is_null() {
            drop(Box::from_raw(config as *mut RouteConfig));
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
        let stream = (config_ref.role == Role::Persistence).then(|| Stream::new(plugin_for(config_ref, filter)));
        Box::into_raw(Box::new(Filter { config, stream, answer: None })) as *mut c_void
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

/// Runs `event` on the stream's flow with a host for this hook (the table driver's step, in its role).
unsafe fn on_stream(hook: &str, envoy: FilterEnvoyPtr, filter: *mut c_void, event: fn(&mut Stream, &mut StreamHost)) -> u32 {
    guarded(hook, CONTINUE, || {
        let Some(filter) = (filter as *mut Filter).as_mut() else { return CONTINUE };
        let Some(config) = filter.config.as_ref() else { return CONTINUE };
        let mut host = StreamHost { filter: envoy, config: config.envoy, stats: &config.stats };
        match (config.role, filter.stream.as_mut()) {
            (Role::Persistence, Some(stream)) => {
                event(stream, &mut host);
                note_use(config, stream);
            }
            (Role::TableDriver, _) => drive_table(&mut host, &mut filter.answer),
            _ => {}
        }
        CONTINUE
    })
}

/// Tells housekeeping (main thread) which profiles this worker's plugin has served.
fn note_use(config: &FilterConfig, stream: &Stream) {
    let Some(plugin) = stream.plugin() else { return };
    for (shared, used) in config.used.iter().zip(&plugin.state.used) {
        if used.get() && !shared.load(Ordering::Relaxed) {
            shared.store(true, Ordering::Relaxed);
        }
    }
}

/// The table benchmark: the request runs the step its path names, the response carries the
/// answer in `x-bench-answer` (the route answers directly).
#[cfg(feature = "bench")]
fn drive_table(host: &mut StreamHost, answer: &mut Option<String>) {
    use crate::host::{Host, HttpStream};
    match answer.take() {
        None => {
            let path = host.request_headers().ok().and_then(|headers| headers.first(":path").map(|p| String::from_utf8_lossy(p).into_owned()));
            *answer = Some(crate::table_bench::answer(&path.unwrap_or_default(), host.store(), host.now() as u32));
        }
        Some(text) => {
            let _ = host.add_response_header("x-bench-answer", text.as_bytes());
        }
    }
}

#[cfg(not(feature = "bench"))]
fn drive_table(_: &mut StreamHost, _: &mut Option<String>) {}

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
