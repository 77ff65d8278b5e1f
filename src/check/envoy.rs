//! The Envoy side of the check: where the filter sits in Envoy's configuration, and whether the
//! rest of that configuration (stateful_session, routes, clusters, the connection manager) lets it
//! work.

use super::node::Node;
use super::{Document, Finding, Kind};
use crate::client_address;
use crate::config::Config;
use crate::outcome::ServerDown;
use crate::profile::{tls::KeySource, Kind as ProfileKind};
use crate::route_settings::RouteSettings;
use base64::Engine;
use serde_json::Value;
use std::collections::BTreeSet;

const STATEFUL_SESSION: &str = "envoy.extensions.filters.http.stateful_session.v3.StatefulSession";
const STATEFUL_SESSION_PER_ROUTE: &str = "envoy.extensions.filters.http.stateful_session.v3.StatefulSessionPerRoute";
const HEADER_SESSION_STATE: &str = "envoy.extensions.http.stateful_session.header.v3.HeaderBasedSessionState";
const ROUTER: &str = "envoy.extensions.filters.http.router.v3.Router";
const WASM_HTTP: &str = "envoy.extensions.filters.http.wasm.v3.Wasm";
const WASM_NETWORK: &str = "envoy.extensions.filters.network.wasm.v3.Wasm";
const DYNAMIC_MODULE_HTTP: &str = "envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";
const DYNAMIC_MODULE_NETWORK: &str = "envoy.extensions.filters.network.dynamic_modules.v3.DynamicModuleNetworkFilter";
const DYNAMIC_MODULE_PER_ROUTE: &str = "envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute";
/// The native build's module name (`libenvoy_persistence.so`).
const NATIVE_MODULE: &str = "envoy_persistence";
const SET_FILTER_STATE: &str = "envoy.extensions.filters.http.set_filter_state.v3.Config";
const CONNECTION_MANAGER: &str = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
/// The root id of the module's network filter (connection counting for client IP timeouts).
const CONNECTION_COUNTER_ROOT_ID: &str = "persistence_connections";
/// The statuses that keep a host that fails health checks in use (server_down "never").
const DOWN_STATUSES: [&str; 3] = ["UNHEALTHY", "DRAINING", "TIMEOUT"];
/// Envoy's default override_host_status.
const DEFAULT_STATUSES: [&str; 2] = ["UNKNOWN", "HEALTHY"];

/// Everything the documents hold, gathered so that references across files resolve.
#[derive(Default)]
struct Resources<'a> {
    listeners: Vec<Node<'a>>,
    clusters: Vec<Node<'a>>,
    route_configurations: Vec<Node<'a>>,
}

impl<'a> Resources<'a> {
    fn gather(documents: &'a [Document]) -> Resources<'a> {
        let mut found = Resources::default();
        for document in documents {
            let root = Node::root(document);
            let statics = root.get("static_resources");
            found.listeners.extend(statics.items("listeners"));
            found.clusters.extend(statics.items("clusters"));
            // xDS discovery responses, as Envoy reads them from files (LDS, RDS, CDS).
            for resource in root.items("resources") {
                let kind = resource.str("@type").rsplit('.').next().unwrap_or_default();
                match kind {
                    "Listener" => found.listeners.push(resource),
                    "Cluster" => found.clusters.push(resource),
                    "RouteConfiguration" => found.route_configurations.push(resource),
                    _ => {}
                }
            }
        }
        found
    }

    fn cluster(&self, name: &str) -> Option<&Node<'a>> {
        self.clusters.iter().find(|c| c.str("name") == name)
    }

    fn route_configuration(&self, name: &str) -> Option<&Node<'a>> {
        self.route_configurations.iter().find(|r| r.str("name") == name)
    }
}

pub fn check(documents: &[Document]) -> Vec<Finding> {
    let resources = Resources::gather(documents);
    let mut found = Vec::new();
    for (chain, before, manager) in connection_managers(&resources) {
        found.extend(check_connection_manager(&resources, &chain, &before, &manager));
    }
    found
}

