use super::*;
use crate::endpoint;
use crate::server::Server;
use std::cell::RefCell;

fn server(n: u8) -> Server {
    Server::host(endpoint::parse(&format!("10.0.0.{n}:80")).unwrap())
}

fn entry(n: u8, touched: u32) -> Entry<Server> {
    Entry { touched, record: server(n) }
}

fn put(table: &Table, store: &dyn Store, hash: u64, e: Entry<Server>) -> Applied {
    table.update(store, hash, None, |_| Change::Put(e), |_: &Entry<Server>| false).unwrap()
}

fn find(table: &Table, store: &dyn Store, hash: u64) -> Option<Entry<Server>> {
    table.find(&table.read(store, hash).unwrap(), hash)
}

/// Hashes that land in bucket 0 of `table`.
fn same_bucket(table: &Table, n: usize) -> Vec<u64> {
    (0u64..).map(|i| i << 32 | 7).filter(|h| table.index(*h) == 0).take(n).collect()
}

#[test]
fn key_hashes_are_stable_and_spread_over_buckets() {
    // Pinned values: a module upgrade must keep finding entries written by the old module.
    assert_eq!(hash_key(&[b"ip4", &[32], &[10, 0, 0, 1]]), STABLE_HASH);
    assert_ne!(hash_key(&[b"ab", b"c"]), hash_key(&[b"a", b"bc"]));
    let table = Table::new("t", 1 << 20);
    let mut used = std::collections::HashSet::new();
    for i in 0..200_000u32 {
        used.insert(table.index(hash_key(&[&i.to_be_bytes()])));
    }
    assert!(used.len() > 60_000, "{} of 65536 buckets used", used.len());
}

const STABLE_HASH: u64 = 12_804_409_789_787_715_602;

#[test]
fn sizes_buckets_from_max_entries() {
    let table = Table::new("t", 1_048_576);
    assert_eq!((table.buckets(), table.capacity), (65_536, 16));
    let small = Table::new("t", 100);
    assert_eq!((small.buckets(), small.capacity()), (8, 104));
    assert_eq!(Table::new("t", 1).capacity(), 1);
    assert_eq!(Table::new("t", 10_000_000).buckets(), 65_536);
    assert_ne!(Table::new("t", 100).bucket_key(0), Table::new("t", 200).bucket_key(0), "a resized table uses other keys");
}

#[test]
fn puts_finds_replaces_and_removes() {
    let store = MemoryStore::default();
    let table = Table::new("t", 1000);
    let (a, b) = (hash_key(&[b"1.2.3.4"]), hash_key(&[b"5.6.7.8"]));
    assert!(put(&table, &store, a, entry(1, 100)).inserted);
    assert!(put(&table, &store, b, entry(2, 100)).inserted);
    assert_eq!(find(&table, &store, a), Some(entry(1, 100)));
    let replaced = put(&table, &store, a, entry(3, 200));
    assert!(replaced.written && !replaced.inserted);
    assert_eq!(find(&table, &store, a), Some(entry(3, 200)));
    let removed = table.update(&store, a, None, |_| Change::<Server>::Remove, |_| false).unwrap();
    assert_eq!(removed.entries_delta(), -1);
    assert_eq!(find(&table, &store, a), None);
    assert_eq!(find(&table, &store, b), Some(entry(2, 100)));
}

#[test]
fn a_full_bucket_drops_expired_entries_first_then_the_least_recently_used() {
    let store = MemoryStore::default();
    let table = Table::new("t", 16 * 4);
    let capacity = table.capacity;
    let hashes = same_bucket(&table, capacity + 3);
    for (i, hash) in hashes.iter().take(capacity).enumerate() {
        put(&table, &store, *hash, entry(1, 1000 + i as u32));
    }
    // Entry 5 is expired: it goes first, although entry 0 is older.
    let expired = |e: &Entry<Server>| e.touched == 1005;
    let applied = table.update(&store, hashes[capacity], None, |_| Change::Put(entry(2, 2000)), expired).unwrap();
    assert_eq!((applied.expired, applied.evicted, applied.entries_delta()), (1, 0, 0));
    assert_eq!(find(&table, &store, hashes[5]), None);
    assert!(find(&table, &store, hashes[0]).is_some());
    // Nothing expired: the least recently used (entry 0) makes room.
    let applied = table.update(&store, hashes[capacity + 1], None, |_| Change::Put(entry(2, 2001)), |_: &Entry<Server>| false).unwrap();
    assert_eq!((applied.expired, applied.evicted), (0, 1));
    assert_eq!(find(&table, &store, hashes[0]), None);
    assert!(find(&table, &store, hashes[1]).is_some());
    assert!(find(&table, &store, hashes[capacity + 1]).is_some(), "the new entry is never the one evicted");
}

