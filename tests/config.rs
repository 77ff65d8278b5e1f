//! Plugin configuration in a real Envoy: bad configurations are refused with a message that names
//! the field and the rule; profiles are chosen per route (metadata, route name, default).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{get, Backend, Envoy, EnvoyConfig, Jar};
use serde_json::json;

fn set_cookie_names(response: &common::http::Response) -> Vec<String> {
    response.all("set-cookie").iter().map(|c| c.split('=').next().unwrap().to_string()).collect()
}

#[test]
fn envoy_refuses_a_bad_configuration_and_says_why() {
    let backends = Backend::start_many(1);
    let config = EnvoyConfig::load("http-cookie.yaml").backends("app", &backends).plugin(|p| {
        p["profiles"][0]["http_cookie"]["timeout_minutes"] = json!(5);
        p["profiles"][1]["http_cookie"]["secure"] = json!("yes");
    });
    let log = match Envoy::try_start(&config, 1) {
        Ok(_) => panic!("Envoy accepted an invalid plugin configuration"),
        Err(log) => log,
    };
    assert!(log.contains("invalid configuration: profiles[0].http_cookie.timeout_minutes: must be an integer between 10 and 720, got number 5"), "{log}");
    assert!(log.contains("invalid configuration: profiles[1].http_cookie.secure: must be one of \"auto\", \"always\", \"never\", got string \"yes\""), "{log}");
    assert!(log.contains("plugin rejected: 2 configuration error(s)"), "{log}");
    let refused = ["Unable to create Wasm plugin persistence", "Unable to create Wasm HTTP filter", "Failed to initialize dynamic module"];
    assert!(refused.iter().any(|r| log.contains(r)), "{log}");
}

#[test]
fn envoy_refuses_unparseable_json_and_unknown_profiles() {
    let backends = Backend::start_many(1);
    for (text, message) in [
        ("{\"default_profile\": ", "invalid configuration: configuration: is not valid JSON"),
        ("{\"routes\": {\"api\": \"nope\"}}", "invalid configuration: routes.api: names profile \"nope\", which is not defined"),
        ("{\"default_profle\": \"x\"}", "invalid configuration: default_profle: unknown field"),
    ] {
        let config = EnvoyConfig::load("http-cookie.yaml").backends("app", &backends).plugin_text(text);
        let log = Envoy::try_start(&config, 1).err().unwrap_or_else(|| panic!("accepted {text}"));
        assert!(log.contains(message), "{text}: {log}");
    }
}

#[test]
fn each_route_gets_its_profile_metadata_then_route_name_then_default() {
    let backends = Backend::start_many(3);
    let config = EnvoyConfig::load("http-cookie.yaml").backends("app", &backends).fast_health_checks();
    let envoy = Envoy::start(&config);
    // "/" -> default_profile web (AVI_COOKIE); "/api/" -> route name "api" (API_AFFINITY);
    // "/shop/" -> route metadata "shop" (SHOP_AFFINITY, Path=/shop/).
    assert_eq!(set_cookie_names(&get(envoy.addr(), "/", &[])), ["AVI_COOKIE"]);
    assert_eq!(set_cookie_names(&get(envoy.addr(), "/api/x", &[])), ["API_AFFINITY"]);
    let shop = get(envoy.addr(), "/shop/x", &[]);
    assert_eq!(set_cookie_names(&shop), ["SHOP_AFFINITY"]);
    assert!(shop.all("set-cookie")[0].contains("Path=/shop/"));
    // Each profile pins independently: a client can be on different servers per profile.
    let mut jar = Jar::default();
    for path in ["/", "/api/x", "/shop/x"] {
        let server = jar.get_from(envoy.addr(), path).header("x-backend").unwrap().to_string();
        for _ in 0..5 {
            assert_eq!(jar.get_from(envoy.addr(), path).header("x-backend").unwrap(), server, "{path}");
        }
    }
    assert_eq!(envoy.counter("persistence.web.pinned"), 5);
    assert_eq!(envoy.counter("persistence.api.pinned"), 5);
    assert_eq!(envoy.counter("persistence.shop.pinned"), 5);
    // The startup summary names every profile with its description.
    let summary = envoy.filter_log().into_iter().find(|l| l.contains("configured 6 profile(s)")).expect("startup summary");
    assert!(summary.contains("web (http_cookie, cookie AVI_COOKIE, server_down immediate: browser sessions, 12 hours at most)"), "{summary}");
    assert!(summary.contains("default profile: web; 1 route mapping(s)"), "{summary}");
}

