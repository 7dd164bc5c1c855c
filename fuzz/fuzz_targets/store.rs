//! The store's encode/decode round trip: any body the API reads (strict JSON,
//! within the depth bound) that the store accepts is stored exactly, and reads
//! back from the bytes it wrote.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tugboat_api::json;
use tugboat_controller::store::redb::RedbStore;
use tugboat_controller::store::{Key, Store};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = json::parse(data) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let store = RedbStore::in_memory(10).expect("an in-memory store");
        let key = Key::new("pods", Some("default"), "f");
        match store.create(&key, parsed.value.clone()).await {
            Ok(stored) => {
                common::assert_storable(&stored.object);
                let got = store.get(&key).await.expect("get").expect("stored");
                assert_eq!(got.object, stored.object);
                let mut expected = parsed.value;
                expected["metadata"]["resourceVersion"] = "1".into();
                assert_eq!(*stored.object, expected, "the store changed the object");
            }
            Err(_) => assert_eq!(store.revision(), 0, "a refused write moved the revision"),
        }
    });
});
