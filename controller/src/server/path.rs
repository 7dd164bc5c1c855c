//! Reads a Kubernetes API path into the resource, namespace, name and subresource
//! it addresses.

use tugboat_api::ApiError;
use tugboat_api::resource::{self, ResourceInfo};

#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// `/api/v1` or `/apis/apps/v1`: the resource list of a group version.
    GroupVersion { group: String, version: String },
    /// `/apis/apps`: one group.
    Group { group: String },
    Collection {
        info: &'static ResourceInfo,
        namespace: Option<String>,
    },
    Object {
        info: &'static ResourceInfo,
        namespace: Option<String>,
        name: String,
        subresource: Option<String>,
    },
}

pub fn parse(path: &str) -> Result<Target, ApiError> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    };
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group] => {
            return Ok(Target::Group {
                group: group.to_string(),
            });
        }
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_found()),
    };
    let find = |plural: &str| resource::by_path(group, version, plural);
    let target = match rest {
        [] => Target::GroupVersion {
            group: group.into(),
            version: version.into(),
        },
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|r| r.namespaced) => {
            let info = find(plural).ok_or_else(not_found)?;
            match tail {
                [] => Target::Collection {
                    info,
                    namespace: Some(ns.to_string()),
                },
                [name] => Target::Object {
                    info,
                    namespace: Some(ns.to_string()),
                    name: name.to_string(),
                    subresource: None,
                },
                [name, sub] => Target::Object {
                    info,
                    namespace: Some(ns.to_string()),
                    name: name.to_string(),
                    subresource: Some(sub.to_string()),
                },
                _ => return Err(not_found()),
            }
        }
        [plural, tail @ ..] => {
            let info = find(plural).ok_or_else(not_found)?;
            match tail {
                [] => Target::Collection {
                    info,
                    namespace: None,
                },
                [name] if !info.namespaced => Target::Object {
                    info,
                    namespace: None,
                    name: name.to_string(),
                    subresource: None,
                },
                [name, sub] if !info.namespaced => Target::Object {
                    info,
                    namespace: None,
                    name: name.to_string(),
                    subresource: Some(sub.to_string()),
                },
                _ => return Err(not_found()),
            }
        }
    };
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tugboat_api::resource::{DEPLOYMENTS, NAMESPACES, NODES, PODS};

    #[test]
    fn namespaced_paths_name_the_namespace_and_object() {
        assert_eq!(
            parse("/apis/apps/v1/namespaces/default/deployments/web/scale").unwrap(),
            Target::Object {
                info: &DEPLOYMENTS,
                namespace: Some("default".into()),
                name: "web".into(),
                subresource: Some("scale".into())
            }
        );
        assert_eq!(
            parse("/api/v1/namespaces/prod/pods").unwrap(),
            Target::Collection {
                info: &PODS,
                namespace: Some("prod".into())
            }
        );
    }

    #[test]
    fn cluster_wide_paths_list_across_namespaces() {
        assert_eq!(
            parse("/apis/apps/v1/deployments").unwrap(),
            Target::Collection {
                info: &DEPLOYMENTS,
                namespace: None
            }
        );
        assert_eq!(
            parse("/api/v1/nodes/n1/status").unwrap(),
            Target::Object {
                info: &NODES,
                namespace: None,
                name: "n1".into(),
                subresource: Some("status".into())
            }
        );
    }

    #[test]
    fn namespaces_themselves_are_objects() {
        assert_eq!(
            parse("/api/v1/namespaces/prod").unwrap(),
            Target::Object {
                info: &NAMESPACES,
                namespace: None,
                name: "prod".into(),
                subresource: None
            }
        );
        assert_eq!(
            parse("/api/v1/namespaces").unwrap(),
            Target::Collection {
                info: &NAMESPACES,
                namespace: None
            }
        );
    }

    #[test]
    fn unknown_paths_are_404() {
        assert_eq!(parse("/api/v1/widgets").unwrap_err().code, 404);
        assert_eq!(
            parse("/apis/apps/v1/namespaces/x/pods").unwrap_err().code,
            404
        );
        assert_eq!(
            parse("/apis/apps/v1/namespaces/x/deployments/a/b/c")
                .unwrap_err()
                .code,
            404
        );
        assert_eq!(parse("/foo").unwrap_err().code, 404);
    }
}
