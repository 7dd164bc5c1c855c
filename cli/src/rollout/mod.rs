//! A Deployment's rollout as kubectl sees it, for `tug rollout` and `tug apply
//! --wait`: whether it is done (`status.rs`), its revisions (`history.rs`), which
//! one to go back to and the patch that does it (`undo.rs`), and following it
//! over a watch until it is done (`wait.rs`). The decisions are pure functions
//! over k8s-openapi objects; only `wait.rs` and [`fetch`] talk to the server.

pub mod daemonset;
pub mod history;
pub mod status;
pub mod undo;
pub mod wait;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use tugboat_api::resource::{DEPLOYMENTS, REPLICASETS};
use tugboat_api::{Client, ListParams};

/// The revision the Deployment controller gives each ReplicaSet.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Why a revision was made; copied from the Deployment onto its ReplicaSet.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// The label that tells a Deployment's ReplicaSets apart.
pub const HASH_LABEL: &str = "pod-template-hash";
/// Set on the pod template by `rollout restart`, so the template changes.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// The ReplicaSets `d` controls: a controller owner reference with its uid
/// (kubectl's `GetAllReplicaSets`), whatever their labels say.
pub fn owned<'a>(d: &Deployment, all: &'a [ReplicaSet]) -> Vec<&'a ReplicaSet> {
    let Some(uid) = d.metadata.uid.as_deref() else {
        return Vec::new();
    };
    all.iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect()
}

/// A ReplicaSet's revision, if it carries a readable one.
pub fn revision(rs: &ReplicaSet) -> Option<i64> {
    rs.metadata
        .annotations
        .as_ref()?
        .get(REVISION)?
        .parse()
        .ok()
}

/// The Deployment `name` and every ReplicaSet of its namespace (callers pick its
/// own with [`owned`]).
pub async fn fetch(
    client: &Client,
    ns: &str,
    name: &str,
) -> anyhow::Result<(Deployment, Vec<ReplicaSet>)> {
    let d: Deployment = client.get_as(&DEPLOYMENTS, Some(ns), name).await?;
    let sets: Vec<ReplicaSet> = client
        .list_as(&REPLICASETS, Some(ns), &ListParams::default())
        .await
        .with_context(|| format!("failed to retrieve replica sets from deployment {name}"))?;
    Ok((d, sets))
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Deployments and ReplicaSets as the controller leaves them, built in one line.

    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::{
        Deployment, DeploymentSpec, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
    };
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector, ObjectMeta, OwnerReference,
    };

    use super::{CHANGE_CAUSE, HASH_LABEL, REVISION};

    pub fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    pub fn deployment(image: &str) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("d-uid".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(3),
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                    ..Default::default()
                },
                template: template(image),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(1),
                ..Default::default()
            }),
        }
    }

    /// A ReplicaSet of `d` (or of another owner) at `revision` running `image`.
    pub fn replica_set(owner: &str, revision: i64, image: &str, cause: Option<&str>) -> ReplicaSet {
        let mut t = template(image);
        let hash = format!("h{revision}");
        if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.insert(HASH_LABEL.into(), hash.clone());
        }
        let mut annotations = BTreeMap::from([(REVISION.to_string(), revision.to_string())]);
        if let Some(c) = cause {
            annotations.insert(CHANGE_CAUSE.into(), c.into());
        }
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("web-{hash}")),
                annotations: Some(annotations),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "web".into(),
                    uid: owner.into(),
                    controller: Some(true),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                template: Some(t),
                ..Default::default()
            }),
            status: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn a_deployment_owns_only_the_replica_sets_that_name_its_uid_as_controller() {
        let d = deployment("a:1");
        let mine = replica_set("d-uid", 1, "a:1", None);
        let other = replica_set("other-uid", 2, "a:2", None);
        let mut not_controller = replica_set("d-uid", 3, "a:3", None);
        not_controller.metadata.owner_references.as_mut().unwrap()[0].controller = None;
        let all = [mine.clone(), other, not_controller];
        let owned: Vec<_> = owned(&d, &all).into_iter().cloned().collect();
        assert_eq!(owned, vec![mine]);
    }

    #[test]
    fn a_revision_is_read_from_its_annotation() {
        assert_eq!(revision(&replica_set("u", 7, "a", None)), Some(7));
        let mut rs = replica_set("u", 7, "a", None);
        rs.metadata.annotations = None;
        assert_eq!(revision(&rs), None);
    }
}
