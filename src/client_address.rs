//! Which address identifies a client, and the table key it gives, for client IP keys
//! (`client_ip` profiles, the `tls` fallback, the connection counter). Envoy hands the filter one address, `source.address`: the connection's peer, or an
//! address the HTTP connection manager took from `X-Forwarded-For` (`use_remote_address: false`,
//! or `xff_num_trusted_hops`). Envoy 1.40 gives such an address port 0, which no TCP peer has:
//! that is how the filter tells the two apart. It has no property for the connection's peer once
//! Envoy replaced it; `set_filter_state` with `%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%` provides it.
//!
//! With `use_remote_address: false` and no trusted hops, Envoy takes the *last* X-Forwarded-For
//! entry, which the client writes itself: a key built from it lets any client choose the server of
//! any other. That combination is the one signature the filter can see (the address came from a
//! header and equals the last entry; with trusted hops Envoy appends the peer or skips entries,
//! so the address is an earlier one), and it refuses such a key.

use crate::table::hash_key;
use std::net::{IpAddr, SocketAddr};

/// Where `set_filter_state` (`object_key: persistence.peer`) leaves the connection's peer address.
pub const PEER_FILTER_STATE: &str = "persistence.peer";

/// The top-level `client_address` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Envoy's client address, which follows `use_remote_address` and `xff_num_trusted_hops`;
    /// refused when the client could have written it (the last X-Forwarded-For entry).
    Envoy,
    /// The connection's peer; forwarded addresses are never used.
    Peer,
}

impl Source {
    pub const CHOICES: [(&'static str, Source); 2] = [("envoy", Source::Envoy), ("peer", Source::Peer)];

    pub fn name(self) -> &'static str {
        match self {
            Source::Envoy => "envoy",
            Source::Peer => "peer",
        }
    }
}

/// What the filter makes of Envoy's client address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Key the client on this address.
    Use(IpAddr),
    /// Envoy took the address from the last X-Forwarded-For entry, which the client writes.
    Untrusted,
    /// The address came from a header and the setting asks for the connection's peer.
    NeedPeer,
}

/// Judges `source` (Envoy's `source.address`) given every `X-Forwarded-For` value of the request.
pub fn judge<'a>(setting: Source, source: SocketAddr, forwarded_for: impl IntoIterator<Item = &'a [u8]>) -> Verdict {
    let from_header = source.port() == 0;
    match setting {
        _ if !from_header => Verdict::Use(source.ip()),
        Source::Peer => Verdict::NeedPeer,
        // With trusted hops the last entry is the peer Envoy appended, a different address. Equal,
        // unreadable (Envoy also reads `fe80::1%eth0`, which Rust does not) or absent: the
        // client may have written the address.
        Source::Envoy => match last_forwarded(forwarded_for) {
            Some(last) if last.to_canonical() != source.ip().to_canonical() => Verdict::Use(source.ip()),
            _ => Verdict::Untrusted,
        },
    }
}

/// The last address of X-Forwarded-For (Envoy joins repeated headers with commas).
fn last_forwarded<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<IpAddr> {
    let last_value = values.into_iter().last()?;
    let last_entry = last_value.rsplit(|&b| b == b',').next()?;
    std::str::from_utf8(last_entry).ok()?.trim().parse().ok()
}

/// The peer address `set_filter_state` wrote ("ip:port"; "-" or anything else unparsable: none).
pub fn peer(value: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(value).ok()?.parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// How client addresses are grouped: all addresses sharing the first `ipv4`/`ipv6` bits are one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Granularity {
    pub ipv4: u8,
    pub ipv6: u8,
}

