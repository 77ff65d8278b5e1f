//! Finds, before Envoy runs, the misconfigurations that make persistence fail silently or do the
//! wrong thing: plugin configurations the filter would reject, and wiring Envoy accepts but that
//! defeats the filter. Used by the `envoy-persistence check` command and the tests; native only.
//!
//! Input: parsed YAML or JSON documents (an Envoy bootstrap, xDS discovery responses such as LDS
//! and RDS files, Istio or Envoy Gateway resources, or a bare plugin configuration). Each finding names the file,
//! the path inside it, what happens at run time, and the fix.

mod envoy;
mod envoy_gateway;
mod findings;
mod istio;
mod node;

pub use findings::{Finding, Kind};

use crate::config::Config;
use crate::profile::Profile;
use serde::Deserialize;
use serde_json::Value;

/// One parsed document and where it came from.
pub struct Document {
    pub file: String,
    pub value: Value,
}

/// Every finding in `documents`, which are read together (listeners from one file may use route
/// configurations and clusters from another).
pub fn check(documents: &[Document]) -> Vec<Finding> {
    let mut found = Vec::new();
    for document in documents {
        if let Some(plugin) = istio_plugin_config(&document.value) {
            found.extend(plugin_errors(&document.file, "spec.pluginConfig", &plugin.to_string()));
        } else if looks_like_plugin(&document.value) {
            found.extend(plugin_errors(&document.file, "", &document.value.to_string()));
        }
    }
    found.extend(envoy::check(documents));
    found.extend(istio::check(documents));
    found.extend(envoy_gateway::check(documents));
    found
}

/// Every plugin configuration in the documents, as the filter would receive it: bare ones,
/// Istio WasmPlugins' `pluginConfig`, and the persistence filters of Envoy configurations.
/// Each is (file, path, the text or why it cannot be read).
pub fn plugin_configurations(documents: &[Document]) -> Vec<(String, String, Result<String, String>)> {
    let mut found = Vec::new();
    for document in documents {
        if let Some(plugin) = istio_plugin_config(&document.value) {
            found.push((document.file.clone(), "spec.pluginConfig".to_string(), Ok(plugin.to_string())));
        } else if looks_like_plugin(&document.value) {
            found.push((document.file.clone(), String::new(), Ok(document.value.to_string())));
        }
    }
    found.extend(envoy::plugin_configurations(documents));
    found.extend(envoy_gateway::plugin_configurations(documents));
    found
}

/// Reads a file's documents: JSON, or YAML with any number of `---` separated documents (empty
/// ones skipped).
pub fn read_documents(file: &str, text: &str) -> Result<Vec<Document>, String> {
    if text.trim_start().starts_with(['{', '[']) {
        if let Ok(value) = serde_json::from_str(text) {
            return Ok(vec![Document { file: file.to_string(), value }]);
        }
    }
    let mut documents = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(document).map_err(|e| format!("{file}: not valid YAML or JSON: {e}"))?;
        if !value.is_null() {
            documents.push(Document { file: file.to_string(), value });
        }
    }
    Ok(documents)
}

/// The first of `profiles` that seals tokens, when the configuration has no keys (each Envoy
/// process then generates its own).
fn sealing_without_keys<'a>(config: &Config, mut profiles: impl Iterator<Item = &'a Profile>) -> Option<&'a Profile> {
    let no_keys = config.keys.is_empty() && config.keys_env.is_none();
    profiles.find(|p| no_keys && p.kind.tokens().is_some())
}

/// The `no-keys` finding for `profile`, at `at`.
fn no_keys(at: &node::Node, profile: &Profile) -> Finding {
    at.finding(Kind::NoKeys, format!("profile {:?} ({}) seals its tokens, and no keys are configured", profile.name, profile.kind.type_name()))
}

/// What to do about a plugin configuration error (the message itself names the field and rule).
pub(crate) const INVALID_FIX: &str = "correct the field as the message says (README, \"Configuration\", lists every field)";

/// The filter's own verdict on a plugin configuration: one finding per error, in its words.
pub fn plugin_errors(file: &str, path: &str, text: &str) -> Vec<Finding> {
    match Config::parse(text.as_bytes()) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(|error| Finding::new(Kind::InvalidPluginConfiguration, file, path, error.to_string()).fix(INVALID_FIX)).collect(),
    }
}

/// A bare plugin configuration (a JSON object with the filter's top-level fields).
fn looks_like_plugin(value: &Value) -> bool {
    let Some(object) = value.as_object() else { return false };
    ["profiles", "default_profile", "keys", "routes", "override_header"].iter().any(|k| object.contains_key(*k))
        && !object.contains_key("static_resources")
        && !object.contains_key("resources")
}

/// An Istio WasmPlugin's `pluginConfig`.
fn istio_plugin_config(value: &Value) -> Option<&Value> {
    (value.get("kind")? == "WasmPlugin").then(|| value.get("spec")?.get("pluginConfig")).flatten().filter(|v| !v.is_null())
}

#[cfg(test)]
mod tests;