/// The plugin configuration of every persistence filter in the documents' Envoy configurations:
/// (file, path, the text or why it cannot be read).
pub fn plugin_configurations(documents: &[Document]) -> Vec<(String, String, Result<String, String>)> {
    let resources = Resources::gather(documents);
    let mut found = Vec::new();
    for (_, _, manager) in connection_managers(&resources) {
        for filter in manager.get("typed_config").items("http_filters").iter().filter(|f| build_of(f).is_some()) {
            let (path, text) = plugin_text(filter);
            found.push((filter.file.to_string(), path, text));
        }
    }
    found
}

/// Every HTTP connection manager: its filter chain, the network filters before it, and itself.
fn connection_managers<'a>(resources: &Resources<'a>) -> Vec<(Node<'a>, Vec<Node<'a>>, Node<'a>)> {
    let mut managers = Vec::new();
    for listener in &resources.listeners {
        let mut chains = listener.items("filter_chains");
        if !listener.get("default_filter_chain").value.is_null() {
            chains.push(listener.get("default_filter_chain"));
        }
        for chain in chains {
            let network = chain.items("filters");
            for (position, manager) in network.iter().enumerate() {
                if manager.type_of() == CONNECTION_MANAGER {
                    let before = network.get(..position).unwrap_or_default().to_vec();
                    managers.push((chain.clone(), before, manager.clone()));
                }
            }
        }
    }
    managers
}

/// Which build of this module an HTTP filter is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Build {
    Wasm,
    /// The dynamic module: it pins itself (no stateful_session, no override header) and reads
    /// its keys from Envoy's own environment.
    Native,
}

/// Whether an HTTP filter is this module, and which build: the Wasm filter by its code's file name
/// or URL, or by its root id; the dynamic module by its module name.
fn build_of(filter: &Node) -> Option<Build> {
    let config = filter.get("typed_config");
    match filter.type_of() {
        WASM_HTTP => {
            let config = config.get("config");
            let code = config.get("vm_config").get("code");
            let location = [code.get("local").str("filename"), code.get("remote").get("http_uri").str("uri")];
            let ours = config.str("root_id") == "persistence" || location.iter().any(|l| l.contains("envoy_persistence") || l.contains("envoy-persistence"));
            ours.then_some(Build::Wasm)
        }
        DYNAMIC_MODULE_HTTP => (config.get("dynamic_module_config").str("name") == NATIVE_MODULE).then_some(Build::Native),
        _ => None,
    }
}

/// Where a build's filter holds the plugin configuration.
fn configuration_node<'a>(filter: &Node<'a>) -> Node<'a> {
    match build_of(filter) {
        Some(Build::Native) => filter.get("typed_config").get("filter_config"),
        _ => filter.get("typed_config").get("config").get("configuration"),
    }
}

/// The plugin configuration's text as the filter receives it, or why it cannot be read; and
/// where the configuration is.
fn plugin_text(filter: &Node) -> (String, Result<String, String>) {
    let configuration = configuration_node(filter);
    (configuration.path.clone(), string_value(&configuration))
}

/// The text of a `StringValue` (or `BytesValue`) the module reads as JSON, or why it cannot.
fn string_value(configuration: &Node) -> Result<String, String> {
    let type_name = configuration.str("@type").rsplit('/').next().unwrap_or_default();
    match type_name {
        "" if configuration.value.is_null() => Ok(String::new()),
        "google.protobuf.StringValue" => Ok(configuration.str("value").to_string()),
        "google.protobuf.BytesValue" => base64::engine::general_purpose::STANDARD
            .decode(configuration.str("value"))
            .map_err(|e| format!("is a google.protobuf.BytesValue whose value is not base64: {e}"))
            .and_then(|bytes| String::from_utf8(bytes).map_err(|_| "is a google.protobuf.BytesValue that is not UTF-8 text".to_string())),
        other => Err(format!("is a {other:?}: the filter reads JSON text, give it as a google.protobuf.StringValue")),
    }
}

