//! The proxy-wasm serialization of a header map, as `proxy_get_header_map_pairs` returns it, and
//! `Headers`: a whole header map read with one host call, looked up by lowercase name.

/// A copy of a whole header map in the serialized form; lookups decode it in place.
pub struct Headers {
    serialized: Vec<u8>,
}

impl Headers {
    pub fn from_serialized(serialized: Vec<u8>) -> Headers {
        Headers { serialized }
    }

    pub fn from_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Headers {
        Headers { serialized: encode(pairs) }
    }

    /// From pairs walked twice (sizes, then bytes), into one allocation: the native host's path.
    pub fn from_pairs_iter<'a, I>(pairs: I) -> Headers
    where
        I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        Headers { serialized: encode_iter(pairs) }
    }

    /// Every value of header `name` (lowercase), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        decode(&self.serialized).filter(move |(key, _)| *key == name.as_bytes()).map(|(_, value)| value)
    }

    pub fn first(&self, name: &str) -> Option<&[u8]> {
        decode(&self.serialized).find(|(key, _)| *key == name.as_bytes()).map(|(_, value)| value)
    }
}

/// The serialized form of `pairs` (what a host hands over).
pub fn encode<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    encode_iter(pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
}

/// `encode`, sized first so that the bytes are written into one allocation.
fn encode_iter<'a, I>(pairs: I) -> Vec<u8>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let (count, bytes) = pairs.clone().fold((0usize, 0usize), |(n, total), (k, v)| (n + 1, total + 8 + k.len() + v.len() + 2));
    let mut out = Vec::with_capacity(4 + bytes);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Count, then (key length, value length) per pair, then each key and value followed by a NUL
/// byte; all numbers u32 little endian. Stops quietly at malformed input.
pub fn decode(bytes: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let read_u32 = |at: usize| -> Option<usize> {
        let word = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes(word.try_into().ok()?) as usize)
    };
    let count = read_u32(0).unwrap_or(0);
    let mut data_at = count.checked_mul(8).and_then(|n| n.checked_add(4));
    (0..count).map_while(move |i| {
        let sizes_at = i.checked_mul(8)?.checked_add(4)?;
        let key_len = read_u32(sizes_at)?;
        let value_len = read_u32(sizes_at.checked_add(4)?)?;
        let key_at = data_at?;
        let key_end = key_at.checked_add(key_len)?;
        let value_at = key_end.checked_add(1)?;
        let value_end = value_at.checked_add(value_len)?;
        let key = bytes.get(key_at..key_end)?;
        let value = bytes.get(value_at..value_end)?;
        data_at = value_end.checked_add(1);
        Some((key, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_pairs_including_empty_and_binary_values() {
        let pairs: [(&[u8], &[u8]); 3] = [(b":path", b"/"), (b"cookie", b"a=\xff"), (b"x-empty", b"")];
        let bytes = encode(&pairs);
        let decoded: Vec<_> = decode(&bytes).collect();
        assert_eq!(decoded, pairs);
    }

    #[test]
    fn stops_at_truncated_or_lying_input() {
        let bytes = encode(&[(b"a", b"1"), (b"b", b"2")]);
        // Everything but the final NUL is needed for the second pair.
        for cut in 0..bytes.len() - 1 {
            assert!(decode(&bytes[..cut]).count() < 2, "cut {cut}");
        }
        assert_eq!(decode(&u32::MAX.to_le_bytes()).count(), 0);
        assert_eq!(decode(&[]).count(), 0);
    }

    #[test]
    fn headers_find_every_value_by_name() {
        let headers = Headers::from_pairs(&[("cookie", "a=1"), ("x", "y"), ("cookie", "b=2")]);
        assert_eq!(headers.values("cookie").collect::<Vec<_>>(), [b"a=1", b"b=2"]);
        assert_eq!(headers.first("x"), Some(&b"y"[..]));
        assert_eq!(headers.first("X"), None, "names are lowercase");
    }
}
