//! Unit tests of the redb store: revisions, preconditions, watch replay and
//! resumption, bounds, reopening, quarantine and compaction.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use super::tables::{HISTORY, OBJECTS};
use super::writer::MAX_BATCH_BYTES;
use super::*;
use crate::store::EventType;
use crate::store::suite::{assert_quiet, names_of, next_event, owned_pod, pod, pod_key, summary};

/// Long enough for any event that is coming; a test hitting it has failed.
const WAIT: Duration = Duration::from_secs(10);

fn rv(stored: &Stored) -> &str {
    stored.object["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion is a string")
}

#[tokio::test]
async fn revisions_increase_by_one_per_write_and_become_the_resource_version() {
    let store = RedbStore::in_memory(DEFAULT_HISTORY).unwrap();
    assert_eq!(store.revision(), 0);
    let key = pod_key("default", "web");

    let created = store.create(&key, pod("web", "nginx:1")).await.unwrap();
    assert_eq!((created.revision, rv(&created)), (1, "1"));
    let updated = store
        .update(&key, pod("web", "nginx:2"), Some(1))
        .await
        .unwrap();
    assert_eq!((updated.revision, rv(&updated)), (2, "2"));
    let other = store
        .create(&pod_key("default", "db"), json!({}))
        .await
        .unwrap();
    assert_eq!((other.revision, rv(&other)), (3, "3"));
    let deleted = store.delete(&key, Some(2)).await.unwrap();
    assert_eq!((deleted.revision, rv(&deleted)), (4, "4"));
    assert_eq!(deleted.object["spec"]["image"], "nginx:2");
    assert_eq!(store.revision(), 4);

    let got = store.get(&pod_key("default", "db")).await.unwrap().unwrap();
    assert_eq!(got.revision, 3);
    assert!(store.get(&key).await.unwrap().is_none());
}

#[tokio::test]
async fn watching_from_an_old_revision_replays_exactly_what_came_after_then_live_events() {
    let store = RedbStore::in_memory(DEFAULT_HISTORY).unwrap();
    let web = pod_key("default", "web");
    let db = pod_key("default", "db");
    store.create(&web, pod("web", "nginx:1")).await.unwrap(); // 1
    store.create(&db, pod("db", "postgres")).await.unwrap(); // 2
    store
        .create(&Key::new("services", Some("default"), "web"), json!({}))
        .await
        .unwrap(); // 3
    store
        .update(&web, pod("web", "nginx:2"), None)
        .await
        .unwrap(); // 4

    let mut stream = store.watch("pods", None, 1).await.unwrap();
    assert_eq!(
        summary(&next_event(&mut stream).await),
        (2, EventType::Added, "db".into())
    );
    assert_eq!(
        summary(&next_event(&mut stream).await),
        (4, EventType::Modified, "web".into())
    );
    assert_quiet(&mut stream).await;

    let deleted = store.delete(&db, None).await.unwrap(); // 5
    let event = next_event(&mut stream).await;
    assert_eq!(summary(&event), (5, EventType::Deleted, "db".into()));
    assert_eq!(event.object["metadata"]["resourceVersion"], "5");
    assert_eq!(event.object, deleted.object);
    assert_quiet(&mut stream).await;
}

/// Live events go out per resource: a pods watcher gets pods and only pods, in
/// revision order across resources, and a channel nobody listens to is dropped.
#[tokio::test]
async fn live_events_go_only_to_their_resources_watchers() {
    let store = RedbStore::in_memory(DEFAULT_HISTORY).unwrap();
    let mut pods = store.watch("pods", None, 0).await.unwrap();
    let nodes = store.watch("nodes", None, 0).await.unwrap();
    let node = Key::new("nodes", None, "n1");
    store.create(&node, json!({})).await.unwrap(); // 1
    store.create(&pod_key("a", "one"), json!({})).await.unwrap(); // 2
    store.update(&node, json!({"x": 1}), None).await.unwrap(); // 3
    store.create(&pod_key("a", "two"), json!({})).await.unwrap(); // 4
    assert_eq!(
        summary(&next_event(&mut pods).await),
        (2, EventType::Added, "one".into())
    );
    assert_eq!(
        summary(&next_event(&mut pods).await),
        (4, EventType::Added, "two".into())
    );
    assert_quiet(&mut pods).await;
    let channels = |store: &RedbStore| {
        let mut names: Vec<String> = lock(&store.inner.events.by_resource)
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    };
    assert_eq!(channels(&store), ["nodes", "pods"]);
    // The nodes watcher goes; the next node write finds nobody and drops its channel.
    drop(nodes);
    store.update(&node, json!({"x": 2}), None).await.unwrap();
    assert_eq!(channels(&store), ["pods"]);
}

