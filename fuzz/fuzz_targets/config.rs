//! Plugin configurations: any bytes. Never panics; a rejected configuration always says why, and an
//! accepted one has a usable keyring and only valid profile references.
#![no_main]
use envoy_persistence::config::Config;
use envoy_persistence::keyring::Keyring;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Config::parse(data) {
        Ok(config) => {
            if let Some(primary) = config.primary_key_id {
                assert!(Keyring::from_secrets(&config.keys, primary).is_some());
            }
            assert!(config.default_profile.is_none_or(|i| i < config.profiles.len()));
            assert!(config.routes.iter().all(|(_, i)| *i < config.profiles.len()));
        }
        Err(errors) => assert!(!errors.is_empty()),
    }
});
