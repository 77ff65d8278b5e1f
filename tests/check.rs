//! The `envoy-persistence` command as operators run it (the built binary): every shipped example
//! is clean, one broken configuration per kind of finding is found, keys from `keygen` work in a
//! real Envoy, and `inspect-token` opens the cookie that Envoy issued.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::envoy::repo_root;
use common::{backend_of, Backend, Envoy, EnvoyConfig, Jar};
use envoy_persistence::check::Kind;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};

fn tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_envoy-persistence")).args(args).current_dir(repo_root()).output().expect("run envoy-persistence")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn shipped_examples() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("envoy"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".yaml") && name != "docker-compose.yaml")
        .map(|name| format!("envoy/{name}"))
        .collect();
    // The native build's examples too.
    files.extend(
        std::fs::read_dir(repo_root().join("envoy/native"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".yaml"))
            .map(|name| format!("envoy/native/{name}")),
    );
    files.sort();
    assert!(files.len() >= 14, "{files:?}");
    files
}

#[test]
fn every_shipped_example_is_clean() {
    for file in shipped_examples() {
        let output = tool(&["check", &file]);
        assert_eq!(output.status.code(), Some(0), "{file}:\n{}{}", stdout(&output), String::from_utf8_lossy(&output.stderr));
        assert!(stdout(&output).starts_with("ok: 1 plugin configuration(s)"), "{file}: {}", stdout(&output));
    }
    // The Istio files are read together: plugin, Service label, DestinationRule.
    let istio = ["envoy/istio/wasmplugin.yaml", "envoy/istio/service.yaml", "envoy/istio/destinationrule.yaml", "envoy/istio/istiod-values.yaml"];
    let output = tool(&[&["check"][..], &istio[..]].concat());
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    // And the Envoy Gateway files.
    let gateway = [
        "envoy/envoy-gateway/envoyextensionpolicy.yaml",
        "envoy/envoy-gateway/httproute.yaml",
        "envoy/envoy-gateway/envoyproxy.yaml",
        "envoy/envoy-gateway/backendtrafficpolicy.yaml",
    ];
    let output = tool(&[&["check"][..], &gateway[..]].concat());
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    // Without the EnvoyProxy and the BackendTrafficPolicy, what Envoy Gateway would do by default is found.
    let output = tool(&["check", gateway[0], gateway[1]]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("[stateful-session-order]") && text.contains("[no-health-checks]"), "{text}");
}

/// One broken configuration: a shipped example with one mistake.
struct Broken {
    kind: Kind,
    example: &'static str,
    break_it: fn(&mut EnvoyConfig),
}

