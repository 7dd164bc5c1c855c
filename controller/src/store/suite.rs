//! The [`Store`] contract as one suite, run against every backend: redb's tests
//! run it on an in-memory database, etcd's on a real etcd started for each test.
//! What only one backend promises (redb's gap-free revisions, its file; etcd's
//! reads across controllers) is tested beside that backend.
//!
//! Revisions are compared with each other, never with fixed numbers: etcd's
//! counter does not start at zero, and other writes to the same etcd move it.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tugboat_api::limits;

use super::index::By;
use super::redb::History;
use super::{EventType, Key, Revision, Store, StoreError, StoreEvent, Stored, WatchStream};

/// Long enough for any event that is coming; a test hitting it has failed.
const WAIT: Duration = Duration::from_secs(10);
/// How long to listen for an event that must not come.
const QUIET: Duration = Duration::from_millis(200);

/// A store under test, and what must live as long as it (an etcd server).
pub(crate) struct Backend {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) _keep: Box<dyn Any + Send>,
}

/// Makes a fresh, empty store with these history bounds.
pub(crate) type Make = fn(History) -> Pin<Box<dyn Future<Output = Backend> + Send>>;

/// One `#[tokio::test]` per case of the suite, on the backend `make` makes.
macro_rules! store_suite {
    ($make:expr) => {
        $crate::store::suite::store_suite!(@cases $make;
            revisions_increase_with_every_write_and_become_the_resource_version,
            creating_an_existing_key_fails_with_already_exists,
            updating_with_a_stale_revision_conflicts_and_leaves_the_object_unchanged,
            deleting_with_a_stale_revision_conflicts_and_deleting_twice_is_not_found,
            objects_without_metadata_get_one_and_non_objects_are_refused,
            objects_too_deep_or_too_large_to_read_back_are_never_written,
            watching_from_an_old_revision_replays_exactly_what_came_after_then_live_events,
            watching_from_the_current_or_a_future_revision_streams_only_later_events,
            watching_a_namespace_sees_only_its_events,
            live_events_go_only_to_their_resources_watchers,
            watching_from_before_the_history_bound_is_gone,
            concurrent_writers_get_unique_revisions_that_a_watcher_sees_in_order,
            list_returns_objects_ordered_by_key_with_the_current_revision,
            a_later_page_at_a_revision_shows_that_revision_or_is_gone,
            waiting_for_a_revision_returns_when_it_is_written_or_times_out,
            numbers_read_back_exactly_as_they_were_written,
            a_modification_event_carries_the_state_before_it,
            indexed_lists_follow_every_write,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::store::suite::$case($make).await;
            }
        )*
    };
}
pub(crate) use store_suite;

pub(crate) fn pod_key(namespace: &str, name: &str) -> Key {
    Key::new("pods", Some(namespace), name)
}

pub(crate) fn pod(name: &str, image: &str) -> Value {
    json!({ "metadata": { "name": name }, "spec": { "image": image } })
}

fn rv(stored: &Stored) -> Revision {
    stored.object["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion is a string")
        .parse()
        .expect("resourceVersion is a number")
}

