//! A property of the store and the registry together: whatever sequence of
//! creates, updates, patches and deletes clients send (valid or not, deep or
//! large or not), every write either happens whole or not at all, nothing refused
//! moves the revision, every stored object is within the bounds, and the store
//! reopens after a restart with exactly the same objects and revision.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};
use tugboat_api::limits;
use tugboat_api::resource::{self, DEPLOYMENTS, NAMESPACES, NODES, PODS};
use tugboat_controller::patch::Patch;
use tugboat_controller::registry::{DeleteOptions, Registry, Subresource, WriteOptions};
use tugboat_controller::store::Store;
use tugboat_controller::store::redb::{History, RedbStore};

/// Any JSON, up to about 80 levels deep so that some values cross the limit.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[a-z0-9.-]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(80, 400, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z:$]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn base(kind: usize, name: &str, replicas: i64) -> (&'static resource::ResourceInfo, Value) {
    let pod_spec = json!({"containers": [{"name": "c", "image": "tugboat/sample:latest"}]});
    match kind % 4 {
        0 => (
            &DEPLOYMENTS,
            json!({"metadata": {"name": name}, "spec": {"replicas": replicas,
                "selector": {"matchLabels": {"app": "p"}},
                "template": {"metadata": {"labels": {"app": "p"}}, "spec": pod_spec}}}),
        ),
        1 => (&PODS, json!({"metadata": {"name": name}, "spec": pod_spec})),
        2 => (&NODES, json!({"metadata": {"name": name}})),
        _ => (&NAMESPACES, json!({"metadata": {"name": name}})),
    }
}

#[derive(Clone, Debug)]
enum Op {
    Create {
        kind: usize,
        name: usize,
        extra: Option<(String, Value)>,
    },
    Update {
        kind: usize,
        name: usize,
        extra: Option<(String, Value)>,
    },
    Patch {
        kind: usize,
        name: usize,
        patch_type: usize,
        body: Value,
    },
    Delete {
        kind: usize,
        name: usize,
    },
}

fn extra() -> impl Strategy<Value = Option<(String, Value)>> {
    prop::option::of((
        prop_oneof![
            Just("spec".to_string()),
            Just("metadata".to_string()),
            Just("status".to_string()),
            Just("extra".to_string())
        ],
        any_json(),
    ))
}

/// Patch bodies: mostly ones a client would send (labels, annotations of any
/// size up to past the limit, replicas, JSON patch operations that add, copy and
/// nest), some arbitrary.
fn patch_body() -> impl Strategy<Value = Value> {
    prop_oneof![
        ("[a-z]{1,5}", "[a-z0-9]{0,8}")
            .prop_map(|(k, v)| json!({"metadata": {"labels": {k: v}}})),
        (0usize..400_000).prop_map(|n| json!({"metadata": {"annotations": {"blob": "x".repeat(n)}}})),
        (0i64..5).prop_map(|r| json!({"spec": {"replicas": r}})),
        any_json().prop_map(|v| json!([{"op": "add", "path": "/metadata/annotations", "value": {"a": v.to_string()}}])),
        any_json().prop_map(|v| json!([{"op": "add", "path": "/metadata/labels", "value": {}}, {"op": "add", "path": "/metadata/labels/x", "value": v}])),
        (1usize..30).prop_map(|n| Value::Array((0..n).map(|i| json!({"op": "copy", "from": "/metadata", "path": format!("/metadata/x{i}")})).collect())),
        (1usize..12).prop_map(|n| {
            let mut ops = vec![json!({"op": "add", "path": "/metadata/managedFields", "value": [{"manager": "m", "operation": "Update", "fieldsV1": {}}]})];
            let mut chain = 0usize;
            for _ in 0..n {
                ops.push(json!({"op": "copy", "from": "/metadata/managedFields/0/fieldsV1", "path": format!("/metadata/managedFields/0/fieldsV1{}/f:x", "/f:x".repeat(chain))}));
                chain = 2 * chain + 1;
            }
            Value::Array(ops)
        }),
        any_json(),
    ]
}

/// Mostly the object every sequence starts with, sometimes another.
fn name() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(0usize), 1 => 1..3usize]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4usize, name(), extra()).prop_map(|(kind, name, extra)| Op::Create {
            kind,
            name,
            extra
        }),
        (0..4usize, name(), extra()).prop_map(|(kind, name, extra)| Op::Update {
            kind,
            name,
            extra
        }),
        (0..4usize, name(), 0..3usize, patch_body()).prop_map(|(kind, name, patch_type, body)| {
            Op::Patch {
                kind,
                name,
                patch_type,
                body,
            }
        }),
        (0..4usize, name()).prop_map(|(kind, name)| Op::Delete { kind, name }),
    ]
}

