//! The keys that seal and open tokens: looked up by the one-byte id carried in every token, with one
//! primary key for new tokens. Ciphers are built once (at configure time), never per request.

use aes_gcm::{Aes256Gcm, KeyInit};
use std::cell::RefCell;

pub const KEY_LEN: usize = 32;
/// Id of the key the filter generates for itself when none is configured (configured ids are 1-255).
pub const GENERATED_KEY_ID: u8 = 0;

pub struct Keyring {
    keys: Vec<(u8, Aes256Gcm)>,
    primary: u8,
    /// Tokens this keyring opened recently (see `token::open`): returning clients present the same
    /// token on every request, and AES-GCM without AES instructions costs microseconds in Wasm.
    /// Direct-mapped: a token has one slot (by hash), a newer token in the same slot replaces it.
    pub(crate) recently_opened: RefCell<Vec<Option<CachedToken>>>,
}

/// A cache key (its parts concatenated) and what opening it gave.
type CachedToken = (Vec<u8>, crate::token::Opened);

/// Slots of the recently-opened cache.
const RECENTLY_OPENED: usize = 1024;

fn slot(cache_key: &[&[u8]]) -> usize {
    (crate::table::hash_key(cache_key) % RECENTLY_OPENED as u64) as usize
}

/// Whether `stored` is `parts` concatenated (compared in place: a hit allocates nothing).
fn same_key(stored: &[u8], parts: &[&[u8]]) -> bool {
    let mut rest = stored;
    for part in parts {
        match rest.split_at_checked(part.len()) {
            Some((head, tail)) if head == *part => rest = tail,
            _ => return false,
        }
    }
    rest.is_empty()
}

impl Keyring {
    /// `keys` must be non-empty with unique ids and contain `primary` (configuration validates this);
    /// returns None otherwise.
    pub fn new(keys: &[(u8, [u8; KEY_LEN])], primary: u8) -> Option<Keyring> {
        let mut ring = Vec::with_capacity(keys.len());
        for (id, secret) in keys {
            if ring.iter().any(|(seen, _)| seen == id) {
                return None;
            }
            ring.push((*id, Aes256Gcm::new(secret.into())));
        }
        ring.iter().any(|(id, _)| *id == primary).then(|| Keyring { keys: ring, primary, recently_opened: RefCell::new(vec![None; RECENTLY_OPENED]) })
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

    /// A token this keyring opened before under the same cache key (its parts: purpose, name,
    /// token; the caller makes the split unambiguous).
    pub fn recently_opened(&self, cache_key: &[&[u8]]) -> Option<crate::token::Opened> {
        match self.recently_opened.borrow().get(slot(cache_key)) {
            Some(Some((key, opened))) if same_key(key, cache_key) => Some(*opened),
            _ => None,
        }
    }

    pub fn remember_opened(&self, cache_key: &[&[u8]], opened: crate::token::Opened) {
        if let Some(entry) = self.recently_opened.borrow_mut().get_mut(slot(cache_key)) {
            *entry = Some((cache_key.concat(), opened));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn cache_keys_match_only_the_same_parts_in_full() {
        assert!(same_key(b"\x01web\x00tok", &[&[1], b"web", &[0], b"tok"]));
        assert!(!same_key(b"\x01web\x00tok", &[&[1], b"web", &[0], b"to"]), "shorter");
        assert!(!same_key(b"\x01web\x00to", &[&[1], b"web", &[0], b"tok"]), "longer");
        assert!(!same_key(b"\x01web\x00tok", &[&[2], b"web", &[0], b"tok"]), "other purpose");
        let ring = Keyring::new(&[(1, [1; 32])], 1).unwrap();
        let opened =
            crate::token::Opened { claims: crate::token::Claims { endpoint: "10.0.0.1:80".parse().unwrap(), issued_at: 5, expires_at: None }, key_id: 1 };
        ring.remember_opened(&[&[1], b"A", &[0], b"Bxyz"], opened);
        assert_eq!(ring.recently_opened(&[&[1], b"A", &[0], b"Bxyz"]), Some(opened));
        assert_eq!(ring.recently_opened(&[&[1], b"AB", &[0], b"xyz"]), None, "another name and token");
    }
}
