//! What an operator sees: stats in /stats and /stats/prometheus, and the per-request record the
//! shipped configurations print in their access logs (%FILTER_STATE(wasm.persistence:PLAIN)%).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{get, Backend, Connection, Envoy, EnvoyConfig, Jar, Launch};
use std::time::Duration;

fn flushed_access_log(mut envoy: Envoy) -> String {
    // Envoy buffers access logs; stopping it flushes them.
    envoy.stop();
    envoy.access_log()
}

#[test]
fn stats_show_up_in_stats_and_prometheus() {
    let backends = Backend::start_many(3);
    let envoy = Envoy::start(&EnvoyConfig::load("http-cookie.yaml").backends("app", &backends).fast_health_checks());
    let mut jar = Jar::default();
    for _ in 0..4 {
        jar.get_from(envoy.addr(), "/");
    }
    get(envoy.addr(), "/", &[("cookie", b"AVI_COOKIE=forged"), ("x-persistence-upstream", b"MTI3LjAuMC4xOjE=")]);
    let (_, stats) = envoy.admin_get("/stats").unwrap();
    let prefix = common::envoy::stats_prefix();
    for line in ["persistence.web.new: 2", "persistence.web.pinned: 3", "persistence.web.rejected.malformed: 1", "persistence.override_header_removed: 1"] {
        let line = format!("{prefix}{line}");
        assert!(stats.lines().any(|l| l == line), "{line} missing from /stats");
    }
    let (status, prometheus) = envoy.admin_get("/stats/prometheus").unwrap();
    assert_eq!(status, 200);
    // Prometheus drops Envoy's wasmcustom. prefix and turns dots (and dashes) into underscores.
    // The native build's stats keep their namespace: envoy_dynamicmodulescustom_persistence_...
    let prometheus_prefix = if common::envoy::native() { "envoy_dynamicmodulescustom_" } else { "" };
    for (name, value) in [
        ("persistence_web_new", "2"),
        ("persistence_web_pinned", "3"),
        ("persistence_web_rejected_malformed", "1"),
        ("persistence_System_Persistence_Http_Cookie_pinned", "0"),
    ] {
        let name = format!("{prometheus_prefix}{name}");
        let name = name.as_str();
        assert!(prometheus.contains(&format!("# TYPE {name} counter")), "{name} type line missing");
        assert!(prometheus.lines().any(|l| l.starts_with(name) && l.ends_with(&format!(" {value}"))), "{name} {value} missing");
    }
}

#[test]
fn access_logs_print_each_decision_of_every_profile_type() {
    let backends = Backend::start_many(3);
    let envoy = Envoy::start(&EnvoyConfig::load("http-cookie.yaml").backends("app", &backends).fast_health_checks());
    let mut jar = Jar::default();
    // The cookie's server, by name: the garbage-cookie request is load balanced and may reach it too.
    let name = jar.get_from(envoy.addr(), "/").header("x-backend").unwrap().to_string();
    jar.get_from(envoy.addr(), "/");
    get(envoy.addr(), "/", &[("cookie", b"AVI_COOKIE=garbage")]);
    let server = backends.iter().find(|b| b.name == name).unwrap().addr;
    let log = flushed_access_log(envoy);
    for expected in [
        format!("profile=web type=http_cookie outcome=new server={server}"),
        format!("profile=web type=http_cookie outcome=pinned server={server}"),
        "profile=web type=http_cookie outcome=rejected:malformed server=127.0.0.1:".to_string(),
    ] {
        assert!(log.contains(&expected), "{expected:?} not in\n{log}");
    }

    let envoy = Envoy::start(&EnvoyConfig::load("client-ip.yaml").backends("app", &backends).fast_health_checks());
    let source = "127.0.0.77".parse().unwrap();
    Connection::open_from(envoy.addr(), source).get("/", &[]);
    Connection::open_from(envoy.addr(), source).get("/", &[]);
    let log = flushed_access_log(envoy);
    assert!(log.contains("127.0.0.77 \"GET /\" 200") && log.contains("profile=clients type=client_ip outcome=pinned server="), "{log}");

    let config = EnvoyConfig::load("http-header.yaml").backends("app", &backends).fast_health_checks().header_servers(&backends);
    let envoy = Envoy::start(&config);
    get(envoy.addr(), "/", &[("x-tenant", b"acme")]);
    get(envoy.addr(), "/", &[("x-tenant", b"nobody")]);
    get(envoy.addr(), "/", &[]);
    let log = flushed_access_log(envoy);
    for expected in [
        format!("profile=tenants type=http_header outcome=pinned server={}", backends[0].addr),
        "profile=tenants type=http_header decision=balance reason=header_unmatched".to_string(),
        "profile=tenants type=http_header decision=balance reason=header_missing".to_string(),
    ] {
        assert!(log.contains(&expected), "{expected:?} not in\n{log}");
    }
}

/// Housekeeping sweeps only the tables of profiles in use, and a swept table rests until its
/// entries can have expired: once the first pass is done, an idle Envoy makes at most a cursor read
/// or two per table and tick. (It used to sweep the empty tables of the built-in profiles, 4096
/// shared-data reads per table and tick on every thread, about 6 ms of CPU a second each.)
#[test]
fn an_idle_envoy_makes_no_housekeeping_host_calls() {
    if common::envoy::wasm_only("Wasm host-call tracing") {
        return;
    }
    let backends = Backend::start_many(3);
    for file in ["http-cookie.yaml", "client-ip.yaml"] {
        let config = EnvoyConfig::load(file).backends("app", &backends).fast_health_checks();
        let envoy = Envoy::launch(&config, &Launch { wasm_trace: true, ..Launch::workers(2) }).unwrap_or_else(|log| panic!("{log}"));
        envoy.wait_all_healthy();
        get(envoy.addr(), "/", &[]); // client-ip.yaml: an entry, so its table is in use and swept
        let calls = |log: &str| (log.matches("proxy_on_tick return").count(), log.matches("env.proxy_get_shared_data(").count());
        let mut quiet_window = None;
        envoy.wait_until(&format!("{file}: housekeeping to go quiet"), || {
            let (ticks_before, reads_before) = calls(&envoy.log());
            std::thread::sleep(Duration::from_millis(2500));
            let (ticks, reads) = calls(&envoy.log());
            let (ticks, reads) = (ticks - ticks_before, reads - reads_before);
            quiet_window = Some((ticks, reads));
            ticks >= 3 && reads <= 2 * ticks
        });
        println!("{file}: {:?} (ticks, shared-data reads) in a 2.5 s idle window", quiet_window);
    }
}