#[tokio::test]
async fn watching_from_before_the_history_bound_is_gone() {
    let store = RedbStore::in_memory(3).unwrap();
    let key = pod_key("default", "web");
    store.create(&key, json!({})).await.unwrap(); // 1
    for _ in 0..4 {
        store.update(&key, json!({}), None).await.unwrap(); // 2..=5
    }

    let err = store.watch("pods", None, 1).await.err().unwrap();
    assert!(matches!(
        err,
        StoreError::Gone {
            requested: 1,
            compacted: 2
        }
    ));

    let mut stream = store.watch("pods", None, 2).await.unwrap();
    for revision in 3..=5 {
        assert_eq!(next_event(&mut stream).await.revision, revision);
    }
    assert_quiet(&mut stream).await;
}

#[tokio::test]
async fn a_watcher_that_falls_too_far_behind_gets_gone_and_its_stream_ends() {
    let store = RedbStore::in_memory_with_capacity(DEFAULT_HISTORY, 4).unwrap();
    let mut stream = store.watch("pods", None, 0).await.unwrap();
    for i in 0..10 {
        store
            .create(&pod_key("default", &format!("p{i}")), json!({}))
            .await
            .unwrap();
    }

    let item = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an item within the timeout");
    assert!(matches!(
        item,
        Some(Err(StoreError::Gone { requested: 0, .. }))
    ));
    let end = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("the end within the timeout");
    assert!(end.is_none());
}

#[tokio::test]
async fn reopening_a_file_backed_store_keeps_every_object_the_revision_and_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tugboat.redb");
    {
        let store = RedbStore::open(&path, DEFAULT_HISTORY).unwrap();
        store
            .create(&pod_key("default", "web"), pod("web", "nginx:1"))
            .await
            .unwrap(); // 1
        store
            .create(&pod_key("default", "db"), pod("db", "postgres"))
            .await
            .unwrap(); // 2
        store
            .update(&pod_key("default", "web"), pod("web", "nginx:2"), Some(1))
            .await
            .unwrap(); // 3
        store
            .create(&Key::new("nodes", None, "node-1"), json!({}))
            .await
            .unwrap(); // 4
        store.delete(&pod_key("default", "db"), None).await.unwrap(); // 5
    }

    let store = RedbStore::open(&path, DEFAULT_HISTORY).unwrap();
    assert_eq!(store.revision(), 5);
    let web = store
        .get(&pod_key("default", "web"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((web.revision, rv(&web)), (3, "3"));
    assert_eq!(web.object["spec"]["image"], "nginx:2");
    assert!(
        store
            .get(&pod_key("default", "db"))
            .await
            .unwrap()
            .is_none()
    );
    let node = store
        .get(&Key::new("nodes", None, "node-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(node.revision, 4);

    let mut stream = store.watch("pods", None, 1).await.unwrap();
    assert_eq!(
        summary(&next_event(&mut stream).await),
        (2, EventType::Added, "db".into())
    );
    assert_eq!(
        summary(&next_event(&mut stream).await),
        (3, EventType::Modified, "web".into())
    );
    let deleted = next_event(&mut stream).await;
    assert_eq!(summary(&deleted), (5, EventType::Deleted, "db".into()));
    assert_eq!(deleted.object["metadata"]["resourceVersion"], "5");

    let next = store
        .create(&pod_key("default", "cache"), json!({}))
        .await
        .unwrap();
    assert_eq!(next.revision, 6);
    assert_eq!(next_event(&mut stream).await.revision, 6);
}

#[tokio::test]
async fn reopening_with_a_smaller_history_bound_compacts_the_older_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tugboat.redb");
    {
        let store = RedbStore::open(&path, DEFAULT_HISTORY).unwrap();
        for i in 0..6 {
            store
                .create(&pod_key("default", &format!("p{i}")), json!({}))
                .await
                .unwrap();
        }
    }
    {
        let store = RedbStore::open(&path, 2).unwrap();
        assert!(matches!(
            store.watch("pods", None, 3).await.err(),
            Some(StoreError::Gone {
                requested: 3,
                compacted: 4
            })
        ));
    }
    // Reopening with a larger bound cannot bring the compacted history back.
    let store = RedbStore::open(&path, DEFAULT_HISTORY).unwrap();
    assert!(store.watch("pods", None, 3).await.is_err());
    let mut stream = store.watch("pods", None, 4).await.unwrap();
    assert_eq!(next_event(&mut stream).await.revision, 5);
    assert_eq!(next_event(&mut stream).await.revision, 6);
    assert_eq!(store.list("pods", None).await.unwrap().0.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_unique_gap_free_revisions_that_a_watcher_sees_in_order() {
    const WRITERS: usize = 8;
    const WRITES_EACH: usize = 25;
    let store = Arc::new(RedbStore::in_memory(DEFAULT_HISTORY).unwrap());
    let mut stream = store.watch("pods", None, 0).await.unwrap();

    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let key = pod_key("default", &format!("writer-{writer}"));
            let mut revisions = vec![store.create(&key, json!({})).await.unwrap().revision];
            for _ in 1..WRITES_EACH {
                revisions.push(store.update(&key, json!({}), None).await.unwrap().revision);
            }
            revisions
        }));
    }
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.extend(tokio::time::timeout(WAIT, task).await.unwrap().unwrap());
    }
    revisions.sort_unstable();
    let total = as_revisions(WRITERS * WRITES_EACH);
    assert_eq!(revisions, (1..=total).collect::<Vec<_>>());
    assert_eq!(store.revision(), total);

    for revision in 1..=total {
        let event = next_event(&mut stream).await;
        assert_eq!(event.revision, revision);
        assert_eq!(
            event.object["metadata"]["resourceVersion"],
            revision.to_string()
        );
    }
    assert_quiet(&mut stream).await;
}

