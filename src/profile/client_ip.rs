//! Client IP persistence (Avi "Client IP Address"): the client's address (or its subnet) is
//! recorded in the shared table with the server it went to. The entry lives while the client has
//! a connection open and for `timeout` after its last one closed (connections are counted by the
//! same module running as a network filter); without connection events, for `timeout` after the
//! last request.

use super::{parse_table_timeout, TableTimeout};
use crate::config::reader::{Errors, Field};
use crate::table::{hash_key, Entry, Record};
use std::net::IpAddr;

/// Room for about a million clients with next to no early evictions: buckets hold 32 entries, and a
/// million clients fill them to about 16 on average.
pub const DEFAULT_MAX_ENTRIES: u32 = 1 << 21;
/// The connection table has a fixed size (so every filter instance agrees on its layout without
/// configuration): clients beyond it fall back to "timeout since the last request".
pub const CONNECTION_TABLE_ENTRIES: u32 = 1 << 21;
const MAX_MAX_ENTRIES: u64 = 1 << 24;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Seconds; 0 disables persistence (Avi: "load balanced to a new server immediately").
    pub timeout: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub max_entries: u32,
}

impl Default for Settings {
    /// Avi's System-Persistence-Client-IP: 5 minutes, one entry per address.
    fn default() -> Settings {
        Settings { timeout: 5 * 60, ipv4_prefix: 32, ipv6_prefix: 128, max_entries: DEFAULT_MAX_ENTRIES }
    }
}

impl Settings {
    pub fn parse(section: Option<Field>, errors: &mut Errors) -> Settings {
        let mut settings = Settings::default();
        let Some(mut object) = section.and_then(|field| field.object(errors)) else { return settings };
        let timeout = parse_table_timeout(&mut object, errors, TableTimeout { default_minutes: 5, min_minutes: 0, max_minutes: 720 });
        settings.timeout = timeout;
        if let Some(prefix) = object.field("ipv4_prefix").and_then(|f| f.integer(1, 32, errors)) {
            settings.ipv4_prefix = prefix as u8;
        }
        if let Some(prefix) = object.field("ipv6_prefix").and_then(|f| f.integer(1, 128, errors)) {
            settings.ipv6_prefix = prefix as u8;
        }
        if let Some(max) = object.field("max_entries").and_then(|f| f.integer(1, MAX_MAX_ENTRIES, errors)) {
            settings.max_entries = max as u32;
        }
        object.finish(errors, |_| None);
        settings
    }

    /// The (IPv4, IPv6) prefix lengths this profile groups clients by.
    pub fn granularity(&self) -> Granularity {
        Granularity { ipv4: self.ipv4_prefix, ipv6: self.ipv6_prefix }
    }
}

/// How client addresses are grouped: all addresses sharing the first `ipv4`/`ipv6` bits are one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Granularity {
    pub ipv4: u8,
    pub ipv6: u8,
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, from dual-stack listeners) are the IPv4 client.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The table key of a client address: its family, prefix length and masked address bits.
pub fn client_key(ip: IpAddr, granularity: Granularity) -> u64 {
    match normalize(ip) {
        IpAddr::V4(v4) => {
            let prefix = granularity.ipv4.min(32);
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            hash_key(&[b"ip4", &[prefix], &(u32::from(v4) & mask).to_be_bytes()])
        }
        IpAddr::V6(v6) => {
            let prefix = granularity.ipv6.min(128);
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            hash_key(&[b"ip6", &[prefix], &(u128::from(v6) & mask).to_be_bytes()])
        }
    }
}

/// Open connections of one client, as counted by the network filter; `Entry::touched` is the
/// time of the last open or close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connections {
    pub open: u16,
}

impl Record for Connections {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.open.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Option<(Self, &[u8])> {
        let (open, rest) = bytes.split_first_chunk::<2>()?;
        Some((Connections { open: u16::from_le_bytes(*open) }, rest))
    }
}

/// A client's connections keep its persistence alive while one is open, and for `timeout` after
/// the last one closed.
pub fn connections_keep_alive(connections: Option<&Entry<Connections>>, timeout: u32, now: u32) -> bool {
    connections.is_some_and(|c| c.record.open > 0 || now < c.touched.saturating_add(timeout))
}

pub fn connection_opened(current: Option<&Entry<Connections>>, now: u32) -> Entry<Connections> {
    let open = current.map_or(0, |c| c.record.open).saturating_add(1);
    Entry { touched: now, record: Connections { open } }
}

pub fn connection_closed(current: Option<&Entry<Connections>>, now: u32) -> Entry<Connections> {
    let open = current.map_or(0, |c| c.record.open).saturating_sub(1);
    Entry { touched: now, record: Connections { open } }
}

/// What the connection-counting network filter must track, published in shared data by every
/// HTTP plugin with client IP profiles and merged (union of groupings, longest timeout), so the
/// network filter needs no configuration of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tracking {
    pub granularities: Vec<Granularity>,
    /// How long closed-connection records are kept (the longest client IP timeout).
    pub max_timeout: u32,
}

const TRACKING_FORMAT: u8 = 1;

