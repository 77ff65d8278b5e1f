//! HTTP cookie persistence in a real Envoy 1.40 with three real backends
//! (envoy/http-cookie.yaml and envoy/http-cookie-never.yaml, re-ported).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use base64::Engine;
use common::{backend_of, get, named, test_secret, Backend, Envoy, EnvoyConfig, Jar};
use envoy_persistence::endpoint;
use envoy_persistence::keyring::Keyring;
use envoy_persistence::server::Server;
use envoy_persistence::token::{self, Claims, Purpose};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn with_keys(keys: &[(u8, u8)], primary: u8) -> impl Fn(&mut Value) {
    let keys: Vec<Value> = keys.iter().map(|&(id, fill)| json!({"id": id, "secret": test_secret(fill)})).collect();
    move |plugin: &mut Value| {
        plugin["keys"] = json!(keys);
        plugin["primary_key_id"] = json!(primary);
    }
}

fn setup(file: &str, edit: impl Fn(&mut Value)) -> (Vec<Backend>, Envoy) {
    let backends = Backend::start_many(3);
    let config = EnvoyConfig::load(file).backends("app", &backends).fast_health_checks().plugin(edit);
    let envoy = Envoy::start(&config);
    (backends, envoy)
}

/// The Set-Cookie header for `name`, if the response has one.
fn set_cookie_for(response: &common::http::Response, name: &str) -> Option<String> {
    response.all("set-cookie").into_iter().find(|c| c.starts_with(&format!("{name}=")))
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_string()
}

/// A token for `backend` sealed like the filter does, with test key `fill` under `id`.
fn sealed(id: u8, fill: u8, name: &str, backend: &Backend, issued_at: u64, expires_at: Option<u64>) -> String {
    let keys = Keyring::new(&[(id, [fill; 32])], id).unwrap();
    let claims = Claims { server: Server::host(endpoint::parse(&backend.addr.to_string()).unwrap()), issued_at, expires_at };
    token::seal(&keys, Purpose::HttpCookie, name, &claims, [7; 12]).unwrap()
}

#[test]
fn first_response_sets_a_session_cookie_and_the_client_sticks() {
    let (_backends, envoy) = setup("http-cookie.yaml", |p| p["default_profile"] = json!("System-Persistence-Http-Cookie"));
    let first = get(envoy.addr(), "/", &[]);
    let set_cookie = set_cookie_for(&first, "AVI_COOKIE").expect("a persistence cookie on the first response");
    assert!(set_cookie.ends_with("; Path=/; HttpOnly; SameSite=Lax"), "{set_cookie}");
    assert!(!set_cookie.contains("Max-Age") && !set_cookie.contains("Expires") && !set_cookie.contains("Secure"), "{set_cookie}");
    let server = backend_of(&first);
    let cookie = format!("AVI_COOKIE={}", cookie_value(&set_cookie));
    for _ in 0..20 {
        let response = get(envoy.addr(), "/", &[("cookie", cookie.as_bytes())]);
        assert_eq!(backend_of(&response), server);
        assert!(set_cookie_for(&response, "AVI_COOKIE").is_none(), "cookie re-sent without always_send");
    }
    assert_eq!(envoy.counter("persistence.System-Persistence-Http-Cookie.new"), 1);
    assert_eq!(envoy.counter("persistence.System-Persistence-Http-Cookie.pinned"), 20);
}

#[test]
fn clients_spread_over_every_backend_and_each_sticks_across_workers() {
    let (_backends, envoy) = setup("http-cookie.yaml", |_| {});
    let mut jars: Vec<(Jar, String)> = (0..30)
        .map(|_| {
            let mut jar = Jar::default();
            let server = backend_of(&jar.get_from(envoy.addr(), "/"));
            (jar, server)
        })
        .collect();
    let used: HashSet<&String> = jars.iter().map(|(_, s)| s).collect();
    assert_eq!(used.len(), 3, "new clients are load balanced over all backends");
    for _ in 0..5 {
        for (jar, server) in jars.iter_mut() {
            assert_eq!(&backend_of(&jar.get_from(envoy.addr(), "/")), server);
        }
    }
    // Each request used a new connection; Envoy spreads connections over its two workers. The
    // filter logs each decision with Envoy's thread id: pinned requests were decided on both.
    let threads: HashSet<String> =
        envoy.filter_log().iter().filter(|l| l.contains(" outcome=pinned server=")).filter_map(|l| l.split("][").nth(1).map(str::to_string)).collect();
    assert!(threads.len() >= 2, "pinned requests seen on {threads:?}");
    assert_eq!(envoy.counter("persistence.web.pinned"), 150);
}