fn with_extra(mut obj: Value, extra: &Option<(String, Value)>) -> Value {
    if let Some((field, v)) = extra {
        match obj.get_mut(field.as_str()) {
            Some(Value::Object(m)) if v.is_object() => {
                for (k, x) in v.as_object().into_iter().flatten() {
                    m.insert(k.clone(), x.clone());
                }
            }
            _ => obj[field.as_str()] = v.clone(),
        }
    }
    obj
}

/// Every object the store holds, by resource, with the revision.
async fn snapshot(store: &RedbStore) -> (Vec<Value>, u64) {
    let mut all = Vec::new();
    for info in resource::ALL {
        let (items, _) = store.list(&info.store_name(), None).await.unwrap();
        all.extend(items.into_iter().map(|s| (*s.object).clone()));
    }
    (all, store.revision())
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tugboat.redb");
    let history = History {
        events: 8,
        bytes: 64 << 10,
    };
    let before_restart = {
        let store = Arc::new(RedbStore::open_with(&path, history).unwrap());
        let registry = Registry::new(store.clone());
        registry.ensure_namespace("default").await.unwrap();
        for kind in 0..4 {
            let (info, obj) = base(kind, "n0", 1);
            let ns = info.namespaced.then_some("default");
            registry
                .create(info, ns, obj, WriteOptions::default())
                .await
                .unwrap();
        }
        for op in &ops {
            let revision = store.revision();
            let result = match op {
                Op::Create { kind, name, extra } => {
                    let (info, obj) = base(*kind, &format!("n{name}"), 1);
                    let ns = info.namespaced.then_some("default");
                    registry
                        .create(info, ns, with_extra(obj, extra), WriteOptions::default())
                        .await
                        .map(|_| ())
                }
                Op::Update { kind, name, extra } => {
                    let (info, obj) = base(*kind, &format!("n{name}"), 2);
                    let ns = info.namespaced.then_some("default");
                    registry
                        .update(
                            info,
                            ns,
                            &format!("n{name}"),
                            with_extra(obj, extra),
                            Subresource::Main,
                            WriteOptions::default(),
                            None,
                        )
                        .await
                        .map(|_| ())
                }
                Op::Patch {
                    kind,
                    name,
                    patch_type,
                    body,
                } => {
                    let (info, _) = base(*kind, "", 0);
                    let ns = info.namespaced.then_some("default");
                    let ct = [
                        "application/merge-patch+json",
                        "application/strategic-merge-patch+json",
                        "application/json-patch+json",
                    ][*patch_type];
                    match Patch::parse(ct, &serde_json::to_vec(body).unwrap()) {
                        Ok(p) => registry
                            .patch(
                                info,
                                ns,
                                &format!("n{name}"),
                                &p,
                                Subresource::Main,
                                WriteOptions::default(),
                                None,
                            )
                            .await
                            .map(|_| ()),
                        Err(e) => Err(e),
                    }
                }
                Op::Delete { kind, name } => {
                    let (info, _) = base(*kind, "", 0);
                    let ns = info.namespaced.then_some("default");
                    let opts = DeleteOptions {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    };
                    registry
                        .delete(info, ns, &format!("n{name}"), &opts)
                        .await
                        .map(|_| ())
                }
            };
            if let Err(e) = result {
                prop_assert!(
                    e.code < 500,
                    "{op:?} failed as a server error: {}",
                    e.message
                );
                prop_assert_eq!(store.revision(), revision, "a refused {:?} wrote", op);
            }
        }
        let snap = snapshot(&store).await;
        for obj in &snap.0 {
            prop_assert!(
                limits::check_object(obj).is_ok(),
                "stored out of bounds: {obj}"
            );
        }
        drop(registry);
        snap
    };
    let store = RedbStore::open_with(&path, history).unwrap();
    prop_assert!(
        store.quarantined().unwrap().is_empty(),
        "something stored could not be read"
    );
    let after_restart = snapshot(&store).await;
    prop_assert_eq!(after_restart, before_restart);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_of_writes_leaves_a_store_that_reopens_as_it_was(ops in prop::collection::vec(op(), 1..24)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(ops))?;
    }
}