fn broken_configurations() -> Vec<Broken> {
    vec![
        Broken {
            kind: Kind::InvalidPluginConfiguration,
            example: "http-cookie.yaml",
            break_it: |c| edit_plugin(c, |p| p["profiles"][0]["type"] = json!("http_cookies")),
        },
        Broken {
            kind: Kind::StatefulSessionMissing,
            example: "http-cookie.yaml",
            break_it: |c| {
                c.http_filters_mut("main").remove(1);
            },
        },
        Broken { kind: Kind::StatefulSessionOrder, example: "http-cookie.yaml", break_it: |c| c.http_filters_mut("main").swap(0, 1) },
        Broken {
            kind: Kind::StatefulSessionHeader,
            example: "http-cookie.yaml",
            break_it: |c| c.http_filters_mut("main")[1]["typed_config"]["session_state"]["typed_config"]["name"] = json!("x-persistence-host"),
        },
        Broken {
            kind: Kind::OverrideHostStatusImmediate,
            example: "http-cookie.yaml",
            break_it: |c| c.cluster_mut("app")["common_lb_config"]["override_host_status"]["statuses"] = json!(["UNKNOWN", "HEALTHY", "UNHEALTHY"]),
        },
        Broken {
            kind: Kind::OverrideHostStatusNever,
            example: "http-cookie-never.yaml",
            break_it: |c| {
                c.cluster_mut("app").as_object_mut().unwrap().remove("common_lb_config");
            },
        },
        Broken {
            kind: Kind::NoHealthChecks,
            example: "http-cookie.yaml",
            break_it: |c| {
                c.cluster_mut("app").as_object_mut().unwrap().remove("health_checks");
            },
        },
        Broken {
            kind: Kind::ConnectionCounterMissing,
            example: "client-ip.yaml",
            break_it: |c| {
                c.network_filters_mut("main").remove(0);
            },
        },
        Broken {
            kind: Kind::ConnectionCounterVm,
            example: "client-ip.yaml",
            break_it: |c| c.network_filters_mut("main")[0]["typed_config"]["config"]["vm_config"]["vm_id"] = json!("connections"),
        },
        Broken {
            kind: Kind::ClientAddressFromClients,
            example: "client-ip.yaml",
            break_it: |c| c.connection_manager_mut("main")["use_remote_address"] = json!(false),
        },
        Broken {
            kind: Kind::NoKeys,
            example: "http-cookie.yaml",
            break_it: |c| {
                edit_plugin(c, |p| {
                    p.as_object_mut().unwrap().remove("keys_env");
                })
            },
        },
        Broken {
            kind: Kind::OverrideHeaderNotRemoved,
            example: "http-cookie.yaml",
            break_it: |c| {
                c.connection_manager_mut("main")["route_config"]["virtual_hosts"][0].as_object_mut().unwrap().remove("response_headers_to_remove");
            },
        },
        Broken {
            kind: Kind::DisabledAlone,
            example: "http-cookie.yaml",
            break_it: |c| {
                c.route_mut("main", "static")["typed_per_filter_config"].as_object_mut().unwrap().remove("envoy.filters.http.stateful_session");
            },
        },
        Broken {
            kind: Kind::SessionIdWithoutFilterState,
            example: "tls.yaml",
            break_it: |c| {
                c.http_filters_mut("main").remove(0);
            },
        },
        Broken {
            kind: Kind::RouteProfileUnknown,
            example: "http-cookie.yaml",
            break_it: |c| c.route_mut("main", "shop")["metadata"]["filter_metadata"]["persistence"]["profile"] = json!("shoop"),
        },
        Broken { kind: Kind::RoutesUnmatched, example: "http-cookie.yaml", break_it: |c| edit_plugin(c, |p| p["routes"] = json!({"apis": "api"})) },
        Broken {
            kind: Kind::KeysEnvNotPassed,
            example: "http-cookie.yaml",
            break_it: |c| {
                c.http_filters_mut("main")[0]["typed_config"]["config"]["vm_config"].as_object_mut().unwrap().remove("environment_variables");
            },
        },
        Broken {
            kind: Kind::WeightedClustersUnsteered,
            example: "canary.yaml",
            break_it: |c| {
                c.connection_manager_mut("main")["route_config"]["virtual_hosts"][0]["routes"].as_array_mut().unwrap().retain(|r| r["name"] != "sticky-v2")
            },
        },
        Broken {
            kind: Kind::InvalidRouteSettings,
            example: "native/http-cookie-never.yaml",
            break_it: |c| {
                let routes = c.connection_manager_mut("main")["route_config"]["virtual_hosts"][0]["routes"].as_array_mut().unwrap();
                let strict = routes.iter_mut().find(|r| r["name"] == "strict").unwrap();
                strict["typed_per_filter_config"]["persistence"]["filter_config"]["value"] = json!(r#"{"strict": 1}"#);
            },
        },
    ]
}

/// Edits the plugin configuration in place, keeping everything else of the file as shipped.
fn edit_plugin(config: &mut EnvoyConfig, edit: fn(&mut Value)) {
    let edited = EnvoyConfig::from_value(config.value.clone()).plugin(edit);
    config.value = edited.value;
}

#[test]
fn one_broken_configuration_per_finding_is_found_with_its_path_effect_and_fix() {
    let broken = broken_configurations();
    let covered: Vec<Kind> = broken.iter().map(|b| b.kind).collect();
    assert_eq!(covered, Kind::ALL.to_vec(), "one broken configuration per kind of finding, in order");
    let dir = tempfile::tempdir().unwrap();
    for case in broken {
        let mut config = EnvoyConfig::load(case.example);
        (case.break_it)(&mut config);
        let file = dir.path().join(format!("{}.json", case.kind.id()));
        std::fs::write(&file, serde_json::to_string_pretty(&config.value).unwrap()).unwrap();
        let output = tool(&["check", file.to_str().unwrap()]);
        let text = stdout(&output);
        assert_eq!(output.status.code(), Some(1), "{}: {text}", case.kind.id());
        let finding =
            text.split("\n\n").find(|f| f.contains(&format!("[{}]", case.kind.id()))).unwrap_or_else(|| panic!("{} not found:\n{text}", case.kind.id()));
        assert!(finding.starts_with(&format!("{}: ", file.display())), "the file: {finding}");
        assert!(finding.contains(&format!("at run time: {}", case.kind.effect())) && finding.contains("\n  fix: "), "effect and fix: {finding}");
        println!("{}: {}", case.kind.id(), finding.lines().next().unwrap());
    }
}

#[test]
fn findings_in_yaml_name_the_yaml_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("envoy.yaml");
    let text = std::fs::read_to_string(repo_root().join("envoy/http-cookie.yaml")).unwrap();
    std::fs::write(&file, text.replace("name: x-persistence-upstream\n", "name: x-persistence-host\n")).unwrap();
    let output = tool(&["check", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let expected = format!(
        "{}: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[1].typed_config.session_state: [stateful-session-header] \
         stateful_session reads header \"x-persistence-host\", the filter writes \"x-persistence-upstream\"",
        file.display()
    );
    assert!(stdout(&output).starts_with(&expected), "{}", stdout(&output));
}

#[test]
fn listeners_routes_and_clusters_from_separate_files_are_checked_together() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EnvoyConfig::load("http-cookie.yaml");
    let mut routes = config.connection_manager_mut("main")["route_config"].take();
    routes["@type"] = json!("type.googleapis.com/envoy.config.route.v3.RouteConfiguration");
    config.connection_manager_mut("main").as_object_mut().unwrap().remove("route_config");
    config.connection_manager_mut("main")["rds"] = json!({"route_config_name": "local", "config_source": {"path_config_source": {"path": "rds.yaml"}}});
    let mut cluster = config.cluster_mut("app").take();
    cluster["@type"] = json!("type.googleapis.com/envoy.config.cluster.v3.Cluster");
    cluster.as_object_mut().unwrap().remove("health_checks");
    config.value["static_resources"].as_object_mut().unwrap().remove("clusters");
    let write = |name: &str, value: &Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, serde_yaml_ng::to_string(value).unwrap()).unwrap();
        path.display().to_string()
    };
    let files =
        [write("bootstrap.yaml", &config.value), write("rds.yaml", &json!({"resources": [routes]})), write("cds.yaml", &json!({"resources": [cluster]}))];
    let output = tool(&[&["check"][..], &files.iter().map(String::as_str).collect::<Vec<_>>()[..]].concat());
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.starts_with(&format!("{}: resources[0]: [no-health-checks] cluster \"app\" (route", files[2])), "{text}");
    assert!(text.contains("1 finding(s)"), "{text}");
}