#[test]
fn the_cookie_hides_the_server_and_two_cookies_for_one_server_differ() {
    let (backends, envoy) = setup("http-cookie.yaml", |_| {});
    let mut by_server: HashMap<String, Vec<String>> = HashMap::new();
    for _ in 0..9 {
        let response = get(envoy.addr(), "/", &[]);
        let value = cookie_value(&set_cookie_for(&response, "AVI_COOKIE").unwrap());
        by_server.entry(backend_of(&response)).or_default().push(value);
    }
    for (server, values) in &by_server {
        let distinct: HashSet<&String> = values.iter().collect();
        assert_eq!(distinct.len(), values.len(), "{server}: cookies repeat");
        let backend = named(&backends, server);
        // Where the sealed endpoint sits in a v1 token: version, key id, nonce, two times.
        const ENDPOINT_AT: usize = 2 + 12 + 16;
        let mut plaintext = Vec::new();
        endpoint::encode(&backend.addr, &mut plaintext);
        for value in values {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value).unwrap();
            assert!(!value.contains("127.0.0.1") && !value.contains(&backend.addr.port().to_string()));
            assert!(!raw.windows(4).any(|w| w == [127, 0, 0, 1]), "address readable in {value}");
            assert_ne!(&raw[ENDPOINT_AT..ENDPOINT_AT + plaintext.len()], plaintext.as_slice(), "endpoint not encrypted in {value}");
        }
    }
}

#[test]
fn a_configured_key_keeps_clients_pinned_across_an_envoy_restart() {
    let (_backends, envoy) = setup("http-cookie.yaml", with_keys(&[(1, 11)], 1));
    let mut jar = Jar::default();
    let server = backend_of(&jar.get_from(envoy.addr(), "/"));
    let envoy = envoy.restart();
    for _ in 0..10 {
        let response = jar.get_from(envoy.addr(), "/");
        assert_eq!(backend_of(&response), server);
        assert!(set_cookie_for(&response, "AVI_COOKIE").is_none());
    }
    assert_eq!(envoy.counter("persistence.web.pinned"), 10);
    assert_eq!(envoy.counter("persistence.web.new"), 0);
}

#[test]
fn without_keys_every_worker_shares_one_generated_key_but_a_restart_forgets_it() {
    let (_backends, envoy) = setup("http-cookie.yaml", |p| {
        p.as_object_mut().unwrap().remove("keys_env");
    });
    let warnings = envoy.filter_log().iter().filter(|l| l.contains("no keys configured")).count();
    assert_eq!(warnings, 1, "one warning per Envoy process, from the worker that made the key");
    let mut jar = Jar::default();
    let server = backend_of(&jar.get_from(envoy.addr(), "/"));
    for _ in 0..20 {
        assert_eq!(backend_of(&jar.get_from(envoy.addr(), "/")), server);
    }
    assert_eq!(envoy.counter("persistence.web.pinned"), 20);
    let envoy = envoy.restart();
    let response = jar.get_from(envoy.addr(), "/");
    assert!(set_cookie_for(&response, "AVI_COOKIE").is_some(), "a new process issues a new cookie");
    assert_eq!(envoy.counter("persistence.web.rejected.forged"), 1);
}

#[test]
fn keys_from_the_environment_are_shared_by_replicas_and_survive_restarts() {
    // The shipped configuration reads its keys from PERSISTENCE_KEYS (the harness sets test keys).
    let backends = Backend::start_many(3);
    let config = EnvoyConfig::load("http-cookie.yaml").backends("app", &backends).fast_health_checks();
    assert_eq!(config.plugin_config()["keys_env"], "PERSISTENCE_KEYS");
    let (a, b) = (Envoy::start(&config), Envoy::start(&config));
    let mut jar = Jar::default();
    let server = backend_of(&jar.get_from(a.addr(), "/"));
    for _ in 0..10 {
        assert_eq!(backend_of(&jar.get_from(b.addr(), "/")), server, "replica b honours replica a's cookie");
    }
    assert_eq!(b.counter("persistence.web.pinned"), 10);
    assert!(!a.filter_log().iter().any(|l| l.contains("no keys configured")));
    let a = a.restart();
    assert_eq!(backend_of(&jar.get_from(a.addr(), "/")), server, "a restarted process keeps the keys");
    assert_eq!(a.counter("persistence.web.pinned"), 1);

    // Another fleet's keys: the cookie does not open, the client is re-balanced and re-issued.
    let other = Envoy::start(&config.clone().environment("PERSISTENCE_KEYS", Some(&json!([{"id": 1, "secret": test_secret(2)}]).to_string())));
    let response = jar.get_from(other.addr(), "/");
    assert!(set_cookie_for(&response, "AVI_COOKIE").is_some());
    assert_eq!(other.counter("persistence.web.rejected.forged"), 1);
}

