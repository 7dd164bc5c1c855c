//! What each user may do. Admins: everything. Nodes: what Kubernetes' Node
//! authorizer and NodeRestriction admission let a kubelet do — read and update
//! their own Node and Lease, watch only the pods bound to them, write the status
//! of and release only those pods, write events, and read the Services and
//! EndpointSlices their proxy serves. API tokens: Kubernetes' `view` or `edit`
//! role within one namespace. Everyone authenticated may read discovery.
//!
//! A decision that depends on the object itself (is this pod bound to the
//! node?) comes back as a [`Condition`] the handler checks against the stored
//! object or the request.
//!
//! Nodes also get ConfigMaps and Secrets by name (pods' env and volumes).
//!
//! One deliberate difference from the issue text "read only its own Node": a
//! node may get, list and watch every Node, as Kubernetes' `system:node` role
//! allows, because its Service proxy reaches endpoints on other nodes through
//! their agents' published tunnel ports.

use tugboat_api::ApiError;
use tugboat_api::resource::{
    ENDPOINTS, ENDPOINTSLICES, EVENTS, LEASES, NODES, PODS, ResourceInfo, SECRETS, SERVICES,
};

use super::{Kind, User};
use crate::registry::credentials::Role;

/// The namespace nodes' Leases live in.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }

    fn reads(self) -> bool {
        matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }
}

/// One request, as the authorizer sees it.
#[derive(Clone, Copy, Debug)]
pub struct Attributes<'a> {
    pub verb: Verb,
    pub info: &'static ResourceInfo,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    pub subresource: Option<&'a str>,
}

/// What must also hold for the request to be allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// A list or watch of pods must select `spec.nodeName=NODE`.
    SelectsNode(String),
    /// The stored pod must be bound to this node.
    PodBoundTo(String),
    /// The object created must have this name.
    CreatesName(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    AllowIf(Condition),
    /// Refused; the reason, if any, is appended to the 403's message.
    Deny(Option<String>),
}

pub fn authorize(user: &User, a: &Attributes<'_>) -> Decision {
    match &user.kind {
        Kind::Admin => Decision::Allow,
        Kind::Node(node) => node_rules(node, a),
        Kind::Token { namespace, role } => token_rules(namespace, *role, a),
        Kind::Nobody => Decision::Deny(None),
    }
}

fn node_rules(node: &str, a: &Attributes<'_>) -> Decision {
    let own = |reason: &str| {
        if a.name == Some(node) {
            Decision::Allow
        } else {
            Decision::Deny(Some(format!("node {node:?} may {reason} only its own")))
        }
    };
    let info = a.info;
    if info == &NODES {
        return match a.verb {
            Verb::Get | Verb::List | Verb::Watch => Decision::Allow,
            Verb::Create => Decision::AllowIf(Condition::CreatesName(node.to_string())),
            Verb::Update | Verb::Patch => own("modify a Node"),
            Verb::Delete => Decision::Deny(Some(format!("node {node:?} may not delete Nodes"))),
        };
    }
    if info == &LEASES {
        if a.namespace != Some(NODE_LEASE_NAMESPACE) {
            return Decision::Deny(Some(format!(
                "node {node:?} may use only its own Lease in {NODE_LEASE_NAMESPACE}"
            )));
        }
        return match a.verb {
            Verb::Create => Decision::AllowIf(Condition::CreatesName(node.to_string())),
            Verb::Get | Verb::Update | Verb::Patch | Verb::Delete => own("use a Lease"),
            Verb::List | Verb::Watch => Decision::Deny(None),
        };
    }
    if info == &PODS {
        let unbound = || Condition::PodBoundTo(node.to_string());
        return match (a.verb, a.subresource) {
            (Verb::List | Verb::Watch, None) => {
                Decision::AllowIf(Condition::SelectsNode(node.to_string()))
            }
            (Verb::Get, None | Some("status")) => Decision::AllowIf(unbound()),
            (Verb::Update | Verb::Patch, Some("status")) => Decision::AllowIf(unbound()),
            (Verb::Delete, None) => Decision::AllowIf(unbound()),
            _ => Decision::Deny(Some(format!(
                "node {node:?} may only read, report the status of and release the pods bound to it"
            ))),
        };
    }
    if info == &EVENTS {
        // Get too: the agent's recorder reads an event to count a repeat.
        return match a.verb {
            Verb::Get | Verb::Create | Verb::Update | Verb::Patch => Decision::Allow,
            _ => Decision::Deny(None),
        };
    }
    if (info == &SERVICES || info == &ENDPOINTSLICES || info == &ENDPOINTS) && a.verb.reads() {
        return Decision::Allow;
    }
    // The ConfigMaps and Secrets of pods' env and volumes: get one by name in a
    // namespace, never list or watch them all. (Kubernetes narrows this to the
    // objects referenced by a pod bound to the node; that needs the pod graph.)
    if info.group.is_empty() && matches!(info.plural, "configmaps" | "secrets") {
        return match (a.verb, a.namespace, a.name, a.subresource) {
            (Verb::Get, Some(_), Some(_), None) => Decision::Allow,
            _ => Decision::Deny(Some(format!(
                "node {node:?} may only get {} by name",
                info.plural
            ))),
        };
    }
    Decision::Deny(None)
}