#[test]
fn a_route_with_the_filter_disabled_gets_no_persistence() {
    let backends = Backend::start_many(3);
    let config = EnvoyConfig::load("http-cookie.yaml").backends("app", &backends).fast_health_checks();
    let envoy = Envoy::start(&config);
    let mut jar = Jar::default();
    jar.get_from(envoy.addr(), "/");
    let cookie = jar.header().unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..9 {
        let response = get(envoy.addr(), "/static/app.js", &[("cookie", cookie.as_bytes())]);
        assert!(response.all("set-cookie").is_empty());
        seen.insert(response.header("x-backend").unwrap().to_string());
    }
    assert_eq!(seen.len(), 3, "/static/ is load balanced even with a persistence cookie");
    // The filter did not run there: the cookie reaches the backend as sent.
    let received: Vec<_> = backends.iter().flat_map(|b| b.received()).filter(|r| r.path.starts_with("/static/")).collect();
    assert!(received.iter().all(|r| r.header("cookie") == Some(cookie.as_bytes())));
}

#[test]
fn route_metadata_naming_an_unknown_profile_is_counted_and_logged_once() {
    let backends = Backend::start_many(3);
    let mut config = EnvoyConfig::load("http-cookie.yaml").backends("app", &backends).fast_health_checks();
    config.route_mut("main", "shop")["metadata"]["filter_metadata"]["persistence"]["profile"] = json!("shopp");
    let envoy = Envoy::start(&config);
    for _ in 0..4 {
        let response = get(envoy.addr(), "/shop/x", &[]);
        assert_eq!(response.status, 200);
        assert!(response.all("set-cookie").is_empty(), "no persistence on a route whose profile is unknown");
    }
    assert_eq!(envoy.counter("persistence.unknown_profile"), 4);
    let warnings = envoy.filter_log().iter().filter(|l| l.contains("names profile \"shopp\"")).count();
    assert!((1..=2).contains(&warnings), "logged once per worker, not per request: {warnings}");
}

#[test]
fn a_bad_configuration_pushed_to_a_running_envoy_is_refused_counted_and_changes_nothing() {
    let backends = Backend::start_many(3);
    let good = EnvoyConfig::load("http-cookie.yaml").backends("app", &backends).fast_health_checks();
    let mut envoy = Envoy::start_dynamic(&good);
    let mut jar = Jar::default();
    let server = jar.get_from(envoy.addr(), "/").header("x-backend").unwrap().to_string();
    let bad = good.clone().profile_settings(|s| s["timeout_minutes"] = json!(5));
    envoy.update_listeners(&bad);
    assert_eq!(envoy.stats()["listener_manager.lds.update_rejected"], 1);
    assert_eq!(envoy.counter("persistence.config_errors"), 1);
    assert!(envoy.log().contains("profiles[0].http_cookie.timeout_minutes: must be an integer between 10 and 720, got number 5"));
    // The running configuration is untouched: same cookie, same server, same timeout.
    for _ in 0..5 {
        assert_eq!(jar.get_from(envoy.addr(), "/").header("x-backend").unwrap(), server);
    }
    assert!(get(envoy.addr(), "/", &[]).all("set-cookie")[0].contains("Max-Age=43200"));
    // A valid update is applied.
    let renamed = good.clone().profile_settings(|s| s["name"] = json!("RENAMED"));
    envoy.update_listeners(&renamed);
    assert_eq!(envoy.stats()["listener_manager.lds.update_success"], 2);
    envoy.wait_until("the new listener to serve", || set_cookie_names(&get(envoy.addr(), "/", &[])) == ["RENAMED"]);
}
