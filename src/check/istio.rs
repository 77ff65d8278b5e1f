//! Istio: the WasmPlugin's configuration, the Service label that makes istiod install
//! stateful_session, keys passed from the gateway's environment, and outlier detection (Istio has
//! no active health checks) for the plugin's destinations.

use super::node::{of_kind, Node};
use super::{Document, Finding, Kind};
use crate::config::Config;

const ISTIO_SESSION_LABEL: &str = "istio.io/persistent-session-header";

pub fn check(documents: &[Document]) -> Vec<Finding> {
    let plugins: Vec<Node> = of_kind(documents, "WasmPlugin").collect();
    let services: Vec<Node> = of_kind(documents, "Service").collect();
    let mut found = Vec::new();
    for plugin in &plugins {
        let Ok(config) = Config::parse(plugin.get("spec").get("pluginConfig").value.to_string().as_bytes()) else { continue };
        let header = config.override_header.as_str();
        let labelled: Vec<&Node> = services.iter().filter(|s| !s.get("metadata").get("labels").str(ISTIO_SESSION_LABEL).is_empty()).collect();
        if !services.is_empty() && labelled.is_empty() {
            found.push(
                plugin
                    .finding(
                        Kind::StatefulSessionMissing,
                        format!("no Service among the files has the label {ISTIO_SESSION_LABEL}: istiod installs no stateful_session filter"),
                    )
                    .fix(format!("label the Service {ISTIO_SESSION_LABEL}: {header} (and run istiod with PILOT_ENABLE_PERSISTENT_SESSION_FILTER=true)")),
            );
        }
        for service in labelled {
            let label = service.get("metadata").get("labels");
            if label.str(ISTIO_SESSION_LABEL) != header {
                found.push(
                    label
                        .finding(
                            Kind::StatefulSessionHeader,
                            format!("Service label {ISTIO_SESSION_LABEL} is {:?}, the filter writes {header:?}", label.str(ISTIO_SESSION_LABEL)),
                        )
                        .fix(format!("{ISTIO_SESSION_LABEL}: {header}")),
                );
            }
        }
        if let Some(name) = &config.keys_env {
            let env = plugin.get("spec").get("vmConfig").items("env");
            if !env.iter().any(|e| e.str("name") == name && e.str("valueFrom") == "HOST") {
                found.push(
                    plugin
                        .get("spec")
                        .finding(Kind::KeysEnvNotPassed, format!("pluginConfig.keys_env names {name}, and vmConfig.env does not pass it from the host"))
                        .fix(format!("vmConfig: {{env: [{{name: {name}, valueFrom: HOST}}]}}, and give the proxy {name} (a Secret)")),
                );
            }
        }
        for service in of_kind(documents, "VirtualService") {
            found.extend(check_weighted_routes(&config, &service, &services));
        }
        let in_use = config.profiles.iter().enumerate().filter(|(i, _)| config.in_use(*i)).map(|(_, p)| p);
        if let Some(profile) = super::sealing_without_keys(&config, in_use) {
            let at = plugin.get("spec").get("pluginConfig");
            found.push(super::no_keys(&at, profile).fix("add keys_env with vmConfig.env (README, \"Keys\"), the same for every gateway replica"));
        }
    }
    // Every DestinationRule given beside a plugin is taken as one of its destinations.
    if !plugins.is_empty() {
        for rule in of_kind(documents, "DestinationRule") {
            let spec = rule.get("spec");
            if spec.get("trafficPolicy").get("outlierDetection").value.is_null() {
                found.push(
                    spec.finding(
                        Kind::NoHealthChecks,
                        format!("DestinationRule {:?} (host {:?}) has no trafficPolicy.outlierDetection", rule.get("metadata").str("name"), spec.str("host")),
                    )
                    .fix("add trafficPolicy.outlierDetection (Istio has no active health checks)"),
                );
            }
        }
    }
    found
}

/// The Envoy cluster Istio makes for a destination: `outbound|<port>|<subset>|<host>`, the host
/// fully qualified in the VirtualService's namespace, the port the destination's or its Service's
/// only one. None when the port cannot be told.
fn istio_cluster(destination: &Node, namespace: &str, services: &[Node]) -> Option<String> {
    let host = destination.str("host");
    let host = if host.contains('.') { host.to_string() } else { format!("{host}.{namespace}.svc.cluster.local") };
    let port = match destination.get("port").get("number").value.as_u64() {
        Some(port) => port,
        None => {
            let service =
                services.iter().find(|s| format!("{}.{}.svc.cluster.local", s.get("metadata").str("name"), s.get("metadata").str("namespace")) == host)?;
            match service.get("spec").items("ports").as_slice() {
                [only] => only.get("port").value.as_u64()?,
                _ => return None,
            }
        }
    };
    Some(format!("outbound|{port}|{}|{host}", destination.str("subset")))
}

/// Istio's form of `weighted-clusters-unsteered`: an http route over several weighted
/// destinations needs `cluster_header` and, ahead of it, a route per destination matching it.
fn check_weighted_routes(config: &Config, service: &Node, services: &[Node]) -> Vec<Finding> {
    let namespace = service.get("metadata").str("namespace");
    let routes = service.get("spec").items("http");
    let mut found = Vec::new();
    for (position, route) in routes.iter().enumerate() {
        let destinations: Vec<Node> = route.items("route").iter().map(|d| d.get("destination")).collect();
        if destinations.len() < 2 {
            continue;
        }
        let name = route.str("name");
        let Some(header) = config.cluster_header.as_deref() else {
            found.push(
                route
                    .finding(Kind::WeightedClustersUnsteered, format!("http route {name:?} splits over weighted destinations and the plugin configuration has no cluster_header"))
                    .fix("set cluster_header: x-persistence-cluster in pluginConfig and add, before this route, a route per destination that matches it (see envoy/istio/canary.yaml)"),
            );
            continue;
        };
        let before = routes.get(..position).unwrap_or_default();
        for destination in &destinations {
            let Some(cluster) = istio_cluster(destination, namespace, services) else {
                found.push(
                    destination
                        .finding(
                            Kind::WeightedClustersUnsteered,
                            format!(
                                "http route {name:?}: the port of destination {:?} cannot be told, so neither can its cluster name",
                                destination.str("host")
                            ),
                        )
                        .fix("give the destination port.number"),
                );
                continue;
            };
            let steered = before.iter().any(|candidate| {
                let matches = candidate.items("match").iter().any(|m| m.get("headers").get(header).str("exact") == cluster);
                let goes =
                    candidate.items("route").iter().any(|d| istio_cluster(&d.get("destination"), namespace, services).as_deref() == Some(cluster.as_str()));
                matches && goes
            });
            if !steered {
                found.push(
                    route
                        .finding(
                            Kind::WeightedClustersUnsteered,
                            format!("no http route before {name:?} sends requests with {header}: {cluster} to that destination"),
                        )
                        .fix(format!("add before it a route matching headers: {{{header}: {{exact: \"{cluster}\"}}}} with that destination")),
                );
            }
        }
    }
    found
}
