//! `tug describe TYPE NAME`: fetches the object and what kubectl shows with it (its
//! replica sets, pods and events) and prints it through `crate::describe`. A name that
//! matches nothing exactly describes the objects whose names start with it, as kubectl
//! does.

use anyhow::Context as _;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{
    Event, Namespace, Node, Pod, ReplicationController, Secret, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tugboat_api::resource::{ENDPOINTSLICES, EVENTS, PODS, REPLICASETS, SECRETS};
use tugboat_api::{Client, ListParams, ResourceInfo};

use crate::args::DescribeArgs;
use crate::context::Context;
use crate::describe;
use crate::error::{self, is_unreachable};
use crate::output::name_of;
use crate::target::parse_targets;

pub async fn run(args: DescribeArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let targets = parse_targets(&args.targets)?;
    let client = ctx.client()?;
    let namespace = ctx.namespace().to_string();
    let now = Timestamp::now();
    let mut errors = Vec::new();
    let mut described = 0usize;
    for t in &targets {
        let r = t.resource;
        let ns = r.namespaced.then_some(namespace.as_str());
        let objects = match find(&client, r, ns, t.name.as_deref()).await {
            Ok(objects) => objects,
            Err(e) if is_unreachable(&e) => return Err(e),
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for obj in objects {
            match describe_one(&client, r, &obj, now).await {
                Ok(text) => {
                    if described > 0 {
                        writeln!(ctx.out, "\n")?;
                    }
                    ctx.out.write_all(text.as_bytes())?;
                    described += 1;
                }
                Err(e) => errors.push(e),
            }
        }
    }
    if described == 0 && errors.is_empty() {
        // As kubectl: on stderr, so stdout stays empty.
        match targets.iter().all(|t| t.resource.namespaced) {
            true => eprintln!("No resources found in {namespace} namespace."),
            false => eprintln!("No resources found"),
        }
    }
    error::collect(errors)
}

/// The named object, else those whose names start with `name`, else every object of
/// the type when no name is given.
async fn find(
    client: &Client,
    r: &ResourceInfo,
    ns: Option<&str>,
    name: Option<&str>,
) -> anyhow::Result<Vec<Value>> {
    let Some(name) = name else {
        return Ok(items(client.list(r, ns, &ListParams::default()).await?));
    };
    match client.get(r, ns, name).await {
        Ok(obj) => Ok(vec![obj]),
        Err(e) if e.is_not_found() => {
            let matches: Vec<Value> = items(client.list(r, ns, &ListParams::default()).await?)
                .into_iter()
                .filter(|o| name_of(o).starts_with(name))
                .collect();
            if matches.is_empty() {
                Err(e.into())
            } else {
                Ok(matches)
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn items(list: Value) -> Vec<Value> {
    match list {
        Value::Object(mut map) => match map.remove("items") {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn decode<T: DeserializeOwned>(r: &ResourceInfo, obj: &Value) -> anyhow::Result<T> {
    serde_json::from_value(obj.clone()).with_context(|| {
        format!(
            "the server sent a {} {:?} this version of tug cannot read",
            r.singular,
            name_of(obj)
        )
    })
}

async fn describe_one(
    client: &Client,
    r: &ResourceInfo,
    obj: &Value,
    now: Timestamp,
) -> anyhow::Result<String> {
    let meta: ObjectMeta = obj
        .get("metadata")
        .map(|m| serde_json::from_value(m.clone()))
        .transpose()
        .context("the object's metadata cannot be read")?
        .unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let ns = meta.namespace.clone().filter(|_| r.namespaced);
    let ns = ns.as_deref();
    Ok(match r.kind {
        "Deployment" => {
            let d: Deployment = decode(r, obj)?;
            let sets: Vec<ReplicaSet> = client
                .list_as(&REPLICASETS, ns, &ListParams::default())
                .await
                .context("listing the deployment's replica sets")?;
            describe::deployment(&d, &sets, &events(client, r, ns, &name).await, now)
        }
        "ReplicaSet" => {
            let rs: ReplicaSet = decode(r, obj)?;
            let selector = rs
                .spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.as_ref())
                .map(|labels| {
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                });
            let params = ListParams {
                label_selector: selector.filter(|s| !s.is_empty()),
                field_selector: None,
            };
            let pods: Vec<Pod> = client
                .list_as(&PODS, ns, &params)
                .await
                .context("listing the replica set's pods")?;
            describe::replica_set(&rs, &pods, &events(client, r, ns, &name).await, now)
        }
        "ReplicationController" => {
            let rc: ReplicationController = decode(r, obj)?;
            let selector = rc.spec.as_ref().and_then(|s| s.selector.as_ref());
            let pods = pods_matching(client, ns, selector).await?;
            describe::replication_controller(&rc, &pods, &events(client, r, ns, &name).await, now)
        }
        "DaemonSet" => {
            let ds: DaemonSet = decode(r, obj)?;
            let selector = ds
                .spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.as_ref());
            let pods = pods_matching(client, ns, selector).await?;
            describe::daemon_set(&ds, &pods, &events(client, r, ns, &name).await, now)
        }
        "Job" => describe::job(&decode(r, obj)?, &events(client, r, ns, &name).await, now),
        "CronJob" => describe::cron_job(&decode(r, obj)?, &events(client, r, ns, &name).await, now),
        "ConfigMap" => {
            describe::config_map(&decode(r, obj)?, &events(client, r, ns, &name).await, now)
        }
        // As kubectl: a Secret's describe has no events, and never its values.
        "Secret" => describe::secret(&decode(r, obj)?),
        "ServiceAccount" => {
            let secrets: Vec<Secret> = client
                .list_as(&SECRETS, ns, &ListParams::default())
                .await
                .context("listing the service account's secrets")?;
            describe::service_account(
                &decode(r, obj)?,
                &secrets,
                &events(client, r, ns, &name).await,
                now,
            )
        }
        "ResourceQuota" => describe::resource_quota(&decode(r, obj)?),
        "LimitRange" => describe::limit_range(&decode(r, obj)?),
        "Pod" => describe::pod(&decode(r, obj)?, &events(client, r, ns, &name).await, now),
        "Node" => {
            let node: Node = decode(r, obj)?;
            let params = ListParams {
                label_selector: None,
                field_selector: Some(format!("spec.nodeName={name}")),
            };
            let pods: Vec<Pod> = client
                .list_as(&PODS, None, &params)
                .await
                .context("listing the node's pods")?;
            describe::node(&node, &pods, &events(client, r, None, &name).await, now)
        }
        "Namespace" => describe::namespace(&decode::<Namespace>(r, obj)?),
        "Service" => {
            let svc: Service = decode(r, obj)?;
            let params = ListParams {
                label_selector: Some(format!("kubernetes.io/service-name={name}")),
                field_selector: None,
            };
            let slices: Vec<EndpointSlice> = client
                .list_as(&ENDPOINTSLICES, ns, &params)
                .await
                .context("listing the service's endpoint slices")?;
            describe::service(&svc, &slices, &events(client, r, ns, &name).await, now)
        }
        "Endpoints" => {
            describe::endpoints(&decode(r, obj)?, &events(client, r, ns, &name).await, now)
        }
        "EndpointSlice" => {
            describe::endpoint_slice(&decode(r, obj)?, &events(client, r, ns, &name).await, now)
        }
        _ => describe::generic(&meta, &events(client, r, ns, &name).await, now),
    })
}

/// The pods whose labels include `selector` (a workload's `matchLabels`).
async fn pods_matching(
    client: &Client,
    ns: Option<&str>,
    selector: Option<&std::collections::BTreeMap<String, String>>,
) -> anyhow::Result<Vec<Pod>> {
    let selector = selector
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|s| !s.is_empty());
    // No selector selects nothing (not every pod).
    let Some(selector) = selector else {
        return Ok(Vec::new());
    };
    let params = ListParams {
        label_selector: Some(selector),
        field_selector: None,
    };
    client
        .list_as(&PODS, ns, &params)
        .await
        .context("listing the workload's pods")
}

/// The events about an object. Describing goes on without them if they cannot be
/// listed: the object itself is what was asked for.
async fn events(client: &Client, r: &ResourceInfo, ns: Option<&str>, name: &str) -> Vec<Event> {
    let params = ListParams {
        label_selector: None,
        field_selector: Some(format!(
            "involvedObject.name={name},involvedObject.kind={}",
            r.kind
        )),
    };
    match client.list_as(&EVENTS, ns, &params).await {
        Ok(events) => events,
        Err(e) => {
            tracing::warn!("cannot list the events of {} {name}: {e}", r.singular);
            Vec::new()
        }
    }
}
