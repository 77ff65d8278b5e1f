//! The plugin configuration (the JSON in the wasm filter's `configuration`): read, validated and
//! turned into `Config` in one go. Either all of it is valid or Envoy rejects the plugin; every
//! error names the field path and the rule.

use crate::client_address;
use crate::config_reader::{quoted, ConfigError, Errors, Field};
use crate::keyring::{Secret, KEY_LEN};
use crate::profile::{self, Profile};
use base64::Engine;

/// Reads an environment variable of the VM (None: unset).
pub type Environment<'a> = &'a dyn Fn(&str) -> Option<String>;

pub const DEFAULT_OVERRIDE_HEADER: &str = "x-persistence-upstream";

#[derive(Debug)]
pub struct Config {
    /// Configured keys (id, secret); empty means "generate one per Envoy process". Taken out once
    /// the keyring is built (`crate::plugin`), so the raw bytes do not outlive configuration.
    pub keys: Vec<(u8, Secret)>,
    /// The environment variable holding the keys instead of `keys` (a Kubernetes Secret, say).
    /// `parse` leaves it unread; `parse_with_environment` reads it into `keys`.
    pub keys_env: Option<String>,
    /// The key new tokens are sealed with; set exactly when `keys` is not empty.
    pub primary_key_id: Option<u8>,
    /// The request header Envoy's stateful_session filter reads (header mode).
    pub override_header: String,
    /// A request header that tells the backend the filter's decision (debugging, demos); off by default.
    pub decision_header: Option<String>,
    /// The request header the filter writes with a client's recorded cluster, for routes that
    /// match it ahead of their weights (canary, blue/green); None: clusters are not recorded.
    pub cluster_header: Option<String>,
    /// Count pinned requests per upstream host (`persistence.host.<ip>_<port>.pinned`), to see
    /// when a draining host has no sessions left.
    pub host_stats: bool,
    /// Configured profiles followed by the built-ins they do not redefine.
    pub profiles: Vec<Profile>,
    pub default_profile: Option<usize>,
    /// xDS route name -> index into `profiles`, sorted by name.
    pub routes: Vec<(String, usize)>,
    /// Which address identifies a client for client IP keys.
    pub client_address: client_address::Source,
}

impl Config {
    pub fn profile_index(&self, name: &str) -> Option<usize> {
        self.profiles.iter().position(|p| p.name == name)
    }

    /// The profile `routes` assigns to xDS route `route`.
    pub fn route_profile(&self, route: &str) -> Option<usize> {
        self.routes.binary_search_by(|(name, _)| name.as_str().cmp(route)).ok().and_then(|i| self.routes.get(i)).map(|(_, index)| *index)
    }

    /// Profiles known to be used at configure time: every configured profile, and built-ins named
    /// by `default_profile` or `routes` (route metadata is only seen per request).
    pub fn in_use(&self, index: usize) -> bool {
        self.profiles.get(index).is_some_and(|p| !p.builtin) || self.default_profile == Some(index) || self.routes.iter().any(|(_, i)| *i == index)
    }

    /// The startup log line: every profile with the settings that matter, and the top level.
    pub fn summary(&self) -> String {
        let profiles: Vec<String> = self.profiles.iter().map(Profile::summary).collect();
        let default = self.default_profile.and_then(|i| self.profiles.get(i)).map_or("none", |p| p.name.as_str());
        let header = if self.override_header == DEFAULT_OVERRIDE_HEADER { "" } else { " (not the default: stateful_session must use the same name)" };
        format!(
            "configured {} profile(s): {}; default profile: {default}; {} route mapping(s); override header {}{header}; {} key(s); client address {}",
            self.profiles.len(),
            profiles.join("; "),
            self.routes.len(),
            self.override_header,
            self.keys.len().max(1),
            self.client_address.name(),
        )
    }

    /// Reads a configuration without looking at the environment: `keys_env` is checked, not read
    /// (what the configuration checker needs, and tests).
    pub fn parse(text: &[u8]) -> Result<Config, Vec<ConfigError>> {
        Config::parse_in(text, None)
    }

