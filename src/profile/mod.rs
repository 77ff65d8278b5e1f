//! Persistence profiles: a name, a type with its own settings, and what to do when the persisted
//! server is down. One module per type decides what to read from a request and what to record.

pub mod http_cookie;

use crate::config::reader::{Errors, Field};

/// Avi's "Select New Server When Persistent Server Down".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerDown {
    /// Pick a new server and move the persistence to it.
    Immediate,
    /// Keep the persistence as it is until it expires (the cluster must then keep routing to the
    /// unhealthy host: see README, "server_down").
    Never,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    HttpCookie(http_cookie::Settings),
}

impl Kind {
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::HttpCookie(_) => "http_cookie",
        }
    }
}

/// The `type` values and the section each one reads its settings from.
const TYPES: &[&str] = &["http_cookie"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub description: Option<String>,
    pub server_down: ServerDown,
    pub kind: Kind,
}

/// Avi's system profiles, usable by name and redefinable by a profile of the same name.
pub fn builtins() -> Vec<Profile> {
    vec![Profile {
        name: "System-Persistence-Http-Cookie".into(),
        description: Some("built-in: AVI_COOKIE session cookie".into()),
        server_down: ServerDown::Immediate,
        kind: Kind::HttpCookie(http_cookie::Settings::default()),
    }]
}

/// Profile names appear in stat names, so they are limited to characters that are safe there.
fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Reads one entry of `profiles`.
pub fn parse(field: Field, errors: &mut Errors) -> Option<Profile> {
    let mut object = field.object(errors)?;
    let name = match object.field("name") {
        Some(field) => match field.string(errors) {
            Some(name) if is_valid_name(name) => Some(name.to_string()),
            Some(name) => {
                errors.add(&field.path, format!("must be 1 to 64 letters, digits, '-' or '_', got {name:?}"));
                None
            }
            None => None,
        },
        None => {
            errors.add(&object.child_path("name"), "is required");
            None
        }
    };
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
        _ => None,
    };
    object.finish(errors, |key| {
        TYPES.contains(&key).then(|| match type_name {
            Some(type_name) => format!("settings of type {key}, but this profile's type is {type_name}"),
            None => format!("settings of type {key}, but this profile has no valid type"),
        })
    });
    Some(Profile { name: name?, description, server_down, kind: kind? })
}
