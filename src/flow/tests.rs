//! The request flow of every profile type, through request and response, on the fake host: what
//! is pinned, which headers are written and removed, what is counted, and the one access-log
//! record of every request that selected a profile. Real Envoy proves the same in `tests/`.

use super::*;
use crate::host::fake::FakeHost;
use crate::keyring::Keyring;
use crate::server::ClusterName;
use crate::token::{self, Claims, Purpose};
use serde_json::{json, Value};

const A: &str = "10.0.0.1:8080";
const B: &str = "10.0.0.2:8080";
const CLIENT: &str = "10.9.9.9:40000";
/// base64 of 32 bytes of 1.
const SECRET: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const NOW: u64 = 1_800_000_000;

/// One profile of each kind, selected by route name (the route names are the profile names).
fn config() -> Value {
    json!({
        "keys": [{"id": 1, "secret": SECRET}],
        "decision_header": "x-decision",
        "routes": {"web": "web", "never": "never", "idle": "idle", "ip": "ip", "ip-off": "ip-off", "app": "app", "prefix": "prefix",
                   "tenant": "tenant", "tls": "tls", "tls-ip": "tls-ip", "mesh": "mesh", "api": "api", "mcp": "mcp", "mcp-prefix": "mcp-prefix"},
        "profiles": [
            {"name": "web", "type": "http_cookie", "http_cookie": {"timeout_minutes": 720}},
            {"name": "never", "type": "http_cookie", "server_down": "never"},
            {"name": "idle", "type": "http_cookie", "http_cookie": {"idle_timeout_minutes": 10}},
            {"name": "ip", "type": "client_ip", "client_ip": {"timeout_minutes": 5}},
            {"name": "ip-off", "type": "client_ip", "client_ip": {"timeout_minutes": 0}},
            {"name": "app", "type": "app_cookie", "app_cookie": {"name": "JSESSIONID"}},
            {"name": "prefix", "type": "app_cookie", "app_cookie": {"name": "JSESSIONID", "mode": "prefix"}},
            {"name": "tenant", "type": "http_header", "http_header": {"name": "x-tenant", "servers": [{"address": A, "values": ["acme"]}]}},
            {"name": "tls", "type": "tls"},
            {"name": "tls-ip", "type": "tls", "tls": {"fallback": "client_ip"}},
            {"name": "mesh", "type": "tls", "tls": {"key": "peer_certificate"}},
            {"name": "api", "type": "session_header", "session_header": {"idle_timeout_minutes": 30}},
            {"name": "mcp", "type": "app_header", "app_header": {"name": "mcp-session-id"}},
            {"name": "mcp-prefix", "type": "app_header", "app_header": {"name": "mcp-session-id", "mode": "prefix"}}
        ]
    })
}

struct Fixture {
    host: FakeHost,
    plugin: Rc<Plugin>,
}

impl Fixture {
    fn new(config: Value) -> Fixture {
        let host = FakeHost::default();
        host.now.set(NOW);
        let plugin = Plugin::configure(config.to_string().as_bytes(), &host).expect("a valid configuration");
        Fixture { host, plugin: Rc::new(plugin) }
    }

    /// The request phase of a request from `source` on route `route` (empty: no route name).
    fn request_from(&mut self, source: &str, route: &str, headers: &[(&str, &str)]) -> Stream {
        self.host.request(source, headers);
        if !route.is_empty() {
            self.host.attribute("route_name", route);
        }
        let mut stream = Stream::new(Some(self.plugin.clone()));
        stream.on_request_headers(&mut self.host);
        stream
    }

    fn request(&mut self, route: &str, headers: &[(&str, &str)]) -> Stream {
        self.request_from(CLIENT, route, headers)
    }

    fn respond(&mut self, stream: &mut Stream, upstream: Option<&str>, headers: &[(&str, &str)]) {
        self.host.respond(upstream, headers);
        stream.on_response_headers(&mut self.host);
    }

    /// Both phases; the request's one record.
    fn exchange(&mut self, route: &str, headers: &[(&str, &str)], upstream: Option<&str>, response: &[(&str, &str)]) -> String {
        let mut stream = self.request(route, headers);
        self.respond(&mut stream, upstream, response);
        self.only_record()
    }

    fn only_record(&self) -> String {
        assert_eq!(self.host.records.len(), 1, "exactly one record per request: {:?}", self.host.records);
        self.host.records[0].clone()
    }

    fn pinned(&self) -> Option<String> {
        self.host.pinned.as_ref().map(|(endpoint, header)| {
            assert_eq!(header, "x-persistence-upstream");
            endpoint.to_string()
        })
    }

    fn stat(&self, name: &str) -> i64 {
        self.host.stat(&format!("persistence.{name}"))
    }

    /// The value of the cookie a Set-Cookie header sets (`NAME=value`).
    fn set_cookie(&self) -> Option<String> {
        let values = self.host.response_header_values("set-cookie");
        assert!(values.len() <= 1, "{values:?}");
        values.first().map(|v| v.split(';').next().unwrap_or_default().to_string())
    }
}