    /// Reads a configuration as the filter runs it: `keys_env` is read through `environment`, and
    /// an unset or invalid variable is an error like any other.
    pub fn parse_with_environment(text: &[u8], environment: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<ConfigError>> {
        Config::parse_in(text, Some(environment))
    }

    fn parse_in(text: &[u8], environment: Option<Environment>) -> Result<Config, Vec<ConfigError>> {
        let mut errors = Errors::default();
        let config = if text.iter().all(u8::is_ascii_whitespace) {
            errors.add("", "is empty: expected a JSON object (see README, \"Configuration\")");
            None
        } else {
            match serde_json::from_slice::<serde_json::Value>(text) {
                Ok(value) => read(Field { path: String::new(), value: &value }, environment, &mut errors),
                Err(error) => {
                    errors.add("", format!("is not valid JSON: {error}"));
                    None
                }
            }
        };
        match config {
            Some(config) if errors.0.is_empty() => Ok(config),
            _ => Err(errors.0),
        }
    }
}

fn read(root: Field, environment: Option<Environment>, errors: &mut Errors) -> Option<Config> {
    let mut object = root.object(errors)?;

    let keys_field = object.field("keys");
    let keys_given = keys_field.is_some();
    let mut keys = keys_field.map(|f| read_keys(f, errors)).unwrap_or_default();
    let keys_env = object.field("keys_env").and_then(|field| {
        let name = field.string_where(is_environment_variable_name, "must be an environment variable name (letters, digits and _)", errors)?;
        if keys_given {
            errors.add(&field.path, "and keys are both set: give the keys in one place");
        } else if let Some(environment) = environment {
            keys = keys_from_environment(&field.path, name, environment, errors);
        }
        Some(name.to_string())
    });
    // Keys the environment will give are not known yet: primary_key_id is checked against them then.
    let keys_unread = keys_env.is_some() && environment.is_none();
    let primary_key_id = match object.field("primary_key_id") {
        Some(field) => field.integer(1, 255, errors).map(|id| {
            let id = id as u8;
            if keys_unread {
                // Checked once the environment is read.
            } else if keys.is_empty() {
                errors.add(&field.path, "is set but no keys are configured");
            } else if !keys.iter().any(|(key_id, _)| *key_id == id) {
                errors.add(&field.path, format!("must be the id of one of the keys, got {id}"));
            }
            id
        }),
        None => match keys.as_slice() {
            [] => None,
            [(only, _)] => Some(*only),
            _ => {
                errors.add(&object.child_path("primary_key_id"), "is required when several keys are configured");
                None
            }
        },
    };

    let override_header = object
        .field("override_header")
        .and_then(|f| f.string_where(is_lowercase_header_name, HEADER_NAME_RULE, errors))
        .unwrap_or(DEFAULT_OVERRIDE_HEADER)
        .to_string();

    let decision_header = object.field("decision_header").and_then(|field| {
        let name = field.string_where(is_lowercase_header_name, HEADER_NAME_RULE, errors)?;
        if name == override_header {
            errors.add(&field.path, "must differ from override_header");
            return None;
        }
        Some(name.to_string())
    });

    let cluster_header = object.field("cluster_header").and_then(|field| {
        let name = field.string_where(is_lowercase_header_name, HEADER_NAME_RULE, errors)?;
        if name == override_header || decision_header.as_deref() == Some(name) {
            errors.add(&field.path, "must differ from override_header and decision_header");
            return None;
        }
        Some(name.to_string())
    });
    let host_stats = object.field("host_stats").and_then(|f| f.bool(errors)).unwrap_or(false);

    let mut profiles: Vec<Profile> = Vec::new();
    if let Some(items) = object.field("profiles").and_then(|f| f.array(errors)) {
        for item in items {
            let path = item.path.clone();
            if let Some(profile) = profile::parse(item, errors) {
                if profiles.iter().any(|p| p.name == profile.name) {
                    errors.add(&format!("{path}.name"), format!("{} is defined twice", quoted(&profile.name)));
                } else {
                    profiles.push(profile);
                }
            }
        }
    }
    for builtin in profile::builtins() {
        if !profiles.iter().any(|p| p.name == builtin.name) {
            profiles.push(builtin);
        }
    }
    let find = |field: &Field, errors: &mut Errors| -> Option<usize> {
        let name = field.string(errors)?;
        let index = profiles.iter().position(|p| p.name == name);
        if index.is_none() {
            errors.add(&field.path, format!("names profile {}, which is not defined", quoted(name)));
        }
        index
    };

    let default_profile = object.field("default_profile").and_then(|f| find(&f, errors));
    let mut routes = Vec::new();
    if let Some(map) = object.field("routes").and_then(|f| f.object(errors)) {
        for (route, value) in map.entries() {
            let field = Field { path: format!("routes.{route}"), value };
            if let Some(index) = find(&field, errors) {
                // Kept sorted for binary search (JSON object keys are unique).
                if let Err(at) = routes.binary_search_by(|(name, _): &(String, usize)| name.as_str().cmp(route)) {
                    routes.insert(at, (route.clone(), index));
                }
            }
        }
    }
    let client_address =
        object.field("client_address").and_then(|f| f.choice(&client_address::Source::CHOICES, errors)).unwrap_or(client_address::Source::Envoy);
    object.finish(errors, |_| None);
    Some(Config {
        keys,
        keys_env,
        primary_key_id,
        override_header,
        decision_header,
        cluster_header,
        host_stats,
        profiles,
        default_profile,
        routes,
        client_address,
    })
}

/// The keys in environment variable `name`: the JSON of `keys`, or one key entry as
/// `envoy-persistence keygen` prints it. The value never appears in an error message.
fn keys_from_environment(path: &str, name: &str, environment: &dyn Fn(&str) -> Option<String>, errors: &mut Errors) -> Vec<(u8, Secret)> {
    let Some(text) = environment(name) else {
        errors.add(
            path,
            format!(
                "names {name}, which is not set in the Wasm VM: list it in vm_config.environment_variables.host_env_keys and set it in \
                 Envoy's environment (Istio: vmConfig.env with valueFrom: HOST)"
            ),
        );
        return Vec::new();
    };
    let value = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(entry)) => serde_json::Value::Array(vec![serde_json::Value::Object(entry)]),
        Ok(list) => list,
        Err(_) => {
            errors.add(path, format!("{name} is not JSON: expected [{{\"id\": 1, \"secret\": \"...\"}}] (envoy-persistence keygen prints an entry)"));
            return Vec::new();
        }
    };
    let keys = read_keys(Field { path: format!("{path} ({name})"), value: &value }, errors);
    if keys.is_empty() && matches!(&value, serde_json::Value::Array(list) if list.is_empty()) {
        errors.add(path, format!("{name} holds no keys"));
    }
    keys
}

