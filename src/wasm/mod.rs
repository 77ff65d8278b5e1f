//! The proxy-wasm host: the only code that names proxy_wasm. FFI (`ffi`), the host interface on
//! Envoy's Wasm ABI (`envoy`), and the SDK contexts that hand each callback to the pure code
//! (`contexts`). Nothing here decides anything.

#[cfg(feature = "bench")]
mod bench;
mod contexts;
mod envoy;
mod ffi;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    // Host calls are not allowed yet here (Envoy: "restricted_callback"); the log level is taken
    // from Envoy in `on_configure`.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(contexts::Root::default()));
}}

/// Times `f` as span `name` in benchmark builds; nothing at all otherwise.
#[cfg(feature = "bench")]
use bench::spans::span;

#[cfg(not(feature = "bench"))]
#[inline(always)]
fn span<T>(_name: &'static str, f: impl FnOnce() -> T) -> T {
    f()
}

/// Follows Envoy's level for the `wasm` log component, so disabled levels cost nothing.
fn adopt_envoy_log_level() {
    let level = match ffi::log_level() {
        Some(0) => LogLevel::Trace,
        Some(1) => LogLevel::Debug,
        Some(2) | None => LogLevel::Info,
        Some(3) => LogLevel::Warn,
        Some(4) => LogLevel::Error,
        Some(_) => LogLevel::Critical,
    };
    proxy_wasm::set_log_level(level);
}
