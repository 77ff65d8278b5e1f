#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use serde_json::json;

fn plugin(profiles: Value) -> String {
    json!({"keys": [{"id": 1, "secret": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}], "default_profile": "web", "profiles": profiles}).to_string()
}

fn cookie_profiles(server_down: &str) -> Value {
    json!([{"name": "web", "type": "http_cookie", "server_down": server_down, "http_cookie": {"name": "S"}}])
}

fn wasm(configuration: &str) -> Value {
    json!({"name": "persistence", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"root_id": "persistence", "vm_config": {"vm_id": "persistence", "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": "/x/envoy_persistence.wasm"}}},
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": configuration}}}})
}

fn session(header: &str) -> Value {
    json!({"name": "envoy.filters.http.stateful_session", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession",
        "session_state": {"name": "envoy.http.stateful_session.header", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.http.stateful_session.header.v3.HeaderBasedSessionState", "name": header}}}})
}

fn router() -> Value {
    json!({"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
}

fn route_config() -> Value {
    json!({"name": "local", "virtual_hosts": [{"name": "app", "domains": ["*"],
        "request_headers_to_remove": ["x-persistence-upstream"], "response_headers_to_remove": ["x-persistence-upstream"],
        "routes": [{"name": "all", "match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]})
}

fn cluster(statuses: Value) -> Value {
    json!({"name": "app", "health_checks": [{"timeout": "1s"}], "common_lb_config": {"override_host_status": {"statuses": statuses}}})
}

/// A bootstrap with one listener whose connection manager has `http_filters` and `route_config`.
fn bootstrap(http_filters: Value, route_config: Value, clusters: Value) -> Value {
    json!({"static_resources": {"listeners": [{"name": "main", "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "use_remote_address": true, "route_config": route_config, "http_filters": http_filters}}]}]}], "clusters": clusters}})
}

fn good() -> Value {
    bootstrap(
        json!([wasm(&plugin(cookie_profiles("immediate"))), session("x-persistence-upstream"), router()]),
        route_config(),
        json!([cluster(json!(["UNKNOWN", "HEALTHY", "DEGRADED"]))]),
    )
}

fn found(values: &[Value]) -> Vec<Finding> {
    let documents: Vec<Document> = values.iter().enumerate().map(|(i, value)| Document { file: format!("f{i}.yaml"), value: value.clone() }).collect();
    check(&documents)
}

fn kinds(values: &[Value]) -> Vec<Kind> {
    found(values).iter().map(|f| f.kind).collect()
}

#[test]
fn a_complete_configuration_has_no_findings() {
    assert_eq!(found(&[good()]), vec![]);
}

#[test]
fn invalid_plugin_configurations_are_reported_with_the_filters_own_messages() {
    let mut config = good();
    let filters = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"];
    filters[0] = wasm(r#"{"profiles": [{"name": "web", "type": "http_cookies"}]}"#);
    let findings = found(&[config]);
    assert!(!findings.is_empty());
    assert!(findings.iter().all(|f| f.kind == Kind::InvalidPluginConfiguration), "{findings:?}");
    assert!(findings.iter().any(|f| f.detail.contains("profiles[0].type")), "{findings:?}");
    assert!(findings[0].path.ends_with("http_filters[0].typed_config.config.configuration"), "{}", findings[0].path);
}

#[test]
fn a_configuration_that_is_not_a_string_value_is_reported() {
    let mut config = good();
    let filter = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0];
    filter["typed_config"]["config"]["configuration"] = json!({"@type": "type.googleapis.com/google.protobuf.Struct", "value": {}});
    assert_eq!(kinds(&[config.clone()]), vec![Kind::InvalidPluginConfiguration]);
    // A BytesValue holding the JSON is what the filter reads too.
    let text = plugin(cookie_profiles("immediate"));
    filter_of(&mut config)["typed_config"]["config"]["configuration"] = json!({"@type": "type.googleapis.com/google.protobuf.BytesValue",
        "value": base64::engine::general_purpose::STANDARD.encode(text)});
    assert_eq!(kinds(&[config]), vec![]);
}

fn filter_of(config: &mut Value) -> &mut Value {
    &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]
}

use base64::Engine;

#[test]
fn stateful_session_missing_misplaced_or_reading_another_header() {
    let filters = |list: Value| bootstrap(list, route_config(), json!([cluster(json!(["UNKNOWN", "HEALTHY"]))]));
    let config = plugin(cookie_profiles("immediate"));
    assert_eq!(kinds(&[filters(json!([wasm(&config), router()]))]), vec![Kind::StatefulSessionMissing]);
    assert_eq!(kinds(&[filters(json!([session("x-persistence-upstream"), wasm(&config), router()]))]), vec![Kind::StatefulSessionOrder]);
    assert_eq!(kinds(&[filters(json!([wasm(&config), router(), session("x-persistence-upstream")]))]), vec![Kind::StatefulSessionOrder]);
    assert_eq!(kinds(&[filters(json!([wasm(&config), session("x-other"), router()]))]), vec![Kind::StatefulSessionHeader]);
    let mut cookie_mode = session("x-persistence-upstream");
    cookie_mode["typed_config"]["session_state"] = json!({"name": "envoy.http.stateful_session.cookie", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.http.stateful_session.cookie.v3.CookieBasedSessionState", "cookie": {"name": "x"}}});
    assert_eq!(kinds(&[filters(json!([wasm(&config), cookie_mode, router()]))]), vec![Kind::StatefulSessionHeader]);
    // A custom override header: stateful_session must read that one.
    let custom = json!({"override_header": "x-pin", "keys": [{"id": 1, "secret": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}],
        "default_profile": "web", "profiles": cookie_profiles("immediate")})
    .to_string();
    let mut routes = route_config();
    routes["virtual_hosts"][0]["request_headers_to_remove"] = json!(["x-pin"]);
    routes["virtual_hosts"][0]["response_headers_to_remove"] = json!(["X-Pin"]);
    let custom_filters = |header: &str| bootstrap(json!([wasm(&custom), session(header), router()]), routes.clone(), json!([cluster(json!(["HEALTHY"]))]));
    assert_eq!(kinds(&[custom_filters("x-pin")]), vec![]);
    assert_eq!(kinds(&[custom_filters("x-persistence-upstream")]), vec![Kind::StatefulSessionHeader]);
}

#[test]
fn override_host_status_must_match_server_down() {
    let with = |server_down: &str, statuses: Value| {
        bootstrap(json!([wasm(&plugin(cookie_profiles(server_down))), session("x-persistence-upstream"), router()]), route_config(), json!([cluster(statuses)]))
    };
    assert_eq!(kinds(&[with("immediate", json!(["UNKNOWN", "HEALTHY", "DEGRADED", "UNHEALTHY"]))]), vec![Kind::OverrideHostStatusImmediate]);
    assert_eq!(kinds(&[with("immediate", json!(["UNKNOWN"]))]), vec![Kind::OverrideHostStatusImmediate]);
    assert_eq!(kinds(&[with("immediate", json!(["HEALTHY", "DRAINING"]))]), vec![], "draining hosts may keep their sessions");
    assert_eq!(kinds(&[with("never", json!(["UNKNOWN", "HEALTHY", "DEGRADED", "UNHEALTHY", "DRAINING", "TIMEOUT"]))]), vec![]);
    assert_eq!(kinds(&[with("never", json!(["UNKNOWN", "HEALTHY", "DEGRADED", "UNHEALTHY"]))]), vec![Kind::OverrideHostStatusNever]);
    // No override_host_status: Envoy's default (UNKNOWN, HEALTHY) suits immediate, not never.
    let mut default = with("never", json!([]));
    default["static_resources"]["clusters"][0].as_object_mut().unwrap().remove("common_lb_config");
    let findings = found(&[default]);
    assert_eq!(findings.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![Kind::OverrideHostStatusNever]);
    assert!(findings[0].detail.contains("Envoy's default"), "{}", findings[0]);
    assert_eq!(findings[0].path, "static_resources.clusters[0]");
}

#[test]
fn clusters_need_health_checks_or_outlier_detection() {
    let mut config = good();
    config["static_resources"]["clusters"][0].as_object_mut().unwrap().remove("health_checks");
    assert_eq!(kinds(&[config.clone()]), vec![Kind::NoHealthChecks]);
    config["static_resources"]["clusters"][0]["outlier_detection"] = json!({"consecutive_5xx": 3});
    assert_eq!(kinds(&[config]), vec![]);
}

#[test]
fn routes_from_rds_and_clusters_from_cds_in_other_files_are_followed() {
    let mut listener_file = good();
    let hcm = &mut listener_file["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    hcm.as_object_mut().unwrap().remove("route_config");
    hcm["rds"] = json!({"route_config_name": "local", "config_source": {"path_config_source": {"path": "rds.yaml"}}});
    listener_file["static_resources"].as_object_mut().unwrap().remove("clusters");
    let mut routes = route_config();
    routes["@type"] = json!("type.googleapis.com/envoy.config.route.v3.RouteConfiguration");
    routes["virtual_hosts"][0]["routes"][0]["route"] = json!({"weighted_clusters": {"clusters": [{"name": "app", "weight": 1}]}});
    let rds = json!({"resources": [routes]});
    let mut unhealthy = cluster(json!(["UNHEALTHY", "HEALTHY"]));
    unhealthy["@type"] = json!("type.googleapis.com/envoy.config.cluster.v3.Cluster");
    let cds = json!({"resources": [unhealthy]});
    let findings = found(&[listener_file.clone(), rds.clone(), cds]);
    assert_eq!(findings.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![Kind::OverrideHostStatusImmediate]);
    assert_eq!((findings[0].file.as_str(), findings[0].path.as_str()), ("f2.yaml", "resources[0].common_lb_config.override_host_status"));
    // Without the route configuration nothing about routes can be said, and nothing is.
    assert_eq!(kinds(&[listener_file]), vec![]);
}

#[test]
fn the_override_header_must_be_removed_at_some_level() {
    let mut config = good();
    let vhost = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0];
    vhost.as_object_mut().unwrap().remove("request_headers_to_remove");
    assert_eq!(kinds(&[config.clone()]), vec![Kind::OverrideHeaderNotRemoved]);
    let route_config = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"];
    route_config["request_headers_to_remove"] = json!(["x-persistence-upstream"]);
    route_config["virtual_hosts"][0].as_object_mut().unwrap().remove("response_headers_to_remove");
    route_config["virtual_hosts"][0]["routes"][0]["response_headers_to_remove"] = json!(["x-persistence-upstream"]);
    assert_eq!(kinds(&[config]), vec![]);
}

#[test]
fn disabling_one_filter_without_the_other_is_found_at_any_level() {
    let off = json!({"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true});
    let mut config = good();
    let route_config = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"];
    route_config["virtual_hosts"][0]["routes"][0]["typed_per_filter_config"] = json!({"persistence": off});
    assert_eq!(kinds(&[config.clone()]), vec![Kind::DisabledAlone]);
    let route_config = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"];
    route_config["virtual_hosts"][0]["typed_per_filter_config"] = json!({"envoy.filters.http.stateful_session": off});
    assert_eq!(kinds(&[config.clone()]), vec![], "route-level persistence off, virtual-host-level stateful_session off");
    let route_config = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"];
    route_config["virtual_hosts"][0]["routes"][0].as_object_mut().unwrap().remove("typed_per_filter_config");
    assert_eq!(kinds(&[config]), vec![Kind::DisabledAlone]);
}

#[test]
fn route_metadata_and_routes_must_name_what_exists() {
    let mut config = good();
    let route =
        &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0];
    route["metadata"] = json!({"filter_metadata": {"persistence": {"profile": "wbe"}}});
    assert_eq!(kinds(&[config.clone()]), vec![Kind::RouteProfileUnknown]);
    let mut text: Value = serde_json::from_str(&plugin(cookie_profiles("immediate"))).unwrap();
    text["routes"] = json!({"al": "web"});
    *filter_of(&mut config) = wasm(&text.to_string());
    let route =
        &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0];
    route.as_object_mut().unwrap().remove("metadata");
    assert_eq!(kinds(&[config]), vec![Kind::RoutesUnmatched]);
}

#[test]
fn token_profiles_need_keys_and_table_profiles_do_not() {
    let no_keys = json!({"default_profile": "web", "profiles": cookie_profiles("immediate")}).to_string();
    let mut config = good();
    *filter_of(&mut config) = wasm(&no_keys);
    assert_eq!(kinds(&[config.clone()]), vec![Kind::NoKeys]);
    let table = json!({"default_profile": "web", "profiles": [{"name": "web", "type": "app_cookie", "server_down": "immediate", "app_cookie": {"name": "JSESSIONID"}}]});
    *filter_of(&mut config) = wasm(&table.to_string());
    assert_eq!(kinds(&[config.clone()]), vec![]);
    // Keys from the environment: the VM must be given the variable.
    let from_env = json!({"default_profile": "web", "keys_env": "KEYS", "profiles": cookie_profiles("immediate")}).to_string();
    *filter_of(&mut config) = wasm(&from_env);
    assert_eq!(kinds(&[config.clone()]), vec![Kind::KeysEnvNotPassed]);
    filter_of(&mut config)["typed_config"]["config"]["vm_config"]["environment_variables"] = json!({"host_env_keys": ["KEYS"]});
    assert_eq!(kinds(&[config.clone()]), vec![]);
    filter_of(&mut config)["typed_config"]["config"]["vm_config"]["environment_variables"] = json!({"key_values": {"KEYS": "[]"}});
    assert_eq!(kinds(&[config]), vec![]);
}

fn client_ip_config() -> Value {
    let text = json!({"default_profile": "System-Persistence-Client-IP"}).to_string();
    let counter = json!({"name": "persistence_connections", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
        "config": {"root_id": "persistence_connections", "vm_config": {"vm_id": "persistence", "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": "/x/envoy_persistence.wasm"}}}}}});
    let mut config = good();
    *filter_of(&mut config) = wasm(&text);
    let filters = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"].as_array_mut().unwrap();
    filters.insert(0, counter);
    config
}

#[test]
fn client_ip_keys_need_a_trustworthy_address_and_the_connection_counter_in_the_same_vm() {
    assert_eq!(kinds(&[client_ip_config()]), vec![]);
    let mut config = client_ip_config();
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][1]["typed_config"]["use_remote_address"] = json!(false);
    assert_eq!(kinds(&[config]), vec![Kind::ClientAddressFromClients]);
    let mut config = client_ip_config();
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["config"]["vm_config"]["vm_id"] = json!("other");
    let findings = found(&[config]);
    assert_eq!(findings.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![Kind::ConnectionCounterVm]);
    assert!(findings[0].detail.ends_with("in vm_id"), "{}", findings[0]);
    let mut config = client_ip_config();
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"].as_array_mut().unwrap().remove(0);
    assert_eq!(kinds(&[config.clone()]), vec![Kind::ConnectionCounterMissing]);
    // Behind trusted proxies the connection belongs to the proxy: the counter cannot help.
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["xff_num_trusted_hops"] = json!(1);
    assert_eq!(kinds(&[config]), vec![]);
}

#[test]
fn tls_session_ids_need_set_filter_state_before_the_filter() {
    let text = json!({"default_profile": "tls", "profiles": [{"name": "tls", "type": "tls", "server_down": "immediate"}]}).to_string();
    let mut config = good();
    *filter_of(&mut config) = wasm(&text);
    assert_eq!(kinds(&[config.clone()]), vec![Kind::SessionIdWithoutFilterState]);
    let set = json!({"name": "envoy.filters.http.set_filter_state", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.set_filter_state.v3.Config",
        "on_request_headers": [{"object_key": "tls.sid", "factory_key": "envoy.string", "format_string": {"text_format_source": {"inline_string": "%DOWNSTREAM_TLS_SESSION_ID%"}}}]}});
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"].as_array_mut().unwrap().insert(0, set);
    assert_eq!(kinds(&[config]), vec![]);
}

#[test]
fn bare_plugin_configurations_and_istio_wasm_plugins_are_checked() {
    let bare: Value = serde_json::from_str(&plugin(cookie_profiles("sometimes"))).unwrap();
    let findings = found(&[bare]);
    assert_eq!(findings.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![Kind::InvalidPluginConfiguration]);
    assert!(findings[0].detail.contains("server_down"), "{}", findings[0]);
    let wasm_plugin = json!({"kind": "WasmPlugin", "spec": {"pluginConfig": {"default_profile": "System-Persistence-Http-Cookie"}}});
    let service = |header: &str| json!({"kind": "Service", "metadata": {"name": "shop", "labels": {"istio.io/persistent-session-header": header}}});
    let rule = |outlier: bool| {
        let mut rule = json!({"kind": "DestinationRule", "metadata": {"name": "shop"}, "spec": {"host": "shop", "trafficPolicy": {}}});
        if outlier {
            rule["spec"]["trafficPolicy"]["outlierDetection"] = json!({"consecutive5xxErrors": 3});
        }
        rule
    };
    assert_eq!(kinds(&[wasm_plugin.clone(), service("x-persistence-upstream"), rule(true)]), vec![Kind::NoKeys]);
    assert_eq!(kinds(&[wasm_plugin.clone(), service("x-session"), rule(false)]), vec![Kind::StatefulSessionHeader, Kind::NoKeys, Kind::NoHealthChecks]);
    // Keys from the environment: the plugin must pass the variable from the host.
    let mut from_env = wasm_plugin.clone();
    from_env["spec"]["pluginConfig"]["keys_env"] = json!("PERSISTENCE_KEYS");
    assert_eq!(kinds(&[from_env.clone()]), vec![Kind::KeysEnvNotPassed]);
    from_env["spec"]["vmConfig"] = json!({"env": [{"name": "PERSISTENCE_KEYS", "valueFrom": "HOST"}]});
    assert_eq!(kinds(&[from_env]), vec![]);
}

#[test]
fn every_finding_names_its_effect_and_prints_file_path_and_fix() {
    for kind in Kind::ALL {
        assert!(kind.effect().len() > 40 && !kind.id().is_empty(), "{kind:?}");
    }
    let text = Finding::new(Kind::NoKeys, "envoy.yaml", "a.b[0]", "profile \"web\"").fix("add keys").to_string();
    assert_eq!(text, format!("envoy.yaml: a.b[0]: [no-keys] profile \"web\"\n  at run time: {}\n  fix: add keys", Kind::NoKeys.effect()));
}

#[test]
fn envoy_gateway_extension_policies_routes_proxies_and_health_checks() {
    let policy = |config: Value, env: Value| {
        json!({"kind": "EnvoyExtensionPolicy", "spec": {"targetRefs": [{"kind": "HTTPRoute", "name": "shop"}],
            "wasm": [{"rootID": "persistence", "code": {"type": "Image", "image": {"url": "r.example/envoy-persistence:1"}}, "config": config, "env": env}]}})
    };
    let config = json!({"keys_env": "KEYS", "default_profile": "web", "profiles": cookie_profiles("immediate")});
    let route = |persistence: Value| json!({"kind": "HTTPRoute", "metadata": {"name": "shop"}, "spec": {"rules": [{"sessionPersistence": persistence}]}});
    let proxy = json!({"kind": "EnvoyProxy", "spec": {"filterOrder": [{"name": "envoy.filters.http.wasm", "before": "envoy.filters.http.stateful_session"}]}});
    let health = json!({"kind": "BackendTrafficPolicy", "spec": {"targetRefs": [{"kind": "HTTPRoute", "name": "shop"}], "healthCheck": {"passive": {}}}});
    let header = json!({"type": "Header", "sessionName": "x-persistence-upstream"});
    let good = policy(config.clone(), json!({"hostKeys": ["KEYS"]}));
    assert_eq!(kinds(&[good.clone(), route(header.clone()), proxy.clone(), health.clone()]), vec![]);
    assert_eq!(kinds(&[policy(config.clone(), json!({})), route(header.clone()), proxy.clone(), health.clone()]), vec![Kind::KeysEnvNotPassed]);
    let cookie = json!({"type": "Cookie", "sessionName": "x-persistence-upstream"});
    assert_eq!(kinds(&[good.clone(), route(cookie), proxy.clone(), health.clone()]), vec![Kind::StatefulSessionHeader]);
    assert_eq!(kinds(&[good.clone(), route(Value::Null), proxy.clone(), health.clone()]), vec![Kind::StatefulSessionMissing]);
    assert_eq!(kinds(&[good.clone(), route(header)]), vec![Kind::StatefulSessionOrder, Kind::NoHealthChecks]);
    let invalid = policy(json!({"profiles": [{"name": "web", "type": "cookie"}]}), json!({}));
    let findings = found(&[invalid]);
    assert!(!findings.is_empty() && findings.iter().all(|f| f.kind == Kind::InvalidPluginConfiguration && f.path == "spec.wasm[0].config"), "{findings:?}");
}

#[test]
fn weighted_clusters_need_cluster_header_and_a_sticky_route_per_cluster() {
    let canary = |cluster_header: Option<&str>, sticky: &[&str]| {
        let mut plugin: Value = serde_json::from_str(&plugin(cookie_profiles("immediate"))).unwrap();
        if let Some(header) = cluster_header {
            plugin["cluster_header"] = json!(header);
        }
        let mut routes: Vec<Value> = sticky
            .iter()
            .map(|c| json!({"name": format!("sticky-{c}"), "match": {"prefix": "/", "headers": [{"name": "x-persistence-cluster", "string_match": {"exact": c}}]}, "route": {"cluster": c}}))
            .collect();
        routes.push(json!({"name": "weighted", "match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [{"name": "v1", "weight": 90}, {"name": "v2", "weight": 10}]}}}));
        let mut routing = route_config();
        routing["virtual_hosts"][0]["routes"] = json!(routes);
        let statuses = json!(["UNKNOWN", "HEALTHY", "DEGRADED"]);
        let clusters = json!([{"name": "v1", "health_checks": [{}], "common_lb_config": {"override_host_status": {"statuses": statuses}}},
                              {"name": "v2", "health_checks": [{}], "common_lb_config": {"override_host_status": {"statuses": statuses}}}]);
        found(&[bootstrap(json!([wasm(&plugin.to_string()), session("x-persistence-upstream"), router()]), routing, clusters)])
    };
    assert_eq!(canary(Some("x-persistence-cluster"), &["v1", "v2"]), vec![]);
    let unsteered = canary(None, &[]);
    assert_eq!(unsteered.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![Kind::WeightedClustersUnsteered]);
    assert!(unsteered[0].detail.contains("no cluster_header"), "{}", unsteered[0].detail);
    let missing = canary(Some("x-persistence-cluster"), &["v1"]);
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].detail, "no route before \"weighted\" sends requests with x-persistence-cluster: v2 to cluster \"v2\"");
    assert_eq!(missing[0].path, "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[1]");
}

#[test]
fn istio_weighted_destinations_need_a_header_route_per_cluster() {
    let plugin = |cluster_header: bool| {
        let mut config = json!({"keys_env": "K", "default_profile": "System-Persistence-Http-Cookie"});
        if cluster_header {
            config["cluster_header"] = json!("x-persistence-cluster");
        }
        json!({"kind": "WasmPlugin", "spec": {"pluginConfig": config, "vmConfig": {"env": [{"name": "K", "valueFrom": "HOST"}]}}})
    };
    let service = json!({"kind": "Service", "metadata": {"name": "shop", "namespace": "shop", "labels": {"istio.io/persistent-session-header": "x-persistence-upstream"}},
                         "spec": {"ports": [{"port": 8080}]}});
    let destination = |subset: &str| json!({"host": "shop", "subset": subset});
    let sticky = |subset: &str| {
        json!({"name": format!("sticky-{subset}"),
               "match": [{"headers": {"x-persistence-cluster": {"exact": format!("outbound|8080|{subset}|shop.shop.svc.cluster.local")}}}],
               "route": [{"destination": destination(subset)}]})
    };
    let split = json!({"name": "shop", "route": [{"destination": destination("v1"), "weight": 90}, {"destination": destination("v2"), "weight": 10}]});
    let virtual_service = |routes: Vec<Value>| json!({"kind": "VirtualService", "metadata": {"name": "shop", "namespace": "shop"}, "spec": {"http": routes}});
    let complete = virtual_service(vec![sticky("v1"), sticky("v2"), split.clone()]);
    assert_eq!(kinds(&[plugin(true), service.clone(), complete.clone()]), vec![]);
    assert_eq!(kinds(&[plugin(false), service.clone(), complete]), vec![Kind::WeightedClustersUnsteered]);
    let missing = found(&[plugin(true), service.clone(), virtual_service(vec![sticky("v2"), split.clone()])]);
    assert_eq!(missing.len(), 1);
    assert!(missing[0].detail.contains("outbound|8080|v1|shop.shop.svc.cluster.local"), "{}", missing[0].detail);
    // Without a port and without the Service, the cluster name cannot be told.
    let unknown = found(&[plugin(true), virtual_service(vec![sticky("v1"), sticky("v2"), split])]);
    assert_eq!(unknown.len(), 2, "{unknown:?}");
    assert!(unknown[0].detail.contains("cannot be told"));
}

fn native(configuration: &str) -> Value {
    json!({"name": "persistence", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
        "dynamic_module_config": {"name": "envoy_persistence"}, "filter_name": "persistence",
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": configuration}}})
}

fn native_route_settings(settings: &str) -> Value {
    json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute",
        "dynamic_module_config": {"name": "envoy_persistence"}, "per_route_config_name": "persistence",
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": settings}})
}

/// The native build pins itself: no stateful_session, no override header to remove, keys from
/// Envoy's environment; its connection counter is its own network filter. What it shares with the
/// Wasm build is still checked.
#[test]
fn the_native_build_is_checked_for_what_it_needs() {
    let mut routes = route_config();
    routes["virtual_hosts"][0].as_object_mut().unwrap().remove("request_headers_to_remove");
    let native_good = bootstrap(
        json!([native(&plugin(cookie_profiles("immediate"))), router()]),
        routes.clone(),
        json!([cluster(json!(["UNKNOWN", "HEALTHY", "DEGRADED"]))]),
    );
    assert_eq!(kinds(std::slice::from_ref(&native_good)), []);
    let with_keys_env = json!([{"name": "web", "type": "client_ip"}]);
    let mut client_ip = bootstrap(
        json!([native(&json!({"keys_env": "K", "default_profile": "web", "profiles": with_keys_env}).to_string()), router()]),
        routes.clone(),
        json!([cluster(json!(["UNKNOWN", "HEALTHY", "DEGRADED"]))]),
    );
    assert_eq!(kinds(std::slice::from_ref(&client_ip)), [Kind::ConnectionCounterMissing], "no vm_config to pass keys to");
    let network = &mut client_ip["static_resources"]["listeners"][0]["filter_chains"][0]["filters"];
    let counter = json!({"name": "persistence_connections", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.dynamic_modules.v3.DynamicModuleNetworkFilter",
        "dynamic_module_config": {"name": "envoy_persistence"}, "filter_name": "persistence_connections"}});
    network.as_array_mut().unwrap().insert(0, counter);
    assert_eq!(kinds(&[client_ip]), [], "the module's own connection counter");

    let never = bootstrap(json!([native(&plugin(cookie_profiles("never"))), router()]), routes.clone(), json!([cluster(json!(["UNKNOWN", "HEALTHY"]))]));
    assert_eq!(kinds(&[never]), [Kind::OverrideHostStatusNever]);
    let invalid = bootstrap(json!([native("{\"profiles\": 1}"), router()]), routes.clone(), json!([]));
    assert!(kinds(&[invalid]).iter().all(|k| *k == Kind::InvalidPluginConfiguration));

    let mut bad_route = native_good;
    let route =
        &mut bad_route["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0];
    route["typed_per_filter_config"] = json!({"persistence": native_route_settings(r#"{"strict": "yes"}"#)});
    let findings = found(std::slice::from_ref(&bad_route));
    assert_eq!(findings.iter().map(|f| f.kind).collect::<Vec<_>>(), [Kind::InvalidRouteSettings]);
    assert!(findings[0].detail.contains("route \"all\": route.strict: must be true or false"), "{}", findings[0].detail);
    let route =
        &mut bad_route["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0];
    route["typed_per_filter_config"]["persistence"] = native_route_settings(r#"{"strict": true}"#);
    assert_eq!(kinds(&[bad_route]), []);
}
