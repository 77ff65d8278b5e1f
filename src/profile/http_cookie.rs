//! HTTP cookie persistence (Avi "HTTP Cookie"): the filter inserts a cookie whose value is a sealed
//! token naming the server (`super::sealed`), and reads it back on later requests. Nothing is stored
//! in Envoy.

use super::sealed::{self, Lifetime};
use crate::config_reader::{Errors, Field};
use crate::context::Context;
use crate::cookie::{self, Attributes, SameSite};
use crate::server::Server;
use crate::header_pairs::Headers;
use crate::host::{HostError, HttpStream};
use crate::metrics::ProfileCounter;
use crate::outcome::ServerDown;
use crate::persistence::{TokenSpec, Describe, Persistence, Requested, Responded};
use crate::state::State;
use crate::token::{self, Purpose, Tokens};

pub use super::sealed::{Decision, Presented, Reply};

pub const DEFAULT_NAME: &str = "AVI_COOKIE";

/// When to add the `Secure` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secure {
    /// Exactly when the client's connection to Envoy is TLS.
    Auto,
    Always,
    Never,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub name: String,
    /// Absolute lifetime from the cookie's creation, seconds; None makes a session cookie.
    pub timeout: Option<u64>,
    /// Inactivity after which the cookie is no longer honoured, seconds.
    pub idle_timeout: Option<u64>,
    pub always_send: bool,
    /// With a timeout: false sends a session cookie (no Max-Age or Expires; the browser drops it
    /// when it closes) while the token still ends the session at the timeout.
    pub persistent: bool,
    pub secure: Secure,
    pub attributes: Attributes,
}

impl Default for Settings {
    /// Avi's System-Persistence-Http-Cookie: AVI_COOKIE, a session cookie, sent once.
    fn default() -> Settings {
        Settings {
            name: DEFAULT_NAME.to_string(),
            timeout: None,
            idle_timeout: None,
            always_send: false,
            persistent: true,
            secure: Secure::Auto,
            attributes: Attributes { path: "/".into(), domain: None, http_only: true, same_site: Some(SameSite::Lax), partitioned: false },
        }
    }
}

impl Settings {
    /// Reads the `http_cookie` section of a profile (absent means all defaults).
    pub fn parse(section: Option<Field>, errors: &mut Errors) -> Settings {
        let mut settings = Settings::default();
        let Some(mut object) = section.and_then(|field| field.object(errors)) else { return settings };
        if let Some(name) = object.field("name").and_then(|f| f.string_where(cookie::is_token, cookie::NAME_RULE, errors)) {
            settings.name = name.to_string();
        }
        let lifetime = Lifetime::parse(&mut object, errors, "cookie");
        (settings.timeout, settings.idle_timeout, settings.always_send) = (lifetime.timeout, lifetime.idle_timeout, lifetime.always_send);
        if let Some(persistent) = object.field("persistent").and_then(|f| f.bool(errors)) {
            settings.persistent = persistent;
        }
        if let Some(path) = object.field("path").and_then(|f| f.string_where(cookie::is_valid_path, cookie::PATH_RULE, errors)) {
            settings.attributes.path = path.into();
        }
        let is_domain = |d: &str| !d.is_empty() && cookie::is_valid_attribute_value(d);
        if let Some(domain) = object.field("domain").and_then(|f| f.string_where(is_domain, "must be a domain name", errors)) {
            settings.attributes.domain = Some(domain.into());
        }
        if let Some(http_only) = object.field("http_only").and_then(|f| f.bool(errors)) {
            settings.attributes.http_only = http_only;
        }
        let secure_choices = [("auto", Secure::Auto), ("always", Secure::Always), ("never", Secure::Never)];
        if let Some(secure) = object.field("secure").and_then(|f| f.choice(&secure_choices, errors)) {
            settings.secure = secure;
        }
        // `"same_site": null` omits the attribute; absent keeps the default (Lax).
        let same_site_choices = [("lax", SameSite::Lax), ("strict", SameSite::Strict), ("none", SameSite::None)];
        match object.field("same_site") {
            Some(field) => {
                if let Some(same_site) = field.choice(&same_site_choices, errors) {
                    settings.attributes.same_site = Some(same_site);
                    if same_site == SameSite::None && settings.secure == Secure::Never {
                        errors.add(&field.path, "\"none\" needs secure \"auto\" or \"always\": browsers drop SameSite=None cookies without Secure");
                    }
                }
            }
            None if object.is_null("same_site") => settings.attributes.same_site = None,
            None => {}
        }
        if let Some(field) = object.field("partitioned") {
            if let Some(partitioned) = field.bool(errors) {
                if partitioned && settings.secure != Secure::Always {
                    errors.add(&field.path, "needs secure \"always\": browsers drop Partitioned cookies without Secure (CHIPS)");
                }
                settings.attributes.partitioned = partitioned;
            }
        }
        object.finish(errors, |_| None);
        settings
    }