fn token_rules(namespace: &str, role: Role, a: &Attributes<'_>) -> Decision {
    if !a.info.namespaced || a.namespace != Some(namespace) {
        return Decision::Deny(Some(format!(
            "the token's role {} is bound in namespace {namespace:?} only",
            role.as_str()
        )));
    }
    match role {
        // Kubernetes' `view` reads everything in its namespace but Secrets
        // (reading them would let it act as any ServiceAccount there).
        Role::View if a.info == &SECRETS => Decision::Deny(Some(
            "the token's role view does not read Secrets".into(),
        )),
        Role::View if a.verb.reads() => Decision::Allow,
        Role::View => Decision::Deny(Some("the token's role view only reads".into())),
        // Kubernetes' `edit` writes neither status (what the system reports)
        // nor Endpoints and EndpointSlices (since 1.22: writing them lets one
        // point a Service, and so every node's proxy, anywhere).
        Role::Edit if a.verb.reads() => Decision::Allow,
        Role::Edit if a.subresource == Some("status") => Decision::Deny(Some(
            "the token's role edit does not write status".into(),
        )),
        Role::Edit if a.info == &ENDPOINTS || a.info == &ENDPOINTSLICES => Decision::Deny(Some(
            "the token's role edit does not write Endpoints or EndpointSlices (they follow the Services' selectors)".into(),
        )),
        Role::Edit => Decision::Allow,
    }
}

/// The 403 Kubernetes answers: `pods "web" is forbidden: User "system:node:n1"
/// cannot delete resource "pods" in API group "" in the namespace "default": …`.
pub fn forbidden(user: &User, a: &Attributes<'_>, reason: Option<&str>) -> ApiError {
    let resource = match a.subresource {
        Some(sub) => format!("{}/{sub}", a.info.plural),
        None => a.info.plural.to_string(),
    };
    let subject = match a.name {
        Some(name) => format!("{} {name:?}", a.info.store_name()),
        None => a.info.store_name(),
    };
    let scope = match a.namespace.filter(|_| a.info.namespaced) {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".to_string(),
    };
    let mut message = format!(
        "{subject} is forbidden: User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
        user.name,
        a.verb.as_str(),
        a.info.group,
    );
    if let Some(r) = reason {
        message.push_str(": ");
        message.push_str(r);
    }
    let mut e = ApiError::forbidden(message);
    e.name = a.name.map(str::to_string);
    e.group = Some(a.info.group.to_string());
    e.kind = Some(a.info.plural.to_string());
    e
}