fn sealed(id: u8, secret: u8, claims: Claims) -> String {
    let keyring = Keyring::new(&[(id, [secret; 32])], id).unwrap();
    format!("AVI_COOKIE={}", token::seal(&keyring, Purpose::HttpCookie, "AVI_COOKIE", &claims, [7; 12]).unwrap())
}

fn claims(server: &str) -> Claims {
    Claims { server: Server::host(server.parse().unwrap()), issued_at: NOW, expires_at: None }
}

#[test]
fn http_cookie_first_visit_returning_client_and_server_changes() {
    let mut f = Fixture::new(config());
    // First visit: balanced, the server Envoy chose is sealed into a new cookie.
    let record = f.exchange("web", &[("cookie", "a=1")], Some(A), &[]);
    assert_eq!(record, format!("profile=web type=http_cookie outcome=new server={A}"));
    assert_eq!(f.pinned(), None);
    let cookie = f.set_cookie().expect("a cookie for the first visit");
    assert!(f.host.response_header("set-cookie").unwrap().contains("Max-Age=43200"));
    assert_eq!(f.stat("web.new"), 1);

    // Returning: pinned; our cookie never reaches the backend, the others do byte for byte.
    let mut stream = f.request("web", &[("cookie", &format!("a=1; {cookie}; b=2"))]);
    assert_eq!(f.pinned().as_deref(), Some(A));
    assert_eq!(f.host.request_header("cookie").as_deref(), Some("a=1; b=2"));
    assert_eq!(f.host.request_header("x-decision"), Some(format!("profile=web type=http_cookie decision=pin server={A}")));
    f.host.response_headers.push(("x-persistence-upstream".into(), b"c2VydmVy".to_vec()));
    f.respond(&mut stream, Some(A), &[]);
    assert_eq!(f.only_record(), format!("profile=web type=http_cookie outcome=pinned server={A}"));
    assert_eq!(f.set_cookie(), None, "no cookie while nothing changes");
    assert_eq!(f.stat("web.pinned"), 1);

    // The pinned host was down (immediate): Envoy chose B; the cookie moves and
    // stateful_session's response header is hidden.
    let mut stream = f.request("web", &[("cookie", &cookie)]);
    f.respond(&mut stream, Some(B), &[("x-persistence-upstream", "QjpCOkI=")]);
    assert_eq!(f.only_record(), format!("profile=web type=http_cookie outcome=repicked server={B}"));
    assert_eq!(f.host.response_header("x-persistence-upstream"), None);
    let moved = f.set_cookie().expect("a cookie for the new server");
    assert_ne!(moved, cookie);
    assert_eq!(f.stat("web.repicked"), 1);

    // Envoy answered itself (no healthy host): nothing to persist.
    let record = f.exchange("web", &[("cookie", &moved)], None, &[]);
    assert_eq!(record, "profile=web type=http_cookie outcome=no_upstream server=-");
    assert_eq!(f.set_cookie(), None);
    assert_eq!(f.stat("web.no_upstream"), 1);
}

#[test]
fn http_cookie_server_down_never_keeps_the_cookie() {
    let mut f = Fixture::new(config());
    let cookie = sealed(1, 1, claims(A));
    let record = f.exchange("never", &[("cookie", &cookie)], Some(B), &[]);
    assert_eq!(record, format!("profile=never type=http_cookie outcome=kept server={B}"));
    assert_eq!(f.set_cookie(), None);
    assert_eq!(f.stat("never.kept"), 1);
}

#[test]
fn every_rejected_cookie_is_balanced_counted_recorded_and_replaced() {
    let mut f = Fixture::new(config());
    let cases = [
        ("web", "AVI_COOKIE=junk".to_string(), "malformed"),
        ("web", sealed(9, 1, claims(A)), "unknown_key"),
        ("web", sealed(1, 2, claims(A)), "forged"),
        ("web", sealed(1, 1, Claims { expires_at: Some(NOW - 1), ..claims(A) }), "expired"),
        ("idle", sealed(1, 1, Claims { issued_at: NOW - 601, ..claims(A) }), "idle"),
    ];
    for (route, cookie, reason) in cases {
        let mut stream = f.request(route, &[("cookie", &cookie)]);
        assert_eq!(f.pinned(), None, "{reason}");
        assert_eq!(f.host.request_header("cookie"), None, "{reason}: the rejected cookie does not reach the backend");
        assert!(f.host.request_header("x-decision").unwrap().ends_with(&format!("decision=balance rejected={reason}")));
        f.respond(&mut stream, Some(B), &[]);
        assert_eq!(f.only_record(), format!("profile={route} type=http_cookie outcome=rejected:{reason} server={B}"));
        assert!(f.set_cookie().is_some(), "{reason}: a fresh cookie");
        assert_eq!(f.stat(&format!("{route}.rejected.{reason}")), 1);
    }
}

