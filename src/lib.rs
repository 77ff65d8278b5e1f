//! envoy-persistence: the persistence profiles of a commercial load balancer (Avi Vantage) as a
//! filter for Envoy. The filter decides which upstream host a request sticks to; Envoy keeps doing
//! load balancing, health checks and TLS.
//!
//! Everything but `wasm` is plain Rust, written against the host interface (`host`) and tested
//! natively. From the bottom up:
//!
//! - leaves: `endpoint`, `cookie`, `header_pairs`, `text` (formats); `table` (the bounded shared
//!   table); `keyring`, `token` (sealed tokens); `client_address` (who the client is);
//!   `config_reader` (path-aware JSON); `outcome` (how a request ended)
//! - `host`: what the filter needs from Envoy (`Host`, `HttpStream`)
//! - `metrics` (stat names and ids), `report` (the access-log record), `connections`
//!   (connection-aware timeouts), `state` (what a configuration builds), `context` (what a
//!   persistence type sees of a request)
//! - `persistence`: the interface of a persistence type; `profile`: the types, one module each
//! - `config`: the plugin configuration; `route_settings`: the native build's per-route settings;
//!   `plugin`: a configuration ready for requests
//! - `flow`: one HTTP stream through the filter; `housekeeping`: table sweeps; `table_bench`
//!   (feature `bench`): the table benchmark's driver, for both hosts
//! - `check`, `inspect` (native only): the configuration checker and the token inspector of the
//!   `envoy-persistence` command
//! - `wasm`: the proxy-wasm host (FFI, SDK contexts, the host interface for Envoy's Wasm ABI)
//! - `native` (feature `native`): the same filter as an Envoy dynamic module

#[cfg(not(target_arch = "wasm32"))]
pub mod check;
pub mod client_address;
pub mod config;
pub mod config_reader;
pub mod connections;
pub mod context;
pub mod cookie;
pub mod endpoint;
pub mod flow;
pub mod header_pairs;
pub mod host;
pub mod housekeeping;
#[cfg(not(target_arch = "wasm32"))]
pub mod inspect;
pub mod keyring;
pub mod metrics;
pub mod outcome;
pub mod persistence;
pub mod plugin;
pub mod profile;
pub mod report;
pub mod route_settings;
pub mod server;
pub mod state;
pub mod table;
#[cfg(feature = "bench")]
pub mod table_bench;
pub mod text;
pub mod token;

#[cfg(target_arch = "wasm32")]
mod wasm;

#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
mod native;