/// A write another worker makes to the same bucket between our read and our write.
type Interference<'a> = Box<dyn FnOnce(&MemoryStore) + 'a>;

struct Interfering<'a> {
    inner: &'a MemoryStore,
    before_next_set: RefCell<Vec<Interference<'a>>>,
}

impl Store for Interfering<'_> {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        if let Some(interfere) = self.before_next_set.borrow_mut().pop() {
            interfere(self.inner);
        }
        self.inner.set(key, value, cas)
    }
}

#[test]
fn entries_that_look_expired_stay_until_the_bucket_is_full() {
    // An idle client with an open connection looks expired by its timestamp alone; only the
    // sweeper, which can check connections, may drop it while there is room.
    let store = MemoryStore::default();
    let table = Table::new("t", 16 * 4);
    let hashes = same_bucket(&table, 3);
    put(&table, &store, hashes[0], entry(1, 10));
    let applied = table.update(&store, hashes[1], None, |_| Change::Put(entry(2, 1000)), |e: &Entry<Server>| e.touched < 500).unwrap();
    assert_eq!(applied.expired, 0);
    assert!(find(&table, &store, hashes[0]).is_some());
}

#[test]
fn concurrent_writes_to_one_bucket_are_never_lost() {
    let store = MemoryStore::default();
    let table = Table::new("t", 64);
    let hashes = same_bucket(&table, 2);
    let (mine, theirs) = (hashes[0], hashes[1]);
    let other = table.clone();
    let interfering = Interfering {
        inner: &store,
        before_next_set: RefCell::new(vec![Box::new(move |s: &MemoryStore| {
            put(&other, s, theirs, entry(9, 50));
        })]),
    };
    let mut calls = 0;
    let applied = table
        .update(
            &interfering,
            mine,
            None,
            |_| {
                calls += 1;
                Change::Put(entry(1, 60))
            },
            |_: &Entry<Server>| false,
        )
        .unwrap();
    assert!(applied.inserted);
    assert_eq!(calls, 2, "decided again on fresh data after the conflict");
    assert_eq!(find(&table, &store, mine), Some(entry(1, 60)));
    assert_eq!(find(&table, &store, theirs), Some(entry(9, 50)), "the other worker's write survived");
}

#[test]
fn first_writer_wins_when_both_insert_the_same_key() {
    let store = MemoryStore::default();
    let table = Table::new("t", 64);
    let key = hash_key(&[b"new client"]);
    // Worker B reads (empty), worker A inserts server 1, then B tries to insert server 2.
    let stale = table.read(&store, key).unwrap();
    put(&table, &store, key, entry(1, 10));
    let insert_if_absent = |current: Option<&Entry<Server>>| match current {
        Some(_) => Change::Keep,
        None => Change::Put(entry(2, 11)),
    };
    let applied = table.update(&store, key, Some(stale), insert_if_absent, |_| false).unwrap();
    assert!(!applied.written);
    assert_eq!(find(&table, &store, key), Some(entry(1, 10)));
}

#[test]
fn creating_a_bucket_twice_conflicts_instead_of_overwriting() {
    let store = MemoryStore::default();
    let table = Table::new("t", 64);
    let hashes = same_bucket(&table, 2);
    let stale = table.read(&store, hashes[0]).unwrap();
    put(&table, &store, hashes[1], entry(1, 10));
    table.update(&store, hashes[0], Some(stale), |_| Change::Put(entry(2, 10)), |_: &Entry<Server>| false).unwrap();
    assert!(find(&table, &store, hashes[1]).is_some() && find(&table, &store, hashes[0]).is_some());
}