#[test]
fn the_command_explains_itself_and_exits_2_when_it_cannot_run() {
    for command in ["check", "keygen", "inspect-token"] {
        let output = tool(&[command, "--help"]);
        assert_eq!(output.status.code(), Some(0));
        assert!(stdout(&output).starts_with(&format!("Usage: envoy-persistence {command}")), "{}", stdout(&output));
    }
    let output = tool(&["--help"]);
    assert!(stdout(&output).contains("inspect-token --keys <file>"));
    let stderr = |output: &Output| String::from_utf8_lossy(&output.stderr).into_owned();
    for (args, expected) in [
        (&[][..], "no command given"),
        (&["frobnicate"][..], "unknown command \"frobnicate\""),
        (&["check"][..], "no files given"),
        (&["check", "/nonexistent.yaml"][..], "/nonexistent.yaml: No such file"),
        (&["check", "envoy/docker-compose.yaml"][..], "found no persistence filter, Istio WasmPlugin or plugin configuration"),
        (&["check", "README.md"][..], "README.md: not valid YAML or JSON"),
        (&["keygen", "--id", "0"][..], "--id 0: expected 1 to 255"),
        (&["inspect-token", "abc"][..], "--keys <file> is required"),
    ] {
        let output = tool(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(expected), "{args:?}: {}", stderr(&output));
    }
}

