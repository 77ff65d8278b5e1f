//! What the checker can find: a stable id, what happens at run time, and the fix.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    InvalidPluginConfiguration,
    StatefulSessionMissing,
    StatefulSessionOrder,
    StatefulSessionHeader,
    OverrideHostStatusImmediate,
    OverrideHostStatusNever,
    NoHealthChecks,
    ConnectionCounterMissing,
    ConnectionCounterVm,
    ClientAddressFromClients,
    NoKeys,
    OverrideHeaderNotRemoved,
    DisabledAlone,
    SessionIdWithoutFilterState,
    RouteProfileUnknown,
    RoutesUnmatched,
    KeysEnvNotPassed,
    WeightedClustersUnsteered,
    InvalidRouteSettings,
}

impl Kind {
    pub const ALL: [Kind; 19] = [
        Kind::InvalidPluginConfiguration,
        Kind::StatefulSessionMissing,
        Kind::StatefulSessionOrder,
        Kind::StatefulSessionHeader,
        Kind::OverrideHostStatusImmediate,
        Kind::OverrideHostStatusNever,
        Kind::NoHealthChecks,
        Kind::ConnectionCounterMissing,
        Kind::ConnectionCounterVm,
        Kind::ClientAddressFromClients,
        Kind::NoKeys,
        Kind::OverrideHeaderNotRemoved,
        Kind::DisabledAlone,
        Kind::SessionIdWithoutFilterState,
        Kind::RouteProfileUnknown,
        Kind::RoutesUnmatched,
        Kind::KeysEnvNotPassed,
        Kind::WeightedClustersUnsteered,
        Kind::InvalidRouteSettings,
    ];

    /// The finding's name in the output (stable: scripts may match on it).
    pub fn id(self) -> &'static str {
        match self {
            Kind::InvalidPluginConfiguration => "invalid-plugin-configuration",
            Kind::StatefulSessionMissing => "stateful-session-missing",
            Kind::StatefulSessionOrder => "stateful-session-order",
            Kind::StatefulSessionHeader => "stateful-session-header",
            Kind::OverrideHostStatusImmediate => "override-host-status-immediate",
            Kind::OverrideHostStatusNever => "override-host-status-never",
            Kind::NoHealthChecks => "no-health-checks",
            Kind::ConnectionCounterMissing => "connection-counter-missing",
            Kind::ConnectionCounterVm => "connection-counter-vm",
            Kind::ClientAddressFromClients => "client-address-from-clients",
            Kind::NoKeys => "no-keys",
            Kind::OverrideHeaderNotRemoved => "override-header-not-removed",
            Kind::DisabledAlone => "disabled-alone",
            Kind::SessionIdWithoutFilterState => "session-id-without-filter-state",
            Kind::RouteProfileUnknown => "route-profile-unknown",
            Kind::RoutesUnmatched => "routes-unmatched",
            Kind::KeysEnvNotPassed => "keys-env-not-passed",
            Kind::WeightedClustersUnsteered => "weighted-clusters-unsteered",
            Kind::InvalidRouteSettings => "invalid-route-settings",
        }
    }

    /// What happens when Envoy runs this configuration.
    pub fn effect(self) -> &'static str {
        match self {
            Kind::InvalidPluginConfiguration => "Envoy rejects the plugin: at startup it exits, an xDS update is refused",
            Kind::StatefulSessionMissing => "nothing acts on the filter's decisions: every request is load balanced, silently",
            Kind::StatefulSessionOrder => "stateful_session reads the override header before the filter writes it: every request is load balanced, silently",
            Kind::StatefulSessionHeader => "stateful_session reads another header than the filter writes: every request is load balanced, silently",
            Kind::OverrideHostStatusImmediate => {
                "pinned hosts that fail health checks keep their clients (server_down \"immediate\" behaves like \"never\"), or healthy pinned hosts are not followed"
            }
            Kind::OverrideHostStatusNever => "clients of a host that fails health checks are moved: server_down \"never\" behaves like \"immediate\"",
            Kind::NoHealthChecks => "no host is ever seen as down: server_down has no effect and clients stay on a failed server",
            Kind::ConnectionCounterMissing => "client IP entries expire while their clients are still connected (the timeout counts from the last request)",
            Kind::ConnectionCounterVm => "the connection counter and the HTTP filter do not share a VM: client IP entries expire while their clients are still connected",
            Kind::ClientAddressFromClients => {
                "Envoy takes the client address from a client-written X-Forwarded-For: the filter refuses those keys, so clients that send the header get no persistence"
            }
            Kind::NoKeys => "each Envoy process generates its own key: cookies and tokens do not survive a restart and are not accepted by other replicas",
            Kind::OverrideHeaderNotRemoved => "backends see the override header (request side), or clients see hosts' addresses Envoy put in it (response side)",
            Kind::DisabledAlone => "with only one of the two filters off, stateful_session acts on client-supplied headers, or the filter's pins are ignored",
            Kind::SessionIdWithoutFilterState => "the filter never sees a TLS session id: every request is load balanced (or falls back to the client address)",
            Kind::RouteProfileUnknown => "requests on the route get no persistence; persistence.unknown_profile counts them",
            Kind::RoutesUnmatched => "the mapping never applies: requests on the intended route get the default profile (or none)",
            Kind::KeysEnvNotPassed => "the VM does not see the keys variable: the filter refuses its configuration (Envoy exits at startup, an update is rejected)",
            Kind::WeightedClustersUnsteered => {
                "Envoy picks a weighted cluster before the pinned host applies: pinned clients land in another cluster as often as the weights say, and lose their server"
            }
            Kind::InvalidRouteSettings => "Envoy refuses the route configuration (the native build rejects the route's settings): at startup it exits, an update is refused",
        }
    }
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    pub file: String,
    /// Where in the file (`static_resources.listeners[0]...`); empty for the whole file.
    pub path: String,
    /// What exactly was found.
    pub detail: String,
    pub fix: String,
}

impl Finding {
    pub fn new(kind: Kind, file: &str, path: &str, detail: impl Into<String>) -> Finding {
        Finding { kind, file: file.to_string(), path: path.to_string(), detail: detail.into(), fix: String::new() }
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = fix.into();
        self
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.path.is_empty() { String::new() } else { format!(" {}", self.path) };
        writeln!(f, "{}:{at}: [{}] {}", self.file, self.kind.id(), self.detail)?;
        write!(f, "  at run time: {}", self.kind.effect())?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}
