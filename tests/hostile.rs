//! Hostile clients in a real Envoy 1.40: they can neither pick a server nor hurt the filter. Every
//! case ends in a normal response (from a backend, or Envoy's own 4xx for what Envoy itself
//! rejects), never a 5xx caused by the filter, never a Wasm VM failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use base64::Engine;
use common::{backend_of, get, loopback, test_secret, Backend, Connection, Envoy, EnvoyConfig, Jar};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::IpAddr;

fn keyed(file: &str, backends: &[Backend]) -> EnvoyConfig {
    EnvoyConfig::load(file).backends("app", backends).fast_health_checks().plugin(|p: &mut Value| {
        if p.get("profiles").is_some() {
            p["keys"] = json!([{"id": 1, "secret": test_secret(3)}]);
        }
    })
}

#[test]
fn a_cookie_of_another_profile_or_name_does_not_pin() {
    let backends = Backend::start_many(3);
    let envoy = Envoy::start(&keyed("http-cookie.yaml", &backends));
    // A valid API_AFFINITY cookie (profile "api"), presented as AVI_COOKIE (profile "web").
    let mut api = Jar::default();
    api.get_from(envoy.addr(), "/api/x");
    let token = api.get("API_AFFINITY").unwrap().to_string();
    let landed: HashSet<String> = (0..9).map(|_| backend_of(&get(envoy.addr(), "/", &[("cookie", format!("AVI_COOKIE={token}").as_bytes())]))).collect();
    assert!(landed.len() > 1, "a token bound to another cookie name is not honoured: {landed:?}");
    assert_eq!(envoy.counter("persistence.web.rejected.forged"), 9);
    envoy.assert_vm_healthy();
}

#[test]
fn a_replayed_cookie_of_a_removed_server_never_reaches_it() {
    let backends = Backend::start_many(3);
    let mut jar = Jar::default();
    let first = Envoy::start(&keyed("http-cookie.yaml", &backends));
    let server = backend_of(&jar.get_from(first.addr(), "/"));
    let replay = jar.header().unwrap();
    drop(first);
    // The server is scaled away (gone from the cluster, still running); the client replays its cookie.
    let removed = backends.iter().find(|b| b.name == server).unwrap();
    let addresses: Vec<std::net::SocketAddr> = backends.iter().filter(|b| b.name != server).map(|b| b.addr).collect();
    let config = keyed("http-cookie.yaml", &backends).backend_addresses("app", &addresses);
    let envoy = Envoy::start(&config);
    let before = removed.received().len();
    for _ in 0..6 {
        let response = get(envoy.addr(), "/", &[("cookie", replay.as_bytes())]);
        assert_ne!(backend_of(&response), server);
    }
    assert_eq!(removed.received().len(), before, "nothing reached the removed server");
    assert_eq!(envoy.counter("persistence.web.repicked"), 6, "immediate: each replay is moved (the client keeps the old cookie here)");
    envoy.assert_vm_healthy();
}

#[test]
fn an_app_session_id_presented_by_someone_else_goes_where_the_session_lives() {
    // Documented behaviour: persistence follows the session id, as the application does; keeping
    // session ids secret is the application's job (HttpOnly, Secure cookies).
    let backends = Backend::servlets(3);
    let envoy = Envoy::start(&keyed("app-cookie.yaml", &backends));
    let mut alice = Jar::default();
    let server = backend_of(&alice.get_from(envoy.addr(), "/"));
    let stolen = alice.get("JSESSIONID").unwrap().to_string();
    for source in ["127.0.8.1", "127.0.8.2"] {
        let response = Connection::open_from(envoy.addr(), source.parse().unwrap()).get("/", &[("cookie", format!("JSESSIONID={stolen}").as_bytes())]);
        assert_eq!(backend_of(&response), server);
    }
    envoy.assert_vm_healthy();
}

#[test]
fn a_spoofed_override_header_is_ignored_on_every_profile_type() {
    let backends = Backend::start_many(3);
    let forged = base64::engine::general_purpose::STANDARD.encode(backends[0].addr.to_string());
    for file in ["client-ip.yaml", "app-cookie.yaml", "http-header.yaml"] {
        let envoy = Envoy::start(&EnvoyConfig::load(file).backends("app", &backends).fast_health_checks());
        let landed: Vec<String> = (0..9)
            .map(|n| {
                let source: IpAddr = format!("127.0.9.{}", n + 1).parse().unwrap();
                backend_of(&Connection::open_from(envoy.addr(), source).get("/", &[("x-persistence-upstream", forged.as_bytes())]))
            })
            .collect();
        assert!(landed.iter().filter(|b| **b == backends[0].name).count() <= 4, "{file}: steered {landed:?}");
        assert_eq!(envoy.counter("persistence.override_header_removed"), 9, "{file}");
        envoy.assert_vm_healthy();
    }
}

