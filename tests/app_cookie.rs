//! App cookie persistence in a real Envoy 1.40 (envoy/app-cookie.yaml and app-cookie-prefix.yaml),
//! in front of three servlet-like backends that issue JSESSIONID as Tomcat does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{backend_of, get, named, test_secret, Backend, Envoy, EnvoyConfig, Jar};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

fn setup(file: &str, edit: impl Fn(&mut Value)) -> (Vec<Backend>, Envoy) {
    let backends = Backend::servlets(3);
    let config = EnvoyConfig::load(file).backends("app", &backends).fast_health_checks().plugin(edit);
    (backends, Envoy::start(&config))
}

fn session_of(response: &common::http::Response) -> String {
    response.header("x-session").unwrap().to_string()
}

fn with_key(plugin: &mut Value) {
    plugin["keys"] = json!([{"id": 1, "secret": test_secret(5)}]);
}

#[test]
fn table_mode_learns_the_session_and_keeps_it_on_its_server() {
    let (backends, envoy) = setup("app-cookie.yaml", |_| {});
    let mut jar = Jar::default();
    let first = jar.get_from(envoy.addr(), "/");
    let server = backend_of(&first);
    let id = jar.get("JSESSIONID").expect("the application's cookie reached the client").to_string();
    assert_eq!(first.all("set-cookie"), [format!("JSESSIONID={id}; Path=/; HttpOnly")], "forwarded unchanged, nothing added");
    for _ in 0..10 {
        let response = jar.get_from(envoy.addr(), "/cart");
        assert_eq!((backend_of(&response), session_of(&response)), (server.clone(), id.clone()));
        assert!(response.all("set-cookie").is_empty());
    }
    let received = named(&backends, &server).last_received().unwrap();
    assert_eq!(received.header("cookie").unwrap(), format!("JSESSIONID={id}").as_bytes(), "the backend gets its cookie unchanged");
    assert_eq!(envoy.counter("persistence.java.learned"), 1);
    assert_eq!(envoy.counter("persistence.java.pinned"), 10);
    assert_eq!(envoy.counter("persistence.java.entries"), 1);
}

#[test]
fn the_session_id_is_also_found_in_the_query_and_in_a_path_parameter() {
    let (_backends, envoy) = setup("app-cookie.yaml", |_| {});
    let first = get(envoy.addr(), "/", &[]);
    let (server, id) = (backend_of(&first), session_of(&first));
    for path in [format!("/page?JSESSIONID={id}"), format!("/shop/cart;jsessionid={id}?item=7"), format!("/a;jsessionid={id}/b")] {
        for _ in 0..4 {
            let response = get(envoy.addr(), &path, &[]);
            assert_eq!((backend_of(&response), session_of(&response)), (server.clone(), id.clone()), "{path}");
        }
    }
    assert_eq!(envoy.counter("persistence.java.pinned"), 12);
}

#[test]
fn an_unknown_session_id_is_balanced_and_what_the_server_issues_is_learned() {
    let (_backends, envoy) = setup("app-cookie.yaml", |_| {});
    let mut jar = Jar::default();
    jar.cookies.insert("JSESSIONID".into(), "FOREIGN0123.elsewhere".into());
    let response = jar.get_from(envoy.addr(), "/");
    let server = backend_of(&response);
    let issued = jar.get("JSESSIONID").unwrap().to_string();
    assert_ne!(issued, "FOREIGN0123.elsewhere", "the backend did not know it and issued its own");
    for _ in 0..5 {
        assert_eq!(backend_of(&jar.get_from(envoy.addr(), "/")), server);
    }
    assert_eq!(envoy.counter("persistence.java.new"), 1);
    assert_eq!(envoy.counter("persistence.java.entries"), 1, "the unknown id was replaced, not kept");
}

#[test]
fn a_new_session_id_moves_the_mapping() {
    let (backends, envoy) = setup("app-cookie.yaml", |_| {});
    let mut jar = Jar::default();
    let server = backend_of(&jar.get_from(envoy.addr(), "/"));
    let before_login = jar.get("JSESSIONID").unwrap().to_string();
    // Login rotates the id on the same server (session fixation protection).
    let login = jar.get_from(envoy.addr(), "/login");
    assert_eq!(backend_of(&login), server);
    let after_login = jar.get("JSESSIONID").unwrap().to_string();
    assert_ne!(after_login, before_login);
    for _ in 0..5 {
        assert_eq!(session_of(&jar.get_from(envoy.addr(), "/")), after_login);
    }
    assert_eq!(envoy.counter("persistence.java.entries"), 1, "the replaced id was forgotten");
    // The server fails: the next server issues a new id, and the client follows it there.
    let down = named(&backends, &server);
    envoy.set_health(down, false);
    let moved = jar.get_from(envoy.addr(), "/");
    let new_server = backend_of(&moved);
    assert_ne!(new_server, server);
    let after_failover = jar.get("JSESSIONID").unwrap().to_string();
    assert!(after_failover.ends_with(&new_server), "{after_failover}");
    envoy.set_health(down, true);
    for _ in 0..5 {
        let response = jar.get_from(envoy.addr(), "/");
        assert_eq!((backend_of(&response), session_of(&response)), (new_server.clone(), after_failover.clone()));
    }
    assert_eq!(envoy.counter("persistence.java.repicked"), 1);
    // Logout deletes the cookie: the mapping goes too.
    jar.get_from(envoy.addr(), "/logout");
    assert_eq!(envoy.counter("persistence.java.entries"), 0);
}

