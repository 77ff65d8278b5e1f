//! The native build itself (run by `make integration-native`, with the other behaviour tests in
//! native mode): every example under envoy/native/ loads into Envoy 1.40 with the built module
//! (which catches ABI drift at load: a missing callback or hook is a load error), and one of them
//! pins a returning client without a stateful_session filter.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::envoy::{native_module_dir, repo_root};
use common::{backend_of, Backend, Envoy, EnvoyConfig, Jar};

fn native_examples() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("envoy/native"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".yaml"))
        .map(|name| format!("native/{name}"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    files
}

#[test]
fn envoy_accepts_every_native_example_with_the_built_module() {
    for file in native_examples() {
        let config = EnvoyConfig::load(&file).native_build(native_module_dir());
        if let Err(output) = config.validate() {
            panic!("envoy --mode validate rejected envoy/{file}:\n{output}");
        }
        let text = std::fs::read_to_string(repo_root().join("envoy").join(&file)).unwrap();
        let configuration: String = text.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
        assert!(!configuration.contains("stateful_session") && !configuration.contains("wasm.v3.Wasm"), "{file}: the native build needs neither");
    }
}

#[test]
fn the_native_example_pins_returning_clients_across_workers() {
    let backends = Backend::start_many(3);
    let config = EnvoyConfig::load("native/http-cookie.yaml").backends("app", &backends).fast_health_checks().native_build(native_module_dir());
    let envoy = Envoy::start_with(&config, 2);
    let mut clients: Vec<(Jar, String)> = (0..9)
        .map(|_| {
            let mut jar = Jar::default();
            let server = backend_of(&jar.get_from(envoy.addr(), "/"));
            (jar, server)
        })
        .collect();
    for (jar, server) in &mut clients {
        for _ in 0..5 {
            assert_eq!(&backend_of(&jar.get_from(envoy.addr(), "/")), server);
        }
    }
    assert_eq!(envoy.counter("persistence.web.pinned"), 45);
    assert!(envoy.stats().contains_key("dynamicmodulescustom.persistence.web.pinned"), "the native build's stats");
    envoy.assert_vm_healthy();
}

#[test]
fn a_cookie_issued_by_one_build_opens_in_the_other() {
    if !common::envoy::native() {
        return; // the native run (make integration-native) has both builds
    }
    let backends = Backend::start_many(3);
    let config = EnvoyConfig::load("http-cookie.yaml").backends("app", &backends).fast_health_checks();
    let native = Envoy::start(&config);
    let wasm = Envoy::start(&config.clone().wasm_build());
    assert!(native.stats().contains_key("dynamicmodulescustom.persistence.web.new") && wasm.stats().contains_key("wasmcustom.persistence.web.new"));
    for (issuer, other) in [(&native, &wasm), (&wasm, &native)] {
        for _ in 0..6 {
            let mut jar = Jar::default();
            let server = backend_of(&jar.get_from(issuer.addr(), "/"));
            let response = jar.get_from(other.addr(), "/");
            assert_eq!(backend_of(&response), server, "the other build sends the client to its server");
            assert!(response.header("set-cookie").is_none(), "and keeps its cookie");
        }
    }
    assert_eq!(native.counter("persistence.web.pinned"), 6);
    assert_eq!(wasm.stats().get("wasmcustom.persistence.web.pinned"), Some(&6));
}

#[test]
fn the_native_strict_route_answers_503_when_the_pinned_host_is_gone() {
    let backends = Backend::start_many(3);
    let example = EnvoyConfig::load("native/http-cookie-never.yaml").native_build(native_module_dir());
    let envoy = Envoy::start(&example.clone().backends("app", &backends).fast_health_checks());
    let mut jar = Jar::default();
    let server = backend_of(&jar.get_from(envoy.addr(), "/"));
    drop(envoy);
    // The same keys, the client's host scaled away.
    let (gone, kept): (Vec<Backend>, Vec<Backend>) = backends.into_iter().partition(|b| b.name == server);
    let envoy = Envoy::start(&example.backends("app", &kept).fast_health_checks());
    let balanced = jar.get_from(envoy.addr(), "/");
    assert_eq!(balanced.status, 200, "{balanced:?}");
    assert_ne!(backend_of(&balanced), server, "not strict: load balanced");
    let strict = jar.get_from(envoy.addr(), "/strict/x");
    assert_eq!(strict.status, 503, "strict: no other host ({strict:?})");
    assert!(gone.iter().all(|b| b.received().len() == 1), "the gone host saw only the first request");
    assert_eq!(envoy.counter("persistence.web.kept"), 1);
    assert_eq!(envoy.counter("persistence.web.no_upstream"), 1);
}

#[test]
fn envoy_refuses_bad_route_settings_and_says_why() {
    let backends = Backend::start_many(1);
    let mut config = EnvoyConfig::load("native/http-cookie-never.yaml").backends("app", &backends).native_build(native_module_dir());
    let routes =
        &mut config.value["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"];
    let strict = routes.as_array_mut().unwrap().iter_mut().find(|r| r["name"] == "strict").unwrap();
    strict["typed_per_filter_config"]["persistence"] = common::envoy::native_route_settings(r#"{"strict": "yes", "sticky": 1}"#);
    let log = match Envoy::try_start(&config, 1) {
        Ok(_) => panic!("Envoy accepted bad route settings"),
        Err(log) => log,
    };
    assert!(log.contains(r#"per-route configuration: route.strict: must be true or false, got string "yes""#), "{log}");
    assert!(log.contains("per-route configuration: route.sticky: unknown field (known fields here: strict)"), "{log}");
}
