//! Downstream HTTP/2 in a real Envoy 1.40 (mesh traffic is mostly HTTP/2): a cookie split over
//! several `cookie` fields, the header profile, a gRPC-shaped POST. Backends speak HTTP/1.1, as
//! the shipped clusters do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::h2client::{send, H2Response};
use common::{named, Backend, Envoy, EnvoyConfig};

fn backend_of(response: &H2Response) -> String {
    assert_eq!(response.status, 200, "{:?} {}", response.headers, String::from_utf8_lossy(&response.body));
    response.header("x-backend").expect("x-backend").to_string()
}

#[test]
fn a_cookie_split_over_several_fields_keeps_its_server_and_the_other_cookies_reach_the_backend() {
    let backends = Backend::start_many(3);
    let envoy = Envoy::start(&EnvoyConfig::load("http-cookie.yaml").backends("app", &backends).fast_health_checks());
    let first = send(envoy.addr(), "GET", "/", &[], None);
    let server = backend_of(&first);
    let set_cookie = first.all("set-cookie").into_iter().find(|c| c.starts_with("AVI_COOKIE=")).expect("a cookie on the first visit");
    let ours = set_cookie.split(';').next().unwrap();
    for _ in 0..5 {
        let response = send(envoy.addr(), "GET", "/", &[("cookie", "a=1"), ("cookie", ours), ("cookie", "b=2; c=3")], None);
        assert_eq!(backend_of(&response), server);
        assert!(response.all("set-cookie").is_empty(), "no new cookie while pinned");
        assert!(response.header("x-persistence-upstream").is_none());
    }
    let received = named(&backends, &server).last_received().unwrap();
    let cookies: Vec<&[u8]> = common::http::all(&received.headers, "cookie").collect();
    assert_eq!(cookies, [&b"a=1; b=2; c=3"[..]], "the other cookies, byte for byte and in order, without ours");
    assert_eq!(envoy.counter("persistence.web.pinned"), 5);
    assert_eq!(envoy.stats().get("http.ingress.downstream_cx_http2_total"), Some(&6), "six HTTP/2 connections");
}

#[test]
fn the_header_profile_pins_http2_requests() {
    let backends = Backend::start_many(3);
    let config = EnvoyConfig::load("http-header.yaml").backends("app", &backends).fast_health_checks().header_servers(&backends);
    let envoy = Envoy::start(&config);
    for _ in 0..6 {
        assert_eq!(backend_of(&send(envoy.addr(), "GET", "/", &[("x-tenant", "initech")], None)), "backend-2");
        assert_eq!(backend_of(&send(envoy.addr(), "GET", "/", &[("x-tenant", "acme")], None)), "backend-1");
    }
    assert_eq!(envoy.counter("persistence.tenants.pinned"), 12);
}

#[test]
fn a_grpc_shaped_post_is_pinned_and_its_body_reaches_the_backend_intact() {
    let backends = Backend::start_many(3);
    let config = EnvoyConfig::load("http-header.yaml").backends("app", &backends).fast_health_checks().header_servers(&backends);
    let envoy = Envoy::start(&config);
    // A length-prefixed gRPC message (no compression, 11 bytes), with gRPC's headers.
    let mut message = vec![0, 0, 0, 0, 11];
    message.extend_from_slice(b"hello world");
    let headers = [("content-type", "application/grpc"), ("te", "trailers"), ("x-tenant", "umbrella")];
    for _ in 0..3 {
        let response = send(envoy.addr(), "POST", "/greeter.Greeter/SayHello", &headers, Some(&message));
        assert_eq!(backend_of(&response), "backend-3");
    }
    let received = named(&backends, "backend-3").last_received().unwrap();
    assert_eq!((received.method.as_str(), received.path.as_str()), ("POST", "/greeter.Greeter/SayHello"));
    assert_eq!(received.body, message);
    assert_eq!(received.header("content-type"), Some(&b"application/grpc"[..]));
    assert_eq!(envoy.counter("persistence.tenants.pinned"), 3);
}
