//! What the user points a verb at: a resource type as kubectl spells it (`deploy`,
//! `deployments.apps`, `po`) followed by names, or `type/name` pairs.

use anyhow::{anyhow, bail};
use tugboat_api::ResourceInfo;
use tugboat_api::resource::{self, by_user_name};

/// One resource type and, optionally, one name of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub resource: &'static ResourceInfo,
    pub name: Option<String>,
}

/// What `all` means, as kubectl's `all` category (the kinds discovery lists in
/// category `all`): the workloads and their Services and autoscalers, not the
/// cluster's plumbing (nodes, namespaces, events) nor configuration. In the
/// order kubectl prints them: core kinds first, then by group.
const ALL_CATEGORY: [&ResourceInfo; 9] = [
    &resource::PODS,
    &resource::REPLICATIONCONTROLLERS,
    &resource::SERVICES,
    &resource::DAEMONSETS,
    &resource::DEPLOYMENTS,
    &resource::REPLICASETS,
    &resource::HORIZONTALPODAUTOSCALERS,
    &resource::CRONJOBS,
    &resource::JOBS,
];

/// The resource a user means by `name`, or an error listing what there is.
pub fn resource_type(name: &str) -> anyhow::Result<&'static ResourceInfo> {
    by_user_name(name).ok_or_else(|| {
        anyhow!(
            "the server doesn't have a resource type \"{name}\"; known types: {}",
            known_types()
        )
    })
}

/// `deployments (deploy), replicasets (rs), …` for error messages.
pub fn known_types() -> String {
    resource::ALL
        .iter()
        .map(|r| match r.short_names {
            [] => r.plural.to_string(),
            short => format!("{} ({})", r.plural, short.join(", ")),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads `TYPE[,TYPE...] [NAME...]` or `TYPE/NAME...` (kubectl's two forms, not
/// mixed). A type without names yields one target without a name.
pub fn parse_targets(args: &[String]) -> anyhow::Result<Vec<Target>> {
    let Some(first) = args.first() else {
        bail!(
            "say what to act on: a resource type such as `deployments`, optionally with names, or TYPE/NAME"
        );
    };
    if first.contains('/') {
        return args
            .iter()
            .map(|arg| {
                let Some((kind, name)) = arg.split_once('/') else {
                    bail!(
                        "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. `tug get deploy/web` instead of `tug get deploy deploy/web`): {arg:?}"
                    );
                };
                if name.is_empty() || name.contains('/') {
                    bail!("arguments in resource/name form must have a single resource and name: {arg:?}");
                }
                Ok(Target {
                    resource: resource_type(kind)?,
                    name: Some(name.to_string()),
                })
            })
            .collect();
    }
    let mut resources = Vec::new();
    for name in first.split(',') {
        if name.eq_ignore_ascii_case("all") {
            resources.extend(ALL_CATEGORY);
        } else {
            resources.push(resource_type(name)?);
        }
    }
    let names = &args[1..];
    if let Some(bad) = names.iter().find(|n| n.contains('/')) {
        bail!(
            "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. `tug get deploy/web` instead of `tug get deploy deploy/web`): {bad:?}"
        );
    }
    let mut targets = Vec::new();
    for resource in resources {
        if names.is_empty() {
            targets.push(Target {
                resource,
                name: None,
            });
        }
        for n in names {
            targets.push(Target {
                resource,
                name: Some(n.clone()),
            });
        }
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tugboat_api::resource::{DEPLOYMENTS, NAMESPACES, PODS, REPLICASETS};

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kinds_resolve_by_every_name_kubectl_accepts() {
        for name in [
            "deploy",
            "deployment",
            "deployments",
            "Deployment",
            "deployments.apps",
        ] {
            assert_eq!(resource_type(name).unwrap(), &DEPLOYMENTS, "{name}");
        }
        assert_eq!(resource_type("rs").unwrap(), &REPLICASETS);
        assert_eq!(resource_type("ns").unwrap(), &NAMESPACES);
        assert_eq!(resource_type("po").unwrap(), &PODS);
    }

    #[test]
    fn an_unknown_kind_is_an_error_listing_the_known_ones() {
        let err = resource_type("widgets").unwrap_err().to_string();
        assert!(err.contains("\"widgets\""), "{err}");
        assert!(err.contains("deployments (deploy)"), "{err}");
    }

    #[test]
    fn a_type_alone_is_one_target_without_a_name() {
        let t = parse_targets(&args(&["pods"])).unwrap();
        assert_eq!(
            t,
            vec![Target {
                resource: &PODS,
                name: None
            }]
        );
    }

    #[test]
    fn a_type_with_names_and_type_slash_name_mean_the_same() {
        let a = parse_targets(&args(&["deploy", "web", "api"])).unwrap();
        let b = parse_targets(&args(&["deployment/web", "deploy/api"])).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[1].name.as_deref(), Some("api"));
    }

    #[test]
    fn comma_separated_types_are_each_a_target() {
        let t = parse_targets(&args(&["deploy,rs"])).unwrap();
        assert_eq!(
            t,
            vec![
                Target {
                    resource: &DEPLOYMENTS,
                    name: None
                },
                Target {
                    resource: &REPLICASETS,
                    name: None
                },
            ]
        );
        assert!(parse_targets(&args(&["deploy,widgets"])).is_err());
        let all: Vec<_> = parse_targets(&args(&["all"]))
            .unwrap()
            .into_iter()
            .map(|t| t.resource)
            .collect();
        assert_eq!(all.len(), 9);
        assert_eq!(all[0], &PODS);
        for kind in [
            "ReplicationController",
            "Service",
            "DaemonSet",
            "Job",
            "CronJob",
        ] {
            assert!(all.iter().any(|r| r.kind == kind), "{kind} is in `all`");
        }
        for short in ["cm", "sa", "ds", "rc", "cj", "quota", "limits"] {
            assert!(resource_type(short).is_ok(), "{short}");
        }
    }

    #[test]
    fn the_two_forms_cannot_be_mixed() {
        assert!(parse_targets(&args(&["deploy", "deploy/web"])).is_err());
        assert!(parse_targets(&args(&["deploy/web", "api"])).is_err());
        assert!(parse_targets(&args(&["deploy/"])).is_err());
    }
}
