//! Numbers and endpoints as text without `core::fmt`: these run on every request, and in the
//! size-optimized module the formatting machinery cost more than the rest of a request's logic
//! (a `SocketAddr` through `Display` was about 3,500 instructions).

use std::net::SocketAddr;

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = n;
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        start -= 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for &digit in digits.get(start..).unwrap_or_default() {
        out.push(char::from(digit));
    }
}

/// Appends `n` (below 100) as two digits.
pub fn push_two_digits(out: &mut String, n: u64) {
    out.push(char::from(b'0' + (n / 10 % 10) as u8));
    out.push(char::from(b'0' + (n % 10) as u8));
}

/// Appends `ip:port` exactly as `Display` writes it (IPv6 in brackets).
pub fn push_endpoint(out: &mut String, endpoint: &SocketAddr) {
    match endpoint {
        SocketAddr::V4(v4) => {
            // Written into a stack buffer, then appended once: this runs twice per request.
            let mut text = [0u8; 21];
            let mut len = 0;
            let mut put = |byte: u8| {
                if let Some(slot) = text.get_mut(len) {
                    *slot = byte;
                    len += 1;
                }
            };
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    put(b'.');
                }
                if octet >= 100 {
                    put(b'0' + octet / 100);
                }
                if octet >= 10 {
                    put(b'0' + octet / 10 % 10);
                }
                put(b'0' + octet % 10);
            }
            put(b':');
            let port = v4.port();
            let mut divisor = 10_000;
            while divisor > 1 && port < divisor {
                divisor /= 10;
            }
            while divisor > 0 {
                put(b'0' + (port / divisor % 10) as u8);
                divisor /= 10;
            }
            // Only ASCII digits, dots and a colon were written.
            out.push_str(std::str::from_utf8(text.get(..len).unwrap_or_default()).unwrap_or_default());
        }
        // IPv6 text has compression rules worth not repeating; it is the rarer case.
        SocketAddr::V6(_) => {
            use std::fmt::Write;
            let _ = write!(out, "{endpoint}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_match_display() {
        for n in [0, 1, 9, 10, 99, 100, 255, 65_535, 1_800_000_000, u64::MAX] {
            let mut out = String::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        let mut out = String::new();
        push_two_digits(&mut out, 7);
        push_two_digits(&mut out, 59);
        assert_eq!(out, "0759");
    }

    #[test]
    fn endpoints_match_display() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut endpoints: Vec<SocketAddr> = ["0.0.0.0:0", "255.255.255.255:65535", "127.0.0.1:8080", "[::1]:80", "[2001:db8::7]:443", "[::ffff:10.0.0.1]:1"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        for _ in 0..1000 {
            let bits = next();
            endpoints.push(SocketAddr::from(((bits as u32).to_be_bytes(), (bits >> 32) as u16)));
        }
        for endpoint in endpoints {
            let mut out = String::from("x");
            push_endpoint(&mut out, &endpoint);
            assert_eq!(out, format!("x{endpoint}"));
        }
    }
}
