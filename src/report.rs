//! The per-request record an access log can print: `%FILTER_STATE(wasm.persistence:PLAIN)%`.
//! Space-separated `key=value` pairs, easy to grep and to parse:
//!
//! - request time (the decision): `profile=web type=http_cookie decision=pin server=10.0.0.7:8080`,
//!   `decision=balance`, `decision=balance rejected=forged`, `decision=balance reason=header_missing`
//! - response time (what happened): `profile=web type=http_cookie outcome=pinned server=10.0.0.7:8080`,
//!   `outcome=rejected:forged server=...`, `outcome=no_upstream server=-`

use crate::outcome::Outcome;
use crate::server::Server;
use crate::text::push_endpoint;

/// The request-time record. `pin`: the server the request is sent to; `why`: why it is not pinned.
pub fn decision(profile: &str, type_name: &str, pin: Option<Server>, why: Option<(&str, &str)>) -> String {
    let mut out = start(profile, type_name);
    match pin {
        Some(server) => {
            out.push_str("decision=pin server=");
            push_server(&mut out, &server);
        }
        None => out.push_str("decision=balance"),
    }
    if let Some((key, value)) = why {
        for part in [" ", key, "=", value] {
            out.push_str(part);
        }
    }
    out
}

/// The response-time record; a rejected token shows as `rejected:<reason>` (a new pin was made).
pub fn outcome(profile: &str, type_name: &str, outcome: Outcome, rejected: Option<&str>, server: Option<Server>) -> String {
    let mut out = start(profile, type_name);
    out.push_str("outcome=");
    match (rejected, outcome) {
        (Some(reason), Outcome::New) => {
            out.push_str("rejected:");
            out.push_str(reason);
        }
        _ => out.push_str(outcome.name()),
    }
    out.push_str(" server=");
    match server {
        Some(server) => push_server(&mut out, &server),
        None => out.push('-'),
    }
    out
}

/// `ip:port`, and ` cluster=<name>` when the cluster is recorded.
fn push_server(out: &mut String, server: &Server) {
    push_endpoint(out, &server.endpoint);
    if let Some(cluster) = &server.cluster {
        out.push_str(" cluster=");
        out.push_str(cluster.as_str());
    }
}

/// `profile=<profile> type=<type> ` (built by hand: this runs on every request).
fn start(profile: &str, type_name: &str) -> String {
    let mut out = String::with_capacity(96);
    for part in ["profile=", profile, " type=", type_name, " "] {
        out.push_str(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_records() {
        let server = crate::endpoint::parse("10.0.0.7:8080").map(Server::host);
        assert_eq!(decision("web", "http_cookie", server, None), "profile=web type=http_cookie decision=pin server=10.0.0.7:8080");
        assert_eq!(decision("web", "http_cookie", None, Some(("rejected", "forged"))), "profile=web type=http_cookie decision=balance rejected=forged");
        assert_eq!(outcome("web", "http_cookie", Outcome::Pinned, None, server), "profile=web type=http_cookie outcome=pinned server=10.0.0.7:8080");
        assert_eq!(
            outcome("web", "http_cookie", Outcome::New, Some("expired"), server),
            "profile=web type=http_cookie outcome=rejected:expired server=10.0.0.7:8080"
        );
        assert_eq!(outcome("ip", "client_ip", Outcome::NoUpstream, None, None), "profile=ip type=client_ip outcome=no_upstream server=-");
    }
}
