//! A recording fake of Envoy's side of the host interface, for fast flow tests: one `FakeHost` is
//! one Envoy process (its shared store, clock and stats persist across requests), and
//! `request`/`respond` stage one stream. It records every call, so a test can assert what the
//! filter wrote, removed, pinned and recorded, and which host calls it made. It is a test double
//! like `MemoryStore`: the proof of a feature stays the real Envoy (`tests/`).

use super::{Attribute, Host, HostError, HttpStream, MetricId, MetricKind};
use crate::endpoint::Endpoint;
use crate::header_pairs::Headers;
use crate::table::MemoryStore;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

pub struct FakeHost {
    pub store: MemoryStore,
    pub now: Cell<u64>,
    /// When false, the host has no randomness.
    pub random: Cell<bool>,
    /// Calls (by their name in `calls`) that fail with status 2.
    pub failing: Vec<&'static str>,
    /// (name, kind) by id, and the values.
    metrics: RefCell<Vec<(String, MetricKind, i64)>>,
    random_state: Cell<u8>,
    // One stream:
    pub request_headers: Vec<(String, Vec<u8>)>,
    pub response_headers: Vec<(String, Vec<u8>)>,
    /// Attributes by name: `source.address`, `upstream.address`, `route_name`, `route_profile`,
    /// `tls_version`, `peer_certificate`, `filter_state.<key>`.
    pub attributes: HashMap<String, Vec<u8>>,
    /// The VM's environment variables.
    pub environment: HashMap<String, String>,
    /// What `pin` was called with: the endpoint and the override header.
    pub pinned: Option<(Endpoint, String)>,
    pub records: Vec<String>,
    /// Every host call of the stream, in order (`request_headers`, `attribute:source.address`, ...).
    pub calls: RefCell<Vec<String>>,
}

impl Default for FakeHost {
    fn default() -> FakeHost {
        FakeHost {
            store: MemoryStore::default(),
            now: Cell::new(1_800_000_000),
            random: Cell::new(true),
            failing: Vec::new(),
            metrics: RefCell::default(),
            random_state: Cell::new(0),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            attributes: HashMap::new(),
            environment: HashMap::new(),
            pinned: None,
            records: Vec::new(),
            calls: RefCell::default(),
        }
    }
}

fn attribute_name(attribute: Attribute) -> String {
    match attribute {
        Attribute::SourceAddress => "source.address".into(),
        Attribute::UpstreamAddress => "upstream.address".into(),
        Attribute::RouteName => "route_name".into(),
        Attribute::ClusterName => "cluster_name".into(),
        Attribute::RouteProfile => "route_profile".into(),
        Attribute::TlsVersion => "tls_version".into(),
        Attribute::PeerCertificateDigest => "peer_certificate".into(),
        Attribute::FilterState(key) => format!("filter_state.{key}"),
    }
}

fn to_pairs(headers: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    headers.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect()
}

impl FakeHost {
    /// Starts a new stream: its request headers and its client's address; everything the previous
    /// stream staged or recorded is forgotten (the store, clock and stats stay).
    pub fn request(&mut self, source: &str, headers: &[(&str, &str)]) {
        self.request_headers = to_pairs(headers);
        self.response_headers.clear();
        self.attributes.clear();
        self.attributes.insert("source.address".into(), source.as_bytes().to_vec());
        self.pinned = None;
        self.records.clear();
        self.calls.borrow_mut().clear();
    }

    pub fn attribute(&mut self, name: &str, value: &str) {
        self.attributes.insert(name.to_string(), value.as_bytes().to_vec());
    }

    /// Stages the response: the host Envoy used (None: Envoy answered itself) and its headers.
    pub fn respond(&mut self, upstream: Option<&str>, headers: &[(&str, &str)]) {
        match upstream {
            Some(upstream) => self.attribute("upstream.address", upstream),
            None => {
                self.attributes.remove("upstream.address");
            }
        }
        self.response_headers = to_pairs(headers);
    }

    /// A stat by name (0 if never defined or counted).
    pub fn stat(&self, name: &str) -> i64 {
        self.metrics.borrow().iter().filter(|(n, _, _)| n == name).map(|(_, _, v)| *v).sum()
    }

    pub fn stat_defined(&self, name: &str) -> bool {
        self.metrics.borrow().iter().any(|(n, _, _)| n == name)
    }

