//! Faults under load: a few hundred clients (each its own cookie jar and its own loopback address)
//! send continuously through Envoy (two workers, four backends) while the test fails a backend's
//! health check, brings it back, restarts Envoy, and rotates the cookie key. `SOAK_SECONDS` sets
//! the length (make test: a short form; make soak: 90 s).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{test_secret, Backend, Connection, Envoy, EnvoyConfig, Jar};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 200;
const THREADS: usize = 8;
/// fast_health_checks: interval 0.2 s, unhealthy after 2 failures.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(200);

struct Sample {
    client: usize,
    /// When the request was sent, and when it ended (since the start of the load).
    sent: Duration,
    at: Duration,
    /// The backend that answered, or why the request failed.
    result: Result<String, String>,
}

fn client_address(n: usize) -> IpAddr {
    format!("127.1.{}.{}", n / 200 + 1, n % 200 + 1).parse().unwrap()
}

fn config(backends: &[Backend], port: u16, keys: &[(u8, u8)], primary: u8) -> EnvoyConfig {
    let keys: Vec<_> = keys.iter().map(|&(id, fill)| json!({"id": id, "secret": test_secret(fill)})).collect();
    EnvoyConfig::load("http-cookie.yaml").backends("app", backends).fast_health_checks().listener_port("main", port).plugin(move |p| {
        p["keys"] = json!(keys);
        p["primary_key_id"] = json!(primary);
        p.as_object_mut().unwrap().remove("decision_header");
    })
}

fn request(addr: SocketAddr, client: usize, jar: &mut Jar) -> Result<String, String> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).map_err(|e| e.to_string())?;
    socket.bind(&SocketAddr::new(client_address(client), 0).into()).map_err(|e| e.to_string())?;
    socket.connect_timeout(&addr.into(), Duration::from_secs(2)).map_err(|e| format!("connect: {e}"))?;
    let stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let mut connection = Connection::from_stream(stream);
    let cookie = jar.header();
    let headers: Vec<(&str, &[u8])> = cookie.iter().map(|c| ("cookie", c.as_bytes())).collect();
    let response = connection.send("GET", "/", &headers).map_err(|e| format!("request: {e}"))?;
    jar.update(&response);
    match response.status {
        200 => Ok(response.header("x-backend").unwrap_or("?").to_string()),
        status => Err(format!("status {status}")),
    }
}

