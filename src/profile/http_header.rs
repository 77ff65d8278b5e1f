//! Custom HTTP header persistence (Avi "HTTP Custom Header"): the value of a request header is
//! matched against values statically assigned to each server; on a match the request goes to that
//! server. Nothing is learned or stored.

use crate::config_reader::{Errors, Field};
use crate::context::Context;
use crate::endpoint::{self, Endpoint};
use crate::header_pairs::Headers;
use crate::host::{HostError, HttpStream};
use crate::metrics::ProfileCounter;
use crate::outcome::{self, ServerDown};
use crate::server::Server;
use crate::persistence::{Describe, Persistence, Requested, Responded};
use crate::state::State;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Lowercase header name.
    pub name: String,
    /// Header value -> the server it is assigned to, sorted by value.
    pub servers: Vec<(Vec<u8>, Endpoint)>,
}

impl Settings {
    pub fn parse(section: Option<Field>, errors: &mut Errors, section_path: &str) -> Option<Settings> {
        let Some(mut object) = section.and_then(|field| field.object(errors)) else {
            errors.add(section_path, "is required: {\"name\": \"<header>\", \"servers\": [{\"address\": \"ip:port\", \"values\": [...]}]}");
            return None;
        };
        let name = object
            .required("name", "is required (the request header to match)", errors)
            .and_then(|f| f.string_where(crate::cookie::is_token, "must be an HTTP header name", errors))
            .map(str::to_ascii_lowercase);
        // Sorted by value, each with where it was assigned (to name both places of a duplicate).
        let mut assigned: Vec<(String, String, Endpoint)> = Vec::new();
        match object.field("servers").and_then(|f| f.array(errors)) {
            Some(items) if !items.is_empty() => {
                for item in items {
                    let Some(mut server) = item.object(errors) else { continue };
                    let address = match server.field("address") {
                        Some(field) => field.string(errors).and_then(|text| {
                            let parsed = endpoint::parse(text);
                            if parsed.is_none() {
                                errors.add(
                                    &field.path,
                                    format!("must be ip:port (IPv6 in brackets, e.g. [2001:db8::1]:8080), got {}", crate::config_reader::quoted(text)),
                                );
                            }
                            parsed
                        }),
                        None => {
                            errors.add(&server.child_path("address"), "is required (ip:port of the server, as in the cluster)");
                            None
                        }
                    };
                    let values = match server.field("values") {
                        Some(field) => field.array(errors).unwrap_or_default(),
                        None => {
                            errors.add(&server.child_path("values"), "is required (the header values that select this server)");
                            Vec::new()
                        }
                    };
                    for value_field in values {
                        let Some(value) = value_field.string(errors) else { continue };
                        if value.is_empty() {
                            errors.add(&value_field.path, "must not be empty");
                            continue;
                        }
                        let Some(address) = address else { continue };
                        match assigned.binary_search_by(|(v, _, _)| v.as_str().cmp(value)) {
                            Ok(first) => {
                                if let Some((_, path, address)) = assigned.get(first) {
                                    errors.add(
                                        &value_field.path,
                                        format!(
                                            "{} is already assigned to {address} at {path}: a value selects one server",
                                            crate::config_reader::quoted(value)
                                        ),
                                    );
                                }
                            }
                            Err(at) => assigned.insert(at, (value.to_string(), value_field.path.clone(), address)),
                        }
                    }
                    server.finish(errors, |_| None);
                }
            }
            Some(_) => errors.add(&object.child_path("servers"), "must list at least one server"),
            None => errors.add(&object.child_path("servers"), "is required: [{\"address\": \"ip:port\", \"values\": [...]}]"),
        }
        object.finish(errors, |_| None);
        let servers = assigned.into_iter().map(|(value, _, address)| (value.into_bytes(), address)).collect();
        Some(Settings { name: name?, servers })
    }

    /// The server assigned to a header value (exact, case-sensitive match).
    pub fn server_for(&self, value: &[u8]) -> Option<Endpoint> {
        let found = self.servers.binary_search_by(|(v, _)| v.as_slice().cmp(value)).ok()?;
        self.servers.get(found).map(|(_, endpoint)| *endpoint)
    }
}

impl Describe for Settings {
    fn summary(&self) -> String {
        format!("header {}, {} value(s)", self.name, self.servers.len())
    }

    /// Requests are pinned or not; none is ever "new".
    fn counters(&self) -> Vec<ProfileCounter> {
        use ProfileCounter::*;
        vec![Pinned, Repicked, Kept, NoUpstream, HeaderMissing, HeaderUnmatched]
    }
}