fn is_environment_variable_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn read_keys(field: Field, errors: &mut Errors) -> Vec<(u8, Secret)> {
    let mut keys: Vec<(u8, Secret)> = Vec::new();
    for item in field.array(errors).unwrap_or_default() {
        let Some(mut object) = item.object(errors) else { continue };
        let id = match object.field("id") {
            Some(field) => field.integer(1, 255, errors).map(|id| id as u8),
            None => {
                errors.add(&object.child_path("id"), "is required (1 to 255)");
                None
            }
        };
        if let Some(id) = id {
            if keys.iter().any(|(seen, _)| *seen == id) {
                errors.add(&object.child_path("id"), format!("{id} is used by two keys"));
            }
        }
        // The secret itself never appears in an error message.
        let secret = match object.field("secret") {
            Some(field) => field.string(errors).and_then(|text| {
                let decoded = base64::engine::general_purpose::STANDARD.decode(text.trim());
                match decoded.map(<[u8; KEY_LEN]>::try_from) {
                    Ok(Ok(secret)) => Some(secret),
                    Ok(Err(bytes)) => {
                        errors.add(
                            &field.path,
                            format!("must be base64 of exactly {KEY_LEN} random bytes, got {} bytes (make one with: openssl rand -base64 32)", bytes.len()),
                        );
                        None
                    }
                    Err(_) => {
                        errors.add(&field.path, "is not valid base64 (make one with: openssl rand -base64 32)");
                        None
                    }
                }
            }),
            None => {
                errors.add(&object.child_path("secret"), "is required");
                None
            }
        };
        object.finish(errors, |_| None);
        if let (Some(id), Some(secret)) = (id, secret) {
            keys.push((id, Secret(secret)));
        }
    }
    keys
}

fn is_lowercase_header_name(name: &str) -> bool {
    crate::cookie::is_token(name) && !name.bytes().any(|b| b.is_ascii_uppercase())
}

const HEADER_NAME_RULE: &str = "must be a lowercase HTTP header name";

#[cfg(test)]
mod tests;