/// The native build's per-route settings on `route`, if any: each error as a finding.
fn check_route_settings(route: &Node, ours_name: &str) -> Vec<Finding> {
    let settings = route.get("typed_per_filter_config").get(ours_name);
    if settings.type_of_self() != DYNAMIC_MODULE_PER_ROUTE {
        return Vec::new();
    }
    let text = settings.get("filter_config");
    let errors = match string_value(&text) {
        Err(why) => vec![format!("route settings {why}")],
        Ok(text) => match RouteSettings::parse(text.as_bytes()) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        },
    };
    let route_name = route.str("name");
    errors
        .into_iter()
        .map(|error| {
            text.finding(Kind::InvalidRouteSettings, format!("route {route_name:?}: {error}"))
                .fix("filter_config: a StringValue holding {\"strict\": true} or {\"strict\": false}")
        })
        .collect()
}

/// The profile a route uses and the clusters it sends requests to.
struct RouteUse<'a> {
    route: Node<'a>,
    profile: Option<usize>,
    clusters: Vec<String>,
}

fn check_connection_manager(resources: &Resources, chain: &Node, before: &[Node], manager: &Node) -> Vec<Finding> {
    let mut found = Vec::new();
    let hcm = manager.get("typed_config");
    let filters = hcm.items("http_filters");
    let Some(ours) = filters.iter().position(|f| build_of(f).is_some()) else { return found };
    let Some(filter) = filters.get(ours) else { return found };
    let native = build_of(filter) == Some(Build::Native);
    let (configuration, text) = plugin_text(filter);
    let at_configuration = |kind, detail: String| Finding::new(kind, filter.file, &configuration, detail);
    let config = match text {
        Err(why) => {
            found.push(at_configuration(Kind::InvalidPluginConfiguration, format!("configuration {why}")).fix(super::INVALID_FIX));
            return found;
        }
        Ok(text) => match Config::parse(text.as_bytes()) {
            Ok(config) => config,
            Err(errors) => {
                found.extend(errors.iter().map(|e| at_configuration(Kind::InvalidPluginConfiguration, e.to_string()).fix(super::INVALID_FIX)));
                return found;
            }
        },
    };
    let header = config.override_header.as_str();
    let ours_name = filter.str("name");

    // stateful_session: present, after the filter and before the router, reading the filter's header.
    let session = filters.iter().position(|f| f.type_of() == STATEFUL_SESSION);
    let router = filters.iter().position(|f| f.type_of() == ROUTER);
    let at_filters = hcm.get("http_filters");
    let session_name = session.and_then(|s| filters.get(s)).map_or("envoy.filters.http.stateful_session", |f| f.str("name"));
    match session.and_then(|s| filters.get(s).map(|f| (s, f))) {
        // The native build pins itself.
        _ if native => {}
        None => found.push(
            at_filters
                .finding(Kind::StatefulSessionMissing, "no envoy.filters.http.stateful_session filter in this connection manager")
                .fix(format!("add envoy.filters.http.stateful_session right after {ours_name:?}, in header mode with name: {header}")),
        ),
        Some((position, session_filter)) => {
            if position < ours || router.is_some_and(|r| position > r) {
                found.push(
                    session_filter
                        .finding(
                            Kind::StatefulSessionOrder,
                            format!("stateful_session is filter {position}, the persistence filter {ours}, the router {router:?}"),
                        )
                        .fix(format!("order the HTTP filters {ours_name:?}, envoy.filters.http.stateful_session, router")),
                );
            }
            let state = session_filter.get("typed_config").get("session_state");
            found.extend(check_session_state(&state, header));
        }
    }

    // The routes: which profile each uses, and which clusters it reaches.
    let route_configurations = route_configurations(resources, &hcm);
    let mut uses = Vec::new();
    let mut route_names = BTreeSet::new();
    for route_configuration in route_configurations.iter().flatten() {
        let disabled_default = |name: &str| filters.iter().find(|f| f.str("name") == name).is_some_and(|f| f.value.get("disabled") == Some(&Value::Bool(true)));
        for vhost in route_configuration.items("virtual_hosts") {
            if !native {
                found.extend(check_header_removal(route_configuration, &vhost, header));
            }
            let routes = vhost.items("routes");
            for (position, route) in routes.iter().cloned().enumerate() {
                route_names.insert(route.str("name").to_string());
                let disabled = |name: &str| {
                    [&route, &vhost, route_configuration]
                        .iter()
                        .find_map(|level| level.get("typed_per_filter_config").value.get(name))
                        .map_or(disabled_default(name), |per_filter| per_filter.get("disabled") == Some(&Value::Bool(true)))
                };
                let (ours_off, session_off) = (disabled(ours_name), disabled(session_name));
                if native {
                    found.extend(check_route_settings(&route, ours_name));
                } else if ours_off != session_off {
                    let (off, on) = if ours_off { (ours_name, session_name) } else { (session_name, ours_name) };
                    found.push(
                        route
                            .finding(Kind::DisabledAlone, format!("route {:?} disables {off:?} but not {on:?}", route.str("name")))
                            .fix(format!("disable both {ours_name:?} and {session_name:?} in typed_per_filter_config, or neither")),
                    );
                }
                let per_route_session = route.get("typed_per_filter_config").get(session_name);
                if !native && per_route_session.type_of_self() == STATEFUL_SESSION_PER_ROUTE {
                    found.extend(check_session_state(&per_route_session.get("stateful_session").get("session_state"), header));
                }
                if ours_off {
                    continue;
                }
                let named = route.get("metadata").get("filter_metadata").get("persistence").str("profile");
                let profile = if named.is_empty() {
                    config.route_profile(route.str("name")).or(config.default_profile)
                } else {
                    let index = config.profile_index(named);
                    if index.is_none() {
                        found.push(
                            route
                                .get("metadata")
                                .finding(Kind::RouteProfileUnknown, format!("route metadata names profile {named:?}, which the configuration does not define"))
                                .fix("name a profile of the plugin configuration (or a built-in System-Persistence-* profile)"),
                        );
                    }
                    index
                };
                if profile.and_then(|i| config.profiles.get(i)).is_some_and(|p| !matches!(p.kind, ProfileKind::HttpHeader(_))) {
                    found.extend(check_weighted_route(&config, &route, routes.get(..position).unwrap_or_default()));
                }
                uses.push(RouteUse { route: route.clone(), profile, clusters: route_clusters(&route) });
            }
        }
    }
    // `routes` names routes of this connection manager; checked only when all its routes are known.
    if route_configurations.iter().all(Option::is_some) {
        for (route, _) in config.routes.iter().filter(|(name, _)| !route_names.contains(name)) {
            found.push(
                at_configuration(Kind::RoutesUnmatched, format!("\"routes\" maps route {route:?}, but no route of this connection manager has that name"))
                    .fix("use the route's `name:` from the route configuration, or remove the mapping"),
            );
        }
    }

    let in_use: BTreeSet<usize> = (0..config.profiles.len()).filter(|i| config.in_use(*i)).chain(uses.iter().filter_map(|u| u.profile)).collect();
    let profiles: Vec<_> = in_use.iter().filter_map(|i| config.profiles.get(*i)).collect();

    // Clusters reached by routes with persistence: health checks, and statuses matching server_down.
    let mut checked = BTreeSet::new();
    for using in &uses {
        let Some(profile) = using.profile.and_then(|i| config.profiles.get(i)) else { continue };
        for name in &using.clusters {
            let Some(cluster) = resources.cluster(name) else { continue };
            if !checked.insert((name.clone(), profile.server_down.name())) {
                continue;
            }
            found.extend(check_cluster(cluster, profile.server_down, &format!("route {:?}, profile {:?}", using.route.str("name"), profile.name)));
        }
    }

    if let Some(name) = config.keys_env.as_ref().filter(|_| !native) {
        let environment = filter.get("typed_config").get("config").get("vm_config").get("environment_variables");
        let host_keys = environment.value.get("host_env_keys").and_then(Value::as_array);
        let passed = host_keys.is_some_and(|keys| keys.iter().any(|k| k == name.as_str())) || environment.get("key_values").value.get(name).is_some();
        if !passed {
            found.push(
                at_configuration(Kind::KeysEnvNotPassed, format!("keys_env names {name}, and the vm_config does not pass it to the VM"))
                    .fix(format!("vm_config: {{environment_variables: {{host_env_keys: [{name}]}}}}, and set {name} in Envoy's environment")),
            );
        }
    }
    if let Some(profile) = super::sealing_without_keys(&config, profiles.iter().copied()) {
        let at = filter.get("typed_config").get("config").get("configuration");
        found.push(
            super::no_keys(&at, profile)
                .fix("add \"keys\": [{\"id\": 1, \"secret\": \"...\"}] from `envoy-persistence keygen` (or keys_env), the same on every replica"),
        );
    }

    // Client IP keys: from a trustworthy address, with the connection counter in the same VM.
    if let Some(profile) = profiles.iter().find(|p| p.kind.tracking().is_some()) {
        let trusted_hops = hcm.value.get("xff_num_trusted_hops").and_then(Value::as_u64).unwrap_or(0);
        if config.client_address == client_address::Source::Envoy && hcm.value.get("use_remote_address") != Some(&Value::Bool(true)) {
            found.push(
                hcm.finding(
                    Kind::ClientAddressFromClients,
                    format!("profile {:?} keys on the client address and use_remote_address is not true", profile.name),
                )
                .fix("set use_remote_address: true (behind N trusted proxies, also xff_num_trusted_hops: N)"),
            );
        }
        let counts_connections = |f: &Node| match native {
            false => f.type_of() == WASM_NETWORK && f.get("typed_config").get("config").str("root_id") == CONNECTION_COUNTER_ROOT_ID,
            true => {
                let config = f.get("typed_config");
                f.type_of() == DYNAMIC_MODULE_NETWORK
                    && config.get("dynamic_module_config").str("name") == NATIVE_MODULE
                    && config.str("filter_name") == CONNECTION_COUNTER_ROOT_ID
            }
        };
        let counter = before.iter().find(|f| counts_connections(f));
        match counter {
            None if trusted_hops == 0 && native => found.push(
                chain
                    .get("filters")
                    .finding(Kind::ConnectionCounterMissing, format!("profile {:?} keys on the client address, and no network filter of the module has filter_name {CONNECTION_COUNTER_ROOT_ID}", profile.name))
                    .fix(format!("add envoy.filters.network.dynamic_modules before the connection manager: module {NATIVE_MODULE}, filter_name {CONNECTION_COUNTER_ROOT_ID}")),
            ),
            // The native counter shares the process's table by itself: no VM to agree on.
            Some(_) if native => {}
            None if trusted_hops == 0 => found.push(
                chain
                    .get("filters")
                    .finding(Kind::ConnectionCounterMissing, format!("profile {:?} keys on the client address, and no network filter has root_id {CONNECTION_COUNTER_ROOT_ID}", profile.name))
                    .fix(format!("add the module as a network filter before the connection manager, root_id {CONNECTION_COUNTER_ROOT_ID}, with the HTTP filter's vm_config")),
            ),
            Some(counter) => {
                let http_vm = filter.get("typed_config").get("config").get("vm_config");
                let counter_vm = counter.get("typed_config").get("config").get("vm_config");
                let differs: Vec<&str> = ["vm_id", "runtime", "code"].into_iter().filter(|k| http_vm.value.get(*k) != counter_vm.value.get(*k)).collect();
                if !differs.is_empty() {
                    found.push(
                        counter_vm
                            .finding(Kind::ConnectionCounterVm, format!("the connection counter's vm_config differs from the HTTP filter's in {}", differs.join(", ")))
                            .fix(format!("give both the same vm_config (see {})", http_vm.path)),
                    );
                }
            }
            None => {}
        }
    }

    // TLS session ids reach the filter through set_filter_state (tls.sid), set before it runs.
    if let Some(profile) = profiles.iter().find(|p| matches!(&p.kind, ProfileKind::Tls(s) if s.key == KeySource::SessionId)) {
        let sets_sid = filters
            .get(..ours)
            .unwrap_or_default()
            .iter()
            .any(|f| f.type_of() == SET_FILTER_STATE && f.get("typed_config").items("on_request_headers").iter().any(|v| v.str("object_key") == "tls.sid"));
        if !sets_sid {
            found.push(
                at_filters
                    .finding(Kind::SessionIdWithoutFilterState, format!("profile {:?} keys on the TLS session id, and no set_filter_state filter before it sets tls.sid", profile.name))
                    .fix("add envoy.filters.http.set_filter_state before the persistence filter: object_key tls.sid, factory_key envoy.string, format %DOWNSTREAM_TLS_SESSION_ID%"),
            );
        }
    }
    found
}