/// Whether a `fieldSelector` value selects exactly the pods of `node` (one of
/// its terms is `spec.nodeName=NODE`; terms are ANDed, so the rest can only
/// narrow it).
pub fn selects_node(field_selector: Option<&str>, node: &str) -> bool {
    field_selector.is_some_and(|fs| {
        fs.split(',').any(|term| {
            let term = term.trim();
            let value = term
                .strip_prefix("spec.nodeName==")
                .or_else(|| term.strip_prefix("spec.nodeName="));
            value == Some(node)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tugboat_api::resource::DEPLOYMENTS;

    fn node_user(n: &str) -> User {
        User {
            name: format!("system:node:{n}"),
            groups: vec!["system:nodes".into()],
            kind: Kind::Node(n.into()),
        }
    }

    fn attrs<'a>(
        verb: Verb,
        info: &'static ResourceInfo,
        ns: Option<&'a str>,
        name: Option<&'a str>,
        sub: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            info,
            namespace: ns,
            name,
            subresource: sub,
        }
    }

    #[test]
    fn a_node_may_update_only_its_own_node_and_never_delete_one() {
        let n1 = node_user("n1");
        assert_eq!(
            authorize(
                &n1,
                &attrs(Verb::Patch, &NODES, None, Some("n1"), Some("status"))
            ),
            Decision::Allow
        );
        assert!(matches!(
            authorize(
                &n1,
                &attrs(Verb::Patch, &NODES, None, Some("n2"), Some("status"))
            ),
            Decision::Deny(_)
        ));
        assert!(matches!(
            authorize(&n1, &attrs(Verb::Delete, &NODES, None, Some("n1"), None)),
            Decision::Deny(_)
        ));
        assert_eq!(
            authorize(&n1, &attrs(Verb::Create, &NODES, None, None, None)),
            Decision::AllowIf(Condition::CreatesName("n1".into()))
        );
    }

    #[test]
    fn a_node_may_get_config_maps_and_secrets_by_name_only() {
        // Declared here until the kinds are registered on main.
        static CONFIGMAPS: ResourceInfo = ResourceInfo {
            plural: "configmaps",
            singular: "configmap",
            kind: "ConfigMap",
            ..PODS
        };
        static SECRETS: ResourceInfo = ResourceInfo {
            plural: "secrets",
            singular: "secret",
            kind: "Secret",
            ..PODS
        };
        let n1 = node_user("n1");
        for info in [&CONFIGMAPS, &SECRETS] {
            assert_eq!(
                authorize(
                    &n1,
                    &attrs(Verb::Get, info, Some("team"), Some("cfg"), None)
                ),
                Decision::Allow
            );
            for verb in [Verb::List, Verb::Watch, Verb::Update, Verb::Delete] {
                assert!(matches!(
                    authorize(&n1, &attrs(verb, info, Some("team"), None, None)),
                    Decision::Deny(_)
                ));
            }
        }
    }

    #[test]
    fn a_node_sees_pods_only_through_its_own_binding() {
        let n1 = node_user("n1");
        assert_eq!(
            authorize(&n1, &attrs(Verb::Watch, &PODS, None, None, None)),
            Decision::AllowIf(Condition::SelectsNode("n1".into()))
        );
        assert_eq!(
            authorize(
                &n1,
                &attrs(
                    Verb::Patch,
                    &PODS,
                    Some("default"),
                    Some("p"),
                    Some("status")
                )
            ),
            Decision::AllowIf(Condition::PodBoundTo("n1".into()))
        );
        for denied in [
            attrs(Verb::Create, &PODS, Some("default"), None, None),
            attrs(Verb::Patch, &PODS, Some("default"), Some("p"), None),
            attrs(Verb::Get, &PODS, Some("default"), Some("p"), Some("log")),
            attrs(Verb::Create, &DEPLOYMENTS, Some("default"), None, None),
            attrs(Verb::List, &LEASES, Some(NODE_LEASE_NAMESPACE), None, None),
            attrs(Verb::Get, &LEASES, Some("default"), Some("n1"), None),
        ] {
            assert!(
                matches!(authorize(&n1, &denied), Decision::Deny(_)),
                "{denied:?}"
            );
        }
    }

    #[test]
    fn field_selectors_must_name_the_node_exactly() {
        assert!(selects_node(Some("spec.nodeName=n1"), "n1"));
        assert!(selects_node(
            Some("status.phase!=Failed,spec.nodeName==n1"),
            "n1"
        ));
        assert!(!selects_node(Some("spec.nodeName=n10"), "n1"));
        assert!(!selects_node(Some("spec.nodeName!=n1"), "n1"));
        assert!(!selects_node(None, "n1"));
    }

    #[test]
    fn a_token_acts_within_its_namespace_and_role() {
        let view = User {
            name: "tugboat:token:abcdef".into(),
            groups: vec![],
            kind: Kind::Token {
                namespace: "team".into(),
                role: Role::View,
            },
        };
        let edit = User {
            kind: Kind::Token {
                namespace: "team".into(),
                role: Role::Edit,
            },
            ..view.clone()
        };
        let create = attrs(Verb::Create, &DEPLOYMENTS, Some("team"), None, None);
        assert!(matches!(authorize(&view, &create), Decision::Deny(_)));
        assert_eq!(authorize(&edit, &create), Decision::Allow);
        for denied in [
            attrs(Verb::Create, &ENDPOINTSLICES, Some("team"), None, None),
            attrs(Verb::Patch, &ENDPOINTS, Some("team"), Some("web"), None),
            attrs(Verb::Patch, &PODS, Some("team"), Some("p"), Some("status")),
        ] {
            assert!(
                matches!(authorize(&edit, &denied), Decision::Deny(_)),
                "{denied:?}"
            );
        }
        assert_eq!(
            authorize(&view, &attrs(Verb::List, &PODS, Some("team"), None, None)),
            Decision::Allow
        );
        // As Kubernetes' `view`: everything but Secrets; `edit` reads them.
        let secret = attrs(Verb::Get, &SECRETS, Some("team"), Some("db"), None);
        assert!(matches!(authorize(&view, &secret), Decision::Deny(_)));
        assert_eq!(authorize(&edit, &secret), Decision::Allow);
        for denied in [
            attrs(Verb::List, &PODS, Some("other"), None, None),
            attrs(Verb::List, &PODS, None, None, None),
            attrs(Verb::Get, &NODES, None, Some("n1"), None),
        ] {
            assert!(
                matches!(authorize(&edit, &denied), Decision::Deny(_)),
                "{denied:?}"
            );
        }
    }

    #[test]
    fn the_403_names_the_user_verb_and_resource_as_kubernetes_does() {
        let e = forbidden(
            &node_user("n1"),
            &attrs(Verb::Create, &DEPLOYMENTS, Some("default"), None, None),
            None,
        );
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "deployments.apps is forbidden: User \"system:node:n1\" cannot create resource \"deployments\" in API group \"apps\" in the namespace \"default\""
        );
        let e = forbidden(
            &node_user("n1"),
            &attrs(Verb::Patch, &NODES, None, Some("n2"), Some("status")),
            Some("node \"n1\" may modify a Node only its own"),
        );
        assert!(e.message.starts_with("nodes \"n2\" is forbidden: User \"system:node:n1\" cannot patch resource \"nodes/status\" in API group \"\" at the cluster scope: "), "{}", e.message);
    }
}