#[test]
fn keygen_keys_work_in_envoy_and_inspect_token_opens_the_cookie_envoy_issued() {
    let output = tool(&["keygen", "--id", "7"]);
    assert_eq!(output.status.code(), Some(0));
    let entry: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(entry["id"], 7);
    let again: Value = serde_json::from_str(stdout(&tool(&["keygen"])).trim()).unwrap();
    assert_ne!(again["secret"], entry["secret"], "fresh randomness each time");

    // The entry, as printed, is what Envoy reads from PERSISTENCE_KEYS.
    let backends = Backend::start_many(3);
    let printed = stdout(&output);
    let config = EnvoyConfig::load("http-cookie.yaml").backends("app", &backends).environment("PERSISTENCE_KEYS", Some(printed.trim()));
    let envoy = Envoy::start(&config);
    let mut jar = Jar::default();
    let server = backend_of(&jar.get_from(envoy.addr(), "/"));
    let cookie = jar.cookies.get("AVI_COOKIE").expect("a cookie").clone();
    let address = backends.iter().find(|b| b.name == server).unwrap().addr.to_string();

    // The operator's view: the shipped configuration and the same environment variable.
    let inspect = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_envoy-persistence"))
            .args([&["inspect-token", "--keys", "envoy/http-cookie.yaml"][..], args].concat())
            .env("PERSISTENCE_KEYS", printed.trim())
            .current_dir(repo_root())
            .output()
            .unwrap()
    };
    let output = inspect(&[&format!("AVI_COOKIE={cookie}")]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&output.stderr));
    for expected in [
        "opened as http_cookie \"AVI_COOKIE\" of profile \"web\"",
        "key id:  7 (the primary key)",
        &format!("server:  {address}"),
        "expires: ",
        "verdict: honoured now",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    println!("{text}");
    // Past its 12-hour timeout the same cookie opens but is no longer honoured.
    let later = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 13 * 3600).to_string();
    let output = inspect(&["--at", &later, &cookie]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("verdict: no longer honoured"), "{}", stdout(&output));
    // One character changed: it does not authenticate, and the reason says so.
    let mut tampered = cookie.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let output = inspect(&[std::str::from_utf8(&tampered).unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("does not authenticate"), "{}", stdout(&output));
    // A keys list file works too, and a file without keys is refused with the reason.
    let dir = tempfile::tempdir().unwrap();
    let keys_file = dir.path().join("keys.json");
    std::fs::write(&keys_file, format!("[{}]", printed.trim())).unwrap();
    let output = tool(&["inspect-token", "--keys", keys_file.to_str().unwrap(), "--name", "AVI_COOKIE", &cookie]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let output = tool(&["inspect-token", "--keys", "envoy/client-ip.yaml", &cookie]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("has no keys"), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(Path::new(&keys_file).exists());
}
