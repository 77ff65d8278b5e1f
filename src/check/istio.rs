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
