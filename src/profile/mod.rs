//! Persistence profiles: a name, a type with its own settings, and what to do when the persisted
//! server is down. Each type is one module implementing `Persistence`; the registry below lists
//! them once, and everything that must handle every type is generated from that list.

pub mod sealed;
pub mod table_backed;

use crate::config_reader::{Errors, Field};
use crate::connections::Tracking;
use crate::context::Context;
use crate::header_pairs::Headers;
use crate::host::{HostError, HttpStream};
use crate::metrics::ProfileCounter;
pub use crate::outcome::{Outcome, ServerDown};
use crate::persistence::{Describe, Persistence, Requested, Responded, TableSpec, TokenSpec};
use crate::server::Server;
use crate::state::State;

/// Declares the persistence types: `Variant: module` each. Generates the module declarations,
/// `Kind` (a profile's type and settings), the per-type `Pending` and `Writes` of a request in
/// flight, `TYPES`, and `Kind`'s dispatch to each type's `Persistence` implementation.
macro_rules! persistence_types {
    ($($variant:ident: $module:ident),+ $(,)?) => {
        $(pub mod $module;)+

        /// A profile's type and its settings.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Kind {
            $($variant($module::Settings),)+
        }

        /// What a request's type learned for its response.
        pub enum Pending {
            $($variant(<$module::Settings as Persistence>::Pending),)+
        }

        /// What a response's type will write.
        pub enum Writes {
            $($variant(<$module::Settings as Persistence>::Writes),)+
        }

        /// The `type` values, each also the name of the type's settings section.
        pub const TYPES: &[&str] = &[$(<$module::Settings as Persistence>::TYPE,)+];

        impl Kind {
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(Kind::$variant(_) => <$module::Settings as Persistence>::TYPE,)+
                }
            }

            fn describe(&self) -> &dyn Describe {
                match self {
                    $(Kind::$variant(settings) => settings,)+
                }
            }

            /// The settings of type `type_name` (None: invalid, errors added).
            fn parse(type_name: &str, section: Option<Field>, errors: &mut Errors, path: &str) -> Option<Kind> {
                $(if type_name == <$module::Settings as Persistence>::TYPE {
                    return <$module::Settings as Persistence>::parse_section(section, errors, path).map(Kind::$variant);
                })+
                None
            }

            pub fn on_request<H: HttpStream>(&self, cx: &mut Context<'_, H>, headers: &Headers) -> Result<Requested<Pending>, HostError> {
                match self {
                    $(Kind::$variant(settings) => settings.on_request(cx, headers).map(|r| r.map(Pending::$variant)),)+
                }
            }

            /// None only if `pending` came from another type (a request's pending state always
            /// belongs to its own profile, so this does not happen).
            pub fn on_response(&self, pending: Pending, upstream: Option<Server>, server_down: ServerDown, state: &State) -> Option<Responded<Writes>> {
                match (self, pending) {
                    $((Kind::$variant(settings), Pending::$variant(pending)) => {
                        Some(settings.on_response(pending, upstream, server_down, state).map(Writes::$variant))
                    })+
                    _ => None,
                }
            }

            pub fn write<H: HttpStream>(&self, cx: &mut Context<'_, H>, writes: Writes) -> Result<(), HostError> {
                match (self, writes) {
                    $((Kind::$variant(settings), Writes::$variant(writes)) => settings.write(cx, writes),)+
                    _ => Ok(()),
                }
            }
        }
    };
}

persistence_types! {
    HttpCookie: http_cookie,
    ClientIp: client_ip,
    AppCookie: app_cookie,
    HttpHeader: http_header,
    Tls: tls,
    SessionHeader: session_header,
    AppHeader: app_header,
}

impl Kind {
    pub fn summary(&self) -> String {
        self.describe().summary()
    }

    pub fn counters(&self) -> Vec<ProfileCounter> {
        self.describe().counters()
    }

    /// The shared table this type keeps its pins in, if any.
    pub fn table(&self) -> Option<TableSpec> {
        self.describe().table()
    }

    /// The client grouping and timeout the connection counter must track for this profile.
    pub fn tracking(&self) -> Option<Tracking> {
        self.describe().tracking()
    }

    pub fn tokens(&self) -> Option<TokenSpec> {
        self.describe().tokens()
    }
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

impl Profile {
    /// One line of the startup summary.
    pub fn summary(&self) -> String {
        let (name, type_name, detail, server_down) = (&self.name, self.kind.type_name(), self.kind.summary(), self.server_down.name());
        match &self.description {
            Some(description) => format!("{name} ({type_name}, {detail}, server_down {server_down}: {description})"),
            None => format!("{name} ({type_name}, {detail}, server_down {server_down})"),
        }
    }
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
    let server_down = object.field("server_down").and_then(|f| f.choice(&ServerDown::CHOICES, errors)).unwrap_or(ServerDown::Immediate);
    let type_choices: Vec<(&str, &str)> = TYPES.iter().map(|t| (*t, *t)).collect();
    let type_name = match object.field("type") {
        Some(field) => field.choice(&type_choices, errors),
        None => {
            errors.add(&object.child_path("type"), format!("is required (one of {})", TYPES.join(", ")));
            None
        }
    };
    let kind = type_name.and_then(|type_name| {
        let path = object.child_path(type_name);
        let section = object.field(type_name);
        Kind::parse(type_name, section, errors, &path)
    });
    object.finish(errors, |key| {
        TYPES.contains(&key).then(|| match type_name {
            Some(type_name) => format!("settings of type {key}, but this profile's type is {type_name}"),
            None => format!("settings of type {key}, but this profile has no valid type"),
        })
    });
    Some(Profile { name: name?, description, server_down, kind: kind?, builtin: false })
}
