//! The native host: the same filter as an Envoy dynamic module (`libenvoy_persistence.so`, built
//! by `make build-native`), for Envoy 1.40's `envoy.filters.http.dynamic_modules`. The module's
//! own minimal FFI (`abi`), the host interface on it (`envoy`), and the hooks Envoy calls
//! (`exports`). It pins with Envoy's `set_upstream_override_host`: no stateful_session filter and
//! no override header. Nothing here decides anything.

mod abi;
mod envoy;
mod exports;
mod network;
mod ticker;

/// The ABI version this module was written for (Envoy 1.40), NUL-terminated for Envoy.
const ABI_VERSION: &[u8] = b"v0.2.0\0";

/// Log lines go to Envoy's `dynamic_modules` log component.
struct EnvoyLogger;

impl log::Log for EnvoyLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => abi::level::ERROR,
            log::Level::Warn => abi::level::WARN,
            log::Level::Info => abi::level::INFO,
            log::Level::Debug => abi::level::DEBUG,
            log::Level::Trace => abi::level::TRACE,
        };
        let message = format!("envoy_persistence: {}", record.args());
        // SAFETY: the buffer outlives the call.
        unsafe { abi::envoy_dynamic_module_callback_log(level, abi::ModuleBuffer::of(message.as_bytes())) }
    }

    fn flush(&self) {}
}

static LOGGER: EnvoyLogger = EnvoyLogger;

fn install_logger() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// Follows the level of Envoy's `dynamic_modules` component, so disabled levels cost nothing.
fn adopt_envoy_log_level() {
    let enabled = |level| unsafe { abi::envoy_dynamic_module_callback_log_enabled(level) };
    let filter = if enabled(abi::level::TRACE) {
        log::LevelFilter::Trace
    } else if enabled(abi::level::DEBUG) {
        log::LevelFilter::Debug
    } else if enabled(abi::level::INFO) {
        log::LevelFilter::Info
    } else if enabled(abi::level::WARN) {
        log::LevelFilter::Warn
    } else {
        log::LevelFilter::Error
    };
    log::set_max_level(filter);
}
