//! A Deployment's revisions, as `kubectl rollout history` shows them: one per
//! ReplicaSet it owns, numbered by the controller's revision annotation, with
//! the ReplicaSet's change-cause; and one revision's pod template, described.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::{CHANGE_CAUSE, owned, revision};
use crate::table::TabWriter;

/// The Deployment's ReplicaSets by revision (those without a readable revision
/// are left out, as kubectl does).
pub fn revisions<'a>(d: &Deployment, all: &'a [ReplicaSet]) -> BTreeMap<i64, &'a ReplicaSet> {
    owned(d, all)
        .into_iter()
        .filter_map(|rs| Some((revision(rs)?, rs)))
        .collect()
}

/// `REVISION  CHANGE-CAUSE` and a row per revision, oldest first; or kubectl's
/// `No rollout history found.`
pub fn table(revisions: &BTreeMap<i64, &ReplicaSet>) -> String {
    if revisions.is_empty() {
        return "No rollout history found.\n".to_string();
    }
    let mut text = String::from("REVISION\tCHANGE-CAUSE\n");
    for (number, rs) in revisions {
        let cause = rs
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CHANGE_CAUSE))
            .filter(|c| !c.is_empty())
            .map_or("<none>", String::as_str);
        text.push_str(&format!("{number}\t{}\n", cause.replace(['\t', '\n'], " ")));
    }
    // `rollout history` aligns as describe does (minwidth 0, padding 2).
    TabWriter::DESCRIBE.format(&text)
}

/// One revision's pod template as `kubectl rollout history --revision N` prints
/// it, its change-cause among the template's annotations.
pub fn template(rs: &ReplicaSet) -> String {
    let mut t = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let cause = rs
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CHANGE_CAUSE))
        .filter(|c| !c.is_empty());
    if let Some(cause) = cause {
        t.metadata
            .get_or_insert_default()
            .annotations
            .get_or_insert_default()
            .insert(CHANGE_CAUSE.to_string(), cause.clone());
    }
    crate::describe::pod_template(&t)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{deployment, replica_set};
    use super::*;

    #[test]
    fn history_lists_owned_revisions_in_order_with_their_change_cause() {
        let d = deployment("a:3");
        let all = [
            replica_set("d-uid", 3, "a:3", Some("set image a:3")),
            replica_set("d-uid", 1, "a:1", None),
            replica_set("someone-else", 2, "a:2", Some("not ours")),
        ];
        assert_eq!(
            table(&revisions(&d, &all)),
            "REVISION  CHANGE-CAUSE\n1         <none>\n3         set image a:3\n"
        );
    }

    #[test]
    fn no_replica_sets_is_no_history() {
        let d = deployment("a:1");
        assert_eq!(table(&revisions(&d, &[])), "No rollout history found.\n");
    }

    #[test]
    fn a_revisions_template_is_described_with_its_change_cause() {
        let text = template(&replica_set("d-uid", 2, "a:2", Some("bump")));
        assert!(text.starts_with("Pod Template:\n"), "{text}");
        for part in [
            "app=web",
            "pod-template-hash=h2",
            "kubernetes.io/change-cause: bump",
            "Image:",
            "a:2",
        ] {
            assert!(text.contains(part), "{part} missing from\n{text}");
        }
    }
}
