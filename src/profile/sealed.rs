//! A session sealed into a token that the client carries (an HTTP cookie, a session header): the
//! server, when it was sealed and when it expires. Nothing is stored in Envoy. What is shared by
//! every carrier: how long a token is honoured, which token of several wins, and when to send a
//! new one (first visit, a move, key rotation, half the idle window).

use crate::config_reader::{Errors, Object};
use crate::context::Context;
use crate::host::HttpStream;
use crate::metrics::ProfileCounter;
use crate::outcome::{Outcome, ServerDown};
use crate::persistence::Responded;
use crate::server::Server;
use crate::state::State;
use crate::token::{Claims, Purpose, Rejection, Tokens, NONCE_LEN};

const MINUTE: u64 = 60;

/// How long a sealed session is honoured, and whether the token is sent on every response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lifetime {
    /// Absolute lifetime from the session's start, seconds; None: no absolute limit.
    pub timeout: Option<u64>,
    /// Inactivity after which the token is no longer honoured, seconds.
    pub idle_timeout: Option<u64>,
    pub always_send: bool,
}

impl Lifetime {
    /// Reads `timeout_minutes` (10-720), `idle_timeout_minutes` (1-720, not longer than the
    /// timeout) and `always_send` from a carrier's settings section.
    pub fn parse(object: &mut Object, errors: &mut Errors, carrier: &str) -> Lifetime {
        let mut lifetime =
            Lifetime { timeout: object.field("timeout_minutes").and_then(|f| f.integer(10, 720, errors)).map(|m| m * MINUTE), ..Lifetime::default() };
        if let Some(field) = object.field("idle_timeout_minutes") {
            if let Some(idle) = field.integer(1, 720, errors).map(|m| m * MINUTE) {
                match lifetime.timeout {
                    Some(timeout) if idle > timeout => {
                        errors.add(&field.path, format!("must not be longer than timeout_minutes (the {carrier} would expire first)"))
                    }
                    _ => lifetime.idle_timeout = Some(idle),
                }
            }
        }
        if let Some(always) = object.field("always_send").and_then(|f| f.bool(errors)) {
            lifetime.always_send = always;
        }
        lifetime
    }
}

/// What the request's token said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presented {
    Absent,
    Rejected(Rejection),
    Valid { claims: Claims, key_id: u8, token: String },
}

impl Presented {
    pub fn pin(&self) -> Option<Server> {
        match self {
            Presented::Valid { claims, .. } => Some(claims.server),
            _ => None,
        }
    }

    /// The reason a presented token was not honoured.
    pub fn rejection(&self) -> Option<&'static str> {
        match self {
            Presented::Rejected(rejection) => Some(rejection.name()),
            _ => None,
        }
    }
}

/// Reads the request's tokens (`values`, in order). With several (a browser holding one cookie per
/// path or domain) the first valid one wins; else the first rejection is reported.
pub fn read<'a>(lifetime: &Lifetime, tokens: &Tokens, purpose: Purpose, name: &str, values: impl IntoIterator<Item = &'a [u8]>, now: u64) -> Presented {
    let mut first_rejection = None;
    for value in values {
        match judge(lifetime, tokens, purpose, name, value, now) {
            Ok(presented) => return presented,
            Err(rejection) => {
                first_rejection.get_or_insert(rejection);
            }
        }
    }
    first_rejection.map_or(Presented::Absent, Presented::Rejected)
}

fn judge(lifetime: &Lifetime, tokens: &Tokens, purpose: Purpose, name: &str, value: &[u8], now: u64) -> Result<Presented, Rejection> {
    let opened = tokens.open(purpose, name, value)?;
    let claims = opened.claims;
    if claims.expires_at.is_some_and(|expires_at| now >= expires_at) {
        return Err(Rejection::Expired);
    }
    if lifetime.idle_timeout.is_some_and(|idle| now >= claims.issued_at.saturating_add(idle)) {
        return Err(Rejection::Idle);
    }
    // A token that opened is base64url, so it is ASCII (and the check is cheap).
    let token = std::str::from_utf8(value).map_or_else(|_| String::from_utf8_lossy(value).into_owned(), str::to_owned);
    Ok(Presented::Valid { claims, key_id: opened.key_id, token })
}

/// What to send back to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    None,
    /// The presented token again (always_send): no crypto needed.
    Echo {
        token: String,
        expires_at: Option<u64>,
    },
    Seal(Claims),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub reply: Reply,
    /// Re-sealed under the primary key (key rotation).
    pub rotated: bool,
    /// Re-sealed because half the idle window had passed.
    pub refreshed: bool,
}

