//! The keys that seal and open tokens: looked up by the one-byte id carried in every token, with one
//! primary key for new tokens. Ciphers are built once (at configure time), never per request, and
//! the keyring never changes afterwards. Secrets never appear in `Debug` output.

use crate::table::{self, Store, StoreError};
use aes_gcm::{Aes256Gcm, KeyInit};
use std::fmt;

pub const KEY_LEN: usize = 32;
/// Id of the key the filter generates for itself when none is configured (configured ids are 1-255).
pub const GENERATED_KEY_ID: u8 = 0;

/// A key's raw bytes, as configured. Printed as `Secret(..)`; overwritten when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub [u8; KEY_LEN]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.fill(0);
        // Keeps the compiler from dropping the overwrite as a dead store (best effort).
        std::hint::black_box(&self.0);
    }
}

pub struct Keyring {
    keys: Vec<(u8, Aes256Gcm)>,
    primary: u8,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).field("primary", &self.primary).finish()
    }
}

impl Keyring {
    /// `keys` must be non-empty with unique ids and contain `primary` (configuration validates this);
    /// returns None otherwise.
    pub fn new(keys: &[(u8, [u8; KEY_LEN])], primary: u8) -> Option<Keyring> {
        Keyring::build(keys.iter().map(|(id, secret)| (*id, secret)), primary)
    }

    /// The keyring of configured secrets (the raw bytes stay with the caller, to be dropped).
    pub fn from_secrets(keys: &[(u8, Secret)], primary: u8) -> Option<Keyring> {
        Keyring::build(keys.iter().map(|(id, secret)| (*id, &secret.0)), primary)
    }

    fn build<'a>(keys: impl Iterator<Item = (u8, &'a [u8; KEY_LEN])>, primary: u8) -> Option<Keyring> {
        let mut ring: Vec<(u8, Aes256Gcm)> = Vec::new();
        for (id, secret) in keys {
            if ring.iter().any(|(seen, _)| *seen == id) {
                return None;
            }
            ring.push((id, Aes256Gcm::new(secret.into())));
        }
        ring.iter().any(|(id, _)| *id == primary).then_some(Keyring { keys: ring, primary })
    }

    pub fn primary_id(&self) -> u8 {
        self.primary
    }

    pub fn primary(&self) -> Option<&Aes256Gcm> {
        self.get(self.primary)
    }

    pub fn get(&self, id: u8) -> Option<&Aes256Gcm> {
        self.keys.iter().find(|(key_id, _)| *key_id == id).map(|(_, cipher)| cipher)
    }
}

/// Why no generated key could be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeneratedKeyError {
    NoRandomness,
    /// The shared store failed (status).
    Store(u32),
    /// What the store holds under the key's name is not a key.
    Damaged,
}

impl fmt::Display for GeneratedKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GeneratedKeyError::NoRandomness => f.write_str("no randomness from the host for a generated key"),
            GeneratedKeyError::Store(status) => write!(f, "cannot use shared data for the generated key (status {status})"),
            GeneratedKeyError::Damaged => f.write_str("the stored generated key has the wrong size"),
        }
    }
}

const GENERATED_KEY: &str = "persistence.generated_key.v1";

/// One key per Envoy process, shared by every worker through the store so that each worker opens
/// the others' cookies. The first to get here creates it (`fill_random`); the rest adopt it.
/// Returns the key and whether this call created it.
pub fn shared_generated_key(store: &dyn Store, fill_random: impl FnOnce(&mut [u8]) -> bool) -> Result<(Secret, bool), GeneratedKeyError> {
    let read = || -> Result<Option<Secret>, GeneratedKeyError> {
        match store.get(GENERATED_KEY) {
            Ok(Some((bytes, _))) => bytes.try_into().map(|key| Some(Secret(key))).map_err(|_| GeneratedKeyError::Damaged),
            Ok(None) => Ok(None),
            Err(StoreError::Host(status)) => Err(GeneratedKeyError::Store(status)),
            Err(StoreError::CasMismatch) => Err(GeneratedKeyError::Store(0)),
        }
    };
    if let Some(key) = read()? {
        return Ok((key, false));
    }
    let mut key = Secret([0; KEY_LEN]);
    if !fill_random(&mut key.0) {
        return Err(GeneratedKeyError::NoRandomness);
    }
    match store.set(GENERATED_KEY, &key.0, table::CREATE) {
        Ok(()) => Ok((key, true)),
        // Another worker created it meanwhile: use theirs.
        Err(StoreError::CasMismatch) => Ok((read()?.ok_or(GeneratedKeyError::Damaged)?, false)),
        Err(StoreError::Host(status)) => Err(GeneratedKeyError::Store(status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::MemoryStore;

    #[test]
    fn finds_keys_by_id_and_requires_primary_among_them() {
        let ring = Keyring::new(&[(1, [1; 32]), (2, [2; 32])], 2).unwrap();
        assert_eq!(ring.primary_id(), 2);
        assert!(ring.get(1).is_some() && ring.get(2).is_some() && ring.get(3).is_none());
        assert!(Keyring::new(&[(1, [1; 32])], 2).is_none());
        assert!(Keyring::new(&[(1, [1; 32]), (1, [2; 32])], 1).is_none());
        assert!(Keyring::new(&[], 0).is_none());
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret([0x41; 32]);
        assert_eq!(format!("{secret:?}"), "Secret(..)");
        let ring = Keyring::from_secrets(&[(7, secret)], 7).unwrap();
        let printed = format!("{ring:?}");
        assert_eq!(printed, "Keyring { key_ids: [7], primary: 7 }");
    }

    #[test]
    fn the_generated_key_is_created_once_and_adopted_by_every_worker() {
        let store = MemoryStore::default();
        let (first, created) = shared_generated_key(&store, |b| {
            b.fill(9);
            true
        })
        .unwrap();
        assert!(created);
        let (second, created) = shared_generated_key(&store, |_| panic!("no second key is drawn")).unwrap();
        assert!(!created);
        assert_eq!(first, second);
        let empty = MemoryStore::default();
        assert_eq!(shared_generated_key(&empty, |_| false).unwrap_err(), GeneratedKeyError::NoRandomness);
        empty.set(GENERATED_KEY, b"short", table::CREATE).unwrap();
        assert_eq!(shared_generated_key(&empty, |_| true).unwrap_err(), GeneratedKeyError::Damaged);
    }
}