impl Persistence for Settings {
    const TYPE: &'static str = "http_header";
    /// The server the header's value is assigned to.
    type Pending = Server;
    type Writes = ();

    fn parse_section(section: Option<Field>, errors: &mut Errors, path: &str) -> Option<Settings> {
        Settings::parse(section, errors, path)
    }

    fn on_request<H: HttpStream>(&self, cx: &mut Context<'_, H>, headers: &Headers) -> Result<Requested<Server>, HostError> {
        let Some(value) = headers.first(&self.name) else {
            cx.count(ProfileCounter::HeaderMissing);
            return Ok(Requested::Skip { reason: "header_missing" });
        };
        let Some(assigned) = self.server_for(value) else {
            cx.count(ProfileCounter::HeaderUnmatched);
            return Ok(Requested::Skip { reason: "header_unmatched" });
        };
        Ok(Requested::Pin { server: Server::host(assigned), pending: Server::host(assigned) })
    }

    fn on_response(&self, assigned: Server, upstream: Option<Server>, server_down: ServerDown, _: &State) -> Responded<()> {
        Responded { outcome: outcome::outcome(Some(assigned), upstream, server_down), rejected: None, writes: () }
    }

    fn write<H: HttpStream>(&self, _: &mut Context<'_, H>, _: ()) -> Result<(), HostError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_reader::parse_section;
    use serde_json::json;

    fn parse(section: serde_json::Value) -> Result<Settings, Vec<String>> {
        parse_section("http_header", &section, |field, errors| Settings::parse(field, errors, "http_header"))
    }

    #[test]
    fn maps_values_to_servers() {
        let settings = parse(json!({"name": "X-Tenant", "servers": [
            {"address": "10.0.0.7:8080", "values": ["acme", "globex"]},
            {"address": "[2001:db8::1]:80", "values": ["initech"]}]}))
        .unwrap();
        assert_eq!(settings.name, "x-tenant");
        assert_eq!(settings.server_for(b"acme"), endpoint::parse("10.0.0.7:8080"));
        assert_eq!(settings.server_for(b"globex"), endpoint::parse("10.0.0.7:8080"));
        assert_eq!(settings.server_for(b"initech"), endpoint::parse("[2001:db8::1]:80"));
        assert_eq!(settings.server_for(b"ACME"), None, "exact match");
        assert_eq!(settings.server_for(b"acme "), None);
    }

    #[test]
    fn rejects_bad_settings_naming_both_places_of_a_duplicate() {
        let cases = [
            (
                json!({"name": "x", "servers": [{"address": "10.0.0.1:80", "values": ["a"]}, {"address": "10.0.0.2:80", "values": ["b", "a"]}]}),
                "http_header.servers[1].values[1]: \"a\" is already assigned to 10.0.0.1:80 at http_header.servers[0].values[0]: a value selects one server",
            ),
            (
                json!({"name": "x", "servers": [{"address": "10.0.0.1", "values": ["a"]}]}),
                "http_header.servers[0].address: must be ip:port (IPv6 in brackets, e.g. [2001:db8::1]:8080), got \"10.0.0.1\"",
            ),
            (
                json!({"name": "x", "servers": [{"address": "::1:80", "values": ["a"]}]}),
                "http_header.servers[0].address: must be ip:port (IPv6 in brackets, e.g. [2001:db8::1]:8080), got \"::1:80\"",
            ),
            (json!({"name": "x", "servers": []}), "http_header.servers: must list at least one server"),
            (json!({"name": "x"}), "http_header.servers: is required: [{\"address\": \"ip:port\", \"values\": [...]}]"),
            (json!({"name": "a b", "servers": [{"address": "10.0.0.1:80", "values": ["a"]}]}), "http_header.name: must be an HTTP header name, got \"a b\""),
            (json!({"name": "x", "servers": [{"address": "10.0.0.1:80", "values": [""]}]}), "http_header.servers[0].values[0]: must not be empty"),
            (
                json!({"name": "x", "servers": [{"address": "10.0.0.1:80"}]}),
                "http_header.servers[0].values: is required (the header values that select this server)",
            ),
            (
                json!({"name": "x", "servers": [{"address": "10.0.0.1:80", "values": ["a"], "weight": 1}]}),
                "http_header.servers[0].weight: unknown field (known fields here: address, values)",
            ),
        ];
        for (section, expected) in cases {
            assert_eq!(parse(section.clone()), Err(vec![expected.to_string()]), "{section}");
        }
    }
}
