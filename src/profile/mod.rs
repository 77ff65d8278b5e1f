//! Persistence profiles: a name, a type with its own settings, and what to do when the persisted
//! server is down. One module per type decides what to read from a request and what to record.

pub mod app_cookie;
pub mod client_ip;
pub mod http_cookie;
pub mod http_header;
pub mod table_backed;
pub mod tls;

use crate::config::reader::{Errors, Field, Object};
use crate::endpoint::Endpoint;

/// Avi's "Select New Server When Persistent Server Down".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerDown {
    /// Pick a new server and move the persistence to it.
    Immediate,
    /// Keep the persistence as it is until it expires (the cluster must then keep routing to the
    /// unhealthy host: see README, "server_down").
    Never,
}

impl ServerDown {
    pub fn name(self) -> &'static str {
        match self {
            ServerDown::Immediate => "immediate",
            ServerDown::Never => "never",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    HttpCookie(http_cookie::Settings),
    ClientIp(client_ip::Settings),
    AppCookie(app_cookie::Settings),
    HttpHeader(http_header::Settings),
    Tls(tls::Settings),
}

impl Kind {
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::HttpCookie(_) => "http_cookie",
            Kind::ClientIp(_) => "client_ip",
            Kind::AppCookie(_) => "app_cookie",
            Kind::HttpHeader(_) => "http_header",
            Kind::Tls(_) => "tls",
        }
    }

    /// The client grouping and timeout the connection counter must track for this profile.
    pub fn tracking(&self) -> Option<client_ip::Tracking> {
        let (granularity, timeout) = match self {
            Kind::ClientIp(settings) => (settings.granularity(), settings.timeout),
            Kind::Tls(settings) if settings.fallback == tls::Fallback::ClientIp => (client_ip::Settings::default().granularity(), settings.timeout),
            _ => return None,
        };
        Some(client_ip::Tracking { granularities: vec![granularity], max_timeout: timeout })
    }

    /// Whether this type keeps its pins in the shared table (and has table counters and gauges).
    pub fn uses_table(&self) -> bool {
        match self {
            Kind::ClientIp(_) | Kind::Tls(_) => true,
            Kind::AppCookie(settings) => settings.mode == app_cookie::Mode::Table,
            Kind::HttpCookie(_) | Kind::HttpHeader(_) => false,
        }
    }

    /// Whether this type reads sealed tokens (and has rejection counters).
    pub fn uses_tokens(&self) -> bool {
        match self {
            Kind::HttpCookie(_) => true,
            Kind::AppCookie(settings) => settings.mode == app_cookie::Mode::Prefix,
            Kind::ClientIp(_) | Kind::HttpHeader(_) | Kind::Tls(_) => false,
        }
    }
}

/// The `type` values; each reads its settings from the section of the same name.
const TYPES: &[&str] = &["http_cookie", "client_ip", "app_cookie", "http_header", "tls"];

/// How a request on a profile ended, for counters and the access log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The persisted server answered.
    Pinned,
    /// Nothing persisted (or not usable): the load balancer chose, and that choice is persisted.
    New,
    /// The persisted server was not available; another was chosen and persistence moved to it.
    Repicked,
    /// The persisted server was not available and `server_down: never` keeps the persistence.
    Kept,
    /// Envoy answered without an upstream (no healthy host, local reply): nothing to persist.
    NoUpstream,
}

/// The outcome of a request that was pinned to `pin` (or not) and served by `upstream`.
pub fn outcome(pin: Option<Endpoint>, upstream: Option<Endpoint>, server_down: ServerDown) -> Outcome {
    match (pin, upstream) {
        (_, None) => Outcome::NoUpstream,
        (None, Some(_)) => Outcome::New,
        (Some(pin), Some(upstream)) if pin == upstream => Outcome::Pinned,
        (Some(_), Some(_)) if server_down == ServerDown::Immediate => Outcome::Repicked,
        (Some(_), Some(_)) => Outcome::Kept,
    }
}

/// Limits of a table-backed profile's `timeout_minutes`.
pub struct TableTimeout {
    pub default_minutes: u64,
    pub min_minutes: u64,
    pub max_minutes: u64,
}

