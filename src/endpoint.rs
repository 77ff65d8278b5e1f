//! Upstream endpoints: the `ip:port` strings Envoy speaks (`127.0.0.1:8080`, `[::1]:8080`), the
//! value of the override header, and the compact binary form sealed inside tokens.

use base64::Engine;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub type Endpoint = SocketAddr;

/// Parses Envoy's `ip:port` form (IPv6 in brackets). Scope ids are refused: Envoy hosts never
/// carry them and the override header must round-trip exactly.
pub fn parse(text: &str) -> Option<Endpoint> {
    let endpoint: SocketAddr = text.parse().ok()?;
    match endpoint {
        SocketAddr::V6(v6) if v6.scope_id() != 0 || v6.flowinfo() != 0 => None,
        _ => Some(endpoint),
    }
}

/// The value Envoy's header-based stateful session expects: standard base64 of `ip:port`.
pub fn override_header_value(endpoint: &Endpoint) -> String {
    let mut text = String::with_capacity(48);
    crate::text::push_endpoint(&mut text, endpoint);
    base64::engine::general_purpose::STANDARD.encode(text)
}

pub(crate) const FAMILY_V4: u8 = 4;
pub(crate) const FAMILY_V6: u8 = 6;

/// Binary form: family byte, address bytes, port (big endian). 7 bytes for IPv4, 19 for IPv6.
pub fn encode(endpoint: &Endpoint, out: &mut Vec<u8>) {
    match endpoint.ip() {
        IpAddr::V4(ip) => {
            out.push(FAMILY_V4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(FAMILY_V6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&endpoint.port().to_be_bytes());
}

/// Reads the binary form from the start of `bytes`; returns the endpoint and the bytes after it.
pub fn decode(bytes: &[u8]) -> Option<(Endpoint, &[u8])> {
    let (&family, rest) = bytes.split_first()?;
    decode_family(family, rest)
}

/// The binary form after its family byte.
pub fn decode_family(family: u8, rest: &[u8]) -> Option<(Endpoint, &[u8])> {
    let (ip, rest) = match family {
        FAMILY_V4 => {
            let (octets, rest) = rest.split_first_chunk::<4>()?;
            (IpAddr::V4(Ipv4Addr::from(*octets)), rest)
        }
        FAMILY_V6 => {
            let (octets, rest) = rest.split_first_chunk::<16>()?;
            (IpAddr::V6(Ipv6Addr::from(*octets)), rest)
        }
        _ => return None,
    };
    let (port, rest) = rest.split_first_chunk::<2>()?;
    Some((SocketAddr::new(ip, u16::from_be_bytes(*port)), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_envoy_forms_and_formats_them_back() {
        for text in ["127.0.0.1:8080", "[::1]:9000", "[2001:db8::7]:443", "10.0.0.7:1"] {
            let endpoint = parse(text).unwrap();
            assert_eq!(endpoint.to_string(), text);
        }
    }

    #[test]
    fn refuses_what_is_not_an_envoy_host() {
        for text in ["", "127.0.0.1", "localhost:80", "[::1%2]:80", "1.2.3.4:99999", "::1:80", " 1.2.3.4:80"] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn override_value_is_standard_base64_of_ip_port() {
        assert_eq!(override_header_value(&parse("127.0.0.1:8080").unwrap()), "MTI3LjAuMC4xOjgwODA=");
        assert_eq!(override_header_value(&parse("[::1]:80").unwrap()), "Wzo6MV06ODA=");
    }

    #[test]
    fn binary_form_round_trips_and_rejects_truncation() {
        for text in ["127.0.0.1:8080", "[2001:db8::7]:443"] {
            let endpoint = parse(text).unwrap();
            let mut bytes = Vec::new();
            encode(&endpoint, &mut bytes);
            bytes.push(0xAA);
            let (decoded, rest) = decode(&bytes).unwrap();
            assert_eq!(decoded, endpoint);
            assert_eq!(rest, &[0xAA]);
            for cut in 0..bytes.len() - 1 {
                assert!(decode(&bytes[..cut]).is_none(), "{text} cut at {cut}");
            }
        }
        assert!(decode(&[5, 1, 2, 3, 4, 0, 80]).is_none());
    }
}