impl Tracking {
    pub fn merge(&mut self, other: &Tracking) {
        for granularity in &other.granularities {
            if !self.granularities.contains(granularity) {
                self.granularities.push(*granularity);
            }
        }
        self.max_timeout = self.max_timeout.max(other.max_timeout);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![TRACKING_FORMAT];
        out.extend_from_slice(&self.max_timeout.to_le_bytes());
        for g in &self.granularities {
            out.extend_from_slice(&[g.ipv4, g.ipv6]);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Tracking> {
        let (&TRACKING_FORMAT, rest) = bytes.split_first()? else { return None };
        let (timeout, rest) = rest.split_first_chunk::<4>()?;
        let granularities = rest.chunks_exact(2).filter_map(|g| match g {
            [ipv4, ipv6] => Some(Granularity { ipv4: (*ipv4).clamp(1, 32), ipv6: (*ipv6).clamp(1, 128) }),
            _ => None,
        });
        let granularities = granularities.collect();
        Some(Tracking { granularities, max_timeout: u32::from_le_bytes(*timeout) })
    }

    /// Until an HTTP plugin has said otherwise: exact addresses, the default timeout.
    pub fn fallback() -> Tracking {
        Tracking { granularities: vec![Settings::default().granularity()], max_timeout: Settings::default().timeout }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::reader::parse_section;
    use serde_json::json;

    fn parse(section: serde_json::Value) -> Result<Settings, Vec<String>> {
        parse_section("client_ip", &section, |field, errors| Some(Settings::parse(field, errors)))
    }

    #[test]
    fn reads_settings_with_avi_defaults() {
        assert_eq!(parse(json!({})).unwrap(), Settings::default());
        let settings = parse(json!({"timeout_minutes": 0, "ipv4_prefix": 24, "ipv6_prefix": 64, "max_entries": 1000})).unwrap();
        assert_eq!(settings, Settings { timeout: 0, ipv4_prefix: 24, ipv6_prefix: 64, max_entries: 1000 });
        assert_eq!(parse(json!({"timeout_seconds": 2})).unwrap().timeout, 2);
    }

    #[test]
    fn rejects_bad_settings() {
        let cases = [
            (json!({"timeout_minutes": 721}), "client_ip.timeout_minutes: must be an integer between 0 and 720, got number 721"),
            (json!({"timeout_minutes": 1, "timeout_seconds": 1}), "client_ip.timeout_seconds: give timeout_minutes or timeout_seconds, not both"),
            (json!({"ipv4_prefix": 0}), "client_ip.ipv4_prefix: must be an integer between 1 and 32, got number 0"),
            (json!({"ipv6_prefix": 129}), "client_ip.ipv6_prefix: must be an integer between 1 and 128, got number 129"),
            (json!({"max_entries": 0}), "client_ip.max_entries: must be an integer between 1 and 16777216, got number 0"),
        ];
        for (section, expected) in cases {
            assert_eq!(parse(section.clone()), Err(vec![expected.to_string()]), "{section}");
        }
    }

    #[test]
    fn keys_group_addresses_by_prefix() {
        let exact = Granularity { ipv4: 32, ipv6: 128 };
        let subnet = Granularity { ipv4: 24, ipv6: 64 };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_ne!(client_key(ip("10.1.2.3"), exact), client_key(ip("10.1.2.4"), exact));
        assert_eq!(client_key(ip("10.1.2.3"), subnet), client_key(ip("10.1.2.200"), subnet));
        assert_ne!(client_key(ip("10.1.2.3"), subnet), client_key(ip("10.1.3.3"), subnet));
        assert_ne!(client_key(ip("10.1.2.3"), exact), client_key(ip("10.1.2.3"), subnet), "prefix is part of the key");
        assert_eq!(client_key(ip("2001:db8::1"), subnet), client_key(ip("2001:db8::ffff:1"), subnet));
        assert_ne!(client_key(ip("2001:db8::1"), exact), client_key(ip("2001:db8::2"), exact));
        assert_eq!(client_key(ip("::ffff:10.1.2.3"), exact), client_key(ip("10.1.2.3"), exact), "IPv4-mapped is IPv4");
        assert_ne!(client_key(ip("::a01:203"), exact), client_key(ip("10.1.2.3"), exact), "IPv4-compatible is not mapped");
        assert_eq!(client_key(ip("10.9.9.9"), Granularity { ipv4: 1, ipv6: 1 }), client_key(ip("127.0.0.1"), Granularity { ipv4: 1, ipv6: 1 }));
    }

    #[test]
    fn tracking_layouts_merge_and_round_trip() {
        let mut a = Tracking { granularities: vec![Granularity { ipv4: 32, ipv6: 128 }], max_timeout: 300 };
        let b = Tracking { granularities: vec![Granularity { ipv4: 24, ipv6: 64 }, Granularity { ipv4: 32, ipv6: 128 }], max_timeout: 60 };
        a.merge(&b);
        assert_eq!(a.granularities, [Granularity { ipv4: 32, ipv6: 128 }, Granularity { ipv4: 24, ipv6: 64 }]);
        assert_eq!(a.max_timeout, 300);
        assert_eq!(Tracking::decode(&a.encode()), Some(a));
        assert_eq!(Tracking::decode(&[]), None);
        assert_eq!(Tracking::decode(&[9, 0, 0, 0, 0]), None);
    }

    #[test]
    fn connections_keep_the_entry_alive_until_timeout_after_the_last_close() {
        let opened = connection_opened(None, 100);
        let twice = connection_opened(Some(&opened), 110);
        assert_eq!(twice.record.open, 2);
        assert!(connections_keep_alive(Some(&twice), 60, 10_000), "open connections never time out");
        let one_closed = connection_closed(Some(&twice), 200);
        assert!(connections_keep_alive(Some(&one_closed), 60, 10_000));
        let all_closed = connection_closed(Some(&one_closed), 300);
        assert_eq!(all_closed.record.open, 0);
        assert!(connections_keep_alive(Some(&all_closed), 60, 359));
        assert!(!connections_keep_alive(Some(&all_closed), 60, 360));
        assert_eq!(connection_closed(None, 5).record.open, 0, "a close without a counted open does not underflow");
        assert!(!connections_keep_alive(None, 60, 0));
    }
}
