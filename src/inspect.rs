//! What a token a client presented holds, or why it does not open: for support, with the
//! configuration's keys (`envoy-persistence inspect-token`). Native only.

use crate::config::Config;
use crate::keyring::Keyring;
use crate::persistence::TokenSpec;
use crate::profile::app_cookie;
use crate::token::{self, OpenError, Purpose};
use std::time::{Duration, UNIX_EPOCH};

/// Where a token may come from: a profile's cookie or header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carrier {
    pub profile: String,
    pub spec: TokenSpec,
}

/// Every carrier of sealed tokens in a configuration; `name` (a cookie or header name) keeps
/// only those with that name, and with no profile of that name, tries it for every kind of token.
pub fn carriers(config: &Config, name: Option<&str>) -> Vec<Carrier> {
    let all: Vec<Carrier> = config.profiles.iter().filter_map(|p| p.kind.tokens().map(|spec| Carrier { profile: p.name.clone(), spec })).collect();
    let Some(name) = name else { return all };
    let named: Vec<Carrier> = all.into_iter().filter(|c| c.spec.name.eq_ignore_ascii_case(name)).collect();
    if !named.is_empty() {
        return named;
    }
    [Purpose::HttpCookie, Purpose::SessionHeader, Purpose::AppCookiePrefix, Purpose::AppHeaderPrefix]
        .into_iter()
        .map(|purpose| Carrier { profile: "(none)".into(), spec: TokenSpec { purpose, name: name.to_string(), timeout: None, idle_timeout: None } })
        .collect()
}

/// The verdict on one value.
#[derive(Debug, PartialEq, Eq)]
pub enum Inspection {
    Opened { text: String, honoured: bool },
    NotOpened(String),
}

/// Opens `value` (a cookie or header value, `NAME=value` accepted) with `keyring` for each carrier
/// in turn, judged at `now` (Unix seconds).
pub fn inspect(keyring: &Keyring, carriers: &[Carrier], value: &str, now: u64) -> Inspection {
    let mut why = Vec::new();
    for carrier in carriers {
        let spec = &carrier.spec;
        let value = value.trim();
        let value = value.strip_prefix(&format!("{}=", spec.name)).unwrap_or(value);
        let prefixed = matches!(spec.purpose, Purpose::AppCookiePrefix | Purpose::AppHeaderPrefix);
        let (sealed, application) = match prefixed {
            true => match app_cookie::split_prefixed(value.as_bytes()) {
                Some((sealed, application)) => (sealed, Some(String::from_utf8_lossy(application).into_owned())),
                None => {
                    why.push(format!("{}: no `<token>.` prefix of this filter", describe(carrier)));
                    continue;
                }
            },
            false => (value.as_bytes(), None),
        };
        match token::open(keyring, spec.purpose, &spec.name, sealed) {
            Ok(opened) => {
                let claims = opened.claims;
                let mut lines = vec![
                    format!("opened as {}", describe(carrier)),
                    format!(
                        "key id:  {}{}",
                        opened.key_id,
                        if opened.key_id == keyring.primary_id() { " (the primary key)" } else { " (not the primary key: re-sealed on the next response)" }
                    ),
                    format!("server:  {}", claims.server.endpoint),
                    format!("issued:  {}", moment(claims.issued_at, now)),
                ];
                let mut honoured = true;
                match claims.expires_at {
                    Some(expires_at) => {
                        honoured &= now < expires_at;
                        lines.push(format!("expires: {}", moment(expires_at, now)));
                    }
                    None => lines.push("expires: no absolute expiry".into()),
                }
                match spec.idle_timeout {
                    Some(idle) => {
                        let until = claims.issued_at.saturating_add(idle);
                        honoured &= now < until;
                        lines.push(format!("idle:    window {}, honoured until {}", span(idle), moment(until, now)));
                    }
                    None => lines.push("idle:    no idle window".into()),
                }
                if let Some(application) = application {
                    lines.push(format!("application value: {application}"));
                }
                lines.push(match honoured {
                    true => format!("verdict: honoured now: the request goes to {} while it is up", claims.server.endpoint),
                    false => "verdict: no longer honoured (expired or idle): the client is load balanced and gets a new token".to_string(),
                });
                return Inspection::Opened { text: lines.join("\n"), honoured };
            }
            Err(error) => why.push(format!("{}: {}", describe(carrier), open_error(error, sealed))),
        }
    }
    if carriers.is_empty() {
        why.push("the configuration has no profile that seals tokens (give --name for a cookie or header name)".into());
    }
    Inspection::NotOpened(why.join("\n"))
}

fn describe(carrier: &Carrier) -> String {
    let kind = match carrier.spec.purpose {
        Purpose::HttpCookie => "http_cookie",
        Purpose::AppCookiePrefix => "app_cookie prefix",
        Purpose::SessionHeader => "session_header",
        Purpose::AppHeaderPrefix => "app_header prefix",
    };
    format!("{kind} {:?} of profile {:?}", carrier.spec.name, carrier.profile)
}