pub(crate) fn names_of(stored: &[Stored]) -> Vec<String> {
    stored
        .iter()
        .map(|s| {
            s.object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

pub(crate) async fn next_event(stream: &mut WatchStream) -> StoreEvent {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an event within the timeout")
        .expect("the stream has not ended")
        .expect("an event, not an error")
}

pub(crate) async fn assert_quiet(stream: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(QUIET, stream.next()).await {
        panic!("expected no event, got {item:?}");
    }
}

pub(crate) fn summary(event: &StoreEvent) -> (Revision, EventType, String) {
    (event.revision, event.event_type, event.key.name.clone())
}

pub(crate) async fn revisions_increase_with_every_write_and_become_the_resource_version(
    make: Make,
) {
    let b = make(History::default()).await;
    let store = &b.store;
    let start = store.revision();
    let key = pod_key("default", "web");

    let created = store.create(&key, pod("web", "nginx:1")).await.unwrap();
    assert!(created.revision > start);
    assert_eq!(rv(&created), created.revision);
    let updated = store
        .update(&key, pod("web", "nginx:2"), Some(created.revision))
        .await
        .unwrap();
    assert!(updated.revision > created.revision);
    assert_eq!(rv(&updated), updated.revision);
    let other = store
        .create(&pod_key("default", "db"), json!({}))
        .await
        .unwrap();
    assert!(other.revision > updated.revision);
    let deleted = store.delete(&key, Some(updated.revision)).await.unwrap();
    assert!(deleted.revision > other.revision);
    assert_eq!(rv(&deleted), deleted.revision);
    assert_eq!(deleted.object["spec"]["image"], "nginx:2");
    assert!(store.revision() >= deleted.revision);

    let got = store.get(&pod_key("default", "db")).await.unwrap().unwrap();
    assert_eq!(got.revision, other.revision);
    assert_eq!(rv(&got), other.revision);
    assert!(store.get(&key).await.unwrap().is_none());
    // What is sent as stored is the object itself.
    let json: Value = serde_json::from_slice(got.json().expect("kept encoded")).unwrap();
    assert_eq!(json, *got.object);
}

pub(crate) async fn creating_an_existing_key_fails_with_already_exists(make: Make) {
    let b = make(History::default()).await;
    let store = &b.store;
    let key = pod_key("default", "web");
    store.create(&key, pod("web", "nginx:1")).await.unwrap();
    let before = store.revision();

    let err = store.create(&key, pod("web", "nginx:2")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists(ref k) if *k == key),
        "{err}"
    );
    assert_eq!(store.revision(), before);
    let got = store.get(&key).await.unwrap().unwrap();
    assert_eq!(got.object["spec"]["image"], "nginx:1");
}

pub(crate) async fn updating_with_a_stale_revision_conflicts_and_leaves_the_object_unchanged(
    make: Make,
) {
    let b = make(History::default()).await;
    let store = &b.store;
    let key = pod_key("default", "web");
    let created = store.create(&key, pod("web", "nginx:1")).await.unwrap();
    let updated = store
        .update(&key, pod("web", "nginx:2"), None)
        .await
        .unwrap();

    let err = store
        .update(&key, pod("web", "nginx:3"), Some(created.revision))
        .await
        .unwrap_err();
    match err {
        StoreError::Conflict {
            expected, actual, ..
        } => assert_eq!((expected, actual), (created.revision, updated.revision)),
        other => panic!("expected a conflict, got {other}"),
    }
    let got = store.get(&key).await.unwrap().unwrap();
    assert_eq!(got.revision, updated.revision);
    assert_eq!(got.object["spec"]["image"], "nginx:2");

    let missing = store
        .update(&pod_key("default", "nope"), pod("nope", "x"), None)
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing}");
    let missing = store
        .update(&pod_key("default", "nope"), pod("nope", "x"), Some(1))
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing}");
}