#[test]
fn envoy_refuses_the_plugin_when_the_keys_variable_is_missing_or_invalid() {
    let backends = Backend::start_many(1);
    let config = EnvoyConfig::load("http-cookie.yaml").backends("app", &backends);
    let secret = test_secret(3);
    for (value, expected) in [
        (None, "keys_env: names PERSISTENCE_KEYS, which is not set in the Wasm VM"),
        (Some("not json".to_string()), "keys_env: PERSISTENCE_KEYS is not JSON"),
        (
            Some(json!([{"id": 1, "secret": &secret[..20]}]).to_string()),
            "keys_env (PERSISTENCE_KEYS)[0].secret: must be base64 of exactly 32 random bytes, got 15 bytes",
        ),
    ] {
        let failed = Envoy::try_start(&config.clone().environment("PERSISTENCE_KEYS", value.as_deref()), 1);
        let log = failed.err().expect("Envoy must not start without its keys");
        assert!(log.contains(expected), "{expected:?} not in:\n{log}");
        assert!(!log.contains(&secret[..20]), "the secret must not be logged");
    }
}

#[test]
fn timeout_is_in_the_cookie_and_enforced_by_the_filter() {
    let (backends, envoy) = setup("http-cookie.yaml", with_keys(&[(1, 11)], 1));
    let first = get(envoy.addr(), "/", &[]);
    let set_cookie = set_cookie_for(&first, "AVI_COOKIE").unwrap();
    assert!(set_cookie.contains("; Max-Age=43200; Expires="), "web profile: 720 minutes: {set_cookie}");
    // A browser that ignores Max-Age gains nothing: the filter reads the expiry sealed inside.
    let target = &backends[2];
    let expired = sealed(1, 11, "AVI_COOKIE", target, now() - 43_300, Some(now() - 100));
    let live = sealed(1, 11, "AVI_COOKIE", target, now() - 100, Some(now() + 600));
    for _ in 0..6 {
        let response = get(envoy.addr(), "/", &[("cookie", format!("AVI_COOKIE={live}").as_bytes())]);
        assert_eq!(backend_of(&response), target.name);
    }
    let mut landed = HashSet::new();
    for _ in 0..6 {
        let response = get(envoy.addr(), "/", &[("cookie", format!("AVI_COOKIE={expired}").as_bytes())]);
        landed.insert(backend_of(&response));
        let fresh = set_cookie_for(&response, "AVI_COOKIE").expect("expired cookie replaced");
        assert!(fresh.contains("Max-Age=43200"), "{fresh}");
    }
    assert!(landed.len() > 1, "expired cookies are load balanced, not pinned: {landed:?}");
    assert_eq!(envoy.counter("persistence.web.rejected.expired"), 6);
}