/// stateful_session must keep its session in the filter's header.
fn check_session_state(state: &Node, header: &str) -> Vec<Finding> {
    let config = state.get("typed_config");
    let type_name = config.type_of_self();
    let detail = if type_name != HEADER_SESSION_STATE {
        format!("stateful_session keeps its session with {:?} ({type_name}), not in the header {header:?}", state.str("name"))
    } else if config.str("name") != header {
        format!("stateful_session reads header {:?}, the filter writes {header:?}", config.str("name"))
    } else {
        return Vec::new();
    };
    vec![state
        .finding(Kind::StatefulSessionHeader, detail)
        .fix(format!("session_state: envoy.http.stateful_session.header (HeaderBasedSessionState) with name: {header}"))]
}

/// The route configurations of a connection manager: inline, or by RDS name (None when that
/// route configuration is not among the documents).
fn route_configurations<'a>(resources: &Resources<'a>, hcm: &Node<'a>) -> Vec<Option<Node<'a>>> {
    let inline = hcm.get("route_config");
    if !inline.value.is_null() {
        return vec![Some(inline)];
    }
    let name = hcm.get("rds").str("route_config_name");
    if name.is_empty() {
        return vec![None];
    }
    vec![resources.route_configuration(name).cloned()]
}

/// The clusters a route sends requests to, when they are named in the configuration.
fn route_clusters(route: &Node) -> Vec<String> {
    let action = route.get("route");
    let mut clusters: Vec<String> = action.get("weighted_clusters").items("clusters").iter().map(|c| c.str("name").to_string()).collect();
    if !action.str("cluster").is_empty() {
        clusters.push(action.str("cluster").to_string());
    }
    clusters
}

