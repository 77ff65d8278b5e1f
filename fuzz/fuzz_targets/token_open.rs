//! Token opening: any bytes a client can put in a cookie. Never panics; whatever opens is a token
//! this keyring sealed (so it re-seals and opens to the same claims).
#![no_main]
use envoy_persistence::keyring::Keyring;
use envoy_persistence::token::{self, Purpose};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = Keyring::new(&[(1, [1; 32]), (2, [2; 32])], 2).expect("keyring");
    for purpose in [Purpose::HttpCookie, Purpose::AppCookiePrefix] {
        if let Ok(opened) = token::open(&keys, purpose, "AVI_COOKIE", data) {
            let again = token::seal(&keys, purpose, "AVI_COOKIE", &opened.claims, [9; 12]).expect("seal");
            assert_eq!(token::open(&keys, purpose, "AVI_COOKIE", again.as_bytes()).expect("reopen").claims, opened.claims);
        }
        let _ = token::looks_like_token(data);
    }
});
