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