/// A route that splits over weighted clusters keeps pinned clients on their cluster only with
/// `cluster_header` and, ahead of it, a route per cluster that matches the header's value.
fn check_weighted_route(config: &Config, route: &Node, before: &[Node]) -> Vec<Finding> {
    let weighted: Vec<String> = route.get("route").get("weighted_clusters").items("clusters").iter().map(|c| c.str("name").to_string()).collect();
    if weighted.len() < 2 {
        return Vec::new();
    }
    let name = route.str("name");
    let Some(header) = config.cluster_header.as_deref() else {
        return vec![route
            .finding(Kind::WeightedClustersUnsteered, format!("route {name:?} splits over weighted clusters and the plugin configuration has no cluster_header"))
            .fix("set \"cluster_header\": \"x-persistence-cluster\" and add, before this route, a route per cluster that matches that header (see envoy/canary.yaml)")];
    };
    let steers_to = |candidate: &Node, cluster: &str| {
        candidate.get("route").str("cluster") == cluster
            && candidate
                .get("match")
                .items("headers")
                .iter()
                .any(|h| h.str("name").eq_ignore_ascii_case(header) && h.get("string_match").str("exact") == cluster)
    };
    weighted
        .iter()
        .filter(|cluster| !before.iter().any(|candidate| steers_to(candidate, cluster)))
        .map(|cluster| {
            route
                .finding(Kind::WeightedClustersUnsteered, format!("no route before {name:?} sends requests with {header}: {cluster} to cluster {cluster:?}"))
                .fix(format!("add before it a route with the same match plus headers: [{{name: {header}, string_match: {{exact: {cluster}}}}}] and route: {{cluster: {cluster}}}"))
        })
        .collect()
}

