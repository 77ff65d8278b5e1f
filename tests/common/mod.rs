//! The integration-test harness: real Envoy, real backends, real HTTP. Every test file does
//! `mod common;` and uses what it needs.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod backend;
pub mod browser;
pub mod client;
pub mod envoy;
pub mod http;
pub mod tls;

pub use backend::Backend;
pub use client::{get, Connection, Jar};
pub use envoy::{Envoy, EnvoyConfig, Launch};

/// A key secret for tests (base64 of 32 bytes); never a real deployment's.
pub fn test_secret(fill: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([fill; 32])
}
