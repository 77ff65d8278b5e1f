//! A bounded table shared by every worker of one Envoy process, on proxy-wasm shared data.
//!
//! Shared-data keys can never be deleted, so a table is a fixed set of keys (buckets); each bucket
//! holds a compact list of entries. A lookup copies and scans one bucket. Writes are compare-and-swap
//! on that one bucket, retried on conflict, so concurrent workers never lose each other's updates.
//! A write into a full bucket drops its expired entries, then its least recently used one. `sweep`
//! (housekeeping) reclaims expired entries everywhere, with a judgement that may cost more reads.
//!
//! Bucket value: `FORMAT(1)` then entries `key hash (u64 LE) | touched (u32 LE) | record`.

use std::ops::Range;

/// Process-wide key/value store with CAS: Envoy's shared data, or a map in unit tests.
pub trait Store {
    /// The value and its CAS token; None when the key was never written.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    /// Writes if `cas` still matches (see `CREATE` for missing keys).
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    CasMismatch,
    /// Any other host status.
    Host(u32),
}

/// The CAS to write a key that was missing. Envoy ignores the CAS of a missing key (so this
/// creates it) and compares it for an existing one (so this fails if another worker created it
/// meanwhile: real CAS tokens count up from 1 and do not reach this value).
pub const CREATE: u32 = u32::MAX;

const FORMAT: u8 = 1;
const ENTRY_HEADER: usize = 12;
/// Attempts of one write before giving up (counted as a conflict).
const MAX_ATTEMPTS: usize = 16;

/// The value part of an entry, encoded compactly and self-delimiting.
pub trait Record: Copy + PartialEq {
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Option<(Self, &[u8])>;
    /// What follows the record at the start of `bytes`, without decoding it (lookups pass over
    /// every other entry of a bucket this way).
    fn skip(bytes: &[u8]) -> Option<&[u8]> {
        Self::decode(bytes).map(|(_, rest)| rest)
    }
}

