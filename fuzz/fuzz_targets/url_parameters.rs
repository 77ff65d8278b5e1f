//! Session ids in URLs (`?JSESSIONID=`, `;jsessionid=`) and cookies, as clients send them.
#![no_main]
use envoy_persistence::profile::app_cookie;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (cookies, path) = data.split_at(data.len() / 3);
    if let Some((value, _)) = app_cookie::session_id("JSESSIONID", &[cookies], path) {
        assert!(!value.is_empty());
    }
    let _ = app_cookie::session_id("JSESSIONID", &[] as &[&[u8]], data);
});
