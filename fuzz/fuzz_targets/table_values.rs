//! Values read back from shared data and the host: table buckets (whatever another module version
//! or a damaged write left), the connection-tracking layout, endpoints and servers (with their
//! cluster names) and serialized header maps. A lookup agrees with a full read of the bucket.
//! Never panics; a write over a damaged bucket leaves a bucket that reads back.
#![no_main]
use envoy_persistence::connections::{Connections, Tracking};
use envoy_persistence::endpoint;
use envoy_persistence::header_pairs;
use envoy_persistence::server::{self, Server};
use envoy_persistence::table::{self, Change, Entry, MemoryStore, Store, Table};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = table::entries::<Server>(data).count();
    let _ = table::entries::<Connections>(data).count();
    let _ = Tracking::decode(data);
    let _ = endpoint::decode(data);
    if let Some((_, rest)) = server::decode(data) {
        assert_eq!(server::skip(data), Some(rest), "a lookup passes over exactly what decode reads");
    }
    let _ = header_pairs::decode(data).count();

    let store = MemoryStore::default();
    let table = Table::new("fuzz", 64);
    let key = table::hash_key(&[b"client"]);
    store.set(&table.bucket_key_for(key), data, table::CREATE).expect("store");
    // A lookup finds each entry the bucket's reader reaches (the first of each hash), as decoded.
    let raw = table.read(&store, key).expect("read");
    let mut seen = Vec::new();
    for (hash, entry) in table::entries::<Server>(data) {
        if !seen.contains(&hash) {
            seen.push(hash);
            assert_eq!(table.find::<Server>(&raw, hash), Some(entry));
        }
    }
    let entry = Entry { touched: 7, record: Server::host(endpoint::parse("10.0.0.1:80").expect("endpoint")) };
    table.update(&store, key, None, |_| Change::Put(entry), |_: &Entry<Server>| true).expect("update");
    let snapshot = table.read(&store, key).expect("read");
    assert_eq!(table.find::<Server>(&snapshot, key), Some(entry));
});