#[test]
fn idle_timeout_refreshes_after_half_the_window_and_expires_after_it() {
    // shop profile: idle_timeout_minutes 30, cookie SHOP_AFFINITY on /shop/ (chosen by route metadata).
    let (backends, envoy) = setup("http-cookie.yaml", with_keys(&[(1, 11)], 1));
    let target = &backends[1];
    let send = |token: &str| get(envoy.addr(), "/shop/cart", &[("cookie", format!("SHOP_AFFINITY={token}").as_bytes())]);
    let recent = send(&sealed(1, 11, "SHOP_AFFINITY", target, now() - 60, None));
    assert_eq!(backend_of(&recent), target.name);
    assert!(set_cookie_for(&recent, "SHOP_AFFINITY").is_none(), "no refresh in the first half of the idle window");
    let older = send(&sealed(1, 11, "SHOP_AFFINITY", target, now() - 16 * 60, None));
    assert_eq!(backend_of(&older), target.name);
    let refreshed = set_cookie_for(&older, "SHOP_AFFINITY").expect("refreshed after half the idle window");
    assert!(refreshed.contains("; Path=/shop/;"), "{refreshed}");
    let again = send(&cookie_value(&refreshed));
    assert_eq!(backend_of(&again), target.name);
    assert!(set_cookie_for(&again, "SHOP_AFFINITY").is_none(), "the refreshed cookie starts a new window");
    let mut landed = HashSet::new();
    for _ in 0..6 {
        landed.insert(backend_of(&send(&sealed(1, 11, "SHOP_AFFINITY", target, now() - 31 * 60, None))));
    }
    assert!(landed.len() > 1, "idle-expired cookies are not honoured: {landed:?}");
    assert_eq!(envoy.counter("persistence.shop.refreshed"), 1);
    assert_eq!(envoy.counter("persistence.shop.rejected.idle"), 6);
}

#[test]
fn always_send_repeats_the_cookie_on_every_response() {
    // api profile (route named "api", "routes" map): always_send; web profile: sent once.
    let (_backends, envoy) = setup("http-cookie.yaml", |_| {});
    let mut api = Jar::default();
    let server = backend_of(&api.get_from(envoy.addr(), "/api/items"));
    let value = api.get("API_AFFINITY").unwrap().to_string();
    for _ in 0..5 {
        let response = api.get_from(envoy.addr(), "/api/items");
        assert_eq!(backend_of(&response), server);
        let again = set_cookie_for(&response, "API_AFFINITY").expect("always_send");
        assert_eq!(cookie_value(&again), value, "the same cookie is echoed, not re-sealed");
        assert!(again.contains("SameSite=Strict"), "{again}");
    }
    let mut web = Jar::default();
    web.get_from(envoy.addr(), "/");
    for _ in 0..5 {
        assert!(set_cookie_for(&web.get_from(envoy.addr(), "/"), "AVI_COOKIE").is_none());
    }
}

#[test]
fn server_down_immediate_moves_the_client_and_rewrites_the_cookie() {
    let (backends, envoy) = setup("http-cookie.yaml", |_| {});
    let mut jar = Jar::default();
    let server = backend_of(&jar.get_from(envoy.addr(), "/"));
    let old_cookie = jar.get("AVI_COOKIE").unwrap().to_string();
    let down = named(&backends, &server);
    envoy.set_health(down, false);
    let moved = jar.get_from(envoy.addr(), "/");
    let new_server = backend_of(&moved);
    assert_ne!(new_server, server);
    assert!(set_cookie_for(&moved, "AVI_COOKIE").is_some(), "cookie rewritten to the new server");
    assert_ne!(jar.get("AVI_COOKIE").unwrap(), old_cookie);
    // The client stays on its new server, also after the old one recovers.
    envoy.set_health(down, true);
    for _ in 0..10 {
        let response = jar.get_from(envoy.addr(), "/");
        assert_eq!(backend_of(&response), new_server);
        assert!(set_cookie_for(&response, "AVI_COOKIE").is_none());
    }
    assert_eq!(envoy.counter("persistence.web.repicked"), 1);
}

#[test]
fn server_down_never_keeps_the_client_on_its_unhealthy_server() {
    let (backends, envoy) = setup("http-cookie-never.yaml", |_| {});
    let mut jar = Jar::default();
    let server = backend_of(&jar.get_from(envoy.addr(), "/"));
    let cookie = jar.get("AVI_COOKIE").unwrap().to_string();
    let down = named(&backends, &server);
    envoy.set_health(down, false);
    for _ in 0..10 {
        let response = jar.get_from(envoy.addr(), "/");
        assert_eq!(backend_of(&response), server, "never: the pinned server is kept while unhealthy");
        assert!(set_cookie_for(&response, "AVI_COOKIE").is_none());
    }
    assert_eq!(jar.get("AVI_COOKIE").unwrap(), cookie);
    // New clients only go to healthy servers.
    for _ in 0..9 {
        assert_ne!(backend_of(&get(envoy.addr(), "/", &[])), server);
    }
}