#[test]
fn clients_keep_their_servers_through_failures_restarts_and_key_rotation() {
    let seconds: u64 = std::env::var("SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30).max(20);
    let total = Duration::from_secs(seconds);
    let backends = Backend::start_many(4);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut envoy = Envoy::start_dynamic(&config(&backends, port, &[(1, 31)], 1));

    // Every client's first visit: its server and its cookie.
    let mut jars: Vec<Jar> = (0..CLIENTS).map(|_| Jar::default()).collect();
    let initial: Vec<String> = (0..CLIENTS).map(|c| request(addr, c, &mut jars[c]).expect("first visit")).collect();
    let down = &backends[0];
    let on_down: Vec<usize> = (0..CLIENTS).filter(|c| initial[*c] == down.name).collect();
    assert!(on_down.len() > 20, "{} clients on the server that will fail", on_down.len());

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut shards: Vec<Vec<(usize, Jar)>> = (0..THREADS).map(|_| Vec::new()).collect();
    for (client, jar) in jars.into_iter().enumerate() {
        shards[client % THREADS].push((client, jar));
    }
    let workers: Vec<_> = shards
        .into_iter()
        .map(|mut shard| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    for (client, jar) in shard.iter_mut() {
                        let sent = start.elapsed();
                        let result = request(addr, *client, jar);
                        let failed = result.is_err();
                        samples.push(Sample { client: *client, sent, at: start.elapsed(), result });
                        if failed {
                            // A refused connect returns at once: pace retries like a real client.
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
                (samples, shard)
            })
        })
        .collect();
    let at = |fraction: f64| std::thread::sleep((total.mul_f64(fraction)).saturating_sub(start.elapsed()));

    at(0.15);
    let failed_at = start.elapsed();
    down.set_healthy(false);
    envoy.wait_health_marked(down, false);
    let detected = start.elapsed();
    at(0.35);
    envoy.set_health(down, true);
    at(0.55);
    let restart_began = start.elapsed();
    envoy = envoy.restart();
    let restart_done = start.elapsed();
    at(0.75);
    // Rotation step 1, live: key 2 becomes primary, key 1 stays to open existing cookies.
    envoy.update_listeners(&config(&backends, port, &[(1, 31), (2, 32)], 2));
    let rotated = start.elapsed();
    at(1.0);
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    let mut jars = Vec::new();
    for worker in workers {
        let (s, shard) = worker.join().unwrap();
        samples.extend(s);
        jars.extend(shard);
    }

    // 1. No request failed, except those in flight while Envoy was restarting.
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.result.is_err()).collect();
    let outside: Vec<String> = failed
        .iter()
        .filter(|s| s.at < restart_began || s.sent > restart_done + Duration::from_secs(1))
        .map(|s| format!("{:?} client {} {:?}", s.at, s.client, s.result))
        .collect();
    assert!(outside.is_empty(), "requests failed outside the restart ({restart_began:?}..{restart_done:?}): {outside:?}");
    // 2. Clients of healthy servers: every answer from their server.
    let mut wrong = Vec::new();
    for sample in samples.iter().filter(|s| !on_down.contains(&s.client)) {
        if let Ok(server) = &sample.result {
            if *server != initial[sample.client] {
                wrong.push(format!("client {} at {:?}: {server} instead of {}", sample.client, sample.at, initial[sample.client]));
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {} answers from another server: {:?}", wrong.len(), samples.len(), &wrong[..wrong.len().min(5)]);
    // 3. Clients of the failed server: moved within one health-check interval (0.2 s) of Envoy
    // marking it down, then stayed on their new server.
    let moved_by = detected + HEALTH_CHECK_INTERVAL;
    let mut last_on_down = Duration::ZERO;
    for client in &on_down {
        let answers: Vec<(&Duration, &String)> =
            samples.iter().filter(|s| s.client == *client).filter_map(|s| s.result.as_ref().ok().map(|r| (&s.sent, r))).collect();
        let on_old = answers.iter().filter(|(_, server)| **server == down.name).map(|(at, _)| **at).max().unwrap_or_default();
        last_on_down = last_on_down.max(on_old);
        assert!(on_old <= moved_by, "client {client} on {} at {on_old:?}, marked down at {detected:?}", down.name);
        let after: Vec<&(&Duration, &String)> = answers.iter().filter(|(at, _)| **at > moved_by).collect();
        let new_server = after.first().map(|(_, s)| (*s).clone()).expect("answers after the failure");
        assert!(after.iter().all(|(_, server)| **server == new_server), "client {client} moved more than once");
    }
    // 4. No session lost through the rotation: the answers after it (checked above) stayed on their
    // servers, and the cookies were re-issued under the new primary key.
    let after_rotation = samples.iter().filter(|s| s.sent > rotated && s.result.is_ok()).count();
    assert!(after_rotation > CLIENTS, "{after_rotation} answers after the rotation");
    let key_ids: Vec<u8> = jars
        .iter()
        .filter_map(|(_, jar)| jar.get("AVI_COOKIE"))
        .filter_map(|value| base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, value).ok())
        .map(|raw| raw[1])
        .collect();
    assert_eq!(key_ids.len(), CLIENTS);
    assert!(key_ids.iter().all(|id| *id == 2), "every client now holds a cookie sealed with key 2");
    assert!(envoy.counter("persistence.web.rotated") >= CLIENTS as u64 - on_down.len() as u64);
    envoy.assert_vm_healthy();
    println!(
        "{} requests in {seconds} s ({} failed, all during the {:?} restart); {} clients moved off {}: \
         health check failing from {failed_at:?}, marked down at {detected:?}, last request it answered sent at {last_on_down:?}",
        samples.len(),
        failed.len(),
        restart_done - restart_began,
        on_down.len(),
        down.name
    );
}
