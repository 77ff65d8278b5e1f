//! envoy-persistence: the persistence profiles of a commercial load balancer (Avi Vantage) as a
//! proxy-wasm HTTP filter for Envoy.
//!
//! The filter decides which upstream host a request sticks to and tells Envoy through the header
//! that Envoy's `stateful_session` filter (header mode) reads; Envoy keeps doing load balancing,
//! health checks and TLS. Everything except `host` is pure code, tested natively.
//!
//! - `config`: the plugin configuration, validated with errors that name the field
//! - `profile`: the persistence types (`http_cookie`, ...) and what each decides
//! - `token`, `keyring`: sealed cookie tokens (AES-256-GCM) and the keys that seal them
//! - `cookie`, `endpoint`: Cookie / Set-Cookie headers, `ip:port` endpoints
//! - `metrics`: stat names; `report`: the per-request record; `text`: hot-path formatting
//! - `host`: the only code that talks to Envoy (proxy-wasm)

pub mod client_address;
pub mod config;
pub mod cookie;
pub mod endpoint;
pub mod header_pairs;
pub mod keyring;
pub mod metrics;
pub mod profile;
pub mod report;
pub mod table;
pub mod text;
pub mod token;

#[cfg(target_arch = "wasm32")]
mod host;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    host::start();
}}
