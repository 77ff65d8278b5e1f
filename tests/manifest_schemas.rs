//! The shipped Kubernetes manifests (envoy/istio/, envoy/envoy-gateway/) against the published CRD
//! schemas of Istio and Envoy Gateway (tests/data/, each file naming its source), as `kubectl
//! apply` with strict field validation would judge them: every field known, of the right type and
//! enum value. Kubernetes' CEL rules (`x-kubernetes-validations`) are not evaluated here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::envoy::repo_root;
use serde::Deserialize;
use serde_json::{json, Value};

fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml_ng::Deserializer::from_str(&text).map(|d| Value::deserialize(d).unwrap()).filter(|v| !v.is_null()).collect()
}

const CRD_FILES: [&str; 4] = [
    "tests/data/istio/crds-1.30.3.yaml",
    "tests/data/envoy-gateway/envoyextensionpolicies.yaml",
    "tests/data/envoy-gateway/backendtrafficpolicies.yaml",
    "tests/data/envoy-gateway/httproutes.yaml",
];

/// The kept CRDs: (group, version, kind) -> the version's openAPIV3Schema.
fn schemas() -> Vec<((String, String, String), Value)> {
    let mut found = Vec::new();
    for crd in CRD_FILES.iter().flat_map(|file| documents(file)) {
        let spec = &crd["spec"];
        for version in spec["versions"].as_array().unwrap() {
            let key = (
                spec["group"].as_str().unwrap().to_string(),
                version["name"].as_str().unwrap().to_string(),
                spec["names"]["kind"].as_str().unwrap().to_string(),
            );
            found.push((key, version["schema"]["openAPIV3Schema"].clone()));
        }
    }
    assert!(found.len() >= 7, "WasmPlugin, DestinationRule (3 versions), EnvoyExtensionPolicy, BackendTrafficPolicy, HTTPRoute");
    found
}

/// Kubernetes prunes or (strict validation) rejects fields a structural schema does not declare;
/// JSON Schema allows them unless told. Says so on every object that declares its properties and
/// does not keep unknown fields.
fn strict(schema: &mut Value) {
    if let Some(object) = schema.as_object_mut() {
        let preserves = object.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if object.contains_key("properties") && !object.contains_key("additionalProperties") && !preserves {
            object.insert("additionalProperties".into(), Value::Bool(false));
        }
        for (key, child) in object.iter_mut() {
            match key.as_str() {
                "properties" | "patternProperties" => child.as_object_mut().into_iter().flat_map(|m| m.values_mut()).for_each(strict),
                "items" | "additionalProperties" | "not" => strict(child),
                "allOf" | "anyOf" | "oneOf" => child.as_array_mut().into_iter().flatten().for_each(strict),
                _ => {}
            }
        }
    }
}

/// Every schema violation of `manifest`, or None when no Istio CRD defines its kind.
fn violations(manifest: &Value) -> Option<Vec<String>> {
    let (group, version) = manifest["apiVersion"].as_str()?.split_once('/')?;
    let kind = manifest["kind"].as_str()?;
    let (_, schema) = schemas().into_iter().find(|((g, v, k), _)| g == group && v == version && k == kind)?;
    let mut schema = schema;
    // apiVersion, kind and metadata (ObjectMeta) are the API server's, implicit in every CRD.
    let properties = schema["properties"].as_object_mut().unwrap();
    for (field, kind) in [("apiVersion", "string"), ("kind", "string"), ("metadata", "object")] {
        properties.entry(field).or_insert(json!({"type": kind}));
    }
    strict(&mut schema);
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    Some(validator.iter_errors(manifest).map(|e| format!("{}: {e}", e.instance_path)).collect())
}

fn manifests() -> Vec<String> {
    let mut files = Vec::new();
    for dir in ["envoy/istio", "envoy/envoy-gateway"] {
        for entry in std::fs::read_dir(repo_root().join(dir)).unwrap() {
            files.push(format!("{dir}/{}", entry.unwrap().file_name().to_str().unwrap()));
        }
    }
    files.sort();
    files
}

#[test]
fn the_shipped_manifests_follow_the_published_schemas() {
    let mut checked = Vec::new();
    for file in manifests() {
        let file = file.as_str();
        for manifest in documents(file) {
            let kind = manifest["kind"].as_str().unwrap().to_string();
            match violations(&manifest) {
                Some(found) => {
                    assert_eq!(found, Vec::<String>::new(), "{file} ({kind})");
                    checked.push(kind);
                }
                // Service is Kubernetes' own type; IstioOperator's schema is not in Istio's CRDs;
                // EnvoyProxy's CRD (1.4 MB) is not kept.
                None => assert!(["Service", "IstioOperator", "EnvoyProxy"].contains(&kind.as_str()), "{file}: no schema for {kind}"),
            }
        }
    }
    checked.sort();
    assert_eq!(
        checked,
        ["BackendTrafficPolicy", "DestinationRule", "EnvoyExtensionPolicy", "EnvoyExtensionPolicy", "HTTPRoute", "VirtualService", "WasmPlugin"]
    );
}

#[test]
fn the_schemas_catch_unknown_fields_wrong_enums_and_wrong_types() {
    let plugin = documents("envoy/istio/wasmplugin.yaml").remove(0);
    let broken = |edit: fn(&mut Value)| {
        let mut manifest = plugin.clone();
        edit(&mut manifest);
        violations(&manifest).unwrap()
    };
    let typo = broken(|m| m["spec"]["pluginConfg"] = json!({}));
    assert!(typo.iter().any(|v| v.contains("pluginConfg")), "{typo:?}");
    let phase = broken(|m| m["spec"]["phase"] = json!("AUTHX"));
    assert!(phase.iter().any(|v| v.starts_with("/spec/phase")), "{phase:?}");
    let value_from = broken(|m| m["spec"]["vmConfig"]["env"][0]["valueFrom"] = json!("FILE"));
    assert!(value_from.iter().any(|v| v.starts_with("/spec/vmConfig/env/0/valueFrom")), "{value_from:?}");
    let fail_strategy = broken(|m| m["spec"]["failStrategy"] = json!(true));
    assert!(!fail_strategy.is_empty());
    // The plugin configuration itself is free-form for Istio (envoy-persistence check reads it).
    assert!(broken(|m| m["spec"]["pluginConfig"]["anything"] = json!(1)).is_empty());
    let mut policy = documents("envoy/envoy-gateway/envoyextensionpolicy.yaml").remove(0);
    policy["spec"]["wasm"][0]["env"]["hostKey"] = json!(["PERSISTENCE_KEYS"]);
    assert!(!violations(&policy).unwrap().is_empty(), "a typo in an Envoy Gateway resource");
    let mut route = documents("envoy/envoy-gateway/httproute.yaml").remove(0);
    route["spec"]["rules"][0]["sessionPersistence"]["type"] = json!("Headers");
    assert!(!violations(&route).unwrap().is_empty());
    let mut rule = documents("envoy/istio/destinationrule.yaml").remove(0);
    rule["spec"]["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"] = json!("three");
    assert!(!violations(&rule).unwrap().is_empty());
}