fn deep(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!({ "a": v });
    }
    v
}

#[tokio::test]
async fn the_history_is_bounded_by_bytes_as_well_as_by_count() {
    let history = History {
        events: DEFAULT_HISTORY,
        bytes: 1 << 20,
    };
    let store = RedbStore::in_memory_with(history, BROADCAST_CAPACITY).unwrap();
    let key = pod_key("default", "big");
    store.create(&key, json!({"spec": ""})).await.unwrap();
    for i in 0..40 {
        store
            .update(
                &key,
                json!({"spec": format!("{i}{}", "x".repeat(100 << 10))}),
                None,
            )
            .await
            .unwrap();
    }
    let (events, bytes) = store.history_size();
    assert!(bytes <= 1 << 20, "{bytes} bytes of history kept");
    assert!(events < 12, "{events} events kept");
    // A watch from before what is kept is told to relist.
    assert!(matches!(
        store.watch("pods", None, 1).await.err(),
        Some(StoreError::Gone { .. })
    ));
    // The newest events replay.
    let mut w = store
        .watch("pods", None, store.revision() - 2)
        .await
        .unwrap();
    assert_eq!(next_event(&mut w).await.revision, store.revision() - 1);
}

#[tokio::test]
async fn the_file_gives_back_what_deletes_free() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tugboat.redb");
    let history = History {
        events: 100,
        bytes: 4 << 20,
    };
    let store = RedbStore::open_with(&path, history).unwrap();
    let blob = "z".repeat(1 << 20);
    for i in 0..40 {
        store
            .create(&pod_key("default", &format!("p{i}")), json!({"spec": blob}))
            .await
            .unwrap();
    }
    let full = std::fs::metadata(&path).unwrap().len();
    for i in 0..40 {
        store
            .delete(&pod_key("default", &format!("p{i}")), None)
            .await
            .unwrap();
    }
    drop(store);
    // Reopening compacts whatever the running store had not yet.
    let store = RedbStore::open_with(&path, history).unwrap();
    let after = std::fs::metadata(&path).unwrap().len();
    assert!(
        after < full / 3,
        "the file was {full} bytes full and {after} bytes after deleting everything"
    );
    assert_eq!(store.list("pods", None).await.unwrap().0.len(), 0);
}

