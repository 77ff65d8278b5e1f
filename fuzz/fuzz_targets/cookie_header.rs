//! Cookie request headers as clients send them. Never panics; removing a cookie leaves none of that
//! name, and editing nothing changes nothing.
#![no_main]
use envoy_persistence::cookie::{self, Edit};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for name in ["AVI_COOKIE", "JSESSIONID", "a"] {
        let _ = cookie::values(data, name).count();
        if let Some(rest) = cookie::without(data, name) {
            assert_eq!(cookie::values(&rest, name).count(), 0, "a removed cookie is gone");
        }
        assert!(cookie::edit(data, name, |_| Edit::Keep).is_none());
        let _ = cookie::edit(data, name, |v| Edit::Value(v.iter().rev().copied().collect()));
    }
});