#[test]
fn idle_sessions_are_forgotten_after_the_timeout() {
    let backends = Backend::servlets(3);
    let config = EnvoyConfig::load("app-cookie.yaml").backends("app", &backends).fast_health_checks().profile_settings(|section| {
        section.as_object_mut().unwrap().remove("timeout_minutes");
        section["timeout_seconds"] = json!(2);
        section["max_entries"] = json!(256);
    });
    let envoy = Envoy::start(&config);
    let mut jar = Jar::default();
    jar.get_from(envoy.addr(), "/");
    // Used within the timeout, the session is kept (and refreshed without a write per request).
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(900));
        jar.get_from(envoy.addr(), "/");
    }
    assert_eq!(envoy.counter("persistence.java.pinned"), 3);
    assert_eq!(envoy.counter("persistence.java.expired"), 0);
    // Idle past the timeout: swept, and the next request is load balanced again.
    envoy.wait_until("the idle session to be swept", || envoy.counter("persistence.java.expired") == 1);
    assert_eq!(envoy.counter("persistence.java.entries"), 0);
    jar.get_from(envoy.addr(), "/");
    assert_eq!(envoy.counter("persistence.java.new"), 2);
}

#[test]
fn server_down_never_keeps_sessions_on_their_server() {
    let backends = Backend::servlets(3);
    let config = EnvoyConfig::load("app-cookie.yaml").backends("app", &backends).fast_health_checks().server_down_never("app");
    let envoy = Envoy::start(&config);
    let mut jar = Jar::default();
    let server = backend_of(&jar.get_from(envoy.addr(), "/"));
    let down = named(&backends, &server);
    envoy.set_health(down, false);
    for _ in 0..5 {
        assert_eq!(backend_of(&jar.get_from(envoy.addr(), "/")), server);
    }
    assert_eq!(envoy.counter("persistence.java.repicked"), 0);
}

#[test]
fn prefix_mode_round_trip_the_backend_sees_exactly_its_own_value() {
    let (backends, envoy) = setup("app-cookie-prefix.yaml", with_key);
    let mut jar = Jar::default();
    let first = jar.get_from(envoy.addr(), "/");
    let (server, id) = (backend_of(&first), session_of(&first));
    let client_value = jar.get("JSESSIONID").unwrap().to_string();
    assert!(client_value.ends_with(&format!(".{id}")) && client_value.len() > id.len() + 60, "{client_value}");
    assert!(first.all("set-cookie")[0].ends_with("; Path=/; HttpOnly"), "the application's attributes are kept");
    for _ in 0..5 {
        let response = jar.get_from(envoy.addr(), "/");
        assert_eq!((backend_of(&response), session_of(&response)), (server.clone(), id.clone()));
    }
    let received = named(&backends, &server).last_received().unwrap();
    assert_eq!(received.header("cookie").unwrap(), format!("JSESSIONID={id}").as_bytes());
    assert_eq!(envoy.counter("persistence.java.pinned"), 5);
    assert_eq!(envoy.stats().keys().filter(|k| k.contains("persistence.java.entries")).count(), 0, "prefix mode keeps no table");
    // Another Envoy with the same key (a replica, or this one restarted) routes the same cookie.
    let replica = envoy.restart();
    let response = jar.get_from(replica.addr(), "/");
    assert_eq!((backend_of(&response), session_of(&response)), (server, id));
}

#[test]
fn prefix_mode_follows_a_failover_and_rejects_foreign_tokens() {
    let (backends, envoy) = setup("app-cookie-prefix.yaml", with_key);
    let mut jar = Jar::default();
    let server = backend_of(&jar.get_from(envoy.addr(), "/"));
    let down = named(&backends, &server);
    envoy.set_health(down, false);
    let moved = jar.get_from(envoy.addr(), "/");
    let new_server = backend_of(&moved);
    assert_ne!(new_server, server);
    envoy.set_health(down, true);
    for _ in 0..5 {
        assert_eq!(backend_of(&jar.get_from(envoy.addr(), "/")), new_server);
    }
    // A token sealed by another fleet's key: stripped, load balanced, counted.
    let other = EnvoyConfig::load("app-cookie-prefix.yaml").backends("app", &backends).fast_health_checks().plugin(|p| {
        p["keys"] = json!([{"id": 1, "secret": test_secret(6)}]);
    });
    let other = Envoy::start(&other);
    let mut stranger = Jar::default();
    stranger.get_from(other.addr(), "/");
    let foreign = stranger.get("JSESSIONID").unwrap().to_string();
    let mut landed = HashSet::new();
    for _ in 0..6 {
        let response = get(envoy.addr(), "/", &[("cookie", format!("JSESSIONID={foreign}").as_bytes())]);
        landed.insert(backend_of(&response));
    }
    assert!(landed.len() > 1, "foreign tokens are not honoured: {landed:?}");
    assert_eq!(envoy.counter("persistence.java.rejected.forged"), 6);
    let stripped = foreign.split_once('.').unwrap().1;
    let received: Vec<_> = backends.iter().filter_map(Backend::last_received).collect();
    assert!(received.iter().any(|r| r.header("cookie") == Some(format!("JSESSIONID={stripped}").as_bytes())), "the token is stripped");
}