#[test]
fn a_returning_cookie_costs_exactly_these_host_calls() {
    let mut f = Fixture::new(json!({"keys": [{"id": 1, "secret": SECRET}], "default_profile": "web",
                                     "profiles": [{"name": "web", "type": "http_cookie"}]}));
    let cookie = sealed(1, 1, claims(A));
    let mut stream = f.request("", &[("cookie", &cookie)]);
    let calls = f.host.calls.borrow().clone();
    assert_eq!(calls, ["request_headers", "attribute:route_profile", "now", "remove_request_header:cookie", "pin"]);
    f.respond(&mut stream, Some(A), &[]);
    let calls = f.host.calls.borrow().clone();
    assert_eq!(&calls[5..], ["attribute:upstream.address", "record"]);
}

#[test]
fn a_route_without_a_profile_only_strips_and_selects() {
    let mut f = Fixture::new(json!({"profiles": [{"name": "web", "type": "http_cookie"}]}));
    let mut stream = f.request("", &[("x-persistence-upstream", "c3B\u{6f}b2Y=")]);
    f.respond(&mut stream, Some(A), &[("x-persistence-upstream", "x")]);
    let calls = f.host.calls.borrow().clone();
    assert_eq!(
        calls,
        ["request_headers", "remove_request_header:x-persistence-upstream", "attribute:route_profile", "remove_response_header:x-persistence-upstream"]
    );
    assert!(f.host.records.is_empty(), "no profile, no record");
    assert_eq!(f.host.request_header("x-persistence-upstream"), None);
    assert_eq!(f.stat("override_header_removed"), 1);
}

#[test]
fn client_ip_records_new_clients_and_pins_them_until_they_move() {
    let mut f = Fixture::new(config());
    let record = f.exchange("ip", &[], Some(A), &[]);
    assert_eq!(record, format!("profile=ip type=client_ip outcome=new server={A}"));
    assert_eq!(f.stat("ip.entries"), 1);
    let mut stream = f.request("ip", &[]);
    assert_eq!(f.pinned().as_deref(), Some(A));
    f.respond(&mut stream, Some(A), &[]);
    assert_eq!(f.only_record(), format!("profile=ip type=client_ip outcome=pinned server={A}"));
    // Another client is another key.
    f.request_from("10.9.9.10:1234", "ip", &[]);
    assert_eq!(f.pinned(), None);
    // The server went down: the entry moves with the client.
    let record = f.exchange("ip", &[], Some(B), &[]);
    assert_eq!(record, format!("profile=ip type=client_ip outcome=repicked server={B}"));
    f.request("ip", &[]);
    assert_eq!(f.pinned().as_deref(), Some(B));
    assert_eq!((f.stat("ip.new"), f.stat("ip.pinned"), f.stat("ip.repicked")), (1, 1, 1));
}

#[test]
fn client_ip_without_persistence_still_records_why() {
    let mut f = Fixture::new(config());
    f.request("ip-off", &[]);
    assert_eq!(f.only_record(), "profile=ip-off type=client_ip decision=balance reason=disabled");
    assert_eq!(f.host.called("now"), 0, "a disabled profile reads nothing");
    f.request_from("unix:/var/run/socket", "ip", &[]);
    assert_eq!(f.only_record(), "profile=ip type=client_ip decision=balance reason=no_client_address");
    assert_eq!(f.host.request_header("x-decision").as_deref(), Some("profile=ip type=client_ip decision=balance reason=no_client_address"));
}

#[test]
fn a_client_written_address_is_refused_and_a_trusted_one_used() {
    let mut f = Fixture::new(config());
    // use_remote_address: false: Envoy took the last X-Forwarded-For entry (port 0).
    f.request_from("10.1.1.1:0", "ip", &[("x-forwarded-for", "10.1.1.1")]);
    assert_eq!(f.pinned(), None);
    assert_eq!(f.only_record(), "profile=ip type=client_ip decision=balance reason=untrusted_client_address");
    assert_eq!(f.stat("untrusted_client_address"), 1);
    assert!(f.plugin.state.warned.untrusted_client_address.get());
    // One trusted hop: Envoy appended the peer, the client is the entry before it.
    let record = {
        let mut stream = f.request_from("10.1.1.1:0", "ip", &[("x-forwarded-for", "10.1.1.1,192.0.2.7")]);
        f.respond(&mut stream, Some(A), &[]);
        f.only_record()
    };
    assert_eq!(record, format!("profile=ip type=client_ip outcome=new server={A}"));
    f.request_from("10.1.1.1:4000", "ip", &[]);
    assert_eq!(f.pinned().as_deref(), Some(A), "the forwarded client's entry is its address's entry");
}

#[test]
fn client_address_peer_uses_the_connection_or_refuses() {
    let mut config = config();
    config["client_address"] = json!("peer");
    let mut f = Fixture::new(config);
    f.exchange("ip", &[], Some(A), &[]);
    // Envoy took 10.7.7.7 from X-Forwarded-For; the connection's peer is CLIENT.
    f.host.request("10.7.7.7:0", &[("x-forwarded-for", "10.7.7.7")]);
    f.host.attribute("route_name", "ip");
    f.host.attribute("filter_state.persistence.peer", CLIENT);
    Stream::new(Some(f.plugin.clone())).on_request_headers(&mut f.host);
    assert_eq!(f.pinned().as_deref(), Some(A), "keyed on the connection, not the forwarded address");
    f.request_from("10.7.7.7:0", "ip", &[("x-forwarded-for", "10.7.7.7")]);
    assert_eq!(f.only_record(), "profile=ip type=client_ip decision=balance reason=no_peer_address");
    assert_eq!(f.stat("no_peer_address"), 1);
}