    fn lifetime(&self) -> Lifetime {
        Lifetime { timeout: self.timeout, idle_timeout: self.idle_timeout, always_send: self.always_send }
    }
}

/// Reads our cookie from the request's Cookie headers (a value in double quotes, as RFC 6265
/// allows, is read without them).
pub fn read_request(settings: &Settings, tokens: &Tokens, cookie_headers: &[impl AsRef<[u8]>], now: u64) -> Presented {
    let values = cookie_headers.iter().flat_map(|header| cookie::values(header.as_ref(), &settings.name)).map(cookie::unquoted);
    sealed::read(&settings.lifetime(), tokens, Purpose::HttpCookie, &settings.name, values, now)
}

/// Decides the response side once Envoy has picked `upstream` (None: no upstream was used).
pub fn decide(settings: &Settings, server_down: ServerDown, presented: &Presented, upstream: Option<Server>, primary_key_id: u8, now: u64) -> Decision {
    sealed::decide(&settings.lifetime(), server_down, presented, upstream, primary_key_id, now)
}

/// The Set-Cookie header for a reply; None when nothing is to be sent or sealing failed.
pub fn set_cookie_header(settings: &Settings, tokens: &Tokens, reply: &Reply, tls: bool, now: u64, nonce: [u8; token::NONCE_LEN]) -> Option<String> {
    let (value, expires_at) = sealed::reply_token(tokens, Purpose::HttpCookie, &settings.name, reply, nonce)?;
    Some(set_cookie(settings, &value, expires_at, tls, now))
}

fn set_cookie(settings: &Settings, value: &str, expires_at: Option<u64>, tls: bool, now: u64) -> String {
    let secure = match settings.secure {
        Secure::Auto => tls,
        Secure::Always => true,
        Secure::Never => false,
    };
    let lifetime = expires_at.filter(|_| settings.persistent).map(|expires_at| expires_at.saturating_sub(now));
    cookie::set_cookie(&settings.name, value, &settings.attributes, secure, lifetime, now)
}

impl Describe for Settings {
    fn summary(&self) -> String {
        format!("cookie {}", self.name)
    }

    fn counters(&self) -> Vec<ProfileCounter> {
        sealed::counters()
    }

    fn tokens(&self) -> Option<TokenSpec> {
        Some(TokenSpec { purpose: Purpose::HttpCookie, name: self.name.clone(), timeout: self.timeout, idle_timeout: self.idle_timeout })
    }
}

impl Persistence for Settings {
    const TYPE: &'static str = "http_cookie";
    type Pending = sealed::Pending;
    type Writes = sealed::Writes;

    fn parse_section(section: Option<Field>, errors: &mut Errors, _path: &str) -> Option<Settings> {
        Some(Settings::parse(section, errors))
    }

