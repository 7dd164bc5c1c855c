//! `rollout undo` as kubectl's `DeploymentRollbacker`: which ReplicaSet holds the
//! revision to go back to (by default the one before the newest), whether the
//! Deployment already runs its template, and the JSON patch that puts that
//! template (less the `pod-template-hash` label) back with its change-cause.
//! The controller then finds the old ReplicaSet again and gives it the next
//! revision.

use anyhow::bail;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Value, json};

use super::{CHANGE_CAUSE, HASH_LABEL, owned, revision};

/// The ReplicaSet of `to_revision`, or with 0 the newest but one; kubectl's
/// errors otherwise.
pub fn choose<'a>(
    d: &Deployment,
    all: &'a [ReplicaSet],
    to_revision: i64,
) -> anyhow::Result<(i64, &'a ReplicaSet)> {
    if to_revision < 0 {
        bail!("unable to find specified revision {to_revision} in history");
    }
    let mut numbered: Vec<(i64, &ReplicaSet)> = owned(d, all)
        .into_iter()
        .filter_map(|rs| Some((revision(rs)?, rs)))
        .collect();
    if to_revision > 0 {
        return numbered
            .into_iter()
            .find(|(n, _)| *n == to_revision)
            .ok_or_else(|| {
                anyhow::anyhow!("unable to find specified revision {to_revision} in history")
            });
    }
    numbered.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    match numbered.get(1) {
        Some(previous) => Ok(*previous),
        None => bail!(
            "no rollout history found for deployment {:?}",
            d.metadata.name.as_deref().unwrap_or("")
        ),
    }
}

/// The template with the label the controller added removed.
fn without_hash(t: Option<&PodTemplateSpec>) -> PodTemplateSpec {
    let mut t = t.cloned().unwrap_or_default();
    if let Some(meta) = t.metadata.as_mut()
        && let Some(labels) = meta.labels.as_mut()
    {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            meta.labels = None;
        }
    }
    t
}

/// Whether the Deployment already runs `rs`'s template (kubectl's
/// `equalIgnoreHash`): then there is nothing to roll back.
pub fn matches(d: &Deployment, rs: &ReplicaSet) -> bool {
    let current = without_hash(d.spec.as_ref().map(|s| &s.template));
    let wanted = without_hash(rs.spec.as_ref().and_then(|s| s.template.as_ref()));
    serde_json::to_value(current).ok() == serde_json::to_value(wanted).ok()
}

/// The JSON patch restoring `rs`'s template on `d`, and its change-cause (or
/// none, when it had none). kubectl replaces every annotation the ReplicaSet
/// carries; Tugboat's ReplicaSets carry only the change-cause of the
/// Deployment's, so only that one moves and the others stay.
pub fn patch(d: &Deployment, rs: &ReplicaSet) -> Value {
    let template = without_hash(rs.spec.as_ref().and_then(|s| s.template.as_ref()));
    let mut ops = vec![json!({"op": "replace", "path": "/spec/template", "value": template})];
    let cause = rs
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CHANGE_CAUSE));
    let annotations = d.metadata.annotations.as_ref();
    let current = annotations.and_then(|a| a.get(CHANGE_CAUSE));
    // `~1` is `/` in a JSON pointer.
    let path = format!("/metadata/annotations/{}", CHANGE_CAUSE.replace('/', "~1"));
    match (cause, current) {
        (Some(c), _) if annotations.is_none() => ops.push(
            json!({"op": "add", "path": "/metadata/annotations", "value": {CHANGE_CAUSE: c}}),
        ),
        (Some(c), Some(now)) if c == now => {}
        (Some(c), _) => ops.push(json!({"op": "add", "path": path, "value": c})),
        (None, Some(_)) => ops.push(json!({"op": "remove", "path": path})),
        (None, None) => {}
    }
    Value::Array(ops)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::fixtures::{deployment, replica_set};
    use super::*;

    fn history() -> Vec<ReplicaSet> {
        vec![
            replica_set("d-uid", 1, "a:1", Some("first")),
            replica_set("d-uid", 3, "a:3", None),
            replica_set("d-uid", 2, "a:2", Some("second")),
            replica_set("other", 4, "a:4", None),
        ]
    }

    #[test]
    fn undo_goes_back_to_the_newest_but_one_revision_by_default() {
        let (d, all) = (deployment("a:3"), history());
        let (n, rs) = choose(&d, &all, 0).unwrap();
        assert_eq!((n, rs.metadata.name.as_deref()), (2, Some("web-h2")));
        let (n, _) = choose(&d, &all, 1).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn missing_revisions_are_refused_in_kubectls_words() {
        let (d, all) = (deployment("a:3"), history());
        let err = |to| choose(&d, &all, to).unwrap_err().to_string();
        assert_eq!(err(4), "unable to find specified revision 4 in history");
        assert_eq!(err(-1), "unable to find specified revision -1 in history");
        let only = [replica_set("d-uid", 1, "a:1", None)];
        assert_eq!(
            choose(&d, &only, 0).unwrap_err().to_string(),
            "no rollout history found for deployment \"web\""
        );
    }

    #[test]
    fn a_template_differing_only_by_the_hash_label_matches() {
        let d = deployment("a:2");
        assert!(matches(&d, &replica_set("d-uid", 2, "a:2", None)));
        assert!(!matches(&d, &replica_set("d-uid", 1, "a:1", None)));
    }

    #[test]
    fn the_patch_restores_the_template_without_the_hash_and_its_change_cause() {
        let mut d = deployment("a:3");
        d.metadata.annotations = Some(BTreeMap::from([
            ("keep".to_string(), "me".to_string()),
            (CHANGE_CAUSE.to_string(), "third".to_string()),
        ]));
        let rs = replica_set("d-uid", 2, "a:2", Some("second"));
        let p = patch(&d, &rs);
        assert_eq!(p[0]["op"], "replace");
        assert_eq!(p[0]["path"], "/spec/template");
        assert_eq!(p[0]["value"]["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(
            p[0]["value"]["spec"]["containers"][0]["image"],
            json!("a:2")
        );
        assert_eq!(
            p[1],
            json!({"op": "add", "path": "/metadata/annotations/kubernetes.io~1change-cause", "value": "second"})
        );
        // A revision without a change-cause takes the Deployment's away.
        let p = patch(&d, &replica_set("d-uid", 1, "a:1", None));
        assert_eq!(
            p[1],
            json!({"op": "remove", "path": "/metadata/annotations/kubernetes.io~1change-cause"})
        );
        // A Deployment without annotations gets the map.
        d.metadata.annotations = None;
        assert_eq!(
            patch(&d, &rs)[1],
            json!({"op": "add", "path": "/metadata/annotations", "value": {CHANGE_CAUSE: "second"}})
        );
        assert_eq!(
            patch(&d, &replica_set("d-uid", 1, "a:1", None))
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}