#[test]
fn server_down_never_with_the_server_gone_from_the_cluster() {
    // A cookie naming a host that is not (or no longer) in the cluster, e.g. after a scale-down.
    let (_backends, envoy) = setup("http-cookie-never.yaml", with_keys(&[(1, 11)], 1));
    let gone = Backend::start("gone");
    let token = sealed(1, 11, "AVI_COOKIE", &gone, now(), Some(now() + 600));
    let cookie = format!("AVI_COOKIE={token}");
    // Non-strict: Envoy load balances; `never` keeps the cookie as it is.
    let response = get(envoy.addr(), "/", &[("cookie", cookie.as_bytes())]);
    assert_ne!(backend_of(&response), "gone");
    assert!(set_cookie_for(&response, "AVI_COOKIE").is_none());
    assert_eq!(envoy.counter("persistence.web.kept"), 1);
    // Strict route: 503 instead of another server.
    let strict = get(envoy.addr(), "/strict/x", &[("cookie", cookie.as_bytes())]);
    assert_eq!(strict.status, 503, "{strict:?}");
    assert!(gone.received().is_empty(), "never routed outside the cluster");
    assert_eq!(envoy.counter("persistence.web.no_upstream"), 1);
}

#[test]
fn bad_cookies_are_load_balanced_reissued_and_counted() {
    let (backends, envoy) = setup("http-cookie.yaml", with_keys(&[(1, 11)], 1));
    let target = &backends[0];
    let good = sealed(1, 11, "AVI_COOKIE", target, now(), Some(now() + 600));
    let mut tampered = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&good).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let truncated = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tampered[..last - 2]);
    let tampered = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tampered);
    let cases: Vec<(String, &str)> = vec![
        ("garbage!!".into(), "malformed"),
        (String::new(), "malformed"),
        ("A".repeat(4000), "malformed"),
        (good[..good.len() - 10].to_string(), "malformed"),
        (truncated, "forged"),
        (tampered, "forged"),
        (sealed(1, 99, "AVI_COOKIE", target, now(), None), "forged"),
        (sealed(2, 11, "AVI_COOKIE", target, now(), None), "unknown_key"),
        (sealed(1, 11, "AVI_COOKIE", target, now() - 7200, Some(now() - 1)), "expired"),
        (sealed(1, 11, "OTHER_COOKIE", target, now(), None), "forged"),
    ];
    let mut expected: HashMap<&str, u64> = HashMap::new();
    for (value, reason) in &cases {
        for _ in 0..3 {
            let response = get(envoy.addr(), "/", &[("cookie", format!("AVI_COOKIE={value}").as_bytes())]);
            backend_of(&response);
            assert!(set_cookie_for(&response, "AVI_COOKIE").is_some(), "{reason}: a fresh cookie");
            *expected.entry(reason).or_default() += 1;
        }
    }
    for (reason, count) in expected {
        assert_eq!(envoy.counter(&format!("persistence.web.rejected.{reason}")), count, "{reason}");
    }
    assert_eq!(envoy.counter("persistence.web.new"), 30);
    envoy.assert_vm_healthy();
}

#[test]
fn key_rotation_honours_old_cookies_and_reissues_them_under_the_primary() {
    let (backends, envoy) = setup("http-cookie.yaml", with_keys(&[(1, 11)], 1));
    let mut jar = Jar::default();
    let server = backend_of(&jar.get_from(envoy.addr(), "/"));
    let key_id = |value: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value).unwrap()[1];
    assert_eq!(key_id(jar.get("AVI_COOKIE").unwrap()), 1);
    drop(envoy);
    // Step 1 of a rotation: add key 2 and make it primary; key 1 stays for existing cookies.
    let config = EnvoyConfig::load("http-cookie.yaml").backends("app", &backends).fast_health_checks().plugin(with_keys(&[(1, 11), (2, 22)], 2));
    let envoy = Envoy::start(&config);
    let response = jar.get_from(envoy.addr(), "/");
    assert_eq!(backend_of(&response), server);
    let reissued = set_cookie_for(&response, "AVI_COOKIE").expect("re-issued under the primary key");
    assert_eq!(key_id(&cookie_value(&reissued)), 2);
    assert!(reissued.contains("Max-Age="), "{reissued}");
    let response = jar.get_from(envoy.addr(), "/");
    assert_eq!(backend_of(&response), server);
    assert!(set_cookie_for(&response, "AVI_COOKIE").is_none());
    assert_eq!(envoy.counter("persistence.web.rotated"), 1);
    drop(envoy);
    // Step 2: drop key 1. The re-issued cookie still works; a cookie only key 1 opens does not.
    let config = EnvoyConfig::load("http-cookie.yaml").backends("app", &backends).fast_health_checks().plugin(with_keys(&[(2, 22)], 2));
    let envoy = Envoy::start(&config);
    assert_eq!(backend_of(&jar.get_from(envoy.addr(), "/")), server);
    let stale = sealed(1, 11, "AVI_COOKIE", &backends[0], now(), None);
    get(envoy.addr(), "/", &[("cookie", format!("AVI_COOKIE={stale}").as_bytes())]);
    assert_eq!(envoy.counter("persistence.web.rejected.unknown_key"), 1);
}