pub(crate) async fn deleting_with_a_stale_revision_conflicts_and_deleting_twice_is_not_found(
    make: Make,
) {
    let b = make(History::default()).await;
    let store = &b.store;
    let key = pod_key("default", "web");
    let created = store.create(&key, pod("web", "nginx:1")).await.unwrap();
    let updated = store
        .update(&key, pod("web", "nginx:2"), Some(created.revision))
        .await
        .unwrap();

    let err = store
        .delete(&key, Some(created.revision))
        .await
        .unwrap_err();
    match err {
        StoreError::Conflict {
            expected, actual, ..
        } => assert_eq!((expected, actual), (created.revision, updated.revision)),
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(store.get(&key).await.unwrap().is_some());

    store.delete(&key, None).await.unwrap();
    let again = store.delete(&key, None).await.unwrap_err();
    assert!(
        matches!(again, StoreError::NotFound(ref k) if *k == key),
        "{again}"
    );
}

pub(crate) async fn objects_without_metadata_get_one_and_non_objects_are_refused(make: Make) {
    let b = make(History::default()).await;
    let store = &b.store;
    let stored = store
        .create(&pod_key("default", "bare"), json!({ "spec": {} }))
        .await
        .unwrap();
    assert_eq!(rv(&stored), stored.revision);
    let before = store.revision();

    let err = store
        .create(&pod_key("default", "list"), json!([1, 2]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
    assert_eq!(store.revision(), before);
    assert!(
        store
            .get(&pod_key("default", "list"))
            .await
            .unwrap()
            .is_none()
    );
}

fn deep(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!({ "a": v });
    }
    v
}

pub(crate) async fn objects_too_deep_or_too_large_to_read_back_are_never_written(make: Make) {
    let b = make(History::default()).await;
    let store = &b.store;
    let before = store.revision();
    let key = pod_key("default", "deep");
    let err = store
        .create(
            &key,
            json!({"metadata": {"name": "deep"}, "spec": deep(200)}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Limit(_, limits::LimitError::TooDeep { .. })
        ),
        "{err}"
    );
    let err = store
        .create(&key, json!({"spec": "x".repeat(limits::MAX_OBJECT_BYTES)}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Limit(_, limits::LimitError::TooLarge { .. })
        ),
        "{err}"
    );
    assert_eq!(store.revision(), before);
    assert!(store.get(&key).await.unwrap().is_none());
}

pub(crate) async fn watching_from_an_old_revision_replays_exactly_what_came_after_then_live_events(
    make: Make,
) {
    let b = make(History::default()).await;
    let store = &b.store;
    let web = pod_key("default", "web");
    let db = pod_key("default", "db");
    let first = store.create(&web, pod("web", "nginx:1")).await.unwrap();
    let added = store.create(&db, pod("db", "postgres")).await.unwrap();
    store
        .create(&Key::new("services", Some("default"), "web"), json!({}))
        .await
        .unwrap();
    let modified = store
        .update(&web, pod("web", "nginx:2"), None)
        .await
        .unwrap();

    let mut stream = store.watch("pods", None, first.revision).await.unwrap();
    assert_eq!(
        summary(&next_event(&mut stream).await),
        (added.revision, EventType::Added, "db".into())
    );
    let event = next_event(&mut stream).await;
    assert_eq!(
        summary(&event),
        (modified.revision, EventType::Modified, "web".into())
    );
    assert_eq!(event.object, modified.object);
    assert_quiet(&mut stream).await;

    let deleted = store.delete(&db, None).await.unwrap();
    let event = next_event(&mut stream).await;
    assert_eq!(
        summary(&event),
        (deleted.revision, EventType::Deleted, "db".into())
    );
    assert_eq!(rv(&deleted), deleted.revision);
    assert_eq!(event.object, deleted.object);
    assert_eq!(event.object["spec"]["image"], "postgres");
    assert_quiet(&mut stream).await;
}

pub(crate) async fn watching_from_the_current_or_a_future_revision_streams_only_later_events(
    make: Make,
) {
    let b = make(History::default()).await;
    let store = &b.store;
    let a = store
        .create(&pod_key("default", "a"), json!({}))
        .await
        .unwrap();
    let mut current = store.watch("pods", None, a.revision).await.unwrap();
    let b1 = store
        .create(&pod_key("default", "b"), json!({}))
        .await
        .unwrap();
    let mut future = store.watch("pods", None, b1.revision).await.unwrap();
    let c = store
        .create(&pod_key("default", "c"), json!({}))
        .await
        .unwrap();

    assert_eq!(next_event(&mut current).await.revision, b1.revision);
    assert_eq!(next_event(&mut current).await.revision, c.revision);
    assert_eq!(next_event(&mut future).await.revision, c.revision);
    assert_quiet(&mut current).await;
    assert_quiet(&mut future).await;
}

pub(crate) async fn watching_a_namespace_sees_only_its_events(make: Make) {
    let b = make(History::default()).await;
    let store = &b.store;
    let start = store.revision();
    let one = store
        .create(&pod_key("team-a", "one"), json!({}))
        .await
        .unwrap();
    store
        .create(&pod_key("team-b", "two"), json!({}))
        .await
        .unwrap();
    // A namespace whose name extends "team-a" must not leak in.
    store
        .create(&pod_key("team-ab", "three"), json!({}))
        .await
        .unwrap();

    let mut stream = store.watch("pods", Some("team-a"), start).await.unwrap();
    assert_eq!(
        summary(&next_event(&mut stream).await),
        (one.revision, EventType::Added, "one".into())
    );
    store
        .create(&pod_key("team-b", "four"), json!({}))
        .await
        .unwrap();
    let five = store
        .create(&pod_key("team-a", "five"), json!({}))
        .await
        .unwrap();
    assert_eq!(
        summary(&next_event(&mut stream).await),
        (five.revision, EventType::Added, "five".into())
    );
    assert_quiet(&mut stream).await;
}

pub(crate) async fn live_events_go_only_to_their_resources_watchers(make: Make) {
    let b = make(History::default()).await;
    let store = &b.store;
    let start = store.revision();
    let mut pods = store.watch("pods", None, start).await.unwrap();
    let mut nodes = store.watch("nodes", None, start).await.unwrap();
    let node = Key::new("nodes", None, "n1");
    let n1 = store.create(&node, json!({})).await.unwrap();
    let one = store.create(&pod_key("a", "one"), json!({})).await.unwrap();
    let n2 = store.update(&node, json!({"x": 1}), None).await.unwrap();
    let two = store.create(&pod_key("a", "two"), json!({})).await.unwrap();
    assert_eq!(next_event(&mut pods).await.revision, one.revision);
    assert_eq!(next_event(&mut pods).await.revision, two.revision);
    assert_quiet(&mut pods).await;
    assert_eq!(next_event(&mut nodes).await.revision, n1.revision);
    assert_eq!(next_event(&mut nodes).await.revision, n2.revision);
    assert_quiet(&mut nodes).await;
}

pub(crate) async fn watching_from_before_the_history_bound_is_gone(make: Make) {
    let b = make(History {
        events: 3,
        ..History::default()
    })
    .await;
    let store = &b.store;
    let key = pod_key("default", "web");
    let mut revisions = vec![store.create(&key, json!({})).await.unwrap().revision];
    for _ in 0..4 {
        revisions.push(store.update(&key, json!({}), None).await.unwrap().revision);
    }

    let err = store.watch("pods", None, revisions[0]).await.err();
    assert!(
        matches!(err, Some(StoreError::Gone { requested, .. }) if requested == revisions[0]),
        "{err:?}"
    );
    // The last three events are kept.
    let mut stream = store.watch("pods", None, revisions[1]).await.unwrap();
    for revision in &revisions[2..] {
        assert_eq!(next_event(&mut stream).await.revision, *revision);
    }
    assert_quiet(&mut stream).await;
}

pub(crate) async fn concurrent_writers_get_unique_revisions_that_a_watcher_sees_in_order(
    make: Make,
) {
    const WRITERS: usize = 8;
    const WRITES_EACH: usize = 25;
    let b = make(History::default()).await;
    let store = &b.store;
    let mut stream = store.watch("pods", None, store.revision()).await.unwrap();

    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(store);
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
    revisions.dedup();
    assert_eq!(
        revisions.len(),
        WRITERS * WRITES_EACH,
        "every revision unique"
    );
    assert!(store.revision() >= *revisions.last().unwrap());

    for revision in revisions {
        let event = next_event(&mut stream).await;
        assert_eq!(event.revision, revision);
        assert_eq!(
            event.object["metadata"]["resourceVersion"],
            revision.to_string()
        );
    }
    assert_quiet(&mut stream).await;
}

pub(crate) async fn list_returns_objects_ordered_by_key_with_the_current_revision(make: Make) {
    let b = make(History::default()).await;
    let store = &b.store;
    for (namespace, name) in [("b", "z"), ("a", "y"), ("b", "a"), ("a", "x")] {
        store
            .create(
                &pod_key(namespace, name),
                json!({ "metadata": { "name": name } }),
            )
            .await
            .unwrap();
    }
    store
        .create(&Key::new("podsx", Some("a"), "other"), json!({}))
        .await
        .unwrap();
    let last = store
        .create(&Key::new("nodes", None, "n1"), json!({}))
        .await
        .unwrap();

    let (all, revision) = store.list("pods", None).await.unwrap();
    assert_eq!(names_of(&all), ["x", "y", "a", "z"]);
    assert!(revision >= last.revision);
    let (in_b, _) = store.list("pods", Some("b")).await.unwrap();
    assert_eq!(names_of(&in_b), ["a", "z"]);
    let (nodes, _) = store.list("nodes", None).await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert!(store.list("pods", Some("c")).await.unwrap().0.is_empty());
}

/// A later page of a list shows the moment of its first: the objects as they
/// were then, or `Gone` when the backend cannot show it any more (redb keeps
/// only the latest state; etcd keeps every revision until compacted).
pub(crate) async fn a_later_page_at_a_revision_shows_that_revision_or_is_gone(make: Make) {
    let b = make(History::default()).await;
    let store = &b.store;
    for name in ["a", "b", "c", "d"] {
        store
            .create(&pod_key("default", name), pod(name, "x"))
            .await
            .unwrap();
    }
    let rev = store.revision();
    let after_b = pod_key("default", "b");
    let page = store
        .list_at("pods", None, rev, Some(&after_b))
        .await
        .unwrap();
    assert_eq!(names_of(&page), ["c", "d"]);
    // A change before the page's start does not matter.
    store.delete(&pod_key("default", "a"), None).await.unwrap();
    let page = store
        .list_at("pods", None, rev, Some(&after_b))
        .await
        .unwrap();
    assert_eq!(names_of(&page), ["c", "d"]);
    // One inside it: the page as it was, or gone; never the new state.
    store
        .update(&pod_key("default", "c"), pod("c", "y"), None)
        .await
        .unwrap();
    store.delete(&pod_key("default", "d"), None).await.unwrap();
    match store.list_at("pods", None, rev, Some(&after_b)).await {
        Ok(page) => {
            assert_eq!(names_of(&page), ["c", "d"]);
            assert_eq!(page[0].object["spec"]["image"], "x");
            assert!(page.iter().all(|s| s.revision <= rev));
        }
        Err(StoreError::Gone { .. }) => {}
        Err(other) => panic!("expected the old page or Gone, got {other}"),
    }
}

pub(crate) async fn waiting_for_a_revision_returns_when_it_is_written_or_times_out(make: Make) {
    let b = make(History::default()).await;
    let store = Arc::clone(&b.store);
    let now = store.revision();
    assert!(store.wait_for(now, Duration::from_millis(1)).await);
    assert!(!store.wait_for(now + 1, Duration::from_millis(50)).await);
    let writer = store.clone();
    let write = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer
            .create(&pod_key("default", "a"), json!({}))
            .await
            .unwrap()
    });
    assert!(store.wait_for(now + 1, WAIT).await);
    let written = write.await.unwrap();
    assert!(store.wait_for(written.revision, WAIT).await);
}