#[test]
fn gives_up_after_endless_conflicts() {
    struct AlwaysBusy;
    impl Store for AlwaysBusy {
        fn get(&self, _: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            Ok(Some((vec![FORMAT], 1)))
        }
        fn set(&self, _: &str, _: &[u8], _: u32) -> Result<(), StoreError> {
            Err(StoreError::CasMismatch)
        }
    }
    let table = Table::new("t", 64);
    let result = table.update(&AlwaysBusy, 1, None, |_| Change::Put(entry(1, 1)), |_: &Entry<Server>| false);
    assert_eq!(result, Err(TableError::Conflict));
}

#[test]
fn sweeps_expired_entries_and_shares_the_sweep_between_workers() {
    let store = MemoryStore::default();
    let table = Table::new("t", 16 * 8);
    for i in 0..64u32 {
        put(&table, &store, hash_key(&[&i.to_le_bytes()]), entry(1, if i % 2 == 0 { 100 } else { 900 }));
    }
    let mut claimed = Vec::new();
    while let Some(range) = table.claim_sweep(&store, 3, 1000, 0).unwrap() {
        claimed.extend(range.clone());
        if range.end == table.buckets() {
            break;
        }
    }
    assert_eq!(claimed, (0..table.buckets()).collect::<Vec<_>>(), "every bucket claimed once, in order");
    assert_eq!(table.claim_sweep(&store, 3, 1000, 0).unwrap(), Some(0..3), "the cursor wraps around");
    let removed: u32 = (0..table.buckets()).map(|i| table.sweep(&store, i, |_, e: &Entry<Server>| e.touched < 500).unwrap()).sum();
    assert_eq!(removed, 32);
    let left: usize = (0..64u32).filter(|i| find(&table, &store, hash_key(&[&i.to_le_bytes()])).is_some()).count();
    assert_eq!(left, 32);
}

#[test]
fn a_finished_sweep_pass_waits_its_interval_before_the_next() {
    let store = MemoryStore::default();
    let table = Table::new("t", 16 * 8);
    let buckets = table.buckets();
    assert_eq!(table.claim_sweep(&store, buckets - 1, 100, 60).unwrap(), Some(0..buckets - 1));
    assert_eq!(table.claim_sweep(&store, 8, 100, 60).unwrap(), Some(buckets - 1..buckets), "a pass in progress goes on");
    assert_eq!(table.claim_sweep(&store, 8, 101, 60).unwrap(), None, "the next pass is not due");
    assert_eq!(table.claim_sweep(&store, 8, 159, 60).unwrap(), None);
    assert_eq!(table.claim_sweep(&store, 8, 160, 60).unwrap(), Some(0..8), "due after the interval");
}

#[test]
fn damaged_buckets_are_read_as_far_as_they_are_valid() {
    let store = MemoryStore::default();
    let table = Table::new("t", 64);
    let key = hash_key(&[b"k"]);
    put(&table, &store, key, entry(1, 10));
    let bucket = table.bucket_key(table.index(key));
    let (mut bytes, cas) = store.get(&bucket).unwrap().unwrap();
    bytes.extend_from_slice(&[1, 2, 3]);
    store.set(&bucket, &bytes, cas).unwrap();
    assert_eq!(find(&table, &store, key), Some(entry(1, 10)));
    for garbage in [vec![], vec![0xFF], vec![FORMAT, 1, 2], vec![7; 100]] {
        let snapshot = Snapshot { index: 0, bytes: garbage, cas: 1 };
        assert_eq!(table.find::<Server>(&snapshot, key), None);
    }
}

#[test]
fn an_ipv4_entry_costs_19_bytes_of_bucket_value() {
    let store = MemoryStore::default();
    let table = Table::new("t", 1_048_576);
    for i in 0..100_000u32 {
        put(&table, &store, hash_key(&[&i.to_le_bytes()]), entry(1, i));
    }
    let per_entry = (store.value_bytes() - store.keys()) as f64 / 100_000.0;
    assert!((per_entry - 19.0).abs() < 0.01, "{per_entry}");
}

#[test]
fn bucket_keys_are_the_prefix_and_the_index_in_hex() {
    let table = Table::new("t", 1_000_000);
    for index in [0u32, 1, 9, 10, 15, 16, 255, 4096, 65_535, u32::MAX] {
        assert_eq!(table.bucket_key(index), format!("{}.{index:x}", table.prefix));
    }
}
