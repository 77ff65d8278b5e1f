//! The integration-test harness: real Envoy, real backends, real HTTP. Every test file does
//! `mod common;` and uses what it needs.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod backend;
pub mod browser;
pub mod client;
pub mod envoy;
pub mod h2client;
pub mod http;
pub mod python;
pub mod tls;

pub use backend::Backend;
pub use client::{get, Connection, Jar};
pub use envoy::{Envoy, EnvoyConfig, Launch};

/// The backend that answered (its `x-backend` header); the response must be a 200.
pub fn backend_of(response: &http::Response) -> String {
    assert_eq!(response.status, 200, "{response:?}");
    response.header("x-backend").expect("x-backend header").to_string()
}

/// The backend called `name`.
pub fn named<'a>(backends: &'a [Backend], name: &str) -> &'a Backend {
    backends.iter().find(|b| b.name == name).unwrap_or_else(|| panic!("no backend {name}"))
}

/// The `n`th test client address, 127.0.<n / 250 + 1>.<n % 250 + 1> (any 127/8 address can be
/// bound on Linux loopback).
pub fn loopback(n: usize) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, (n / 250 + 1) as u8, (n % 250 + 1) as u8))
}

/// A key secret for tests (base64 of 32 bytes); never a real deployment's.
pub fn test_secret(fill: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([fill; 32])
}