pub(crate) async fn numbers_read_back_exactly_as_they_were_written(make: Make) {
    // Found by the store fuzz target: without serde_json's float_roundtrip a
    // long number came back one unit off in its last place.
    let b = make(History::default()).await;
    let store = &b.store;
    let text = format!(
        r#"{{"spec": {{"x": [{}, 0.1, 5e-324, 1.7976931348623157e308, -0.0, 18446744073709551615]}}}}"#,
        "1".repeat(74)
    );
    let object: Value = serde_json::from_str(&text).unwrap();
    let key = pod_key("default", "n");
    let stored = store.create(&key, object).await.unwrap();
    let back = store.get(&key).await.unwrap().unwrap();
    assert_eq!(back.object, stored.object);
    let mut watch = store.watch("pods", None, 0).await;
    if let Ok(watch) = &mut watch {
        let event = next_event(watch).await;
        assert_eq!(event.object, stored.object);
    }
}

pub(crate) async fn a_modification_event_carries_the_state_before_it(make: Make) {
    let b = make(History::default()).await;
    let store = &b.store;
    let key = pod_key("default", "web");
    let start = store.revision();
    let mut events = store.watch("pods", None, start).await.unwrap();
    store.create(&key, pod("web", "nginx:1")).await.unwrap();
    store
        .update(&key, pod("web", "nginx:2"), None)
        .await
        .unwrap();
    let added = next_event(&mut events).await;
    assert!(added.prev.is_none());
    let modified = next_event(&mut events).await;
    assert_eq!(modified.prev.unwrap()["spec"]["image"], "nginx:1");
    // And in a replay from the history.
    let mut replay = store.watch("pods", None, start).await.unwrap();
    assert!(next_event(&mut replay).await.prev.is_none());
    let modified = next_event(&mut replay).await;
    assert_eq!(modified.object["spec"]["image"], "nginx:2");
    assert_eq!(modified.prev.unwrap()["spec"]["image"], "nginx:1");
}

