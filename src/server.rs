//! What a persistence remembers about a client: the host it sticks to and, where the
//! configuration steers clusters (`cluster_header`, for canary and blue/green weights), the
//! cluster the route sent it to. Sealed inside tokens and stored in table entries.
//!
//! Binary form: the endpoint's (`crate::endpoint`), with the family byte's high bit set when a
//! cluster name follows as `len(1) | bytes`. Records written before clusters existed decode as
//! they always did.

use crate::endpoint::{self, Endpoint};
use std::sync::Mutex;

/// A cluster name, interned: a `Server` stays small and `Copy` (tables decode entries by the
/// dozen). Each distinct name is kept once for the life of the process; a route has a handful of
/// clusters, and `MAX_NAMES` bounds what a damaged or foreign record could add.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ClusterName(&'static str);

static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

impl ClusterName {
    /// Longer names are not recorded (an Istio subset cluster of the longest legal names fits).
    pub const MAX_LEN: usize = 255;
    /// Distinct names a process records at most; later ones are not recorded.
    pub const MAX_NAMES: usize = 1024;

    /// None when empty, longer than `MAX_LEN`, not text that can be a header value, or new once
    /// `MAX_NAMES` are known.
    pub fn new(name: &[u8]) -> Option<ClusterName> {
        if name.is_empty() || name.len() > Self::MAX_LEN || !name.iter().all(|b| (0x21..0x7f).contains(b)) {
            return None;
        }
        let name = std::str::from_utf8(name).ok()?;
        let mut names = NAMES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        intern(&mut names, name, Self::MAX_NAMES).map(ClusterName)
    }

    pub fn as_bytes(&self) -> &'static [u8] {
        self.0.as_bytes()
    }

    /// Printable ASCII by construction.
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

fn intern(names: &mut Vec<&'static str>, name: &str, max: usize) -> Option<&'static str> {
    if let Some(known) = names.iter().find(|known| **known == name) {
        return Some(known);
    }
    if names.len() >= max {
        return None;
    }
    let interned: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.push(interned);
    Some(interned)
}

impl std::fmt::Debug for ClusterName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Server {
    pub endpoint: Endpoint,
    pub cluster: Option<ClusterName>,
}

impl Server {
    /// A host without a recorded cluster.
    pub fn host(endpoint: Endpoint) -> Server {
        Server { endpoint, cluster: None }
    }
}

const WITH_CLUSTER: u8 = 0x80;

pub fn encode(server: &Server, out: &mut Vec<u8>) {
    let start = out.len();
    endpoint::encode(&server.endpoint, out);
    if let Some(cluster) = &server.cluster {
        if let Some(family) = out.get_mut(start) {
            *family |= WITH_CLUSTER;
        }
        out.push(cluster.0.len() as u8);
        out.extend_from_slice(cluster.as_bytes());
    }
}

/// Reads the binary form from the start of `bytes`; returns the server and the bytes after it.
pub fn decode(bytes: &[u8]) -> Option<(Server, &[u8])> {
    let (&family, rest) = bytes.split_first()?;
    let (endpoint, after) = endpoint::decode_family(family & !WITH_CLUSTER, rest)?;
    if family & WITH_CLUSTER == 0 {
        return Some((Server::host(endpoint), after));
    }
    let (&len, after) = after.split_first()?;
    let (name, after) = after.split_at_checked(usize::from(len))?;
    Some((Server { endpoint, cluster: Some(ClusterName::new(name)?) }, after))
}

/// What follows the server encoded at the start of `bytes` (a table lookup passes over it).
pub fn skip(bytes: &[u8]) -> Option<&[u8]> {
    let (&family, rest) = bytes.split_first()?;
    let address = match family & !WITH_CLUSTER {
        endpoint::FAMILY_V4 => 4 + 2,
        endpoint::FAMILY_V6 => 16 + 2,
        _ => return None,
    };
    let rest = rest.get(address..)?;
    if family & WITH_CLUSTER == 0 {
        return Some(rest);
    }
    let (&len, rest) = rest.split_first()?;
    rest.get(usize::from(len)..)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(text: &str, cluster: Option<&str>) -> Server {
        Server { endpoint: endpoint::parse(text).unwrap(), cluster: cluster.map(|c| ClusterName::new(c.as_bytes()).unwrap()) }
    }

    #[test]
    fn skip_passes_over_exactly_what_decode_reads() {
        for s in [server("10.0.0.1:80", None), server("[2001:db8::1]:8443", None), server("10.0.0.1:80", Some("app-v2"))] {
            let mut bytes = Vec::new();
            encode(&s, &mut bytes);
            bytes.extend_from_slice(b"next");
            assert_eq!(skip(&bytes), decode(&bytes).map(|(_, rest)| rest));
            assert_eq!(skip(&bytes), Some(&b"next"[..]));
            for cut in 0..bytes.len() - 4 {
                assert_eq!(skip(&bytes[..cut]), None, "cut {cut}");
            }
        }
        assert_eq!(skip(&[9, 1, 2, 3, 4, 5, 6]), None, "unknown family");
    }

    #[test]
    fn round_trips_with_and_without_a_cluster() {
        for s in [
            server("10.0.0.1:80", None),
            server("[2001:db8::1]:8443", None),
            server("10.0.0.1:80", Some("app-v2")),
            server("[::1]:9", Some("outbound|8080|v2|reviews.default.svc.cluster.local")),
        ] {
            let mut bytes = Vec::new();
            encode(&s, &mut bytes);
            bytes.push(0xAA);
            assert_eq!(decode(&bytes), Some((s, &[0xAA][..])));
        }
    }

    #[test]
    fn plain_endpoints_decode_as_servers_without_cluster() {
        let mut bytes = Vec::new();
        endpoint::encode(&endpoint::parse("10.0.0.1:80").unwrap(), &mut bytes);
        assert_eq!(decode(&bytes), Some((server("10.0.0.1:80", None), &[][..])));
    }

    #[test]
    fn refuses_truncated_or_unprintable_clusters() {
        let mut bytes = Vec::new();
        encode(&server("10.0.0.1:80", Some("app")), &mut bytes);
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "{cut}");
        }
        let mut zero = bytes.clone();
        let last = zero.len() - 1;
        zero[last] = 0;
        assert_eq!(decode(&zero), None);
        let mut empty = Vec::new();
        endpoint::encode(&endpoint::parse("10.0.0.1:80").unwrap(), &mut empty);
        empty[0] |= WITH_CLUSTER;
        empty.push(0);
        assert_eq!(decode(&empty), None);
    }

    #[test]
    fn each_name_is_kept_once_and_the_number_of_names_is_bounded() {
        let mut names = Vec::new();
        let a = intern(&mut names, "a", 2).unwrap();
        assert!(std::ptr::eq(a, intern(&mut names, "a", 2).unwrap()));
        assert_eq!(intern(&mut names, "b", 2), Some("b"));
        assert_eq!(intern(&mut names, "c", 2), None);
        assert_eq!(intern(&mut names, "b", 2), Some("b"), "known names still resolve");
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn cluster_names_are_bounded_printable_text() {
        assert!(ClusterName::new(b"").is_none());
        assert!(ClusterName::new(&[b'a'; 256]).is_none());
        assert_eq!(ClusterName::new(&[b'a'; 255]).unwrap().as_bytes().len(), 255);
        assert!(ClusterName::new(b"a b").is_none());
        assert!(ClusterName::new(b"a\nb").is_none());
        assert_eq!(ClusterName::new(b"outbound|80|v1|x").unwrap().as_str(), "outbound|80|v1|x");
    }
}