fn open_error(error: OpenError, sealed: &[u8]) -> String {
    match error {
        OpenError::Malformed => "not a token of this filter (wrong length, not base64url, or another version)".into(),
        // A well-formed token names its key id in its second byte.
        OpenError::UnknownKey => {
            let id = token::key_id(sealed).map_or("?".to_string(), |id| id.to_string());
            format!("sealed with key id {id}, which these keys do not hold (rotated out, or another fleet's key)")
        }
        OpenError::Forged => "does not authenticate: altered, sealed with another secret under the same key id, or for another cookie or header".into(),
    }
}

/// `2026-12-01T19:00:00Z (35m ago)`.
fn moment(at: u64, now: u64) -> String {
    let when = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(at));
    match at.cmp(&now) {
        std::cmp::Ordering::Less => format!("{when} ({} ago)", span(now - at)),
        std::cmp::Ordering::Equal => format!("{when} (now)"),
        std::cmp::Ordering::Greater => format!("{when} (in {})", span(at - now)),
    }
}

fn span(seconds: u64) -> String {
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::token::Claims;

    const NOW: u64 = 1_800_000_000;

    fn config() -> Config {
        let text = r#"{"keys": [{"id": 1, "secret": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="},
                                {"id": 2, "secret": "HxscGxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwIBAAA="}], "primary_key_id": 2,
            "profiles": [{"name": "web", "type": "http_cookie", "server_down": "immediate",
                          "http_cookie": {"name": "SRV", "timeout_minutes": 60, "idle_timeout_minutes": 10}},
                         {"name": "app", "type": "app_cookie", "server_down": "immediate", "app_cookie": {"name": "JSESSIONID", "mode": "prefix"}}]}"#;
        Config::parse(text.as_bytes()).unwrap()
    }

    fn keyring(config: &Config) -> Keyring {
        Keyring::from_secrets(&config.keys, config.primary_key_id.unwrap()).unwrap()
    }

    fn sealed(keyring: &Keyring, purpose: Purpose, name: &str, issued_at: u64, expires_at: Option<u64>) -> String {
        let claims = Claims { server: crate::server::Server::host("10.0.0.7:8080".parse().unwrap()), issued_at, expires_at };
        token::seal(keyring, purpose, name, &claims, [5; 12]).unwrap()
    }

    #[test]
    fn a_valid_cookie_shows_its_server_key_and_times() {
        let config = config();
        let keys = keyring(&config);
        let value = sealed(&keys, Purpose::HttpCookie, "SRV", NOW - 120, Some(NOW - 120 + 3600));
        let Inspection::Opened { text, honoured } = inspect(&keys, &carriers(&config, None), &format!("SRV={value}"), NOW) else { panic!() };
        assert!(honoured, "{text}");
        for expected in
            ["http_cookie \"SRV\" of profile \"web\"", "key id:  2 (the primary key)", "server:  10.0.0.7:8080", "(2m ago)", "(in 58m)", "window 10m"]
        {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
    }

    #[test]
    fn idle_and_expired_tokens_open_but_are_not_honoured() {
        let config = config();
        let keys = keyring(&config);
        let idle = sealed(&keys, Purpose::HttpCookie, "SRV", NOW - 11 * 60, Some(NOW + 3000));
        assert!(matches!(inspect(&keys, &carriers(&config, Some("SRV")), &idle, NOW), Inspection::Opened { honoured: false, .. }));
    }

    #[test]
    fn prefix_values_show_the_application_value() {
        let config = config();
        let keys = keyring(&config);
        let value = format!("{}.abc.def", sealed(&keys, Purpose::AppCookiePrefix, "JSESSIONID", NOW, None));
        let Inspection::Opened { text, .. } = inspect(&keys, &carriers(&config, None), &value, NOW) else { panic!() };
        assert!(text.contains("application value: abc.def") && text.contains("no absolute expiry"), "{text}");
    }

    #[test]
    fn tokens_that_do_not_open_say_why_for_each_carrier() {
        let config = config();
        let keys = keyring(&config);
        let other = Keyring::new(&[(9, [7; 32])], 9).unwrap();
        let foreign = sealed(&other, Purpose::HttpCookie, "SRV", NOW, None);
        let Inspection::NotOpened(why) = inspect(&keys, &carriers(&config, Some("SRV")), &foreign, NOW) else { panic!() };
        assert!(why.contains("key id 9, which these keys do not hold"), "{why}");
        let renamed = sealed(&keys, Purpose::HttpCookie, "OTHER", NOW, None);
        let Inspection::NotOpened(why) = inspect(&keys, &carriers(&config, Some("SRV")), &renamed, NOW) else { panic!() };
        assert!(why.contains("does not authenticate"), "{why}");
        let Inspection::NotOpened(why) = inspect(&keys, &carriers(&config, None), "hello", NOW) else { panic!() };
        assert!(why.contains("not a token of this filter") && why.contains("no `<token>.` prefix"), "{why}");
        // An unknown name is tried as every kind of token.
        assert_eq!(carriers(&config, Some("X-Session")).len(), 4);
    }
}
