use super::*;
use crate::outcome::ServerDown;
use crate::profile::{http_cookie, Kind};
use serde_json::json;

const SECRET_1: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const SECRET_2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

fn errors_of(config: serde_json::Value) -> Vec<String> {
    match Config::parse(config.to_string().as_bytes()) {
        Ok(_) => vec![],
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn reads_the_design_example() {
    let config = Config::parse(
        json!({
            "keys": [{"id": 1, "secret": SECRET_1}, {"id": 2, "secret": SECRET_2}],
            "primary_key_id": 2,
            "override_header": "x-persistence-upstream",
            "default_profile": "web",
            "routes": {"api": "System-Persistence-Http-Cookie"},
            "profiles": [{"name": "web", "type": "http_cookie", "description": "shop", "server_down": "never",
                          "http_cookie": {"name": "SHOP", "timeout_minutes": 720, "always_send": false, "path": "/",
                                          "domain": null, "http_only": true, "secure": "auto", "same_site": "lax"}}]
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(config.keys, vec![(1, Secret([1; 32])), (2, Secret([2; 32]))]);
    assert_eq!(config.primary_key_id, Some(2));
    let web = &config.profiles[config.default_profile.unwrap()];
    assert_eq!((web.name.as_str(), web.server_down, web.description.as_deref()), ("web", ServerDown::Never, Some("shop")));
    let Kind::HttpCookie(settings) = &web.kind else { panic!("not http_cookie") };
    assert_eq!((settings.name.as_str(), settings.timeout), ("SHOP", Some(43_200)));
    assert_eq!(config.profiles[config.route_profile("api").unwrap()].name, "System-Persistence-Http-Cookie");
    assert_eq!(config.route_profile("other"), None);
}

#[test]
fn minimal_configuration_generates_a_key_and_has_builtins() {
    let config = Config::parse(b"{\"default_profile\": \"System-Persistence-Http-Cookie\"}").unwrap();
    assert!(config.keys.is_empty() && config.primary_key_id.is_none());
    assert_eq!(config.override_header, DEFAULT_OVERRIDE_HEADER);
    let Kind::HttpCookie(settings) = &config.profiles[config.default_profile.unwrap()].kind else { panic!("not http_cookie") };
    assert_eq!(*settings, http_cookie::Settings::default());
}

#[test]
fn a_builtin_can_be_redefined() {
    let config = Config::parse(
        json!({"profiles": [{"name": "System-Persistence-Http-Cookie", "type": "http_cookie", "http_cookie": {"name": "MINE"}}]}).to_string().as_bytes(),
    )
    .unwrap();
    let matching: Vec<_> = config.profiles.iter().filter(|p| p.name == "System-Persistence-Http-Cookie").collect();
    assert_eq!(matching.len(), 1);
    let Kind::HttpCookie(settings) = &matching[0].kind else { panic!("not http_cookie") };
    assert_eq!(settings.name, "MINE");
}

#[test]
fn a_single_key_is_primary_by_default() {
    let config = Config::parse(json!({"keys": [{"id": 9, "secret": SECRET_1}]}).to_string().as_bytes()).unwrap();
    assert_eq!(config.primary_key_id, Some(9));
}

#[test]
fn every_rule_is_reported_with_its_path() {
    let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
        (json!([]), vec!["configuration: must be an object, got an array"]),
        (json!({"profile": []}), vec!["profile: unknown field (known fields here: client_address, cluster_header, decision_header, default_profile, host_stats, keys, keys_env, override_header, primary_key_id, profiles, routes)"]),
        (json!({"keys": [{"id": 1, "secret": "c2hvcnQ="}]}), vec!["keys[0].secret: must be base64 of exactly 32 random bytes, got 5 bytes (make one with: openssl rand -base64 32)"]),
        (json!({"keys": [{"id": 1, "secret": "not base64!"}]}), vec!["keys[0].secret: is not valid base64 (make one with: openssl rand -base64 32)"]),
        (json!({"keys": [{"id": 0, "secret": SECRET_1}]}), vec!["keys[0].id: must be an integer between 1 and 255, got number 0"]),
        (json!({"keys": [{"id": 1, "secret": SECRET_1}, {"id": 1, "secret": SECRET_2}]}), vec!["keys[1].id: 1 is used by two keys", "primary_key_id: is required when several keys are configured"]),
        (json!({"keys": [{"id": 1, "secret": SECRET_1}], "primary_key_id": 2}), vec!["primary_key_id: must be the id of one of the keys, got 2"]),
        (json!({"primary_key_id": 2}), vec!["primary_key_id: is set but no keys are configured"]),
        (json!({"keys": [{"secret": SECRET_1}]}), vec!["keys[0].id: is required (1 to 255)"]),
        (json!({"override_header": "X-Upstream"}), vec!["override_header: must be a lowercase HTTP header name, got \"X-Upstream\""]),
        (json!({"default_profile": "web"}), vec!["default_profile: names profile \"web\", which is not defined"]),
        (json!({"decision_header": "x-persistence-upstream"}), vec!["decision_header: must differ from override_header"]),
        (json!({"cluster_header": "x-persistence-upstream"}), vec!["cluster_header: must differ from override_header and decision_header"]),
        (json!({"cluster_header": "X Cluster"}), vec!["cluster_header: must be a lowercase HTTP header name, got \"X Cluster\""]),
        (json!({"host_stats": "yes"}), vec!["host_stats: must be true or false, got string \"yes\""]),
        (json!({"decision_header": "X-Decision"}), vec!["decision_header: must be a lowercase HTTP header name, got \"X-Decision\""]),
        (json!({"routes": {"r1": "nope"}}), vec!["routes.r1: names profile \"nope\", which is not defined"]),
        (json!({"profiles": [{"type": "http_cookie"}]}), vec!["profiles[0].name: is required"]),
        (json!({"profiles": [{"name": "a b", "type": "http_cookie"}]}), vec!["profiles[0].name: must be 1 to 64 letters, digits, '-' or '_', got \"a b\""]),
        (json!({"profiles": [{"name": "w"}]}), vec!["profiles[0].type: is required (one of http_cookie, client_ip, app_cookie, http_header, tls, session_header, app_header)"]),
        (json!({"profiles": [{"name": "w", "type": "cookie"}]}), vec!["profiles[0].type: must be one of \"http_cookie\", \"client_ip\", \"app_cookie\", \"http_header\", \"tls\", \"session_header\", \"app_header\", got string \"cookie\""]),
        (json!({"profiles": [{"name": "w", "type": "http_cookie", "server_down": "later"}]}), vec!["profiles[0].server_down: must be one of \"immediate\", \"never\", got string \"later\""]),
        (json!({"profiles": [{"name": "w", "type": "http_cookie"}, {"name": "w", "type": "http_cookie"}]}), vec!["profiles[1].name: \"w\" is defined twice"]),
        (json!({"profiles": [{"name": "w", "type": "http_cookie", "http_cookie": {"timeout_minutes": 5}}]}), vec!["profiles[0].http_cookie.timeout_minutes: must be an integer between 10 and 720, got number 5"]),
    ];
    for (config, expected) in cases {
        assert_eq!(errors_of(config.clone()), expected, "{config}");
    }
}

#[test]
fn reports_all_errors_at_once() {
    let errors =
        errors_of(json!({"override_header": "", "profiles": [{"name": "w", "type": "http_cookie", "http_cookie": {"timeout_minutes": 1, "secure": "yes"}}]}));
    assert_eq!(errors.len(), 3, "{errors:?}");
}

#[test]
fn rejects_empty_and_invalid_json() {
    assert_eq!(Config::parse(b"  ").unwrap_err()[0].to_string(), "configuration: is empty: expected a JSON object (see README, \"Configuration\")");
    assert!(Config::parse(b"{").unwrap_err()[0].to_string().starts_with("configuration: is not valid JSON: EOF while parsing"));
}

#[test]
fn secrets_never_appear_in_errors() {
    let secret = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=";
    let errors = errors_of(json!({"keys": [{"id": 1, "secret": secret}]}));
    assert_eq!(errors.len(), 1);
    assert!(!errors[0].contains(secret));
}

#[test]
fn client_address_is_envoy_by_default_and_peer_on_request() {
    use crate::client_address::Source;
    assert_eq!(Config::parse(b"{}").unwrap().client_address, Source::Envoy);
    assert_eq!(Config::parse(br#"{"client_address": "peer"}"#).unwrap().client_address, Source::Peer);
    assert_eq!(errors_of(json!({"client_address": "xff"})), vec![r#"client_address: must be one of "envoy", "peer", got string "xff""#]);
}

#[test]
fn keys_env_reads_the_keys_from_the_environment_as_the_filter_runs() {
    let env = |value: Option<&'static str>| move |name: &str| (name == "PERSISTENCE_KEYS").then_some(value).flatten().map(str::to_string);
    let parse = |config: serde_json::Value, value: Option<&'static str>| Config::parse_with_environment(config.to_string().as_bytes(), &env(value));
    let list: &'static str = Box::leak(json!([{"id": 1, "secret": SECRET_1}, {"id": 2, "secret": SECRET_2}]).to_string().into_boxed_str());
    let config = parse(json!({"keys_env": "PERSISTENCE_KEYS", "primary_key_id": 2}), Some(list)).unwrap();
    assert_eq!((config.keys, config.primary_key_id), (vec![(1, Secret([1; 32])), (2, Secret([2; 32]))], Some(2)));
    // One entry as `envoy-persistence keygen` prints it.
    let entry: &'static str = Box::leak(json!({"id": 7, "secret": SECRET_1}).to_string().into_boxed_str());
    let config = parse(json!({"keys_env": "PERSISTENCE_KEYS"}), Some(entry)).unwrap();
    assert_eq!((config.keys, config.primary_key_id), (vec![(7, Secret([1; 32]))], Some(7)));
    let errors = |config: serde_json::Value, value: Option<&'static str>| parse(config, value).unwrap_err().iter().map(ToString::to_string).collect::<Vec<_>>();
    let unset = errors(json!({"keys_env": "PERSISTENCE_KEYS"}), None);
    assert_eq!(unset.len(), 1);
    assert!(
        unset[0].starts_with("keys_env: names PERSISTENCE_KEYS, which is not set in the Wasm VM: list it in vm_config.environment_variables.host_env_keys"),
        "{unset:?}"
    );
    assert_eq!(
        errors(json!({"keys_env": "PERSISTENCE_KEYS"}), Some("secret!")),
        vec!["keys_env: PERSISTENCE_KEYS is not JSON: expected [{\"id\": 1, \"secret\": \"...\"}] (envoy-persistence keygen prints an entry)"]
    );
    assert_eq!(errors(json!({"keys_env": "PERSISTENCE_KEYS"}), Some("[]")), vec!["keys_env: PERSISTENCE_KEYS holds no keys"]);
    assert_eq!(
        errors(json!({"keys_env": "PERSISTENCE_KEYS"}), Some(r#"[{"id": 1, "secret": "c2hvcnQ="}]"#)),
        vec!["keys_env (PERSISTENCE_KEYS)[0].secret: must be base64 of exactly 32 random bytes, got 5 bytes (make one with: openssl rand -base64 32)"]
    );
    assert_eq!(
        errors(json!({"keys_env": "PERSISTENCE_KEYS", "primary_key_id": 3}), Some(list)),
        vec!["primary_key_id: must be the id of one of the keys, got 3"]
    );
    assert_eq!(errors(json!({"keys_env": "PERSISTENCE_KEYS", "keys": []}), Some(list)), vec!["keys_env: and keys are both set: give the keys in one place"]);
    assert_eq!(errors(json!({"keys_env": "1X"}), Some(list)), vec!["keys_env: must be an environment variable name (letters, digits and _), got \"1X\""]);
    // Without the environment (the checker), the name is checked and the keys left unread.
    let config = Config::parse(json!({"keys_env": "PERSISTENCE_KEYS", "primary_key_id": 2}).to_string().as_bytes()).unwrap();
    assert_eq!((config.keys.len(), config.keys_env.as_deref(), config.primary_key_id), (0, Some("PERSISTENCE_KEYS"), Some(2)));
}