/// The override header must not reach backends (request side) nor come from them (response side).
fn check_header_removal(route_configuration: &Node, vhost: &Node, header: &str) -> Vec<Finding> {
    let lists = |node: &Node, field: &str| {
        node.get(field).value.as_array().is_some_and(|list| list.iter().any(|h| h.as_str().is_some_and(|h| h.eq_ignore_ascii_case(header))))
    };
    let routes = vhost.items("routes");
    let mut found = Vec::new();
    for (field, side) in [("request_headers_to_remove", "requests sent to backends"), ("response_headers_to_remove", "responses from backends")] {
        let covered = lists(route_configuration, field) || lists(vhost, field) || (!routes.is_empty() && routes.iter().all(|r| lists(r, field)));
        if !covered {
            found.push(
                vhost
                    .finding(Kind::OverrideHeaderNotRemoved, format!("virtual host {:?}: {field} does not list {header} ({side} keep it)", vhost.str("name")))
                    .fix(format!("add {header} to the virtual host's {field}")),
            );
        }
    }
    found
}

/// A cluster used with persistence: its hosts' health is known, and override_host_status lets
/// stateful_session follow pins exactly as `server_down` says.
fn check_cluster(cluster: &Node, server_down: ServerDown, used_by: &str) -> Vec<Finding> {
    let mut found = Vec::new();
    let name = cluster.str("name");
    let has = |key: &str| cluster.value.get(key).is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()));
    if !has("health_checks") && !has("outlier_detection") {
        found.push(
            cluster
                .finding(Kind::NoHealthChecks, format!("cluster {name:?} ({used_by}) has neither health_checks nor outlier_detection"))
                .fix("add health_checks (or outlier_detection) to the cluster"),
        );
    }
    let statuses_node = cluster.get("common_lb_config").get("override_host_status");
    let listed: Vec<String> = match statuses_node.value.get("statuses").and_then(Value::as_array) {
        Some(list) => list.iter().filter_map(Value::as_str).map(str::to_ascii_uppercase).collect(),
        None => DEFAULT_STATUSES.iter().map(|s| s.to_string()).collect(),
    };
    let lists = |status: &str| listed.iter().any(|s| s == status);
    let shown = if statuses_node.value.is_null() { format!("Envoy's default {DEFAULT_STATUSES:?}") } else { format!("{listed:?}") };
    let at = if statuses_node.value.is_null() { cluster.clone() } else { statuses_node };
    match server_down {
        ServerDown::Immediate if lists("UNHEALTHY") || lists("TIMEOUT") || !lists("HEALTHY") => found.push(
            at.finding(Kind::OverrideHostStatusImmediate, format!("cluster {name:?} ({used_by}, server_down immediate): override_host_status is {shown}"))
                .fix("common_lb_config: {override_host_status: {statuses: [UNKNOWN, HEALTHY, DEGRADED, DRAINING]}}"),
        ),
        ServerDown::Never if !DOWN_STATUSES.iter().all(|s| lists(s)) || !lists("HEALTHY") => found.push(
            at.finding(Kind::OverrideHostStatusNever, format!("cluster {name:?} ({used_by}, server_down never): override_host_status is {shown}"))
                .fix("common_lb_config: {override_host_status: {statuses: [UNKNOWN, HEALTHY, DEGRADED, UNHEALTHY, DRAINING, TIMEOUT]}}"),
        ),
        _ => {}
    }
    found
}