/// Request headers as sent, bytes and all.
type Headers = Vec<(&'static str, Vec<u8>)>;

/// Requests no client should send. Each gets a normal answer (the backend's 200, or Envoy's own
/// 4xx for what Envoy rejects before any filter), never a 5xx.
fn hostile_requests(session: &str) -> Vec<(String, Headers)> {
    let big = "A".repeat(8 * 1024);
    let many: Vec<String> = (0..100).map(|i| format!("c{i}=v{i}")).collect();
    vec![
        ("8 KiB AVI_COOKIE".into(), vec![("cookie", format!("AVI_COOKIE={big}").into_bytes())]),
        ("8 KiB JSESSIONID".into(), vec![("cookie", format!("JSESSIONID={big}").into_bytes())]),
        ("8 KiB session token prefix".into(), vec![("cookie", format!("JSESSIONID={big}.{session}").into_bytes())]),
        ("100 cookies".into(), vec![("cookie", many.join("; ").into_bytes())]),
        ("100 cookies and ours".into(), vec![("cookie", format!("{}; AVI_COOKIE=x; JSESSIONID={session}", many.join("; ")).into_bytes())]),
        ("duplicate names".into(), vec![("cookie", format!("AVI_COOKIE=a; AVI_COOKIE=b; JSESSIONID={session}; JSESSIONID=x").into_bytes())]),
        ("two Cookie headers".into(), vec![("cookie", b"a=1".to_vec()), ("cookie", format!("AVI_COOKIE=zz; JSESSIONID={session}").into_bytes())]),
        ("non-UTF-8 cookies".into(), vec![("cookie", b"AVI_COOKIE=\xff\xfe\xfd; JSESSIONID=\xc3\x28; x=\x80".to_vec())]),
        ("empty values".into(), vec![("cookie", b"AVI_COOKIE=; JSESSIONID=; =; ;".to_vec()), ("x-tenant", Vec::new())]),
        ("non-UTF-8 tenant".into(), vec![("x-tenant", b"\xff\xfeacme".to_vec())]),
        ("8 KiB tenant".into(), vec![("x-tenant", big.clone().into_bytes())]),
        ("spoofed and empty override".into(), vec![("x-persistence-upstream", Vec::new()), ("x-persistence-decision", b"profile=x".to_vec())]),
        ("garbage override".into(), vec![("x-persistence-upstream", b"\xff not base64 \x01".to_vec())]),
    ]
}

fn assert_normal(envoy: &Envoy, what: &str, path: &str, headers: &[(&'static str, Vec<u8>)], source: IpAddr) {
    let borrowed: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    let response = Connection::open_from(envoy.addr(), source).get(path, &borrowed);
    assert!(response.status == 200 || (400..500).contains(&response.status), "{what} on {path}: {} {response:?}", response.status);
}

#[test]
fn oversized_and_malformed_input_gets_normal_answers_and_never_hurts_the_vm() {
    let backends = Backend::servlets(3);
    let addresses: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    for file in ["http-cookie.yaml", "app-cookie.yaml", "app-cookie-prefix.yaml", "client-ip.yaml", "http-header.yaml"] {
        let addresses = addresses.clone();
        let config = keyed(file, &backends).plugin(move |p| {
            let servers = p.pointer_mut("/profiles/0/http_header/servers").and_then(Value::as_array_mut);
            if let Some(servers) = servers {
                for (i, server) in servers.iter_mut().enumerate() {
                    server["address"] = json!(addresses[i]);
                }
            }
        });
        let envoy = Envoy::start(&config);
        let mut jar = Jar::default();
        jar.get_from(envoy.addr(), "/");
        let session = jar.get("JSESSIONID").unwrap_or("none").to_string();
        for (what, headers) in hostile_requests(&session) {
            for path in ["/", "/shop/x;jsessionid=\u{1}?JSESSIONID=%ff%00&JSESSIONID=", "/api/x?q=1"] {
                assert_normal(&envoy, &format!("{file}: {what}"), path, &headers, "127.0.10.1".parse().unwrap());
            }
        }
        envoy.assert_vm_healthy();
        // Still working afterwards: the same client (cookies, address, and a tenant for the
        // header profile) keeps its server.
        let returning = |jar: &mut Jar| {
            let cookie = jar.header().unwrap_or_default();
            let response = get(envoy.addr(), "/", &[("cookie", cookie.as_bytes()), ("x-tenant", b"initech")]);
            jar.update(&response);
            backend_of(&response)
        };
        let server = returning(&mut jar);
        assert_eq!(returning(&mut jar), server, "{file}");
        if file == "http-header.yaml" {
            assert_eq!(server, backends[1].name, "initech is listed for the second server");
        }
    }
}

#[test]
fn ipv6_and_ipv4_mapped_sources_on_a_dual_stack_listener() {
    let backends = Backend::start_many(3);
    let mut config = EnvoyConfig::load("client-ip.yaml").backends("app", &backends).fast_health_checks();
    let address = &mut config.listener_mut("main")["address"]["socket_address"];
    address["address"] = json!("::");
    address["ipv4_compat"] = json!(true);
    let envoy = Envoy::start(&config);
    let port = envoy.addr().port();
    let v4: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let v6: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
    for (addr, sources) in [(v4, ["127.0.11.1", "127.0.11.2"]), (v6, ["::1", "::1"])] {
        for source in sources {
            let source: IpAddr = source.parse().unwrap();
            let server = backend_of(&Connection::open_from(addr, source).get("/", &[]));
            for _ in 0..4 {
                assert_eq!(backend_of(&Connection::open_from(addr, source).get("/", &[])), server, "{source}");
            }
        }
    }
    // 127.0.11.1, 127.0.11.2 (seen as ::ffff:127.0.11.x, stored as IPv4) and ::1.
    assert_eq!(envoy.counter("persistence.clients.entries"), 3);
    envoy.assert_vm_healthy();
}

/// Victims 0..9 pinned over all three servers, then a new client naming each victim in
/// X-Forwarded-For: with the shipped connection manager (`use_remote_address: true`) it is keyed on
/// its own address and stays on one server. (Trusting the header would send it to every victim's server.)
fn assert_forwarded_for_chooses_nothing(envoy: &Envoy, listener: std::net::SocketAddr, profile: &str) {
    let victims: Vec<(IpAddr, String)> = (0..9).map(loopback).map(|v| (v, backend_of(&Connection::open_from(listener, v).get("/", &[])))).collect();
    assert_eq!(victims.iter().map(|(_, s)| s).collect::<HashSet<_>>().len(), 3, "victims on every server: {victims:?}");
    let attacker: IpAddr = "127.0.112.78".parse().unwrap();
    let landed: HashSet<String> = victims
        .iter()
        .map(|(victim, _)| backend_of(&Connection::open_from(listener, attacker).get("/", &[("x-forwarded-for", victim.to_string().as_bytes())])))
        .collect();
    assert_eq!(landed.len(), 1, "the attacker stays on its own server whatever address it names: {landed:?}");
    assert_eq!(envoy.counter(&format!("persistence.{profile}.new")), 10, "nine victims and the attacker");
    assert_eq!(envoy.counter(&format!("persistence.{profile}.pinned")), 8, "the attacker's own entry, from its second request on");
    assert_eq!(envoy.counter(&format!("persistence.{profile}.entries")), 10);
    assert_eq!(envoy.counter("persistence.untrusted_client_address"), 0);
    envoy.assert_vm_healthy();
}

#[test]
fn x_forwarded_for_naming_a_pinned_client_does_not_reach_its_server_with_the_shipped_configs() {
    let backends = Backend::start_many(3);
    let envoy = Envoy::start(&EnvoyConfig::load("client-ip.yaml").backends("app", &backends).fast_health_checks());
    assert_forwarded_for_chooses_nothing(&envoy, envoy.addr(), "clients");
    drop(envoy);
    // tls.yaml: clients without a TLS session id fall back to their address (plain HTTP here).
    let pki = common::tls::Pki::new();
    let config = EnvoyConfig::load("tls.yaml").backends("app", &backends).fast_health_checks().certificates(&pki).plain_copy_of("main");
    let envoy = Envoy::start(&config);
    assert_forwarded_for_chooses_nothing(&envoy, envoy.listener("plain"), "tls-sessions");
}