impl Record for crate::server::Server {
    fn encode(&self, out: &mut Vec<u8>) {
        crate::server::encode(self, out);
    }
    fn decode(bytes: &[u8]) -> Option<(Self, &[u8])> {
        crate::server::decode(bytes)
    }
    fn skip(bytes: &[u8]) -> Option<&[u8]> {
        crate::server::skip(bytes)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<R> {
    /// Unix seconds of the last use that counts for expiry and LRU.
    pub touched: u32,
    pub record: R,
}

/// The 64-bit identity of a key (parts are length-prefixed, so they cannot run into each other).
/// FNV-1a with the MurmurHash3 finalizer: stable across builds and Rust releases, so a module
/// upgrade in a running Envoy keeps finding the entries the old module wrote. Keys are client
/// addresses and server-issued values, not chosen freely by clients.
pub fn hash_key(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for part in parts {
        for &byte in (part.len() as u32).to_le_bytes().iter().chain(part.iter()) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
        }
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// Seconds between two sweeps of a table whose entries live `timeout` seconds: no entry can
/// expire faster than that, and reclaiming an expired entry a minute late costs only its bytes
/// (lookups check liveness themselves).
pub fn sweep_interval(timeout: u32) -> u32 {
    timeout.clamp(1, 60)
}

/// One bucket as read: its bytes and the CAS to write it back with.
#[derive(Clone, Debug)]
pub struct Snapshot {
    index: u32,
    bytes: Vec<u8>,
    cas: u32,
}

pub enum Change<R> {
    Keep,
    Put(Entry<R>),
    Remove,
}

/// What a write did, for counters and the entry gauge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub written: bool,
    pub inserted: bool,
    pub removed: bool,
    pub expired: u32,
    pub evicted: u32,
}

impl Applied {
    /// Change in the number of entries.
    pub fn entries_delta(&self) -> i64 {
        i64::from(self.inserted) - i64::from(self.removed) - i64::from(self.expired) - i64::from(self.evicted)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// Other workers kept changing the bucket; the write was given up.
    Conflict,
    Store(u32),
}

impl From<StoreError> for TableError {
    fn from(error: StoreError) -> TableError {
        match error {
            StoreError::CasMismatch => TableError::Conflict,
            StoreError::Host(status) => TableError::Store(status),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    prefix: String,
    buckets: u32,
    capacity: usize,
}

impl Table {
    /// A table of about `max_entries` entries (rounded up to whole buckets), its keys starting
    /// with `name`. About 16 entries per bucket, at most 65536 buckets.
    pub fn new(name: &str, max_entries: u32) -> Table {
        let max_entries = max_entries.max(1);
        let buckets = (max_entries / 16).clamp(1, 65_536).next_power_of_two().min(65_536);
        let capacity = max_entries.div_ceil(buckets) as usize;
        // The sizing is part of the key: a resized table never reads buckets of another layout.
        Table { prefix: format!("{name}.{buckets}x{capacity}"), buckets, capacity }
    }

    pub fn buckets(&self) -> u32 {
        self.buckets
    }

    pub fn capacity(&self) -> usize {
        self.buckets as usize * self.capacity
    }

    fn index(&self, hash: u64) -> u32 {
        ((hash >> 32) as u32) & (self.buckets - 1)
    }

    /// The shared-data key of the bucket that holds `hash`.
    pub fn bucket_key_for(&self, hash: u64) -> String {
        self.bucket_key(self.index(hash))
    }

    /// `<prefix>.<index in hex>`, built by hand: every lookup makes one.
    fn bucket_key(&self, index: u32) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 9);
        key.push_str(&self.prefix);
        key.push('.');
        let digits = (32 - index.leading_zeros()).div_ceil(4).max(1);
        for shift in (0..digits).rev() {
            let nibble = (index >> (shift * 4)) & 0xf;
            key.push(char::from_digit(nibble, 16).unwrap_or('0'));
        }
        key
    }

    /// Reads the bucket that holds `hash` (one shared-data copy).
    pub fn read(&self, store: &dyn Store, hash: u64) -> Result<Snapshot, StoreError> {
        self.read_bucket(store, self.index(hash))
    }

    fn read_bucket(&self, store: &dyn Store, index: u32) -> Result<Snapshot, StoreError> {
        Ok(match store.get(&self.bucket_key(index))? {
            Some((bytes, cas)) => Snapshot { index, bytes, cas },
            None => Snapshot { index, bytes: Vec::new(), cas: CREATE },
        })
    }

    /// The entry for `hash` in a snapshot, scanning only until it is found.
    pub fn find<R: Record>(&self, snapshot: &Snapshot, hash: u64) -> Option<Entry<R>> {
        let mut rest = match snapshot.bytes.split_first() {
            Some((&FORMAT, rest)) => rest,
            _ => return None,
        };
        // Only the matching entry is decoded; the walk stops at the first malformed byte, as `entries` does.
        loop {
            let (entry_hash, after) = rest.split_first_chunk::<8>()?;
            let (touched, after) = after.split_first_chunk::<4>()?;
            if u64::from_le_bytes(*entry_hash) == hash {
                let (record, _) = R::decode(after)?;
                return Some(Entry { touched: u32::from_le_bytes(*touched), record });
            }
            rest = R::skip(after)?;
        }
    }

    /// Read-modify-write of the entry for `hash`. `decide` sees the current entry and says what to
    /// do; it runs again after a conflict, on fresh data. When the bucket overflows, entries that
    /// `expired` judges expired go first, then the least recently used. `first` may be a snapshot
    /// read earlier (its CAS makes the first attempt free of a read if nothing changed since).
    pub fn update<R: Record>(
        &self,
        store: &dyn Store,
        hash: u64,
        first: Option<Snapshot>,
        mut decide: impl FnMut(Option<&Entry<R>>) -> Change<R>,
        expired: impl Fn(&Entry<R>) -> bool,
    ) -> Result<Applied, TableError> {
        let index = self.index(hash);
        let mut snapshot = first.filter(|s| s.index == index);
        for _ in 0..MAX_ATTEMPTS {
            let current = match snapshot.take() {
                Some(snapshot) => snapshot,
                None => self.read_bucket(store, index)?,
            };
            let mut list: Vec<(u64, Entry<R>)> = entries(&current.bytes).collect();
            let position = list.iter().position(|(h, _)| *h == hash);
            let mut applied = Applied::default();
            match decide(position.and_then(|i| list.get(i)).map(|(_, e)| e)) {
                Change::Keep => return Ok(applied),
                Change::Remove => match position {
                    Some(i) => {
                        list.remove(i);
                        applied.removed = true;
                    }
                    None => return Ok(applied),
                },
                Change::Put(entry) => match position.and_then(|i| list.get_mut(i)) {
                    Some((_, existing)) => *existing = entry,
                    None => {
                        list.push((hash, entry));
                        applied.inserted = true;
                    }
                },
            }
            if list.len() > self.capacity {
                let before = list.len();
                list.retain(|(h, e)| *h == hash || !expired(e));
                applied.expired = (before - list.len()) as u32;
            }
            while list.len() > self.capacity {
                let lru = list.iter().enumerate().filter(|(_, (h, _))| *h != hash).min_by_key(|(_, (_, e))| e.touched).map(|(i, _)| i);
                let Some(lru) = lru else { break };
                list.remove(lru);
                applied.evicted += 1;
            }
            match store.set(&self.bucket_key(index), &encode(&list), current.cas) {
                Ok(()) => {
                    applied.written = true;
                    return Ok(applied);
                }
                Err(StoreError::CasMismatch) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(TableError::Conflict)
    }

    /// Drops the entries of bucket `index` that `expired` (given key hash and entry) judges expired;
    /// returns how many. A bucket never written costs one failed lookup.
    pub fn sweep<R: Record>(&self, store: &dyn Store, index: u32, expired: impl Fn(u64, &Entry<R>) -> bool) -> Result<u32, TableError> {
        for _ in 0..MAX_ATTEMPTS {
            let current = self.read_bucket(store, index)?;
            if current.cas == CREATE {
                return Ok(0);
            }
            let list: Vec<(u64, Entry<R>)> = entries(&current.bytes).collect();
            let kept: Vec<(u64, Entry<R>)> = list.iter().copied().filter(|(h, e)| !expired(*h, e)).collect();
            if kept.len() == list.len() {
                return Ok(0);
            }
            match store.set(&self.bucket_key(index), &encode(&kept), current.cas) {
                Ok(()) => return Ok((list.len() - kept.len()) as u32),
                Err(StoreError::CasMismatch) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(TableError::Conflict)
    }

    /// Claims the next `count` buckets to sweep, shared by every worker through a cursor key, so
    /// the workers and the main thread sweep different buckets. A finished pass makes the next one
    /// wait `pass_interval` seconds: an idle table then costs no host calls between passes, whatever
    /// the number of workers. None when another claimed first or the next pass is not due.
    pub fn claim_sweep(&self, store: &dyn Store, count: u32, now: u32, pass_interval: u32) -> Result<Option<Range<u32>>, StoreError> {
        let key = format!("{}.sweep", self.prefix);
        let word = |bytes: &[u8], at: usize| bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes);
        let (start, not_before, cas) = match store.get(&key)? {
            Some((bytes, cas)) => (word(&bytes, 0) % self.buckets, word(&bytes, 4), cas),
            None => (0, 0, CREATE),
        };
        if start == 0 && now < not_before {
            return Ok(None);
        }
        let end = start.saturating_add(count).min(self.buckets);
        let (next, not_before) = if end >= self.buckets { (0, now.saturating_add(pass_interval)) } else { (end, not_before) };
        let mut cursor = next.to_le_bytes().to_vec();
        cursor.extend_from_slice(&not_before.to_le_bytes());
        match store.set(&key, &cursor, cas) {
            Ok(()) => Ok(Some(start..end)),
            Err(StoreError::CasMismatch) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

/// The entries of a bucket value; stops at the first malformed byte (a damaged tail is dropped on
/// the next write rather than trusted).
pub fn entries<R: Record>(bytes: &[u8]) -> impl Iterator<Item = (u64, Entry<R>)> + '_ {
    let mut rest = match bytes.split_first() {
        Some((&FORMAT, rest)) => rest,
        _ => &[][..],
    };
    std::iter::from_fn(move || {
        let (hash, after) = rest.split_first_chunk::<8>()?;
        let (touched, after) = after.split_first_chunk::<4>()?;
        let (record, after) = R::decode(after)?;
        rest = after;
        Some((u64::from_le_bytes(*hash), Entry { touched: u32::from_le_bytes(*touched), record }))
    })
}

fn encode<R: Record>(list: &[(u64, Entry<R>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + list.len() * (ENTRY_HEADER + 8));
    out.push(FORMAT);
    for (hash, entry) in list {
        out.extend_from_slice(&hash.to_le_bytes());
        out.extend_from_slice(&entry.touched.to_le_bytes());
        entry.record.encode(&mut out);
    }
    out
}

/// A `Store` in process memory with Envoy's shared-data semantics, for unit tests and benchmarks.
#[derive(Default)]
pub struct MemoryStore {
    map: std::cell::RefCell<std::collections::HashMap<String, (Vec<u8>, u32)>>,
    next_cas: std::cell::Cell<u32>,
}

impl MemoryStore {
    pub fn keys(&self) -> usize {
        self.map.borrow().len()
    }

    pub fn value_bytes(&self) -> usize {
        self.map.borrow().values().map(|(v, _)| v.len()).sum()
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.map.borrow().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        let mut map = self.map.borrow_mut();
        if let Some((_, current)) = map.get(key) {
            if cas != 0 && cas != *current {
                return Err(StoreError::CasMismatch);
            }
        }
        let next = self.next_cas.get().wrapping_add(1).max(1);
        self.next_cas.set(next);
        map.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
