//! What the native build takes from Envoy across its FFI, as the module decodes it: header maps
//! (pairs of byte strings, copied into `Headers` and looked up by name), attribute strings
//! (`source.address`, `upstream.address`: endpoints), the X-Forwarded-For peer, and the per-route
//! settings JSON. Never panics; every header reads back as it was given.
#![no_main]
use envoy_persistence::client_address;
use envoy_persistence::endpoint;
use envoy_persistence::header_pairs::Headers;
use envoy_persistence::route_settings::RouteSettings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Pairs: the input split at 0xff bytes into key, value, key, value...
    let parts: Vec<&[u8]> = data.split(|b| *b == 0xff).collect();
    let pairs: Vec<(&[u8], &[u8])> = parts.chunks(2).map(|pair| (pair[0], pair.get(1).copied().unwrap_or_default())).collect();
    let headers = Headers::from_pairs_iter(pairs.iter().copied());
    for (key, value) in &pairs {
        let Ok(name) = std::str::from_utf8(key) else { continue };
        let values: Vec<&[u8]> = headers.values(name).collect();
        assert!(values.contains(value), "a header reads back");
        let expected: Vec<&[u8]> = pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| *v).collect();
        assert_eq!(values, expected, "every value, in order");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(parsed) = endpoint::parse(text) {
            assert_eq!(endpoint::parse(&parsed.to_string()), Some(parsed));
        }
    }
    let _ = client_address::peer(data);
    let _ = RouteSettings::parse(data);
});
