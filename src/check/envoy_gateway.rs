//! Envoy Gateway: the filter as an EnvoyExtensionPolicy's Wasm extension, and what Envoy Gateway
//! must be told for it to work (the HTTPRoute's header session persistence, the EnvoyProxy's
//! filter order, health checks in a BackendTrafficPolicy).

use super::node::{of_kind, Node};
use super::{Document, Finding, Kind, INVALID_FIX};
use crate::config::Config;

/// Whether a Wasm extension of an EnvoyExtensionPolicy is this module.
fn is_persistence(wasm: &Node) -> bool {
    let code = wasm.get("code");
    let urls = [code.get("image").str("url"), code.get("http").str("url")];
    wasm.str("rootID") == "persistence" || urls.iter().any(|u| u.contains("envoy-persistence") || u.contains("envoy_persistence"))
}

/// Every Wasm extension of this module in the EnvoyExtensionPolicies, with its policy.
fn plugins(documents: &[Document]) -> Vec<(Node<'_>, Node<'_>)> {
    of_kind(documents, "EnvoyExtensionPolicy")
        .flat_map(|policy| policy.get("spec").items("wasm").into_iter().filter(is_persistence).map(move |wasm| (policy.clone(), wasm)))
        .collect()
}

/// The native build's entries (`spec.dynamicModule` entries with `filterName: persistence`): the same
/// plugin configuration, without the Wasm-only wiring (stateful_session, env.hostKeys).
fn native_plugins(documents: &[Document]) -> Vec<Node<'_>> {
    of_kind(documents, "EnvoyExtensionPolicy")
        .flat_map(|policy| policy.get("spec").items("dynamicModule").into_iter().filter(|module| module.str("filterName") == "persistence"))
        .collect()
}

pub fn plugin_configurations(documents: &[Document]) -> Vec<(String, String, Result<String, String>)> {
    let wasm = plugins(documents).into_iter().map(|(_, wasm)| wasm);
    wasm.chain(native_plugins(documents))
        .map(|plugin| (plugin.file.to_string(), plugin.get("config").path, Ok(plugin.get("config").value.to_string())))
        .collect()
}

pub fn check(documents: &[Document]) -> Vec<Finding> {
    let mut found = Vec::new();
    for (policy, wasm) in plugins(documents) {
        let configuration = wasm.get("config");
        let config = match Config::parse(configuration.value.to_string().as_bytes()) {
            Ok(config) => config,
            Err(errors) => {
                found.extend(errors.iter().map(|e| configuration.finding(Kind::InvalidPluginConfiguration, e.to_string()).fix(INVALID_FIX)));
                continue;
            }
        };
        let header = config.override_header.as_str();
        if let Some(name) = &config.keys_env {
            if !wasm.get("env").items("hostKeys").iter().any(|k| k.value == name.as_str()) {
                found.push(
                    wasm.finding(Kind::KeysEnvNotPassed, format!("config.keys_env names {name}, and env.hostKeys does not pass it into the VM"))
                        .fix(format!("env: {{hostKeys: [{name}]}}, and give the proxy {name} (EnvoyProxy container env from a Secret)")),
                );
            }
        }
        let in_use = config.profiles.iter().enumerate().filter(|(i, _)| config.in_use(*i)).map(|(_, p)| p);
        if let Some(profile) = super::sealing_without_keys(&config, in_use) {
            found.push(super::no_keys(&wasm, profile).fix("keys_env with env.hostKeys (README, \"Keys\"), the same for every proxy replica"));
        }
        // The routes the policy targets: header session persistence with the filter's header.
        let targets: Vec<&str> = policy.get("spec").items("targetRefs").iter().filter(|t| t.str("kind") == "HTTPRoute").map(|t| t.str("name")).collect();
        for route in of_kind(documents, "HTTPRoute").filter(|r| targets.contains(&r.get("metadata").str("name"))) {
            for rule in route.get("spec").items("rules") {
                let persistence = rule.get("sessionPersistence");
                if persistence.is_null() {
                    found.push(
                        rule.finding(Kind::StatefulSessionMissing, "the rule has no sessionPersistence: Envoy Gateway installs no stateful_session for it")
                            .fix(format!("sessionPersistence: {{type: Header, sessionName: {header}}}")),
                    );
                } else if persistence.str("type") != "Header" || persistence.str("sessionName") != header {
                    found.push(
                        rule.finding(
                            Kind::StatefulSessionHeader,
                            format!("sessionPersistence is {}, the filter writes the header {header:?}", persistence.value),
                        )
                        .fix(format!("sessionPersistence: {{type: Header, sessionName: {header}}}")),
                    );
                }
            }
        }
        // Envoy Gateway's default order runs stateful_session before Wasm extensions.
        let reordered = of_kind(documents, "EnvoyProxy").any(|proxy| {
            proxy
                .get("spec")
                .items("filterOrder")
                .iter()
                .any(|f| f.str("name") == "envoy.filters.http.wasm" && f.str("before") == "envoy.filters.http.stateful_session")
        });
        if !reordered {
            found.push(
                wasm.finding(
                    Kind::StatefulSessionOrder,
                    "no EnvoyProxy among the files moves Wasm before stateful_session: Envoy Gateway's default order runs stateful_session first",
                )
                .fix("EnvoyProxy spec.filterOrder: [{name: envoy.filters.http.wasm, before: envoy.filters.http.stateful_session}]"),
            );
        }
        let checked = of_kind(documents, "BackendTrafficPolicy").any(|traffic| {
            let spec = traffic.get("spec");
            !spec.get("healthCheck").is_null() && spec.items("targetRefs").iter().any(|t| targets.contains(&t.str("name")))
        });
        if !checked {
            found.push(
                wasm.finding(Kind::NoHealthChecks, format!("no BackendTrafficPolicy among the files gives the routes {targets:?} health checks"))
                    .fix("a BackendTrafficPolicy with healthCheck (active and passive) targeting the same HTTPRoute"),
            );
        }
    }
    // The native build: the configuration itself, and keys (it reads them from the proxy's own
    // environment, so there is nothing to pass).
    for module in native_plugins(documents) {
        let configuration = module.get("config");
        let text = configuration.value.to_string();
        let errors = super::plugin_errors(module.file, &configuration.path, &text);
        if !errors.is_empty() {
            found.extend(errors);
            continue;
        }
        if let Ok(config) = Config::parse(text.as_bytes()) {
            let in_use = config.profiles.iter().enumerate().filter(|(i, _)| config.in_use(*i)).map(|(_, p)| p);
            if let Some(profile) = super::sealing_without_keys(&config, in_use) {
                found.push(
                    super::no_keys(&module, profile).fix("keys_env naming a variable of the proxy container (README, \"Keys\"), the same for every replica"),
                );
            }
        }
    }
    found
}
