//! Envoy Gateway: the filter as an EnvoyExtensionPolicy's Wasm extension, and what Envoy Gateway
//! must be told for it to work (the HTTPRoute's header session persistence, the EnvoyProxy's
//! filter order, health checks in a BackendTrafficPolicy).

use super::{Document, Finding, Kind, INVALID_FIX};
use crate::config::Config;
use serde_json::Value;

static NULL: Value = Value::Null;

fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().try_fold(value, |v, key| v.get(*key)).unwrap_or(&NULL)
}

fn items(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// Whether a Wasm extension of an EnvoyExtensionPolicy is this module.
fn is_persistence(wasm: &Value) -> bool {
    let url = [at(wasm, &["code", "image", "url"]), at(wasm, &["code", "http", "url"])];
    at(wasm, &["rootID"]) == "persistence" || url.iter().filter_map(|u| u.as_str()).any(|u| u.contains("envoy-persistence") || u.contains("envoy_persistence"))
}

/// Every plugin configuration in EnvoyExtensionPolicies: (document index, wasm index, config).
fn plugins(documents: &[Document]) -> Vec<(&Document, usize, &Value)> {
    let mut found = Vec::new();
    for document in documents.iter().filter(|d| d.value.get("kind").is_some_and(|k| k == "EnvoyExtensionPolicy")) {
        for (index, wasm) in items(at(&document.value, &["spec", "wasm"])).iter().enumerate() {
            if is_persistence(wasm) {
                found.push((document, index, wasm));
            }
        }
    }
    found
}

pub fn plugin_configurations(documents: &[Document]) -> Vec<(String, String, Result<String, String>)> {
    plugins(documents).into_iter().map(|(d, i, wasm)| (d.file.clone(), format!("spec.wasm[{i}].config"), Ok(at(wasm, &["config"]).to_string()))).collect()
}

pub fn check(documents: &[Document]) -> Vec<Finding> {
    let mut found = Vec::new();
    let of_kind = |kind: &'static str| documents.iter().filter(move |d| d.value.get("kind").is_some_and(|k| k == kind));
    for (document, index, wasm) in plugins(documents) {
        let path = format!("spec.wasm[{index}]");
        let finding = |kind, detail: String| Finding::new(kind, &document.file, &path, detail);
        let config = match Config::parse(at(wasm, &["config"]).to_string().as_bytes()) {
            Ok(config) => config,
            Err(errors) => {
                found.extend(
                    errors
                        .iter()
                        .map(|e| Finding::new(Kind::InvalidPluginConfiguration, &document.file, &format!("{path}.config"), e.to_string()).fix(INVALID_FIX)),
                );
                continue;
            }
        };
        let header = config.override_header.as_str();
        if let Some(name) = &config.keys_env {
            if !items(at(wasm, &["env", "hostKeys"])).iter().any(|k| k == name.as_str()) {
                found.push(
                    finding(Kind::KeysEnvNotPassed, format!("config.keys_env names {name}, and env.hostKeys does not pass it into the VM"))
                        .fix(format!("env: {{hostKeys: [{name}]}}, and give the proxy {name} (EnvoyProxy container env from a Secret)")),
                );
            }
        } else if config.keys.is_empty() && config.profiles.iter().enumerate().any(|(i, p)| config.in_use(i) && p.kind.tokens().is_some()) {
            found.push(
                finding(Kind::NoKeys, "a profile seals tokens, and no keys are configured".into())
                    .fix("keys_env with env.hostKeys (README, \"Keys\"), the same for every proxy replica"),
            );
        }
        // The routes the policy targets: header session persistence with the filter's header.
        let targets: Vec<&str> = items(at(&document.value, &["spec", "targetRefs"]))
            .iter()
            .filter(|t| at(t, &["kind"]) == "HTTPRoute")
            .filter_map(|t| at(t, &["name"]).as_str())
            .collect();
        for route in of_kind("HTTPRoute").filter(|r| at(&r.value, &["metadata", "name"]).as_str().is_some_and(|n| targets.contains(&n))) {
            for (i, rule) in items(at(&route.value, &["spec", "rules"])).iter().enumerate() {
                let persistence = at(rule, &["sessionPersistence"]);
                let at_rule = |kind, detail: String| Finding::new(kind, &route.file, &format!("spec.rules[{i}]"), detail);
                if persistence.is_null() {
                    found.push(
                        at_rule(Kind::StatefulSessionMissing, "the rule has no sessionPersistence: Envoy Gateway installs no stateful_session for it".into())
                            .fix(format!("sessionPersistence: {{type: Header, sessionName: {header}}}")),
                    );
                } else if at(persistence, &["type"]) != "Header" || at(persistence, &["sessionName"]) != header {
                    found.push(
                        at_rule(Kind::StatefulSessionHeader, format!("sessionPersistence is {persistence}, the filter writes the header {header:?}"))
                            .fix(format!("sessionPersistence: {{type: Header, sessionName: {header}}}")),
                    );
                }
            }
        }
        // Envoy Gateway's default order runs stateful_session before Wasm extensions.
        let reordered = of_kind("EnvoyProxy").any(|proxy| {
            items(at(&proxy.value, &["spec", "filterOrder"]))
                .iter()
                .any(|f| at(f, &["name"]) == "envoy.filters.http.wasm" && at(f, &["before"]) == "envoy.filters.http.stateful_session")
        });
        if !reordered {
            found.push(
                finding(
                    Kind::StatefulSessionOrder,
                    "no EnvoyProxy among the files moves Wasm before stateful_session: Envoy Gateway's default order runs stateful_session first".into(),
                )
                .fix("EnvoyProxy spec.filterOrder: [{name: envoy.filters.http.wasm, before: envoy.filters.http.stateful_session}]"),
            );
        }
        let checked = of_kind("BackendTrafficPolicy").any(|policy| {
            let spec = at(&policy.value, &["spec"]);
            !at(spec, &["healthCheck"]).is_null()
                && items(at(spec, &["targetRefs"])).iter().any(|t| at(t, &["name"]).as_str().is_some_and(|n| targets.contains(&n)))
        });
        if !checked {
            found.push(
                finding(Kind::NoHealthChecks, format!("no BackendTrafficPolicy among the files gives the routes {targets:?} health checks"))
                    .fix("a BackendTrafficPolicy with healthCheck (active and passive) targeting the same HTTPRoute"),
            );
        }
    }
    found
}
