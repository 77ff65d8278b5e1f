//! Set-Cookie headers as backends send them (app cookie learning, prefix sealing).
#![no_main]
use envoy_persistence::cookie;
use envoy_persistence::endpoint;
use envoy_persistence::keyring::Keyring;
use envoy_persistence::profile::app_cookie;
use envoy_persistence::server::Server;
use envoy_persistence::token::Tokens;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(parsed) = cookie::parse_set_cookie(data) {
        let _ = parsed.deletes();
        assert!(!parsed.name.is_empty());
    }
    let _ = app_cookie::issued("JSESSIONID", &[data]);
    let keys = Tokens::new(Keyring::new(&[(1, [1; 32])], 1).expect("keyring"));
    let upstream = Server::host(endpoint::parse("10.0.0.1:8080").expect("endpoint"));
    if let Some(sealed) = app_cookie::seal_set_cookie("JSESSIONID", &keys, data, upstream, 1_800_000_000, [3; 12]) {
        // What the filter sends the client opens to the backend it names, with the backend's value.
        let pair = sealed.split(|&b| b == b';').next().unwrap_or_default().to_vec();
        let (found, _) = app_cookie::read_prefixed("JSESSIONID", &keys, &[pair]);
        match found {
            app_cookie::Prefixed::Valid { claims, .. } => assert_eq!(claims.server, upstream),
            other => panic!("sealed cookie did not open: {other:?}"),
        }
    }
});