#[test]
fn app_cookie_table_learns_from_the_backend_and_follows_the_session() {
    let mut f = Fixture::new(config());
    let mut stream = f.request("app", &[(":path", "/login")]);
    assert!(f.host.request_header("x-decision").unwrap().ends_with("decision=balance reason=no_session"));
    f.respond(&mut stream, Some(A), &[("set-cookie", "JSESSIONID=S1; Path=/")]);
    assert_eq!(f.only_record(), format!("profile=app type=app_cookie outcome=new server={A}"));
    assert_eq!(f.stat("app.learned"), 1);
    assert_eq!(f.host.response_header("set-cookie").as_deref(), Some("JSESSIONID=S1; Path=/"), "the backend's cookie is untouched");
    // The session id in the cookie, in the query, in a path parameter: all pinned.
    for (path, cookie) in [("/cart", "JSESSIONID=S1"), ("/cart?JSESSIONID=S1", ""), ("/cart;jsessionid=S1", "")] {
        let headers: Vec<(&str, &str)> = [(":path", path), ("cookie", cookie)].into_iter().filter(|(_, v)| !v.is_empty()).collect();
        let mut stream = f.request("app", &headers);
        assert_eq!(f.pinned().as_deref(), Some(A), "{path} {cookie}");
        f.respond(&mut stream, Some(A), &[]);
        assert_eq!(f.only_record(), format!("profile=app type=app_cookie outcome=pinned server={A}"));
    }
    // Logout deletes the id: the next request with it is new.
    f.exchange("app", &[("cookie", "JSESSIONID=S1")], Some(A), &[("set-cookie", "JSESSIONID=; Max-Age=0")]);
    f.request("app", &[("cookie", "JSESSIONID=S1")]);
    assert_eq!(f.pinned(), None);
}

#[test]
fn app_cookie_prefix_seals_the_backend_cookie_and_hides_the_seal_from_it() {
    let mut f = Fixture::new(config());
    let mut stream = f.request("prefix", &[]);
    f.respond(&mut stream, Some(A), &[("set-cookie", "JSESSIONID=AB12.node1; Path=/; HttpOnly"), ("set-cookie", "other=1")]);
    assert_eq!(f.only_record(), format!("profile=prefix type=app_cookie outcome=new server={A}"));
    let set_cookies = f.host.response_header_values("set-cookie");
    assert_eq!(set_cookies.len(), 2);
    let sealed = set_cookies[0].split(';').next().unwrap().to_string();
    assert!(sealed.starts_with("JSESSIONID=") && sealed.ends_with(".AB12.node1"), "{sealed}");
    assert_eq!(set_cookies[1], "other=1");
    let mut stream = f.request("prefix", &[("cookie", &sealed)]);
    assert_eq!(f.pinned().as_deref(), Some(A));
    assert_eq!(f.host.request_header("cookie").as_deref(), Some("JSESSIONID=AB12.node1"), "the backend sees its own value");
    f.respond(&mut stream, Some(A), &[]);
    assert_eq!(f.only_record(), format!("profile=prefix type=app_cookie outcome=pinned server={A}"));
    // Moved (immediate) without a new cookie from the backend: the client's value is re-sealed.
    let mut stream = f.request("prefix", &[("cookie", &sealed)]);
    f.respond(&mut stream, Some(B), &[]);
    assert_eq!(f.only_record(), format!("profile=prefix type=app_cookie outcome=repicked server={B}"));
    assert!(f.set_cookie().unwrap().ends_with(".AB12.node1"));
    // A seal from elsewhere is rejected, counted, and stripped all the same.
    let foreign = format!(
        "JSESSIONID={}.V",
        token::seal(&Keyring::new(&[(1, [2; 32])], 1).unwrap(), Purpose::AppCookiePrefix, "JSESSIONID", &claims(A), [1; 12]).unwrap()
    );
    let record = f.exchange("prefix", &[("cookie", &foreign)], Some(B), &[]);
    assert_eq!(record, format!("profile=prefix type=app_cookie outcome=rejected:forged server={B}"));
    assert_eq!(f.host.request_header("cookie").as_deref(), Some("JSESSIONID=V"));
    assert_eq!(f.stat("prefix.rejected.forged"), 1);
}

#[test]
fn http_header_pins_assigned_values_and_records_the_rest() {
    let mut f = Fixture::new(config());
    let mut stream = f.request("tenant", &[("x-tenant", "acme")]);
    assert_eq!(f.pinned().as_deref(), Some(A));
    f.respond(&mut stream, Some(A), &[]);
    assert_eq!(f.only_record(), format!("profile=tenant type=http_header outcome=pinned server={A}"));
    let record = f.exchange("tenant", &[("x-tenant", "acme")], Some(B), &[]);
    assert_eq!(record, format!("profile=tenant type=http_header outcome=repicked server={B}"));
    f.request("tenant", &[]);
    assert_eq!(f.only_record(), "profile=tenant type=http_header decision=balance reason=header_missing");
    f.request("tenant", &[("x-tenant", "other")]);
    assert_eq!(f.only_record(), "profile=tenant type=http_header decision=balance reason=header_unmatched");
    assert_eq!((f.stat("tenant.header_missing"), f.stat("tenant.header_unmatched")), (1, 1));
    assert!(!f.host.stat_defined("persistence.tenant.new"), "a header profile never makes a new pin");
}

