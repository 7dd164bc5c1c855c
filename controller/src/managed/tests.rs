use serde_json::json;

use super::*;

fn deployment(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image,
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]}
            }
        }
    })
}

fn managers(obj: &Value) -> Vec<(String, String)> {
    entries(obj)
        .into_iter()
        .map(|e| (e.manager, e.operation))
        .collect()
}

#[test]
fn field_sets_use_kubernetes_keys_for_lists_merged_by_key() {
    let schemas = schema::for_api_version("apps/v1").unwrap();
    let set = fields_of(Some(&schemas), &deployment(3, "nginx")).to_json();
    assert_eq!(set["f:spec"]["f:replicas"], json!({}));
    assert_eq!(set["f:metadata"]["f:labels"]["f:app"], json!({}));
    let c = &set["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
    assert_eq!(c["."], json!({}));
    assert_eq!(c["f:image"], json!({}));
    assert!(
        c["f:ports"]["k:{\"containerPort\":8080,\"protocol\":\"TCP\"}"]["f:containerPort"]
            .is_object()
    );
    // Server-kept metadata is nobody's.
    assert!(set["f:metadata"].get("f:name").is_none());
    assert!(set.get("f:apiVersion").is_none());
    // fieldsV1 reads back to the same set.
    assert_eq!(FieldSet::from_json(&set).to_json(), set);
}

#[test]
fn an_apply_creates_then_is_idempotent() {
    let applied = deployment(3, "nginx");
    let created = apply(None, &applied, "kubectl", false).unwrap();
    assert_eq!(managers(&created), [("kubectl".into(), "Apply".into())]);
    assert_eq!(created["spec"]["replicas"], 3);
    let again = apply(Some(&created), &applied, "kubectl", false).unwrap();
    assert_eq!(
        again, created,
        "the same apply changes nothing, its time included"
    );
}

#[test]
fn a_second_manager_conflicts_on_a_field_it_would_change_unless_forced() {
    let live = apply(None, &deployment(3, "nginx"), "kubectl", false).unwrap();
    let mut other = deployment(5, "nginx");
    other["spec"]
        .as_object_mut()
        .unwrap()
        .retain(|k, _| k == "replicas");
    other["metadata"].as_object_mut().unwrap().remove("labels");
    let e = apply(Some(&live), &other, "other", false).unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        "Apply failed with 1 conflict: conflict with \"kubectl\" using apps/v1: .spec.replicas"
    );
    assert_eq!(e.causes[0].field, ".spec.replicas");
    assert_eq!(e.causes[0].reason, "FieldManagerConflict");
    // The same value is no conflict: both own it.
    let mut same = other.clone();
    same["spec"]["replicas"] = json!(3);
    let shared = apply(Some(&live), &same, "other", false).unwrap();
    assert_eq!(managers(&shared).len(), 2);
    // Forced: the field changes hands.
    let forced = apply(Some(&live), &other, "other", true).unwrap();
    assert_eq!(forced["spec"]["replicas"], 5);
    let owners: Vec<(String, bool)> = entries(&forced)
        .into_iter()
        .map(|e| {
            let owns = e
                .fields
                .contains(&["f:spec".to_string(), "f:replicas".to_string()]);
            (e.manager, owns)
        })
        .collect();
    assert!(owners.contains(&("kubectl".into(), false)));
    assert!(owners.contains(&("other".into(), true)));
}

#[test]
fn fields_a_manager_stops_applying_are_removed_unless_another_owns_them() {
    let mut first = deployment(3, "nginx");
    first["metadata"]["labels"]["tier"] = json!("front");
    let live = apply(None, &first, "kubectl", false).unwrap();
    let second = deployment(3, "nginx");
    let after = apply(Some(&live), &second, "kubectl", false).unwrap();
    assert!(after["metadata"]["labels"].get("tier").is_none());
    assert_eq!(after["metadata"]["labels"]["app"], "web");
    // Owned by someone else too: kept.
    let mut tiered = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"tier": "front"}}});
    let live = apply(Some(&live), &tiered, "labeller", false).unwrap();
    let after = apply(Some(&live), &second, "kubectl", false).unwrap();
    assert_eq!(after["metadata"]["labels"]["tier"], "front");
    tiered["metadata"]["labels"] = json!({});
    let after = apply(Some(&after), &tiered, "labeller", false).unwrap();
    assert!(after["metadata"]["labels"].get("tier").is_none());
}