#[tokio::test]
async fn an_unreadable_object_is_quarantined_and_the_store_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tugboat.redb");
    {
        let store = RedbStore::open(&path, DEFAULT_HISTORY).unwrap();
        store
            .create(&pod_key("default", "good"), pod("good", "a"))
            .await
            .unwrap(); // 1
        store
            .create(&pod_key("default", "bad"), pod("bad", "b"))
            .await
            .unwrap(); // 2
    }
    // What an older version without depth bounds could have written.
    let poison = serde_json::to_vec(&json!({
        "metadata": {"name": "bad", "resourceVersion": "2"}, "spec": deep(300)
    }))
    .unwrap();
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(OBJECTS).unwrap();
            t.insert(
                pod_key("default", "bad").encode().as_str(),
                poison.as_slice(),
            )
            .unwrap();
            let record = format!(
                r#"{{"type":"ADDED","key":"pods/default/bad","object":{}}}"#,
                String::from_utf8(poison.clone()).unwrap()
            );
            let mut h = txn.open_table(HISTORY).unwrap();
            h.insert(2, record.as_bytes()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = RedbStore::open(&path, DEFAULT_HISTORY).unwrap();
    assert_eq!(store.revision(), 2);
    assert!(
        store
            .get(&pod_key("default", "good"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .get(&pod_key("default", "bad"))
            .await
            .unwrap()
            .is_none()
    );
    let kept = store.quarantined().unwrap();
    let rows: Vec<&str> = kept.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(rows, ["history/2", "objects/pods/default/bad"]);
    assert_eq!(kept[1].1, poison, "kept byte for byte");
    // Watches from before the unreadable event relist; later ones work.
    assert!(matches!(
        store.watch("pods", None, 1).await.err(),
        Some(StoreError::Gone { .. })
    ));
    store
        .create(&pod_key("default", "next"), pod("next", "c"))
        .await
        .unwrap();
    drop(store);
    let store = RedbStore::open(&path, DEFAULT_HISTORY).unwrap();
    assert_eq!(store.revision(), 3);
    assert_eq!(store.quarantined().unwrap().len(), 2);
}

#[tokio::test]
async fn a_list_at_a_revision_is_served_until_its_range_changes() {
    let store = RedbStore::in_memory(DEFAULT_HISTORY).unwrap();
    for name in ["a", "b", "c", "d"] {
        store
            .create(&pod_key("default", name), pod(name, "x"))
            .await
            .unwrap();
    }
    let rev = store.revision();
    let after_b = pod_key("default", "b");
    let names = |v: Vec<Stored>| -> Vec<String> {
        v.iter()
            .map(|s| s.object["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let page = store
        .list_at("pods", None, rev, Some(&after_b))
        .await
        .unwrap();
    assert_eq!(names(page), ["c", "d"]);
    // A change before the page's start does not matter; one after it does.
    store.delete(&pod_key("default", "a"), None).await.unwrap();
    let page = store
        .list_at("pods", None, rev, Some(&after_b))
        .await
        .unwrap();
    assert_eq!(names(page), ["c", "d"]);
    store
        .create(&Key::new("nodes", None, "n"), json!({}))
        .await
        .unwrap();
    assert!(
        store
            .list_at("pods", None, rev, Some(&after_b))
            .await
            .is_ok()
    );
    store.delete(&pod_key("default", "d"), None).await.unwrap();
    assert!(matches!(
        store.list_at("pods", None, rev, Some(&after_b)).await,
        Err(StoreError::Gone { .. })
    ));
}

#[tokio::test]
async fn numbers_read_back_exactly_as_they_were_written() {
    // Found by the store fuzz target: without serde_json's float_roundtrip a
    // long number came back from the file one unit off in its last place.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tugboat.redb");
    let text = format!(
        r#"{{"spec": {{"x": [{}, 0.1, 5e-324, 1.7976931348623157e308]}}}}"#,
        "1".repeat(74)
    );
    let object: Value = serde_json::from_str(&text).unwrap();
    let key = pod_key("default", "n");
    let stored = {
        let store = RedbStore::open(&path, DEFAULT_HISTORY).unwrap();
        store.create(&key, object).await.unwrap()
    };
    let store = RedbStore::open(&path, DEFAULT_HISTORY).unwrap();
    let back = store.get(&key).await.unwrap().unwrap();
    assert_eq!(back.object, stored.object);
}

/// A modification carries the state it replaced (what a filtered watch needs to
/// tell an object leaving its selection), in the live stream and in the history
/// read back after a reopen.
#[tokio::test]
async fn a_modification_event_carries_the_state_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prev.redb");
    let key = pod_key("default", "web");
    {
        let store = RedbStore::open(&path, DEFAULT_HISTORY).unwrap();
        let mut events = store.watch("pods", None, 0).await.unwrap();
        store.create(&key, pod("web", "nginx:1")).await.unwrap();
        store
            .update(&key, pod("web", "nginx:2"), None)
            .await
            .unwrap();
        let added = next_event(&mut events).await;
        assert!(added.prev.is_none());
        let modified = next_event(&mut events).await;
        assert_eq!(modified.prev.unwrap()["spec"]["image"], "nginx:1");
    }
    let store = RedbStore::open(&path, DEFAULT_HISTORY).unwrap();
    let mut replay = store.watch("pods", None, 0).await.unwrap();
    assert!(next_event(&mut replay).await.prev.is_none());
    let modified = next_event(&mut replay).await;
    assert_eq!(modified.object["spec"]["image"], "nginx:2");
    assert_eq!(modified.prev.unwrap()["spec"]["image"], "nginx:1");
}

// Group commit.

/// Runs `writes` as the writer thread runs the writes it finds queued together
/// (in as many batches as the bounds make), and returns their answers in order.
fn in_one_queue(store: &RedbStore, writes: Vec<(Key, Write)>) -> Vec<Result<Stored, StoreError>> {
    let mut queue = std::collections::VecDeque::new();
    let mut answers = Vec::new();
    for (key, op) in writes {
        let (request, answer) = store.inner.request(&key, op);
        queue.push_back(request);
        answers.push(answer);
    }
    while !queue.is_empty() {
        store.inner.write_batch(&mut queue);
    }
    answers
        .into_iter()
        .map(|mut answer| answer.try_recv().expect("every write answered"))
        .collect()
}

fn revision_of(result: &Result<Stored, StoreError>) -> Revision {
    match result {
        Ok(stored) => stored.revision,
        Err(e) => panic!("expected a write, got {e}"),
    }
}

#[tokio::test]
async fn the_same_key_twice_in_one_batch_behaves_as_two_writes_in_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("batch.redb");
    let web = pod_key("default", "web");
    let other = pod_key("default", "other");
    let gone = pod_key("default", "gone");
    {
        let store = RedbStore::open(&path, DEFAULT_HISTORY).unwrap();
        store.create(&other, pod("other", "x")).await.unwrap(); // 1
        let mut events = store.watch("pods", None, 1).await.unwrap();
        let commits = store.commits();
        let answers = in_one_queue(
            &store,
            vec![
                (web.clone(), Write::Create(pod("web", "v1"))),
                (web.clone(), Write::Update(pod("web", "v2"), Some(2))),
                // Checked against the update just before it, not the mirror.
                (web.clone(), Write::Update(pod("web", "stale"), Some(2))),
                (web.clone(), Write::Delete(None)),
                (web.clone(), Write::Create(pod("web", "v3"))),
                (web.clone(), Write::Create(pod("web", "again"))),
                (gone.clone(), Write::Update(pod("gone", "x"), None)),
                (other.clone(), Write::Delete(Some(1))),
            ],
        );
        assert_eq!(store.commits(), commits + 1, "one transaction");
        assert_eq!(revision_of(&answers[0]), 2);
        assert_eq!(revision_of(&answers[1]), 3);
        assert!(matches!(
            answers[2],
            Err(StoreError::Conflict {
                expected: 2,
                actual: 3,
                ..
            })
        ));
        assert_eq!(revision_of(&answers[3]), 4);
        assert_eq!(answers[3].as_ref().unwrap().object["spec"]["image"], "v2");
        assert_eq!(revision_of(&answers[4]), 5);
        assert!(matches!(&answers[5], Err(StoreError::AlreadyExists(k)) if *k == web));
        assert!(matches!(&answers[6], Err(StoreError::NotFound(k)) if *k == gone));
        assert_eq!(revision_of(&answers[7]), 6);
        assert_eq!(store.revision(), 6);

        let mut seen = Vec::new();
        for _ in 2..=6 {
            let event = next_event(&mut events).await;
            let image = event.object["spec"]["image"].clone();
            let prev = event.prev.as_ref().map(|p| p["spec"]["image"].clone());
            seen.push((summary(&event), image, prev));
        }
        let web = |r, t| (r, t, "web".to_string());
        assert_eq!(
            seen,
            [
                (web(2, EventType::Added), json!("v1"), None),
                (web(3, EventType::Modified), json!("v2"), Some(json!("v1"))),
                (web(4, EventType::Deleted), json!("v2"), None),
                (web(5, EventType::Added), json!("v3"), None),
                ((6, EventType::Deleted, "other".into()), json!("x"), None),
            ]
        );
        assert_quiet(&mut events).await;
    }
    let store = RedbStore::open(&path, DEFAULT_HISTORY).unwrap();
    assert_eq!(store.revision(), 6);
    let got = store.get(&web).await.unwrap().unwrap();
    assert_eq!((got.revision, rv(&got)), (5, "5"));
    assert_eq!(got.object["spec"]["image"], "v3");
    assert!(store.get(&other).await.unwrap().is_none());
    let mut replay = store.watch("pods", None, 1).await.unwrap();
    for revision in 2..=6 {
        assert_eq!(next_event(&mut replay).await.revision, revision);
    }
    assert_quiet(&mut replay).await;
}

#[tokio::test]
async fn a_refused_write_in_a_batch_fails_alone_and_takes_no_revision() {
    let store = RedbStore::in_memory(DEFAULT_HISTORY).unwrap();
    let b = pod_key("default", "b");
    store.create(&b, pod("b", "x")).await.unwrap(); // 1
    let mut events = store.watch("pods", None, 1).await.unwrap();
    let answers = in_one_queue(
        &store,
        vec![
            (pod_key("default", "a"), Write::Create(pod("a", "x"))),
            (b.clone(), Write::Update(pod("b", "y"), Some(99))),
            (
                pod_key("default", "deep"),
                Write::Create(json!({"spec": deep(200)})),
            ),
            (pod_key("default", "list"), Write::Create(json!([1]))),
            (b.clone(), Write::Delete(Some(7))),
            (pod_key("default", "c"), Write::Create(pod("c", "x"))),
        ],
    );
    assert_eq!(revision_of(&answers[0]), 2);
    assert!(matches!(answers[1], Err(StoreError::Conflict { .. })));
    assert!(matches!(answers[2], Err(StoreError::Limit(..))));
    assert!(matches!(answers[3], Err(StoreError::Backend(_))));
    assert!(matches!(answers[4], Err(StoreError::Conflict { .. })));
    assert_eq!(revision_of(&answers[5]), 3);
    assert_eq!(store.revision(), 3);
    assert_eq!(next_event(&mut events).await.key.name, "a");
    assert_eq!(next_event(&mut events).await.key.name, "c");
    assert_quiet(&mut events).await;
    assert_eq!(store.get(&b).await.unwrap().unwrap().revision, 1);
    assert!(!store.writing());
}

/// Memory storage whose writes can be made to fail, standing in for a disk
/// that refuses a commit.
#[derive(Debug)]
struct Flaky {
    memory: Arc<::redb::backends::InMemoryBackend>,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl Flaky {
    fn check(&self) -> std::io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the disk refuses writes"));
        }
        Ok(())
    }
}

impl ::redb::StorageBackend for Flaky {
    fn len(&self) -> std::io::Result<u64> {
        self.memory.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.memory.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.memory.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.check()?;
        self.memory.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.memory.write(offset, data)
    }
}

#[tokio::test]
async fn a_failed_commit_fails_its_whole_batch_and_changes_nothing() {
    let memory = Arc::new(::redb::backends::InMemoryBackend::new());
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let open = || {
        let db = Database::builder()
            .create_with_backend(Flaky {
                memory: Arc::clone(&memory),
                failing: Arc::clone(&failing),
            })
            .unwrap();
        RedbStore::load(db, "flaky".into(), History::default(), BROADCAST_CAPACITY).unwrap()
    };
    let a = pod_key("default", "a");
    let b = pod_key("default", "b");
    {
        let store = open();
        store.create(&a, pod("a", "v1")).await.unwrap(); // 1
        let mut events = store.watch("pods", None, 1).await.unwrap();
        failing.store(true, Ordering::SeqCst);
        let answers = in_one_queue(
            &store,
            vec![
                (a.clone(), Write::Update(pod("a", "v2"), Some(1))),
                (b.clone(), Write::Create(pod("b", "v1"))),
                // Refused only because of the write before it, which failed.
                (b.clone(), Write::Create(pod("b", "v2"))),
                // Refused whatever the batch does: answered alone.
                (
                    pod_key("default", "gone"),
                    Write::Update(pod("gone", "v1"), None),
                ),
            ],
        );
        for answer in &answers[..3] {
            assert!(matches!(answer, Err(StoreError::Backend(_))), "{answer:?}");
        }
        assert!(matches!(answers[3], Err(StoreError::NotFound(_))));
        assert_eq!(store.revision(), 1);
        let got = store.get(&a).await.unwrap().unwrap();
        assert_eq!(
            (got.revision, &got.object["spec"]["image"]),
            (1, &json!("v1"))
        );
        assert!(store.get(&b).await.unwrap().is_none());
        assert_quiet(&mut events).await;
        assert!(!store.writing());
        failing.store(false, Ordering::SeqCst);
    }
    // What the file holds agrees, and the failed writes used up no revision.
    let store = open();
    assert_eq!(store.revision(), 1);
    assert!(store.get(&b).await.unwrap().is_none());
    assert_eq!(store.create(&b, pod("b", "v1")).await.unwrap().revision, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_writers_lose_no_acknowledged_write_and_share_commits() {
    const WRITERS: usize = 64;
    const WRITES_EACH: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.redb");
    let total = as_revisions(WRITERS * WRITES_EACH);
    // Every acknowledgement: (revision, writer, step).
    let mut acks = Vec::new();
    {
        let store = Arc::new(RedbStore::open(&path, DEFAULT_HISTORY).unwrap());
        let mut stream = store.watch("pods", None, 0).await.unwrap();
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let name = format!("writer-{writer}");
                let key = pod_key("default", &name);
                let step = |i: usize| json!({"metadata": {"name": name}, "spec": {"step": i}});
                let mut acks = Vec::new();
                let mut last = store.create(&key, step(0)).await.unwrap().revision;
                acks.push((last, writer, 0));
                for i in 1..WRITES_EACH {
                    // Each update expects the revision of the one before it.
                    last = store
                        .update(&key, step(i), Some(last))
                        .await
                        .unwrap()
                        .revision;
                    acks.push((last, writer, i));
                }
                acks
            }));
        }
        for task in tasks {
            acks.extend(tokio::time::timeout(WAIT, task).await.unwrap().unwrap());
        }
        acks.sort_unstable();
        let revisions: Vec<Revision> = acks.iter().map(|(r, _, _)| *r).collect();
        assert_eq!(revisions, (1..=total).collect::<Vec<_>>());
        assert!(
            store.commits() < total,
            "{} commits for {total} writes",
            store.commits()
        );
        for &(revision, writer, step) in &acks {
            let event = next_event(&mut stream).await;
            assert_eq!(event.revision, revision);
            assert_eq!(event.key.name, format!("writer-{writer}"));
            assert_eq!(event.object["spec"]["step"], step);
        }
        assert_quiet(&mut stream).await;
    }
    let store = RedbStore::open(&path, DEFAULT_HISTORY).unwrap();
    assert_eq!(store.revision(), total);
    for writer in 0..WRITERS {
        let got = store
            .get(&pod_key("default", &format!("writer-{writer}")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.object["spec"]["step"], WRITES_EACH - 1);
    }
    let mut replay = store.watch("pods", None, 0).await.unwrap();
    for &(revision, _, step) in &acks {
        let event = next_event(&mut replay).await;
        assert_eq!(
            (event.revision, &event.object["spec"]["step"]),
            (revision, &json!(step))
        );
    }
    assert_quiet(&mut replay).await;
}

#[tokio::test]
async fn a_batch_larger_than_the_history_bound_compacts_it_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bound.redb");
    {
        let store = RedbStore::open(&path, 5).unwrap();
        for i in 0..3 {
            store
                .create(&pod_key("default", &format!("before-{i}")), json!({}))
                .await
                .unwrap(); // 1..=3
        }
        let writes = (0..8)
            .map(|i| {
                (
                    pod_key("default", &format!("p{i}")),
                    Write::Create(json!({})),
                )
            })
            .collect();
        let answers = in_one_queue(&store, writes); // 4..=11
        assert_eq!(revision_of(&answers[7]), 11);
        assert_eq!(store.history_size().0, 5);
        assert!(matches!(
            store.watch("pods", None, 5).await.err(),
            Some(StoreError::Gone {
                requested: 5,
                compacted: 6
            })
        ));
    }
    // The file's history is exactly what the mirror kept: it opens, and replays
    // the same.
    let store = RedbStore::open(&path, 5).unwrap();
    assert!(store.watch("pods", None, 5).await.is_err());
    let mut replay = store.watch("pods", None, 6).await.unwrap();
    for revision in 7..=11 {
        assert_eq!(next_event(&mut replay).await.revision, revision);
    }
    assert_quiet(&mut replay).await;
    assert_eq!(store.list("pods", None).await.unwrap().0.len(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_writes_are_split_into_bounded_batches_and_the_file_still_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large.redb");
    let history = History {
        events: 100,
        bytes: 4 << 20,
    };
    let store = Arc::new(RedbStore::open_with(&path, history).unwrap());
    let blob = "z".repeat(1 << 20);
    let writes = (0..40)
        .map(|i| {
            let object = json!({"spec": blob});
            (pod_key("default", &format!("p{i}")), Write::Create(object))
        })
        .collect();
    let answers = in_one_queue(&store, writes);
    assert!(answers.iter().all(Result::is_ok));
    // Each write is about 2 MiB (its row and its history entry).
    let most = MAX_BATCH_BYTES.div_ceil(2 << 20) + 1;
    assert!(
        store.commits() >= as_revisions(40 / most),
        "{} commits for 40 writes of 1 MiB",
        store.commits()
    );
    let full = std::fs::metadata(&path).unwrap().len();
    let mut deletes = Vec::new();
    for i in 0..40 {
        let store = Arc::clone(&store);
        deletes.push(tokio::spawn(async move {
            store
                .delete(&pod_key("default", &format!("p{i}")), None)
                .await
        }));
    }
    for delete in deletes {
        // Megabytes at a time, and compactions, in a debug build: more than WAIT.
        tokio::time::timeout(6 * WAIT, delete)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    // Compacted while running, not only on the next open.
    let running = std::fs::metadata(&path).unwrap().len();
    assert!(
        running < full / 2,
        "the file was {full} bytes full and {running} bytes after deleting everything"
    );
    drop(Arc::into_inner(store).expect("the only handle"));
    let store = RedbStore::open_with(&path, history).unwrap();
    let reopened = std::fs::metadata(&path).unwrap().len();
    assert!(
        reopened < full / 3,
        "{full} bytes full, {reopened} reopened"
    );
    assert_eq!(store.list("pods", None).await.unwrap().0.len(), 0);
    assert_eq!(store.revision(), 80);
}

#[tokio::test]
async fn indexed_lists_follow_every_write_and_survive_a_reopen() {
    use crate::store::index::By;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let by = |store: &RedbStore, ns: Option<&str>, by: By<'_>| {
        let (found, revision) = futures::executor::block_on(store.list_by("pods", ns, by)).unwrap();
        assert_eq!(revision, store.revision());
        names_of(&found)
    };
    {
        let store = RedbStore::open(&path, DEFAULT_HISTORY).unwrap();
        for (ns, name, owner) in [("a", "p1", "u1"), ("a", "p2", "u1"), ("b", "p3", "u1")] {
            let key = pod_key(ns, name);
            store.create(&key, owned_pod(name, &[owner])).await.unwrap();
        }
        store
            .create(&pod_key("a", "loose"), pod("loose", "nginx"))
            .await
            .unwrap();
        assert_eq!(by(&store, Some("a"), By::Controller("u1")), ["p1", "p2"]);
        assert_eq!(by(&store, None, By::Controller("u1")), ["p1", "p2", "p3"]);
        assert_eq!(by(&store, None, By::Node("")), ["loose", "p1", "p2", "p3"]);
        let (rs, _) = store
            .list_by("replicasets", None, By::Controller("u1"))
            .await
            .unwrap();
        assert!(rs.is_empty());

        // Re-owned and bound, orphaned, deleted: each shows at once.
        let mut p1 = owned_pod("p1", &["u2"]);
        p1["spec"] = json!({"nodeName": "n1"});
        store.update(&pod_key("a", "p1"), p1, None).await.unwrap();
        store
            .update(&pod_key("b", "p3"), owned_pod("p3", &[]), None)
            .await
            .unwrap();
        store.delete(&pod_key("a", "p2"), None).await.unwrap();
        assert!(by(&store, None, By::Controller("u1")).is_empty());
        assert_eq!(by(&store, Some("a"), By::Controller("u2")), ["p1"]);
        assert_eq!(by(&store, None, By::Node("n1")), ["p1"]);
        assert_eq!(by(&store, Some("b"), By::Node("n1")), Vec::<String>::new());
        assert_eq!(by(&store, None, By::Node("")), ["loose", "p3"]);
        let (found, _) = store.list_by("pods", None, By::Node("n1")).await.unwrap();
        let got = store.get(&pod_key("a", "p1")).await.unwrap().unwrap();
        assert_eq!(found[0].object, got.object);
    }
    // Rebuilt from the file.
    let store = RedbStore::open(&path, DEFAULT_HISTORY).unwrap();
    assert_eq!(by(&store, None, By::Controller("u2")), ["p1"]);
    assert_eq!(by(&store, None, By::Node("n1")), ["p1"]);
    assert!(by(&store, None, By::Controller("u1")).is_empty());
}

/// The store suite, on an in-memory database.
mod suite {
    use std::future::Future;
    use std::pin::Pin;

    use super::*;
    use crate::store::suite::{Backend, store_suite};

    fn make(history: History) -> Pin<Box<dyn Future<Output = Backend> + Send>> {
        Box::pin(async move {
            let store = RedbStore::in_memory_with(history, BROADCAST_CAPACITY).unwrap();
            Backend {
                store: Arc::new(store),
                _keep: Box::new(()),
            }
        })
    }

    store_suite!(make);
}
