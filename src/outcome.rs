//! How a persisted request ended, and Avi's rule for a persisted server that is down.

use crate::server::Server;

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
    pub const CHOICES: [(&'static str, ServerDown); 2] = [("immediate", ServerDown::Immediate), ("never", ServerDown::Never)];

    pub fn name(self) -> &'static str {
        match self {
            ServerDown::Immediate => "immediate",
            ServerDown::Never => "never",
        }
    }
}

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

impl Outcome {
    /// The name in access-log records and counters.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Pinned => "pinned",
            Outcome::New => "new",
            Outcome::Repicked => "repicked",
            Outcome::Kept => "kept",
            Outcome::NoUpstream => "no_upstream",
        }
    }
}

/// The outcome of a request that was pinned to `pin` (or not) and served by `upstream`.
pub fn outcome(pin: Option<Server>, upstream: Option<Server>, server_down: ServerDown) -> Outcome {
    match (pin, upstream) {
        (_, None) => Outcome::NoUpstream,
        (None, Some(_)) => Outcome::New,
        // The host decides: the same host reached through another cluster is still the client's.
        (Some(pin), Some(upstream)) if pin.endpoint == upstream.endpoint => Outcome::Pinned,
        (Some(_), Some(_)) if server_down == ServerDown::Immediate => Outcome::Repicked,
        (Some(_), Some(_)) => Outcome::Kept,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_the_pin_the_upstream_and_server_down() {
        let a = crate::endpoint::parse("10.0.0.1:80").map(Server::host);
        let b = crate::endpoint::parse("10.0.0.2:80").map(Server::host);
        assert_eq!(outcome(a, None, ServerDown::Immediate), Outcome::NoUpstream);
        assert_eq!(outcome(None, a, ServerDown::Immediate), Outcome::New);
        assert_eq!(outcome(a, a, ServerDown::Never), Outcome::Pinned);
        assert_eq!(outcome(a, b, ServerDown::Immediate), Outcome::Repicked);
        assert_eq!(outcome(a, b, ServerDown::Never), Outcome::Kept);
    }
}