pub(crate) fn owned_pod(name: &str, owners: &[&str]) -> Value {
    let refs: Vec<Value> = owners
        .iter()
        .map(|u| json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": u, "controller": true}))
        .collect();
    json!({ "metadata": { "name": name, "ownerReferences": refs } })
}

pub(crate) async fn indexed_lists_follow_every_write(make: Make) {
    let b = make(History::default()).await;
    let store = &b.store;
    let by = async |ns: Option<&str>, by: By<'_>| {
        let (found, revision) = store.list_by("pods", ns, by).await.unwrap();
        assert!(revision <= store.revision());
        names_of(&found)
    };
    for (ns, name, owner) in [("a", "p1", "u1"), ("a", "p2", "u1"), ("b", "p3", "u1")] {
        let key = pod_key(ns, name);
        store.create(&key, owned_pod(name, &[owner])).await.unwrap();
    }
    store
        .create(&pod_key("a", "loose"), pod("loose", "nginx"))
        .await
        .unwrap();
    assert_eq!(by(Some("a"), By::Controller("u1")).await, ["p1", "p2"]);
    assert_eq!(by(None, By::Controller("u1")).await, ["p1", "p2", "p3"]);
    assert_eq!(by(None, By::Node("")).await, ["loose", "p1", "p2", "p3"]);
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
    assert!(by(None, By::Controller("u1")).await.is_empty());
    assert_eq!(by(Some("a"), By::Controller("u2")).await, ["p1"]);
    assert_eq!(by(None, By::Node("n1")).await, ["p1"]);
    assert!(by(Some("b"), By::Node("n1")).await.is_empty());
    assert_eq!(by(None, By::Node("")).await, ["loose", "p3"]);
    let (found, _) = store.list_by("pods", None, By::Node("n1")).await.unwrap();
    let got = store.get(&pod_key("a", "p1")).await.unwrap().unwrap();
    assert_eq!(found[0].object, got.object);
}
