//! The store suite on a real etcd, and what only etcd promises: several
//! controllers on one etcd see each other's writes, a restarted store finds
//! everything, a later page of a list shows its revision even after changes,
//! and a controller cut off from etcd answers with errors, not with what it
//! last saw.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use super::testing::EtcdCluster;
use super::{EtcdConfig, EtcdStore};
use crate::store::redb::History;
use crate::store::suite::{Backend, store_suite};
use crate::store::{EventType, Key, Store, StoreError};

const WAIT: Duration = Duration::from_secs(10);

async fn etcd() -> EtcdCluster {
    EtcdCluster::start(1).await.expect("an etcd server")
}

async fn connect(etcd: &EtcdCluster, prefix: &str, history: History) -> EtcdStore {
    let mut config = EtcdConfig::new(etcd.endpoints());
    config.prefix = prefix.to_string();
    config.history = history;
    EtcdStore::connect(config).await.expect("a store on etcd")
}

fn make(history: History) -> Pin<Box<dyn Future<Output = Backend> + Send>> {
    Box::pin(async move {
        let etcd = etcd().await;
        let store = connect(&etcd, "/suite", history).await;
        Backend {
            store: Arc::new(store),
            _keep: Box::new(etcd),
        }
    })
}

store_suite!(make);

fn pod_key(name: &str) -> Key {
    Key::new("pods", Some("default"), name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_on_one_etcd_read_each_others_writes_at_once_and_watch_them() {
    let etcd = etcd().await;
    let a = connect(&etcd, "/tugboat", History::default()).await;
    let b = connect(&etcd, "/tugboat", History::default()).await;
    let mut watch = b.watch("pods", None, b.revision()).await.unwrap();
    for i in 0..20 {
        let key = pod_key(&format!("p{i}"));
        let written = a.create(&key, json!({"spec": {"i": i}})).await.unwrap();
        // A read through the other controller right after the write sees it.
        let read = b
            .get(&key)
            .await
            .unwrap()
            .expect("the other controller sees it");
        assert_eq!(read.revision, written.revision);
        assert_eq!(read.object, written.object);
        let event = tokio::time::timeout(WAIT, watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            (event.revision, event.event_type),
            (written.revision, EventType::Added)
        );
    }
    // Optimistic concurrency holds across them.
    let key = pod_key("p0");
    let current = a.get(&key).await.unwrap().unwrap();
    b.update(&key, json!({"by": "b"}), Some(current.revision))
        .await
        .unwrap();
    let err = a
        .update(&key, json!({"by": "a"}), Some(current.revision))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    // Another prefix is another cluster.
    let other = connect(&etcd, "/other", History::default()).await;
    assert!(other.list("pods", None).await.unwrap().0.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_connected_again_finds_every_object_at_its_revision() {
    let etcd = etcd().await;
    let mut written = Vec::new();
    {
        let store = connect(&etcd, "/tugboat", History::default()).await;
        for i in 0..(super::PAGE as usize * 2 + 7) {
            written.push(
                store
                    .create(&pod_key(&format!("p{i:04}")), json!({"i": i}))
                    .await
                    .unwrap(),
            );
        }
        store.delete(&pod_key("p0000"), None).await.unwrap();
    }
    let store = connect(&etcd, "/tugboat", History::default()).await;
    let (all, _) = store.list("pods", None).await.unwrap();
    assert_eq!(all.len(), written.len() - 1, "read in pages, nothing lost");
    for (got, want) in all.iter().zip(&written[1..]) {
        assert_eq!(got.revision, want.revision);
        assert_eq!(got.object, want.object);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_page_shows_its_revision_after_changes_until_etcd_compacts() {
    let etcd = etcd().await;
    let store = connect(&etcd, "/tugboat", History::default()).await;
    for name in ["a", "b", "c"] {
        store.create(&pod_key(name), json!({"v": 1})).await.unwrap();
    }
    let at = store.revision();
    store
        .update(&pod_key("c"), json!({"v": 2}), None)
        .await
        .unwrap();
    store.delete(&pod_key("b"), None).await.unwrap();
    let page = store
        .list_at("pods", None, at, Some(&pod_key("a")))
        .await
        .unwrap();
    let values: Vec<_> = page.iter().map(|s| s.object["v"].clone()).collect();
    assert_eq!(values, [json!(1), json!(1)], "b and c as they were");

    let mut client = store.client();
    client
        .compact(super::to_etcd(store.revision()), None)
        .await
        .unwrap();
    let gone = store.list_at("pods", None, at, Some(&pod_key("a"))).await;
    assert!(matches!(gone, Err(StoreError::Gone { .. })), "{gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_etcd_reads_writes_and_watches_are_refused_and_after_it_returns_they_work_again() {
    let mut etcd = etcd().await;
    let store = connect(&etcd, "/tugboat", History::default()).await;
    let before = store.create(&pod_key("a"), json!({})).await.unwrap();
    let mut watch = store.watch("pods", None, before.revision).await.unwrap();

    etcd.members[0].kill();
    // Nothing can be reached, so nothing was done: Unavailable (503 with
    // Retry-After on the API, which clients take to another controller).
    let read = tokio::time::timeout(Duration::from_secs(30), store.get(&pod_key("a")))
        .await
        .expect("a read without etcd ends");
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    let write = tokio::time::timeout(
        Duration::from_secs(30),
        store.create(&pod_key("b"), json!({})),
    )
    .await
    .expect("a write without etcd ends");
    assert!(
        matches!(write, Err(StoreError::Unavailable(_))),
        "{write:?}"
    );
    // The mirror may be stale now: its watchers end, and new ones are refused.
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(event) = watch.next().await {
            if event.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the watch ends once etcd cannot be watched");
    let check = store.check().await;
    assert!(
        matches!(check, Err(StoreError::Unavailable(_))),
        "{check:?}"
    );
    let refused = store.watch("pods", None, before.revision).await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable(_))),
        "{:?}",
        refused.err()
    );

    etcd.members[0].restart().unwrap();
    etcd.wait_ready().await.unwrap();
    // The client reconnects by itself; the mirror's watch resumes where it was.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        match store.create(&pod_key("b"), json!({})).await {
            Ok(stored) => break stored,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%e, "etcd not back yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("etcd did not come back: {e}"),
        }
    };
    // Back: a watch from where the old one was gets what it missed.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut watch = loop {
        match store.watch("pods", None, before.revision).await {
            Ok(watch) => break watch,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%e, "the mirror does not watch etcd yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the mirror did not watch etcd again: {e}"),
        }
    };
    let event = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("the watch goes on")
        .expect("not ended")
        .expect("an event");
    assert_eq!(event.revision, after.revision);
    assert!(store.get(&pod_key("b")).await.unwrap().is_some());
    store.check().await.expect("ready again");
}

/// The test cluster is what the HA tests count on: three members on three
/// ports, each serving on its own, so that killing one leaves a quorum. (A
/// CI run once got two members on one port, a cluster of two in truth, and
/// one killed member took it below quorum.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_test_cluster_is_three_members_each_serving() {
    let etcd = EtcdCluster::start(3).await.expect("an etcd cluster");
    let endpoints = etcd.endpoints();
    let mut ports: Vec<&str> = endpoints
        .iter()
        .chain(etcd.members.iter().map(|m| &m.peer))
        .filter_map(|address| address.rsplit(':').next())
        .collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 6, "distinct client and peer ports: {ports:?}");
    let mut ids = Vec::new();
    for endpoint in &endpoints {
        let mut one = etcd_client::Client::connect([format!("http://{endpoint}")], None)
            .await
            .expect("a client of one member");
        let status = tokio::time::timeout(WAIT, one.status())
            .await
            .expect("an answer in time")
            .expect("the member's status");
        ids.push(status.header().map(|h| h.member_id()).unwrap_or(0));
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three members answered: {ids:?}");
}
