//! What the filter needs from Envoy, as two traits: `Host` (the process: shared table store, clock,
//! randomness, stats) and `HttpStream` (one HTTP request and its response). Everything else in the
//! crate is written against them and tested natively; each host is FFI plus an implementation:
//! the proxy-wasm host (`crate::wasm`, pins through the override header and stateful_session), a
//! fake host for flow tests (`fake`). Logging goes through the `log` facade, whose logger each
//! host installs.
//!
//! Every call may fail; a failure is a `HostError`, never a panic. Calls that read are made only
//! when the flow needs their answer (each costs thousands of instructions in Wasm).

#[cfg(test)]
pub mod fake;

use crate::endpoint::Endpoint;
use crate::header_pairs::Headers;
use crate::table::{Store, StoreError};

/// A host call that did not succeed: which call, and the host's status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostError {
    pub call: &'static str,
    pub status: u32,
}

impl From<StoreError> for HostError {
    fn from(error: StoreError) -> HostError {
        match error {
            StoreError::CasMismatch => HostError { call: "shared data (CAS mismatch)", status: 0 },
            StoreError::Host(status) => HostError { call: "shared data", status },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// A stat defined by the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricId(pub u32);

/// The process the filter runs in: what configuration, housekeeping and every request use.
pub trait Host {
    type Store: Store;

    /// The key/value store shared by every worker of the process (tables live there).
    fn store(&self) -> &Self::Store;
    /// Wall-clock time, unix seconds.
    fn now(&self) -> u64;
    fn fill_random(&self, bytes: &mut [u8]) -> Result<(), HostError>;
    /// An environment variable the host gives the filter (Envoy: the VM's
    /// `environment_variables`), None when unset or not text.
    fn environment_variable(&self, name: &str) -> Option<String>;
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<MetricId, HostError>;
    /// A counter of a family whose members are named at run time: `name` in full
    /// (`persistence.host.10_0_0_7_8080.pinned`), or `family` with `label` (`persistence.host.pinned`,
    /// `10_0_0_7_8080`). The stat `name` by default; a host whose stats are fixed once configured
    /// counts the family with the label instead.
    fn define_labelled_counter(&self, name: &str, family: &str, label: &str) -> Result<MetricId, HostError> {
        let _ = (family, label);
        self.define_metric(MetricKind::Counter, name)
    }
    /// A failed stat update is not worth failing a request over: it is dropped.
    fn increment_metric(&self, id: MetricId, delta: i64);
}

/// Facts about the request that Envoy knows and the filter reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attribute<'a> {
    /// Envoy's client address, "ip:port" (see `crate::client_address`).
    SourceAddress,
    /// The host Envoy used, "ip:port"; readable on the response only.
    UpstreamAddress,
    /// The xDS route name.
    RouteName,
    /// The cluster the route chose (after weights).
    ClusterName,
    /// Route metadata `filter_metadata.persistence.profile`.
    RouteProfile,
    /// The downstream TLS version; absent or empty without TLS.
    TlsVersion,
    /// The client certificate's SHA-256 digest (mTLS).
    PeerCertificateDigest,
    /// A string that an earlier filter (set_filter_state) left under this key.
    FilterState(&'a str),
}

/// One HTTP stream: its request on the way to the router, then its response on the way back.
pub trait HttpStream: Host {
    /// Every request header, with one host call.
    fn request_headers(&mut self) -> Result<Headers, HostError>;
    fn set_request_header(&mut self, name: &str, value: &[u8]) -> Result<(), HostError>;
    fn remove_request_header(&mut self, name: &str) -> Result<(), HostError>;
    /// Every response header, with one host call.
    fn response_headers(&mut self) -> Result<Headers, HostError>;
    fn add_response_header(&mut self, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// Replaces every value of response header `name` with `value`.
    fn set_response_header(&mut self, name: &str, value: &[u8]) -> Result<(), HostError>;
    fn remove_response_header(&mut self, name: &str) -> Result<(), HostError>;
    /// None when Envoy does not have the attribute here.
    fn attribute(&mut self, attribute: Attribute) -> Result<Option<Vec<u8>>, HostError>;
    /// Makes Envoy match the request's route again, after a request header the routes may match
    /// on was written (the cluster header). Wasm's header writes already do so.
    fn reroute(&mut self) -> Result<(), HostError>;
    /// Sends the request to `endpoint` if it is a host of the routed cluster that the cluster's
    /// `override_host_status` allows (else Envoy load balances). A host that pins through a
    /// header for Envoy's stateful_session filter writes it under `override_header`.
    fn pin(&mut self, endpoint: &Endpoint, override_header: &str) -> Result<(), HostError>;
    /// The request's access-log record (`%FILTER_STATE(wasm.persistence:PLAIN)%` in Wasm).
    fn record(&mut self, text: &str) -> Result<(), HostError>;
}