#[test]
fn only_the_persistence_cookie_is_removed_before_the_backend() {
    let (backends, envoy) = setup("http-cookie.yaml", with_keys(&[(1, 11)], 1));
    let target = &backends[2];
    let token = sealed(1, 11, "AVI_COOKIE", target, now(), None);
    let header = format!("theme=dark;  sid=\"a b\"; AVI_COOKIE={token}; utf=%E2%9C%93; AVI_COOKIEX=keep");
    let response = get(envoy.addr(), "/", &[("cookie", header.as_bytes())]);
    assert_eq!(backend_of(&response), target.name);
    let received = target.last_received().unwrap();
    assert_eq!(received.header("cookie").unwrap(), b"theme=dark;  sid=\"a b\"; utf=%E2%9C%93; AVI_COOKIEX=keep");
    // Only our cookie: the header is gone.
    get(envoy.addr(), "/", &[("cookie", format!("AVI_COOKIE={token}").as_bytes())]);
    assert_eq!(target.last_received().unwrap().header("cookie"), None);
    // Non-UTF-8 bytes in other cookies pass untouched.
    let mut raw = b"bin=\xff\xfe; AVI_COOKIE=".to_vec();
    raw.extend_from_slice(token.as_bytes());
    get(envoy.addr(), "/", &[("cookie", &raw)]);
    assert_eq!(target.last_received().unwrap().header("cookie").unwrap(), b"bin=\xff\xfe");
}

#[test]
fn the_backends_own_set_cookie_headers_reach_the_client_untouched() {
    let (_backends, envoy) = setup("http-cookie.yaml", |_| {});
    let app_cookies = ["JSESSIONID=abc123; Path=/; Secure; HttpOnly", "pref=a%20b; Max-Age=60"];
    let query: Vec<String> = app_cookies.iter().map(|c| format!("set-cookie={}", common::backend::percent_encode(c.as_bytes()))).collect();
    let response = get(envoy.addr(), &format!("/?{}", query.join("&")), &[]);
    let all = response.all("set-cookie");
    assert_eq!(all.len(), 3, "{all:?}");
    for cookie in app_cookies {
        assert!(all.contains(&cookie.to_string()), "{cookie} missing from {all:?}");
    }
    assert!(set_cookie_for(&response, "AVI_COOKIE").is_some());
}

#[test]
fn a_client_supplied_override_header_never_chooses_the_server() {
    // No default profile: "/" has the filter but no persistence; /api/ has a profile.
    let (backends, envoy) = setup("http-cookie.yaml", |p| {
        p.as_object_mut().unwrap().remove("default_profile");
    });
    let victim = &backends[0];
    let forged = base64::engine::general_purpose::STANDARD.encode(victim.addr.to_string());
    for path in ["/", "/api/x", "/static/x"] {
        let landed: Vec<String> = (0..9).map(|_| backend_of(&get(envoy.addr(), path, &[("x-persistence-upstream", forged.as_bytes())]))).collect();
        let on_victim = landed.iter().filter(|b| **b == victim.name).count();
        assert!(on_victim <= 4, "{path}: the spoofed header steered {on_victim}/9 requests: {landed:?}");
    }
    // A valid cookie for backend-2 plus a header naming backend-1: the cookie wins.
    let mut jar = Jar::default();
    let server = backend_of(&jar.get_from(envoy.addr(), "/api/x"));
    let other = backends.iter().find(|b| b.name != server).unwrap();
    let forged = base64::engine::general_purpose::STANDARD.encode(other.addr.to_string());
    let cookie = jar.header().unwrap();
    for _ in 0..5 {
        let response = get(envoy.addr(), "/api/x", &[("cookie", cookie.as_bytes()), ("x-persistence-upstream", forged.as_bytes())]);
        assert_eq!(backend_of(&response), server);
        assert!(response.header("x-persistence-upstream").is_none(), "override header leaked to the client");
    }
    for backend in &backends {
        assert!(backend.received().iter().all(|r| r.header("x-persistence-upstream").is_none()), "backends never see the header");
    }
    assert_eq!(envoy.counter("persistence.override_header_removed"), 23);
}