#[test]
fn tls_persists_on_the_session_or_certificate_and_falls_back_as_configured() {
    let mut f = Fixture::new(config());
    let session = |f: &mut Fixture, route: &str, key: (&str, &str), upstream| {
        f.host.request(CLIENT, &[]);
        f.host.attribute("route_name", route);
        f.host.attribute(key.0, key.1);
        let mut stream = Stream::new(Some(f.plugin.clone()));
        stream.on_request_headers(&mut f.host);
        let pinned = f.pinned();
        f.respond(&mut stream, upstream, &[]);
        (pinned, f.only_record())
    };
    assert_eq!(session(&mut f, "tls", ("filter_state.tls.sid", "ab12"), Some(A)).1, format!("profile=tls type=tls outcome=new server={A}"));
    assert_eq!(session(&mut f, "tls", ("filter_state.tls.sid", "ab12"), Some(A)).0.as_deref(), Some(A));
    assert_eq!(session(&mut f, "mesh", ("peer_certificate", "d1g357"), Some(B)).1, format!("profile=mesh type=tls outcome=new server={B}"));
    assert_eq!(session(&mut f, "mesh", ("peer_certificate", "d1g357"), Some(B)).0.as_deref(), Some(B));
    // No session id ("-" when Envoy has none): load balanced, or keyed by address.
    f.host.request(CLIENT, &[]);
    f.host.attribute("route_name", "tls");
    f.host.attribute("filter_state.tls.sid", "-");
    Stream::new(Some(f.plugin.clone())).on_request_headers(&mut f.host);
    assert_eq!(f.only_record(), "profile=tls type=tls decision=balance reason=no_key");
    assert_eq!(f.stat("tls.no_key"), 1);
    let record = f.exchange("tls-ip", &[], Some(A), &[]);
    assert_eq!(record, format!("profile=tls-ip type=tls outcome=new server={A}"));
    f.request("tls-ip", &[]);
    assert_eq!(f.pinned().as_deref(), Some(A), "the client's address keys the fallback");
    assert_eq!(f.stat("tls-ip.fallback_client_ip"), 2);
}

#[test]
fn a_spoofed_override_header_is_removed_on_every_profile_type() {
    let mut f = Fixture::new(config());
    let routes = ["web", "ip", "ip-off", "app", "prefix", "tenant", "tls", "tls-ip", "mesh", "api", "mcp", "mcp-prefix", ""];
    for route in routes {
        f.request(route, &[("x-persistence-upstream", "MTAuMC4wLjk6ODA="), ("x-decision", "forged"), ("x-tenant", "acme")]);
        assert_ne!(f.host.request_header("x-persistence-upstream").as_deref(), Some("MTAuMC4wLjk6ODA="), "{route}");
        assert_ne!(f.host.request_header("x-decision").as_deref(), Some("forged"), "{route}");
    }
    assert_eq!(f.stat("override_header_removed"), routes.len() as i64);
}

#[test]
fn without_a_configuration_only_the_override_header_is_removed() {
    let mut host = FakeHost::default();
    host.request(CLIENT, &[("x-persistence-upstream", "x")]);
    let mut stream = Stream::new(None);
    stream.on_request_headers(&mut host);
    stream.on_response_headers(&mut host);
    assert_eq!(host.calls.borrow().as_slice(), ["remove_request_header:x-persistence-upstream"]);
}

#[test]
fn profiles_are_selected_by_route_metadata_then_route_name_then_default() {
    let mut config = config();
    config["default_profile"] = json!("tenant");
    let mut f = Fixture::new(config);
    f.host.request(CLIENT, &[("x-tenant", "acme")]);
    f.host.attribute("route_profile", "ip");
    f.host.attribute("route_name", "web");
    Stream::new(Some(f.plugin.clone())).on_request_headers(&mut f.host);
    assert_eq!(f.host.called("attribute:route_name"), 0, "metadata wins");
    f.request("web", &[]);
    assert!(f.host.request_header("x-decision").unwrap().starts_with("profile=web "));
    f.request("no-such-route", &[("x-tenant", "acme")]);
    assert_eq!(f.pinned().as_deref(), Some(A), "the default profile");
    f.host.request(CLIENT, &[]);
    f.host.attribute("route_profile", "nope");
    Stream::new(Some(f.plugin.clone())).on_request_headers(&mut f.host);
    assert!(f.host.records.is_empty());
    assert_eq!(f.stat("unknown_profile"), 1);
}