/// Reads `timeout_minutes` or `timeout_seconds` (the latter for tests and demos that cannot wait
/// minutes); returns seconds.
pub fn parse_table_timeout(object: &mut Object, errors: &mut Errors, limits: TableTimeout) -> u32 {
    let minutes = object.field("timeout_minutes").and_then(|f| f.integer(limits.min_minutes, limits.max_minutes, errors));
    let seconds_field = object.field("timeout_seconds");
    let seconds = match (&seconds_field, minutes) {
        (Some(field), Some(_)) => {
            errors.add(&field.path, "give timeout_minutes or timeout_seconds, not both");
            None
        }
        (Some(field), None) => field.integer(limits.min_minutes.min(1), limits.max_minutes * 60, errors),
        (None, minutes) => Some(minutes.unwrap_or(limits.default_minutes) * 60),
    };
    seconds.unwrap_or(limits.default_minutes * 60) as u32
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub description: Option<String>,
    pub server_down: ServerDown,
    pub kind: Kind,
    /// One of Avi's system profiles, present whether or not the configuration uses it.
    pub builtin: bool,
}

/// Avi's system profiles, usable by name and redefinable by a profile of the same name.
pub fn builtins() -> Vec<Profile> {
    vec![
        Profile {
            name: "System-Persistence-Http-Cookie".into(),
            description: Some("built-in: AVI_COOKIE session cookie".into()),
            server_down: ServerDown::Immediate,
            kind: Kind::HttpCookie(http_cookie::Settings::default()),
            builtin: true,
        },
        Profile {
            name: "System-Persistence-Client-IP".into(),
            description: Some("built-in: client address, 5 minutes".into()),
            server_down: ServerDown::Immediate,
            kind: Kind::ClientIp(client_ip::Settings::default()),
            builtin: true,
        },
        Profile {
            name: "System-Persistence-TLS".into(),
            description: Some("built-in: TLS session id, 5 minutes".into()),
            server_down: ServerDown::Immediate,
            kind: Kind::Tls(tls::Settings::default()),
            builtin: true,
        },
    ]
}

/// Profile names appear in stat names, so they are limited to characters that are safe there.
fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Reads one entry of `profiles`.
pub fn parse(field: Field, errors: &mut Errors) -> Option<Profile> {
    let mut object = field.object(errors)?;
    let name = object
        .required("name", "is required", errors)
        .and_then(|f| f.string_where(is_valid_name, "must be 1 to 64 letters, digits, '-' or '_'", errors))
        .map(str::to_string);
    let description = object.field("description").and_then(|f| f.string(errors)).map(str::to_string);
    let server_down = object
        .field("server_down")
        .and_then(|f| f.choice(&[("immediate", ServerDown::Immediate), ("never", ServerDown::Never)], errors))
        .unwrap_or(ServerDown::Immediate);
    let type_choices: Vec<(&str, &str)> = TYPES.iter().map(|t| (*t, *t)).collect();
    let type_name = match object.field("type") {
        Some(field) => field.choice(&type_choices, errors),
        None => {
            errors.add(&object.child_path("type"), format!("is required (one of {})", TYPES.join(", ")));
            None
        }
    };
    let kind = match type_name {
        Some("http_cookie") => Some(Kind::HttpCookie(http_cookie::Settings::parse(object.field("http_cookie"), errors))),
        Some("client_ip") => Some(Kind::ClientIp(client_ip::Settings::parse(object.field("client_ip"), errors))),
        Some("app_cookie") => {
            let path = object.child_path("app_cookie");
            app_cookie::Settings::parse(object.field("app_cookie"), errors, &path).map(Kind::AppCookie)
        }
        Some("tls") => Some(Kind::Tls(tls::Settings::parse(object.field("tls"), errors))),
        Some("http_header") => {
            let path = object.child_path("http_header");
            http_header::Settings::parse(object.field("http_header"), errors, &path).map(Kind::HttpHeader)
        }
        _ => None,
    };
    object.finish(errors, |key| {
        TYPES.contains(&key).then(|| match type_name {
            Some(type_name) => format!("settings of type {key}, but this profile's type is {type_name}"),
            None => format!("settings of type {key}, but this profile has no valid type"),
        })
    });
    Some(Profile { name: name?, description, server_down, kind: kind?, builtin: false })
}