#[test]
fn responses_never_carry_the_override_header() {
    let (backends, envoy) = setup("http-cookie.yaml", |_| {});
    let mut jar = Jar::default();
    let server = backend_of(&jar.get_from(envoy.addr(), "/"));
    let down = named(&backends, &server);
    envoy.set_health(down, false);
    // The host changes here, which makes stateful_session announce it in the response.
    let response = jar.get_from(envoy.addr(), "/");
    assert_ne!(backend_of(&response), server);
    assert!(response.header("x-persistence-upstream").is_none(), "{response:?}");
}

#[test]
fn a_backend_cannot_send_the_override_header_to_clients_either() {
    let (_backends, envoy) = setup("http-cookie.yaml", |_| {});
    let mut jar = Jar::default();
    jar.get_from(envoy.addr(), "/");
    // The backend puts the header in its own response to a pinned request (where stateful_session
    // adds none and the filter removes none): the route's response_headers_to_remove drops it.
    let leaky = get(envoy.addr(), "/?response-header=x-persistence-upstream%3AMTAuMC4wLjE6ODA%3D", &[("cookie", jar.header().unwrap().as_bytes())]);
    assert_eq!(leaky.status, 200);
    assert!(leaky.header("x-persistence-upstream").is_none(), "{leaky:?}");
    assert_eq!(envoy.counter("persistence.web.pinned"), 1);
}

#[test]
fn a_quoted_cookie_is_honoured_and_a_session_cookie_still_ends_at_its_timeout() {
    let (backends, envoy) = setup("http-cookie.yaml", |p| {
        with_keys(&[(1, 21)], 1)(p);
        p["profiles"][0]["http_cookie"]["persistent"] = json!(false);
    });
    let first = get(envoy.addr(), "/", &[]);
    let set_cookie = set_cookie_for(&first, "AVI_COOKIE").unwrap();
    assert!(!set_cookie.contains("Max-Age") && !set_cookie.contains("Expires"), "a session cookie: {set_cookie}");
    let server = backend_of(&first);
    // RFC 6265 allows the value in double quotes (Envoy's own tests send one).
    let quoted = format!("a=1; AVI_COOKIE=\"{}\"; b=2", cookie_value(&set_cookie));
    for _ in 0..5 {
        assert_eq!(backend_of(&get(envoy.addr(), "/", &[("cookie", quoted.as_bytes())])), server);
    }
    let received = named(&backends, &server).last_received().unwrap();
    assert_eq!(received.header("cookie"), Some(&b"a=1; b=2"[..]), "the backend never sees our cookie");
    // The browser would keep a session cookie past timeout_minutes; the token still ends there.
    let backend = named(&backends, &server);
    let old = sealed(1, 21, "AVI_COOKIE", backend, now() - 43_300, Some(now() - 100));
    let response = get(envoy.addr(), "/", &[("cookie", format!("AVI_COOKIE={old}").as_bytes())]);
    assert!(set_cookie_for(&response, "AVI_COOKIE").is_some(), "an expired session gets a new cookie");
    assert_eq!(envoy.counter("persistence.web.rejected.expired"), 1);
    assert_eq!(envoy.counter("persistence.web.pinned"), 5);
}

#[test]
fn a_partitioned_cookie_carries_the_attribute() {
    let (_backends, envoy) = setup("http-cookie.yaml", |p| {
        p["profiles"][0]["http_cookie"]["secure"] = json!("always");
        p["profiles"][0]["http_cookie"]["same_site"] = json!("none");
        p["profiles"][0]["http_cookie"]["partitioned"] = json!(true);
    });
    let set_cookie = set_cookie_for(&get(envoy.addr(), "/", &[]), "AVI_COOKIE").unwrap();
    assert!(set_cookie.ends_with("; Secure; HttpOnly; SameSite=None; Partitioned"), "{set_cookie}");
}
