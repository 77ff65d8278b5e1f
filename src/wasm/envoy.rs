//! The host interface on Envoy's proxy-wasm ABI. `Envoy` holds nothing: every call goes to Envoy
//! for the stream or process the SDK is currently running a callback of.

use super::ffi::{self, Map, Status};
use crate::endpoint::{self, Endpoint};
use crate::header_pairs::Headers;
use crate::host::{Attribute, Host, HostError, HttpStream, MetricId, MetricKind};
use crate::table::{Store, StoreError};

pub struct Envoy;

/// Envoy's shared data (one store per vm_id for the whole process).
pub struct SharedData;

/// Where the per-request record goes: Envoy keeps it as filter state `wasm.persistence`.
const RECORD: [&str; 1] = ["persistence"];

fn failed(call: &'static str) -> impl Fn(Status) -> HostError {
    move |status| HostError { call, status: status.0 }
}

impl Store for SharedData {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        ffi::shared_data(key).map_err(|status| StoreError::Host(status.0))
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        match ffi::set_shared_data(key, value, cas) {
            Ok(()) => Ok(()),
            Err(Status(ffi::CAS_MISMATCH)) => Err(StoreError::CasMismatch),
            Err(status) => Err(StoreError::Host(status.0)),
        }
    }
}

impl Host for Envoy {
    type Store = SharedData;

    fn store(&self) -> &SharedData {
        &SharedData
    }

    fn now(&self) -> u64 {
        ffi::now_seconds()
    }

    /// WASI `random_get`, which Envoy serves from its own source.
    fn fill_random(&self, bytes: &mut [u8]) -> Result<(), HostError> {
        getrandom::fill(bytes).map_err(|_| HostError { call: "random_get", status: 0 })
    }

    // WASI environ_get: Envoy hands the VM the variables its vm_config lists, nothing else.
    fn environment_variable(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<MetricId, HostError> {
        let kind = match kind {
            MetricKind::Counter => ffi::MetricKind::Counter,
            MetricKind::Gauge => ffi::MetricKind::Gauge,
        };
        ffi::define_metric(kind, name).map(MetricId).map_err(failed("define_metric"))
    }

    fn increment_metric(&self, id: MetricId, delta: i64) {
        let _ = ffi::increment_metric(id.0, delta);
    }
}

impl HttpStream for Envoy {
    fn request_headers(&mut self) -> Result<Headers, HostError> {
        ffi::header_pairs(Map::RequestHeaders).map(Headers::from_serialized).map_err(failed("get_header_map_pairs"))
    }

    fn set_request_header(&mut self, name: &str, value: &[u8]) -> Result<(), HostError> {
        ffi::replace_header(Map::RequestHeaders, name, value).map_err(failed("replace_header_map_value"))
    }

    fn remove_request_header(&mut self, name: &str) -> Result<(), HostError> {
        ffi::remove_header(Map::RequestHeaders, name).map_err(failed("remove_header_map_value"))
    }

    fn response_headers(&mut self) -> Result<Headers, HostError> {
        ffi::header_pairs(Map::ResponseHeaders).map(Headers::from_serialized).map_err(failed("get_header_map_pairs"))
    }

    fn add_response_header(&mut self, name: &str, value: &[u8]) -> Result<(), HostError> {
        ffi::add_header(Map::ResponseHeaders, name, value).map_err(failed("add_header_map_value"))
    }

    fn set_response_header(&mut self, name: &str, value: &[u8]) -> Result<(), HostError> {
        ffi::replace_header(Map::ResponseHeaders, name, value).map_err(failed("replace_header_map_value"))
    }

    fn remove_response_header(&mut self, name: &str) -> Result<(), HostError> {
        ffi::remove_header(Map::ResponseHeaders, name).map_err(failed("remove_header_map_value"))
    }

    fn attribute(&mut self, attribute: Attribute) -> Result<Option<Vec<u8>>, HostError> {
        let result = match attribute {
            Attribute::SourceAddress => ffi::property(&["source", "address"]),
            Attribute::UpstreamAddress => ffi::property(&UPSTREAM_ADDRESS),
            Attribute::RouteName => ffi::property(&["xds", "route_name"]),
            Attribute::ClusterName => ffi::property(&["xds", "cluster_name"]),
            Attribute::RouteProfile => ffi::property(&["xds", "route_metadata", "filter_metadata", "persistence", "profile"]),
            Attribute::TlsVersion => ffi::property(&["connection", "tls_version"]),
            Attribute::PeerCertificateDigest => ffi::property(&["connection", "sha256_peer_certificate_digest"]),
            Attribute::FilterState(key) => ffi::property(&["filter_state", key]),
        };
        result.map_err(failed("get_property"))
    }

    /// Envoy clears the route cache whenever a Wasm filter writes a request header.
    fn reroute(&mut self) -> Result<(), HostError> {
        Ok(())
    }

    /// The override header that Envoy's stateful_session filter (header mode, placed after this
    /// one) turns into the upstream override host.
    fn pin(&mut self, endpoint: &Endpoint, override_header: &str) -> Result<(), HostError> {
        ffi::replace_header(Map::RequestHeaders, override_header, endpoint::override_header_value(endpoint).as_bytes())
            .map_err(failed("replace_header_map_value"))
    }

    fn record(&mut self, text: &str) -> Result<(), HostError> {
        ffi::set_property(&RECORD, text.as_bytes()).map_err(failed("set_property"))
    }
}

pub const UPSTREAM_ADDRESS: [&str; 2] = ["upstream", "address"];