/// Decides the response side once Envoy has picked `upstream` (None: no upstream was used).
pub fn decide(lifetime: &Lifetime, server_down: ServerDown, presented: &Presented, upstream: Option<Server>, primary_key_id: u8, now: u64) -> Decision {
    let fresh = |server| Claims { server, issued_at: now, expires_at: lifetime.timeout.map(|t| now.saturating_add(t)) };
    let decision = |outcome, reply| Decision { outcome, reply, rotated: false, refreshed: false };
    let Some(upstream) = upstream else { return decision(Outcome::NoUpstream, Reply::None) };
    let Presented::Valid { claims, key_id, token } = presented else {
        return decision(Outcome::New, Reply::Seal(fresh(upstream)));
    };
    let outcome = crate::outcome::outcome(Some(claims.server), Some(upstream), server_down);
    if outcome == Outcome::Repicked {
        return decision(outcome, Reply::Seal(fresh(upstream)));
    }
    // The session keeps its server and its absolute expiry; only the seal is renewed (and the
    // cluster, when the same host was reached through another one: see `crate::server`).
    let rotated = *key_id != primary_key_id;
    let refreshed = !rotated && lifetime.idle_timeout.is_some_and(|idle| now.saturating_sub(claims.issued_at) >= idle / 2);
    let rehomed = outcome == Outcome::Pinned && claims.server.cluster != upstream.cluster;
    let reply = if rotated || refreshed || rehomed {
        let server = if rehomed { upstream } else { claims.server };
        Reply::Seal(Claims { server, issued_at: now, ..*claims })
    } else if lifetime.always_send {
        Reply::Echo { token: token.clone(), expires_at: claims.expires_at }
    } else {
        Reply::None
    };
    Decision { outcome, reply, rotated, refreshed }
}

/// The token a reply sends and its absolute expiry; None when nothing is sent or sealing failed.
pub fn reply_token(tokens: &Tokens, purpose: Purpose, name: &str, reply: &Reply, nonce: [u8; NONCE_LEN]) -> Option<(String, Option<u64>)> {
    match reply {
        Reply::None => None,
        Reply::Echo { token, expires_at } => Some((token.clone(), *expires_at)),
        Reply::Seal(claims) => Some((tokens.seal(purpose, name, claims, nonce)?, claims.expires_at)),
    }
}

/// The counters of a sealed-session type.
pub fn counters() -> Vec<ProfileCounter> {
    use ProfileCounter::*;
    [&ProfileCounter::OUTCOMES[..], &ProfileCounter::TOKENS, &[RejectedExpired, RejectedIdle, Rotated, Refreshed]].concat()
}

/// What the request's token said, and the clock then (one clock read per request).
pub struct Pending {
    pub presented: Presented,
    pub now: u64,
}

pub struct Writes {
    pub decision: Decision,
    pub now: u64,
}

/// Reads the request's tokens, counting a rejection.
pub fn request<'a, H: HttpStream>(
    cx: &mut Context<'_, H>,
    lifetime: &Lifetime,
    purpose: Purpose,
    name: &str,
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Pending {
    let now = cx.host.now();
    let presented = read(lifetime, &cx.state.tokens, purpose, name, values, now);
    if let Presented::Rejected(rejection) = presented {
        cx.count(rejection.into());
        log::debug!("profile {}: token in {name} rejected ({}): load balancing", cx.name, rejection.name());
    }
    Pending { presented, now }
}

pub fn respond(lifetime: &Lifetime, pending: Pending, upstream: Option<Server>, server_down: ServerDown, state: &State) -> Responded<Writes> {
    let Pending { presented, now } = pending;
    let decision = decide(lifetime, server_down, &presented, upstream, state.tokens.primary_id(), now);
    Responded { outcome: decision.outcome, rejected: presented.rejection(), writes: Writes { decision, now } }
}

/// Counts a re-seal; the token to send, if any (None also when no nonce could be had).
pub fn reply<H: HttpStream>(cx: &mut Context<'_, H>, purpose: Purpose, name: &str, decision: &Decision) -> Option<(String, Option<u64>)> {
    if decision.rotated {
        cx.count(ProfileCounter::Rotated);
    }
    if decision.refreshed {
        cx.count(ProfileCounter::Refreshed);
    }
    if decision.reply == Reply::None {
        return None;
    }
    let nonce = cx.nonce()?;
    reply_token(&cx.state.tokens, purpose, name, &decision.reply, nonce)
}
