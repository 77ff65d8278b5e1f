//! The only code that talks to Envoy. Reads what the pure modules need, applies what they decide,
//! and handles every host error (a failed host call means "no persistence for this request",
//! counted, never a panic).

#[cfg(feature = "bench")]
mod bench;
mod ffi;
mod http;
mod metrics;
mod root;
mod store;
mod stream;

use proxy_wasm::types::LogLevel;

/// Times `f` as span `name` in benchmark builds; nothing at all otherwise.
#[cfg(feature = "bench")]
pub use bench::spans::span;

#[cfg(not(feature = "bench"))]
#[inline(always)]
pub fn span<T>(_name: &'static str, f: impl FnOnce() -> T) -> T {
    f()
}

pub fn start() {
    // Host calls are not allowed yet here (Envoy: "restricted_callback"); the log level is taken
    // from Envoy in `on_configure`.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(root::Root::default()));
}

/// Follows Envoy's level for the `wasm` log component, so disabled levels cost nothing.
pub fn adopt_envoy_log_level() {
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