#[test]
fn host_errors_mean_no_persistence_counted_and_recorded() {
    let mut f = Fixture::new(config());
    f.host.failing = vec!["pin"];
    f.request("tenant", &[("x-tenant", "acme")]);
    assert_eq!(f.only_record(), "profile=tenant type=http_header decision=balance reason=host_error");
    f.host.failing = vec!["request_headers"];
    f.request("tenant", &[("x-persistence-upstream", "x")]);
    assert!(f.host.records.is_empty(), "nothing selected yet");
    assert_eq!(f.host.called("remove_request_header:x-persistence-upstream"), 1, "the override header is removed all the same");
    f.host.failing = vec!["attribute:source.address"];
    f.request("ip", &[]);
    assert_eq!(f.only_record(), "profile=ip type=client_ip decision=balance reason=no_client_address");
    assert_eq!(f.stat("host_errors"), 2);
    // No randomness: nothing sealed, counted.
    f.host.failing.clear();
    f.host.random.set(false);
    let record = f.exchange("web", &[], Some(A), &[]);
    assert_eq!(record, format!("profile=web type=http_cookie outcome=new server={A}"));
    assert_eq!(f.set_cookie(), None);
    assert_eq!(f.stat("host_errors"), 3);
}

/// One profile of each type (and each app cookie mode and TLS key), all with `server_down`.
fn one_of_each(server_down: &str) -> Value {
    let mut config = config();
    for profile in config["profiles"].as_array_mut().unwrap() {
        profile["server_down"] = json!(server_down);
    }
    config
}

/// Where a type's session travels: the request header the client sends it in, and the response
/// header it comes back in.
fn carrier(route: &str) -> (&'static str, &'static str) {
    match route {
        "api" => ("x-session-token", "x-session-token"),
        "mcp" | "mcp-prefix" => ("mcp-session-id", "mcp-session-id"),
        _ => ("cookie", "set-cookie"),
    }
}