    pub fn request_header(&self, name: &str) -> Option<String> {
        header(&self.request_headers, name)
    }

    pub fn response_header(&self, name: &str) -> Option<String> {
        header(&self.response_headers, name)
    }

    pub fn response_header_values(&self, name: &str) -> Vec<String> {
        self.response_headers.iter().filter(|(n, _)| n == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned()).collect()
    }

    /// How many calls of the stream start with `prefix`.
    pub fn called(&self, prefix: &str) -> usize {
        self.calls.borrow().iter().filter(|c| c.starts_with(prefix)).count()
    }

    fn call(&self, name: &str) -> Result<(), HostError> {
        self.calls.borrow_mut().push(name.to_string());
        let failing = self.failing.iter().any(|f| name.starts_with(f));
        if failing {
            Err(HostError { call: "fake", status: 2 })
        } else {
            Ok(())
        }
    }
}

fn header(headers: &[(String, Vec<u8>)], name: &str) -> Option<String> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

impl Host for FakeHost {
    type Store = MemoryStore;

    fn store(&self) -> &MemoryStore {
        &self.store
    }

    fn now(&self) -> u64 {
        self.calls.borrow_mut().push("now".into());
        self.now.get()
    }

    fn fill_random(&self, bytes: &mut [u8]) -> Result<(), HostError> {
        if !self.random.get() {
            return Err(HostError { call: "random", status: 1 });
        }
        for byte in bytes {
            self.random_state.set(self.random_state.get().wrapping_add(1));
            *byte = self.random_state.get();
        }
        Ok(())
    }

    fn environment_variable(&self, name: &str) -> Option<String> {
        self.environment.get(name).cloned()
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<MetricId, HostError> {
        let mut metrics = self.metrics.borrow_mut();
        metrics.push((name.to_string(), kind, 0));
        Ok(MetricId(metrics.len() as u32 - 1))
    }

    fn increment_metric(&self, id: MetricId, delta: i64) {
        if let Some(metric) = self.metrics.borrow_mut().get_mut(id.0 as usize) {
            metric.2 += delta;
        }
    }
}

impl HttpStream for FakeHost {
    fn request_headers(&mut self) -> Result<Headers, HostError> {
        self.call("request_headers")?;
        Ok(Headers::from_pairs(&self.request_headers))
    }

    fn set_request_header(&mut self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.call(&format!("set_request_header:{name}"))?;
        self.request_headers.retain(|(n, _)| n != name);
        self.request_headers.push((name.to_string(), value.to_vec()));
        Ok(())
    }

    fn remove_request_header(&mut self, name: &str) -> Result<(), HostError> {
        self.call(&format!("remove_request_header:{name}"))?;
        self.request_headers.retain(|(n, _)| n != name);
        Ok(())
    }

    fn response_headers(&mut self) -> Result<Headers, HostError> {
        self.call("response_headers")?;
        Ok(Headers::from_pairs(&self.response_headers))
    }

    fn add_response_header(&mut self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.call(&format!("add_response_header:{name}"))?;
        self.response_headers.push((name.to_string(), value.to_vec()));
        Ok(())
    }

    fn set_response_header(&mut self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.call(&format!("set_response_header:{name}"))?;
        self.response_headers.retain(|(n, _)| n != name);
        self.response_headers.push((name.to_string(), value.to_vec()));
        Ok(())
    }

    fn remove_response_header(&mut self, name: &str) -> Result<(), HostError> {
        self.call(&format!("remove_response_header:{name}"))?;
        self.response_headers.retain(|(n, _)| n != name);
        Ok(())
    }

    fn attribute(&mut self, attribute: Attribute) -> Result<Option<Vec<u8>>, HostError> {
        let name = attribute_name(attribute);
        self.call(&format!("attribute:{name}"))?;
        Ok(self.attributes.get(&name).cloned())
    }

    fn reroute(&mut self) -> Result<(), HostError> {
        self.call("reroute")
    }

    fn pin(&mut self, endpoint: &Endpoint, override_header: &str) -> Result<(), HostError> {
        self.call("pin")?;
        self.pinned = Some((*endpoint, override_header.to_string()));
        Ok(())
    }

    fn record(&mut self, text: &str) -> Result<(), HostError> {
        self.call("record")?;
        self.records.push(text.to_string());
        Ok(())
    }
}