impl Granularity {
    /// One client per address (Avi's default).
    pub const EXACT: Granularity = Granularity { ipv4: 32, ipv6: 128 };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Each row is what Envoy 1.40 gave for `curl --interface 127.0.0.9 -H 'x-forwarded-for: ...'`
    /// (source.address as %DOWNSTREAM_REMOTE_ADDRESS%, and the X-Forwarded-For the filter sees).
    #[test]
    fn judges_what_envoy_hands_over() {
        let cases: [(&str, &str, Option<&str>, Verdict); 8] = [
            // use_remote_address: false, no trusted hops: the last entry is the client's own word.
            ("false/0", "127.0.1.30:0", Some("127.0.1.30"), Verdict::Untrusted),
            ("false/0", "127.0.1.30:0", Some("10.1.1.1, 127.0.1.30"), Verdict::Untrusted),
            ("false/0 no header", "127.0.0.9:54080", None, Verdict::Use(ip("127.0.0.9"))),
            // use_remote_address: true: Envoy appends the peer; with no trusted hops it uses the peer.
            ("true/0", "127.0.0.9:54092", Some("127.0.1.30,127.0.0.9"), Verdict::Use(ip("127.0.0.9"))),
            // One trusted hop: the entry before the appended peer.
            ("true/1", "127.0.1.30:0", Some("127.0.1.30,127.0.0.9"), Verdict::Use(ip("127.0.1.30"))),
            ("true/1", "127.0.1.30:0", Some("10.1.1.1, 127.0.1.30,127.0.0.9"), Verdict::Use(ip("127.0.1.30"))),
            // use_remote_address: false with one trusted hop: the second to last entry.
            ("false/1", "10.1.1.1:0", Some("10.1.1.1, 127.0.1.30"), Verdict::Use(ip("10.1.1.1"))),
            ("false/1 one entry", "127.0.0.9:54126", Some("127.0.1.30"), Verdict::Use(ip("127.0.0.9"))),
        ];
        for (hcm, source, xff, expected) in cases {
            let values: Vec<&[u8]> = xff.iter().map(|v| v.as_bytes()).collect();
            assert_eq!(judge(Source::Envoy, addr(source), values), expected, "{hcm} {source} {xff:?}");
        }
    }

    #[test]
    fn the_peer_setting_never_uses_a_forwarded_address() {
        assert_eq!(judge(Source::Peer, addr("127.0.1.30:0"), [&b"127.0.1.30,127.0.0.9"[..]]), Verdict::NeedPeer);
        assert_eq!(judge(Source::Peer, addr("10.1.1.1:0"), [&b"10.1.1.1, 127.0.1.30"[..]]), Verdict::NeedPeer);
        assert_eq!(judge(Source::Peer, addr("127.0.0.9:5000"), [&b"127.0.1.30"[..]]), Verdict::Use(ip("127.0.0.9")));
    }

    #[test]
    fn reads_the_last_entry_of_repeated_and_odd_headers() {
        assert_eq!(last_forwarded([&b"1.1.1.1"[..], &b"2.2.2.2, 3.3.3.3 "[..]]), Some(ip("3.3.3.3")));
        assert_eq!(last_forwarded([&b" ::1 "[..]]), Some(ip("::1")));
        assert_eq!(last_forwarded([&b"1.1.1.1,"[..]]), None);
        assert_eq!(last_forwarded([&b"unknown"[..]]), None);
        assert_eq!(last_forwarded([&b"\xff\xfe"[..]]), None);
        assert_eq!(last_forwarded(std::iter::empty()), None);
        let v6 = judge(Source::Envoy, addr("[2001:db8::1]:0"), [&b"2001:db8::1"[..]]);
        assert_eq!(v6, Verdict::Untrusted);
        // Envoy read these last entries; the filter cannot, so it cannot show they were not used.
        assert_eq!(judge(Source::Envoy, addr("[fe80::1%4]:0"), [&b"fe80::1%eth0"[..]]), Verdict::Untrusted);
        assert_eq!(judge(Source::Envoy, addr("[::ffff:127.0.1.30]:0"), [&b"127.0.1.30"[..]]), Verdict::Untrusted);
        // A header-derived address with no X-Forwarded-For (another original-IP detection).
        assert_eq!(judge(Source::Envoy, addr("10.0.0.1:0"), std::iter::empty()), Verdict::Untrusted);
    }

    #[test]
    fn reads_the_peer_from_filter_state() {
        assert_eq!(peer(b"127.0.0.9:54070"), Some(ip("127.0.0.9")));
        assert_eq!(peer(b"[::1]:443"), Some(ip("::1")));
        assert_eq!(peer(b"-"), None);
        assert_eq!(peer(b""), None);
        assert_eq!(peer(b"\xff"), None);
    }

    #[test]
    fn keys_group_addresses_by_prefix() {
        let exact = Granularity::EXACT;
        let subnet = Granularity { ipv4: 24, ipv6: 64 };
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
}
