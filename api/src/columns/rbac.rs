//! The columns of RBAC bindings: ROLE (`Kind/name` of the role they grant) and,
//! under `-o wide`, the users, groups and service accounts holding it. Roles and
//! ClusterRoles have no printer in Kubernetes, so they get the default table
//! (NAME, CREATED AT) from the parent module.

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{AGE, Column, Layout, NAME, age, col, name, wide};

pub(super) const ROLE_BINDING: &[Column] = &[
    NAME,
    col(
        "Role",
        "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This field is immutable.",
    ),
    AGE,
    wide(col("Users", "Users in the roleBinding")),
    wide(col("Groups", "Groups in the roleBinding")),
    wide(col("ServiceAccounts", "ServiceAccounts in the roleBinding")),
];

/// The subjects by kind, as Kubernetes' `rbac.SubjectsStrings`: users, groups,
/// and service accounts as `namespace/name`.
pub fn subjects_strings(subjects: &[Subject]) -> [Vec<String>; 3] {
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for s in subjects {
        match s.kind.as_str() {
            "User" => users.push(s.name.clone()),
            "Group" => groups.push(s.name.clone()),
            "ServiceAccount" => match s.namespace.as_deref() {
                Some(ns) if !ns.is_empty() => sas.push(format!("{ns}/{}", s.name)),
                _ => sas.push(s.name.clone()),
            },
            _ => {}
        }
    }
    [users, groups, sas]
}

fn binding_row(
    meta: &ObjectMeta,
    role: &RoleRef,
    subjects: Option<&Vec<Subject>>,
    layout: &Layout,
) -> Vec<String> {
    let mut cells = vec![
        name(meta),
        format!("{}/{}", role.kind, role.name),
        age(meta, layout),
    ];
    if layout.wide {
        let [users, groups, sas] = subjects_strings(subjects.map_or(&[], Vec::as_slice));
        cells.extend([users.join(", "), groups.join(", "), sas.join(", ")]);
    }
    cells
}

pub(super) fn role_binding_row(b: &RoleBinding, layout: &Layout) -> Vec<String> {
    binding_row(&b.metadata, &b.role_ref, b.subjects.as_ref(), layout)
}

pub(super) fn cluster_role_binding_row(b: &ClusterRoleBinding, layout: &Layout) -> Vec<String> {
    binding_row(&b.metadata, &b.role_ref, b.subjects.as_ref(), layout)
}

#[cfg(test)]
mod tests {
    use crate::columns::tests::layout;
    use crate::columns::{header, row};
    use crate::resource::{CLUSTERROLEBINDINGS, CLUSTERROLES, ROLEBINDINGS, ROLES};
    use serde_json::json;

    #[test]
    fn bindings_name_their_role_and_list_subjects_when_wide() {
        let b = json!({
            "metadata": {"name": "readers", "creationTimestamp": "2026-01-01T11:00:00Z"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [
                {"kind": "User", "name": "ann"},
                {"kind": "User", "name": "bob"},
                {"kind": "Group", "name": "ops"},
                {"kind": "ServiceAccount", "name": "ci", "namespace": "build"}
            ]
        });
        let mut l = layout();
        assert_eq!(header(&ROLEBINDINGS, &l), ["NAME", "ROLE", "AGE"]);
        assert_eq!(
            row(&ROLEBINDINGS, &b, &l).unwrap(),
            ["readers", "ClusterRole/view", "60m"]
        );
        l.wide = true;
        assert_eq!(
            header(&CLUSTERROLEBINDINGS, &l),
            ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
        );
        assert_eq!(
            row(&CLUSTERROLEBINDINGS, &b, &l).unwrap()[3..],
            ["ann, bob", "ops", "build/ci"]
        );
    }

    #[test]
    fn roles_get_the_default_table_with_the_creation_time() {
        let r = json!({
            "metadata": {"name": "pod-reader", "creationTimestamp": "2026-01-01T11:00:00Z"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
        });
        assert_eq!(header(&ROLES, &layout()), ["NAME", "CREATED AT"]);
        assert_eq!(
            row(&CLUSTERROLES, &r, &layout()).unwrap(),
            ["pod-reader", "2026-01-01T11:00:00Z"]
        );
    }
}