#[test]
fn containers_merge_by_name_and_a_dropped_container_goes() {
    let mut two = deployment(1, "nginx");
    two["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "side", "image": "busybox"}));
    let live = apply(None, &two, "kubectl", false).unwrap();
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let after = apply(Some(&live), &deployment(1, "nginx:2"), "kubectl", false).unwrap();
    let containers = after["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["image"], "nginx:2");
}

#[test]
fn updates_take_the_fields_they_change_from_appliers() {
    let live = apply(None, &deployment(3, "nginx"), "kubectl", false).unwrap();
    let mut scaled = live.clone();
    scaled["spec"]["replicas"] = json!(7);
    record_update(Some(&live), &mut scaled, "kubectl-scale");
    let e = entries(&scaled);
    let path = ["f:spec".to_string(), "f:replicas".to_string()];
    assert!(e.iter().any(|e| e.manager == "kubectl-scale"
        && e.operation == "Update"
        && e.fields.contains(&path)));
    assert!(
        e.iter()
            .any(|e| e.manager == "kubectl" && !e.fields.contains(&path))
    );
    // Re-applying 3 is then no conflict with kubectl-scale? It is: it owns replicas.
    let err = apply(Some(&scaled), &deployment(3, "nginx"), "kubectl", false).unwrap_err();
    assert!(err.message.contains("kubectl-scale"), "{}", err.message);
}

#[test]
fn a_create_records_every_field_for_its_manager() {
    let mut d = deployment(2, "nginx");
    record_update(None, &mut d, "kubectl-create");
    assert_eq!(managers(&d), [("kubectl-create".into(), "Update".into())]);
}

#[test]
fn manager_names_come_from_the_parameter_or_the_user_agent() {
    assert_eq!(
        manager_name(Some("helm"), Some("kubectl/v1.32")).unwrap(),
        Some("helm".into())
    );
    assert_eq!(
        manager_name(None, Some("kubectl/v1.32.4 (linux/amd64) kubernetes/abc")).unwrap(),
        Some("kubectl".into())
    );
    assert_eq!(manager_name(None, None).unwrap(), None);
    assert!(manager_name(Some(&"x".repeat(200)), None).is_err());
}

#[test]
fn conflict_paths_name_list_items_by_key() {
    let p: Vec<String> = ["f:spec", "f:containers", "k:{\"name\":\"web\"}", "f:image"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(path_string(&p), ".spec.containers[name=\"web\"].image");
}

#[test]
fn list_keys_the_server_defaults_match_the_stored_item() {
    // What kubectl applies: a port without its protocol; what is stored after
    // defaulting: the same port with `protocol: TCP`.
    let mut applied = deployment(1, "nginx");
    applied["spec"]["template"]["spec"]["containers"][0]["ports"] =
        json!([{"containerPort": 8080}]);
    let created = apply(None, &applied, "kubectl", false).unwrap();
    let ports = &created["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert_eq!(ports, &json!([{"containerPort": 8080, "protocol": "TCP"}]));
    let again = apply(Some(&created), &applied, "kubectl", false).unwrap();
    assert_eq!(again, created);
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}]}});
    let mut live = apply(None, &svc, "kubectl", false).unwrap();
    live["spec"]["ports"][0]["protocol"] = json!("TCP");
    let again = apply(Some(&live), &svc, "kubectl", false).unwrap();
    assert_eq!(again["spec"]["ports"].as_array().unwrap().len(), 1);
}
