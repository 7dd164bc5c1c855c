//! Server-side apply: any applied configuration against a live object with
//! field managers ends in a merged object or an error (a conflict, say), never a
//! panic or unbounded work.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tugboat_controller::managed;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(parsed) = tugboat_api::json::parse(rest) else {
        return;
    };
    let mut applied = parsed.value;
    let Some(obj) = applied.as_object_mut() else {
        return;
    };
    obj.insert("apiVersion".into(), json!("apps/v1"));
    obj.insert("kind".into(), json!("Deployment"));
    let base = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "f", "labels": {"app": "web"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}}
    });
    let Ok(mut live) = managed::apply(None, &base, "first", false) else {
        return;
    };
    let mut edited = live.clone();
    if let Some(spec) = edited.get_mut("spec") {
        spec["replicas"] = Value::from(3);
    }
    managed::record_update(Some(&live), &mut edited, "scaler");
    live = edited;
    let force = flags & 1 == 1;
    let manager = if flags & 2 == 2 { "first" } else { "second" };
    if let Ok(merged) = managed::apply(Some(&live), &applied, manager, force) {
        let _ = managed::apply(Some(&merged), &applied, manager, force);
    }
});