    /// Reads our cookie and removes it from what the backend gets.
    fn on_request<H: HttpStream>(&self, cx: &mut Context<'_, H>, headers: &Headers) -> Result<Requested<sealed::Pending>, HostError> {
        let cookies: Vec<&[u8]> = headers.values("cookie").collect();
        let values = cookies.iter().flat_map(|header| cookie::values(header, &self.name)).map(cookie::unquoted);
        let pending = sealed::request(cx, &self.lifetime(), Purpose::HttpCookie, &self.name, values);
        let rewritten: Vec<Option<Vec<u8>>> = cookies.iter().map(|header| cookie::without(header, &self.name)).collect();
        cx.rewrite_cookie_headers(&cookies, &rewritten)?;
        let why = pending.presented.rejection().map(|r| ("rejected", r));
        Ok(Requested::pin_or_balance(pending.presented.pin(), why, pending))
    }

    fn on_response(&self, pending: sealed::Pending, upstream: Option<Server>, server_down: ServerDown, state: &State) -> Responded<sealed::Writes> {
        sealed::respond(&self.lifetime(), pending, upstream, server_down, state)
    }

    /// Issues, re-seals or echoes the cookie.
    fn write<H: HttpStream>(&self, cx: &mut Context<'_, H>, writes: sealed::Writes) -> Result<(), HostError> {
        let tls = writes.decision.reply != Reply::None && self.secure == Secure::Auto && cx.is_tls();
        let Some((value, expires_at)) = sealed::reply(cx, Purpose::HttpCookie, &self.name, &writes.decision) else { return Ok(()) };
        let header = set_cookie(self, &value, expires_at, tls, writes.now);
        cx.host.add_response_header("set-cookie", header.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_reader::parse_section;
    use crate::keyring::Keyring;
    use crate::outcome::Outcome;
    use crate::token::{Claims, Rejection};
    use crate::endpoint;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    fn keyring() -> Keyring {
        Keyring::new(&[(1, [1; 32]), (2, [2; 32])], 2).unwrap()
    }

    /// Opens what `keyring()` seals.
    fn tokens() -> Tokens {
        Tokens::new(keyring())
    }

    fn server(n: u8) -> Server {
        Server::host(endpoint::parse(&format!("10.0.0.{n}:8080")).unwrap())
    }

    fn parse(section: serde_json::Value) -> Result<Settings, Vec<String>> {
        parse_section("http_cookie", &section, |field, errors| Some(Settings::parse(field, errors)))
    }

    fn cookie_for(settings: &Settings, keys: &Keyring, claims: Claims) -> Vec<u8> {
        let value = token::seal(keys, Purpose::HttpCookie, &settings.name, &claims, [3; 12]).unwrap();
        format!("other=1; {}={value}", settings.name).into_bytes()
    }

    #[test]
    fn defaults_are_avis_system_profile() {
        let settings = parse(json!({})).unwrap();
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.name, "AVI_COOKIE");
        assert_eq!(settings.timeout, None);
        assert!(!settings.always_send);
    }

    #[test]
    fn reads_every_field() {
        let settings = parse(json!({"name": "SRV", "timeout_minutes": 720, "idle_timeout_minutes": 30, "always_send": true,
            "path": "/app", "domain": "example.com", "http_only": false, "secure": "always", "same_site": "none"}))
        .unwrap();
        assert_eq!(settings.name, "SRV");
        assert_eq!(settings.timeout, Some(720 * 60));
        assert_eq!(settings.idle_timeout, Some(30 * 60));
        assert!(settings.always_send);
        assert_eq!(settings.secure, Secure::Always);
        assert_eq!(
            settings.attributes,
            Attributes { path: "/app".into(), domain: Some("example.com".into()), http_only: false, same_site: Some(SameSite::None), partitioned: false }
        );
        assert_eq!(parse(json!({"same_site": null})).unwrap().attributes.same_site, None);
    }

    #[test]
    fn rejects_bad_fields_naming_path_and_rule() {
        let cases = [
            (json!({"timeout_minutes": 5}), "http_cookie.timeout_minutes: must be an integer between 10 and 720, got number 5"),
            (json!({"timeout_minutes": 721}), "http_cookie.timeout_minutes: must be an integer between 10 and 720, got number 721"),
            (json!({"timeout_minutes": "60"}), "http_cookie.timeout_minutes: must be an integer between 10 and 720, got string \"60\""),
            (json!({"timeout_minutes": 10, "idle_timeout_minutes": 20}), "http_cookie.idle_timeout_minutes: must not be longer than timeout_minutes (the cookie would expire first)"),
            (json!({"name": "a b"}), "http_cookie.name: must be a cookie name (letters, digits and !#$%&'*+-.^_`|~), got \"a b\""),
            (json!({"path": "app"}), "http_cookie.path: must start with / and hold no spaces, ';' or ',', got \"app\""),
            (json!({"secure": true}), "http_cookie.secure: must be one of \"auto\", \"always\", \"never\", got boolean true"),
            (json!({"secure": "never", "same_site": "none"}), "http_cookie.same_site: \"none\" needs secure \"auto\" or \"always\": browsers drop SameSite=None cookies without Secure"),
            (json!({"nmae": "x"}), "http_cookie.nmae: unknown field (known fields here: always_send, domain, http_only, idle_timeout_minutes, name, partitioned, path, persistent, same_site, secure, timeout_minutes)"),
            (json!("x"), "http_cookie: must be an object, got string \"x\""),
        ];
        for (section, expected) in cases {
            assert_eq!(parse(section.clone()), Err(vec![expected.to_string()]), "{section}");
        }
    }

    #[test]
    fn honours_a_valid_cookie_and_strips_nothing_else() {
        let settings = Settings::default();
        let keys = keyring();
        let tokens = tokens();
        let claims = Claims { server: server(2), issued_at: NOW - 100, expires_at: None };
        let presented = read_request(&settings, &tokens, &[cookie_for(&settings, &keys, claims)], NOW);
        assert_eq!(presented.pin(), Some(server(2)));
        let decision = decide(&settings, ServerDown::Immediate, &presented, Some(server(2)), 2, NOW);
        assert_eq!(decision, Decision { outcome: Outcome::Pinned, reply: Reply::None, rotated: false, refreshed: false });
    }

    #[test]
    fn issues_a_cookie_when_there_is_none_or_it_is_rejected() {
        let settings = Settings { timeout: Some(600), ..Settings::default() };
        let tokens = tokens();
        for headers in [vec![], vec![b"a=1".to_vec()], vec![b"AVI_COOKIE=garbage".to_vec()]] {
            let presented = read_request(&settings, &tokens, &headers, NOW);
            assert_eq!(presented.pin(), None);
            let decision = decide(&settings, ServerDown::Immediate, &presented, Some(server(1)), 2, NOW);
            assert_eq!(decision.outcome, Outcome::New);
            assert_eq!(decision.reply, Reply::Seal(Claims { server: server(1), issued_at: NOW, expires_at: Some(NOW + 600) }));
        }
    }

    #[test]
    fn classifies_rejections() {
        let settings = Settings { idle_timeout: Some(600), ..Settings::default() };
        let keys = keyring();
        let tokens = tokens();
        let other_fleet = Keyring::new(&[(2, [9; 32])], 2).unwrap();
        let retired = Keyring::new(&[(3, [3; 32])], 3).unwrap();
        let live = Claims { server: server(1), issued_at: NOW, expires_at: Some(NOW + 60) };
        let cases = [
            (b"AVI_COOKIE=%%%".to_vec(), Rejection::Malformed),
            (cookie_for(&settings, &other_fleet, live), Rejection::Forged),
            (cookie_for(&settings, &retired, live), Rejection::UnknownKey),
            (cookie_for(&settings, &keys, Claims { expires_at: Some(NOW), ..live }), Rejection::Expired),
            (cookie_for(&settings, &keys, Claims { issued_at: NOW - 600, expires_at: None, ..live }), Rejection::Idle),
        ];
        for (header, rejection) in cases {
            assert_eq!(read_request(&settings, &tokens, &[header], NOW), Presented::Rejected(rejection));
        }
        let renamed = Settings { name: "OTHER".into(), ..settings.clone() };
        let header = cookie_for(&renamed, &keys, live);
        let header = String::from_utf8(header).unwrap().replace("OTHER=", "AVI_COOKIE=");
        assert_eq!(read_request(&settings, &tokens, &[header.into_bytes()], NOW), Presented::Rejected(Rejection::Forged));
    }

    #[test]
    fn first_valid_cookie_of_several_wins() {
        let settings = Settings::default();
        let keys = keyring();
        let tokens = tokens();
        let good = cookie_for(&settings, &keys, Claims { server: server(3), issued_at: NOW, expires_at: None });
        let presented = read_request(&settings, &tokens, &[b"AVI_COOKIE=junk".to_vec(), good], NOW);
        assert_eq!(presented.pin(), Some(server(3)));
    }

    #[test]
    fn server_down_immediate_repicks_and_never_keeps() {
        let settings = Settings { timeout: Some(600), ..Settings::default() };
        let keys = keyring();
        let tokens = tokens();
        let claims = Claims { server: server(1), issued_at: NOW - 10, expires_at: Some(NOW + 300) };
        let presented = read_request(&settings, &tokens, &[cookie_for(&settings, &keys, claims)], NOW);
        let immediate = decide(&settings, ServerDown::Immediate, &presented, Some(server(2)), 2, NOW);
        assert_eq!(immediate.outcome, Outcome::Repicked);
        assert_eq!(immediate.reply, Reply::Seal(Claims { server: server(2), issued_at: NOW, expires_at: Some(NOW + 600) }));
        let never = decide(&settings, ServerDown::Never, &presented, Some(server(2)), 2, NOW);
        assert_eq!(never.outcome, Outcome::Kept);
        assert_eq!(never.reply, Reply::None);
        let local_reply = decide(&settings, ServerDown::Never, &presented, None, 2, NOW);
        assert_eq!(local_reply.outcome, Outcome::NoUpstream);
        assert_eq!(local_reply.reply, Reply::None);
    }

    #[test]
    fn always_send_echoes_and_rotation_reseals_keeping_the_session() {
        let settings = Settings { always_send: true, timeout: Some(600), ..Settings::default() };
        let keys = keyring();
        let tokens = tokens();
        let claims = Claims { server: server(1), issued_at: NOW - 10, expires_at: Some(NOW + 300) };
        let old_key = Keyring::new(&[(1, [1; 32])], 1).unwrap();
        let current = read_request(&settings, &tokens, &[cookie_for(&settings, &keys, claims)], NOW);
        let decision = decide(&settings, ServerDown::Immediate, &current, Some(server(1)), 2, NOW);
        let Presented::Valid { token, .. } = &current else { panic!() };
        assert_eq!(decision.reply, Reply::Echo { token: token.clone(), expires_at: Some(NOW + 300) });
        let rotated = read_request(&settings, &tokens, &[cookie_for(&settings, &old_key, claims)], NOW);
        let decision = decide(&settings, ServerDown::Immediate, &rotated, Some(server(1)), 2, NOW);
        assert!(decision.rotated);
        assert_eq!(decision.reply, Reply::Seal(Claims { issued_at: NOW, ..claims }));
    }

    #[test]
    fn idle_refresh_happens_after_half_the_window_only() {
        let settings = Settings { idle_timeout: Some(600), ..Settings::default() };
        let keys = keyring();
        let tokens = tokens();
        for (age, refresh) in [(10, false), (299, false), (300, true), (599, true)] {
            let claims = Claims { server: server(1), issued_at: NOW - age, expires_at: None };
            let presented = read_request(&settings, &tokens, &[cookie_for(&settings, &keys, claims)], NOW);
            let decision = decide(&settings, ServerDown::Immediate, &presented, Some(server(1)), 2, NOW);
            assert_eq!(decision.refreshed, refresh, "age {age}");
            assert_eq!(decision.reply != Reply::None, refresh, "age {age}");
        }
    }

    #[test]
    fn set_cookie_carries_lifetime_secure_and_a_token_that_opens() {
        let settings = Settings { timeout: Some(600), ..Settings::default() };
        let tokens = tokens();
        let claims = Claims { server: server(1), issued_at: NOW, expires_at: Some(NOW + 600) };
        let header = set_cookie_header(&settings, &tokens, &Reply::Seal(claims), true, NOW, [5; 12]).unwrap();
        assert!(header.starts_with("AVI_COOKIE="), "{header}");
        assert!(header.contains("; Path=/; Max-Age=600; Expires=") && header.ends_with("; Secure; HttpOnly; SameSite=Lax"), "{header}");
        let presented = read_request(&settings, &tokens, &[header.split(';').next().unwrap().as_bytes().to_vec()], NOW + 1);
        assert_eq!(presented.pin(), Some(server(1)));
        let plain = set_cookie_header(&Settings::default(), &tokens, &Reply::Seal(Claims { expires_at: None, ..claims }), false, NOW, [5; 12]).unwrap();
        assert!(!plain.contains("Max-Age") && !plain.contains("Secure"), "{plain}");
        assert_eq!(set_cookie_header(&settings, &tokens, &Reply::None, true, NOW, [5; 12]), None);
    }

    #[test]
    fn a_session_cookie_still_ends_at_the_timeout_and_partitioned_is_secure_only() {
        let settings = parse(json!({"timeout_minutes": 10, "persistent": false})).unwrap();
        let tokens = tokens();
        let claims = Claims { server: server(1), issued_at: NOW, expires_at: Some(NOW + 600) };
        let header = set_cookie_header(&settings, &tokens, &Reply::Seal(claims), false, NOW, [5; 12]).unwrap();
        assert!(!header.contains("Max-Age") && !header.contains("Expires"), "a session cookie: {header}");
        let cookie = header.split(';').next().unwrap().as_bytes().to_vec();
        assert_eq!(read_request(&settings, &tokens, std::slice::from_ref(&cookie), NOW + 599).pin(), Some(server(1)));
        assert_eq!(read_request(&settings, &tokens, &[cookie], NOW + 600), Presented::Rejected(Rejection::Expired), "the token ends it");

        let partitioned = parse(json!({"secure": "always", "same_site": "none", "partitioned": true})).unwrap();
        let header = set_cookie_header(&partitioned, &tokens, &Reply::Seal(claims), false, NOW, [5; 12]).unwrap();
        assert!(header.ends_with("; Secure; HttpOnly; SameSite=None; Partitioned"), "{header}");
        assert_eq!(
            parse(json!({"partitioned": true})),
            Err(vec!["http_cookie.partitioned: needs secure \"always\": browsers drop Partitioned cookies without Secure (CHIPS)".to_string()])
        );
    }

    #[test]
    fn a_quoted_cookie_value_is_read() {
        let settings = Settings::default();
        let tokens = tokens();
        let token = token::seal(&keyring(), Purpose::HttpCookie, "AVI_COOKIE", &Claims { server: server(3), issued_at: NOW, expires_at: None }, [3; 12]).unwrap();
        let header = format!("a=1; AVI_COOKIE=\"{token}\"; b=2");
        assert_eq!(read_request(&settings, &tokens, &[header.as_bytes()], NOW).pin(), Some(server(3)), "{header}");
    }
}