/// A request of `route` as a returning client of that type sends it (`memory`: the cookie or
/// header value the filter or the backend gave it earlier), and its response from `upstream`;
/// remembers what the response gave. Returns the record.
fn visit(f: &mut Fixture, route: &str, memory: &mut Option<String>, upstream: Option<&str>) -> String {
    let (request_header, response_header) = carrier(route);
    let mut headers: Vec<(&str, String)> = Vec::new();
    if let Some(value) = memory.as_ref() {
        headers.push((request_header, value.clone()));
    }
    if route == "tenant" {
        headers.push(("x-tenant", "acme".into()));
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    f.host.request(CLIENT, &headers);
    f.host.attribute("route_name", route);
    f.host.attribute("filter_state.tls.sid", "5e55");
    f.host.attribute("peer_certificate", "d1g357");
    let mut stream = Stream::new(Some(f.plugin.clone()));
    stream.on_request_headers(&mut f.host);
    // The application's own session, on the first visit.
    let issued: &[(&str, &str)] = match (route, memory.is_some()) {
        ("app", false) => &[("set-cookie", "JSESSIONID=S1; Path=/")],
        ("prefix", false) => &[("set-cookie", "JSESSIONID=AB.node1; Path=/")],
        ("mcp" | "mcp-prefix", false) => &[("mcp-session-id", "S1")],
        _ => &[],
    };
    f.respond(&mut stream, upstream, issued);
    if let Some(value) = f.host.response_header_values(response_header).first() {
        *memory = Some(if response_header == "set-cookie" { value.split(';').next().unwrap().to_string() } else { value.clone() });
    }
    f.only_record()
}

#[test]
fn every_type_reports_every_outcome_once() {
    let routes = ["web", "ip", "app", "prefix", "tenant", "tls", "mesh", "api", "mcp", "mcp-prefix"];
    for (server_down, moved) in [("immediate", "repicked"), ("never", "kept")] {
        let mut f = Fixture::new(one_of_each(server_down));
        for route in routes {
            let mut memory = None;
            let outcome = |record: String| record.split(" outcome=").nth(1).unwrap_or_default().to_string();
            let first = if route == "tenant" { "pinned" } else { "new" };
            assert_eq!(outcome(visit(&mut f, route, &mut memory, Some(A))), format!("{first} server={A}"), "{route}");
            assert_eq!(outcome(visit(&mut f, route, &mut memory, Some(A))), format!("pinned server={A}"), "{route}");
            assert_eq!(outcome(visit(&mut f, route, &mut memory, None)), "no_upstream server=-", "{route}");
            assert_eq!(outcome(visit(&mut f, route, &mut memory, Some(B))), format!("{moved} server={B}"), "{route} {server_down}");
            // Persistence moved with the client, except a header's value, which is assigned to A.
            let expected_after = if server_down == "immediate" && route != "tenant" { B } else { A };
            assert_eq!(outcome(visit(&mut f, route, &mut memory, Some(expected_after))), format!("pinned server={expected_after}"), "{route} {server_down}");
            assert_eq!(f.stat(&format!("{route}.{moved}")), 1, "{route}");
            assert_eq!(f.stat(&format!("{route}.no_upstream")), 1, "{route}");
        }
    }
}

#[test]
fn a_session_header_carries_the_token_the_backend_never_sees() {
    let mut f = Fixture::new(config());
    let record = f.exchange("api", &[], Some(A), &[("x-session-token", "from-the-backend")]);
    assert_eq!(record, format!("profile=api type=session_header outcome=new server={A}"));
    let token = f.host.response_header("x-session-token").unwrap();
    assert_eq!(f.host.response_header_values("x-session-token").len(), 1, "the filter's token replaces a backend's value");
    assert_ne!(token, "from-the-backend");
    let mut stream = f.request("api", &[("x-session-token", &token)]);
    assert_eq!(f.pinned().as_deref(), Some(A));
    assert_eq!(f.host.request_header("x-session-token"), None, "the backend never sees the token");
    f.respond(&mut stream, Some(A), &[]);
    assert_eq!(f.host.response_header("x-session-token"), None, "nothing to say while the session holds");
    // A cookie's token is not a session header's: bound to its use and name.
    let cookie_token = sealed(1, 1, claims(A));
    let value = cookie_token.trim_start_matches("AVI_COOKIE=");
    f.exchange("api", &[("x-session-token", value)], Some(B), &[]);
    assert_eq!(f.stat("api.rejected.forged"), 1);
}

#[test]
fn app_header_table_learns_once_follows_the_session_and_forgets_it_on_delete() {
    let mut f = Fixture::new(config());
    f.exchange("mcp", &[(":method", "POST")], Some(A), &[("mcp-session-id", "S1")]);
    // The server repeats the id on every response: no news, no write.
    for _ in 0..3 {
        let record = f.exchange("mcp", &[(":method", "POST"), ("mcp-session-id", "S1")], Some(A), &[("mcp-session-id", "S1")]);
        assert_eq!(record, format!("profile=mcp type=app_header outcome=pinned server={A}"));
        assert_eq!(f.host.response_header("mcp-session-id").as_deref(), Some("S1"), "table mode leaves the header alone");
    }
    assert_eq!((f.stat("mcp.learned"), f.stat("mcp.entries")), (1, 1));
    // A DELETE the backend refused keeps the session; one it accepted ends it.
    f.exchange("mcp", &[(":method", "DELETE"), ("mcp-session-id", "S1")], Some(A), &[(":status", "409")]);
    assert_eq!(f.stat("mcp.entries"), 1);
    f.exchange("mcp", &[(":method", "DELETE"), ("mcp-session-id", "S1")], Some(A), &[(":status", "200"), ("mcp-session-id", "S1")]);
    assert_eq!(f.stat("mcp.entries"), 0);
    f.request("mcp", &[(":method", "POST"), ("mcp-session-id", "S1")]);
    assert_eq!(f.pinned(), None, "a forgotten session is load balanced");
}

#[test]
fn app_header_prefix_seals_the_value_once_and_the_backend_sees_its_own() {
    let mut f = Fixture::new(config());
    f.exchange("mcp-prefix", &[], Some(A), &[("mcp-session-id", "S1")]);
    let sealed = f.host.response_header("mcp-session-id").unwrap();
    assert!(sealed.ends_with(".S1") && sealed.len() > 40, "{sealed}");
    for _ in 0..3 {
        let mut stream = f.request("mcp-prefix", &[("mcp-session-id", &sealed)]);
        assert_eq!(f.pinned().as_deref(), Some(A));
        assert_eq!(f.host.request_header("mcp-session-id").as_deref(), Some("S1"), "the backend sees exactly its own value");
        f.respond(&mut stream, Some(A), &[("mcp-session-id", "S1")]);
        assert_eq!(f.host.response_header("mcp-session-id").as_deref(), Some(sealed.as_str()), "the client's seal again, not a new one");
        assert_eq!(f.host.called("now"), 0, "echoing the seal reads no clock and seals nothing");
    }
    assert_eq!(f.stat("mcp-prefix.learned"), 1);
    // A value the filter did not seal passes as it is.
    f.exchange("mcp-prefix", &[("mcp-session-id", "plain")], Some(B), &[]);
    assert_eq!(f.host.request_header("mcp-session-id").as_deref(), Some("plain"));
}

/// `cluster_header` on, with a cookie profile (tokens) and a client IP profile (a table).
fn canary_config() -> Value {
    json!({
        "keys": [{"id": 1, "secret": SECRET}],
        "cluster_header": "x-cluster",
        "host_stats": true,
        "routes": {"web": "web", "ip": "ip", "never": "never"},
        "profiles": [
            {"name": "web", "type": "http_cookie"},
            {"name": "never", "type": "http_cookie", "server_down": "never"},
            {"name": "ip", "type": "client_ip"}
        ]
    })
}

fn in_cluster(server: &str, cluster: &str) -> Claims {
    Claims { server: Server { endpoint: server.parse().unwrap(), cluster: ClusterName::new(cluster.as_bytes()) }, issued_at: NOW, expires_at: None }
}

#[test]
fn clusters_are_recorded_named_on_return_and_never_taken_from_clients() {
    let mut f = Fixture::new(canary_config());
    // First visit: a client-supplied cluster header is removed and counted; the routed cluster is sealed.
    let mut stream = f.request("web", &[("x-cluster", "app-v2")]);
    assert_eq!(f.host.request_header("x-cluster"), None);
    assert_eq!(f.stat("cluster_header_removed"), 1);
    f.host.attribute("cluster_name", "app-v1");
    f.respond(&mut stream, Some(A), &[]);
    assert_eq!(f.only_record(), format!("profile=web type=http_cookie outcome=new server={A} cluster=app-v1"));
    let cookie = f.set_cookie().unwrap();

    // Returning: pinned to A and its cluster named for the routes.
    let mut stream = f.request("web", &[("cookie", &cookie), ("x-cluster", "app-v2")]);
    assert_eq!(f.pinned().as_deref(), Some(A));
    assert_eq!(f.host.request_header("x-cluster").as_deref(), Some("app-v1"), "the recorded cluster, not the client's");
    assert_eq!(f.stat("cluster_header_removed"), 2);
    f.host.attribute("cluster_name", "app-v1");
    f.respond(&mut stream, Some(A), &[]);
    assert_eq!(f.only_record(), format!("profile=web type=http_cookie outcome=pinned server={A} cluster=app-v1"));
    assert_eq!(f.set_cookie(), None);
    assert_eq!(f.stat("host.10_0_0_1_8080.pinned"), 1);
}

#[test]
fn a_cluster_the_route_no_longer_reaches_moves_its_clients_whatever_server_down_says() {
    let mut f = Fixture::new(canary_config());
    for route in ["web", "never"] {
        let cookie = sealed(1, 1, in_cluster(A, "app-v2"));
        let mut stream = f.request(route, &[("cookie", &cookie)]);
        assert_eq!(f.host.request_header("x-cluster").as_deref(), Some("app-v2"));
        // No route matches app-v2 any more: the weights chose app-v1 and its host B.
        f.host.attribute("cluster_name", "app-v1");
        f.respond(&mut stream, Some(B), &[]);
        assert_eq!(f.only_record(), format!("profile={route} type=http_cookie outcome=repicked server={B} cluster=app-v1"));
        assert_eq!(f.stat(&format!("{route}.cluster_moved")), 1);
        let moved = f.set_cookie().expect("a cookie for the new cluster");
        let opened = f.plugin.state.tokens.open(Purpose::HttpCookie, "AVI_COOKIE", moved.trim_start_matches("AVI_COOKIE=").as_bytes()).unwrap();
        assert_eq!(opened.claims.server.cluster.map(|c| c.as_str().to_string()).as_deref(), Some("app-v1"));
    }
}

#[test]
fn the_same_host_through_another_cluster_keeps_the_client_and_records_the_cluster() {
    let mut f = Fixture::new(canary_config());
    // A session from before cluster_header was set: no cluster recorded.
    let cookie = sealed(1, 1, claims(A));
    let mut stream = f.request("web", &[("cookie", &cookie)]);
    assert_eq!(f.host.request_header("x-cluster"), None, "no cluster to name");
    f.host.attribute("cluster_name", "app");
    f.respond(&mut stream, Some(A), &[]);
    assert_eq!(f.only_record(), format!("profile=web type=http_cookie outcome=pinned server={A} cluster=app"));
    assert!(f.set_cookie().is_some(), "re-sealed with its cluster");
    assert_eq!(f.stat("web.cluster_moved"), 0);
}

#[test]
fn table_entries_record_their_cluster_and_an_unreadable_cluster_keeps_the_old_one() {
    let mut f = Fixture::new(canary_config());
    let mut stream = f.request("ip", &[]);
    f.host.attribute("cluster_name", "app-v2");
    f.respond(&mut stream, Some(B), &[]);
    assert_eq!(f.only_record(), format!("profile=ip type=client_ip outcome=new server={B} cluster=app-v2"));

    let mut stream = f.request("ip", &[]);
    assert_eq!(f.pinned().as_deref(), Some(B));
    assert_eq!(f.host.request_header("x-cluster").as_deref(), Some("app-v2"));
    // Envoy gives no cluster name (or one that cannot be a header value): counted, the entry keeps app-v2.
    f.host.attribute("cluster_name", "bad name");
    f.respond(&mut stream, Some(B), &[]);
    assert_eq!(f.only_record(), format!("profile=ip type=client_ip outcome=pinned server={B} cluster=app-v2"));
    assert_eq!(f.stat("cluster_unrecorded"), 1);
    let _ = f.request("ip", &[]);
    assert_eq!(f.host.request_header("x-cluster").as_deref(), Some("app-v2"));
}

#[test]
fn without_cluster_header_nothing_about_clusters_is_read_or_written() {
    let mut f = Fixture::new(config());
    let cookie = sealed(1, 1, in_cluster(A, "app-v2"));
    let mut stream = f.request("web", &[("cookie", &cookie), ("x-cluster", "app-v1")]);
    assert_eq!(f.host.request_header("x-cluster").as_deref(), Some("app-v1"), "not ours: left alone");
    f.respond(&mut stream, Some(A), &[]);
    assert!(!f.host.calls.borrow().iter().any(|c| c.contains("cluster_name")));
}
