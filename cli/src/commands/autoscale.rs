//! `tug autoscale deployment/web --min 2 --max 10 --cpu-percent 50`: creates a
//! HorizontalPodAutoscaler (`autoscaling/v2`) for the target, as `kubectl
//! autoscale` does; `--connections-per-second` adds the request rate the
//! Service in front counts (an Object metric on that Service, which also lets
//! `--min 0` wake the target from zero).

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};
use tugboat_api::client::ListParams;
use tugboat_api::metrics::CONNECTIONS_PER_SECOND;
use tugboat_api::resource::{HORIZONTALPODAUTOSCALERS, SERVICES};

use crate::args::AutoscaleArgs;
use crate::context::Context;
use crate::output::qualified_name;
use crate::target::parse_targets;

pub async fn run(args: AutoscaleArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let targets = parse_targets(&args.targets)?;
    ensure!(
        targets.len() == 1,
        "autoscale one target at a time: `tug autoscale deployment/NAME --max N`"
    );
    let target = &targets[0];
    ensure!(
        target.resource.has_scale,
        "{} cannot be autoscaled; autoscale deployments or replicasets",
        target.resource.plural
    );
    let Some(name) = target.name.clone() else {
        bail!(
            "say which {} to autoscale: `tug autoscale {}/NAME --max N`",
            target.resource.singular,
            target.resource.singular
        );
    };
    ensure!(args.max >= 1, "--max must be at least 1, not {}", args.max);
    if let Some(min) = args.min {
        ensure!(min >= 0, "--min must be 0 or more, not {min}");
        ensure!(
            min <= args.max,
            "--min {min} is more than --max {}",
            args.max
        );
    }
    if let Some(p) = args.cpu_percent {
        ensure!(p >= 1, "--cpu-percent must be at least 1, not {p}");
    }
    if let Some(rate) = &args.connections_per_second {
        ensure!(
            tugboat_api::quantity::parse(rate).is_some_and(|v| v > 0.0),
            "--connections-per-second: expected a positive number (`20`, `2.5`, `500m`), got {rate:?}"
        );
    }
    if args.min == Some(0) && args.connections_per_second.is_none() {
        bail!(
            "--min 0 needs --connections-per-second: the connections to the Service in front are what wake the target from zero"
        );
    }
    let client = ctx.client()?;
    let ns = ctx.namespace().to_string();
    let obj = client
        .get(target.resource, Some(&ns), &name)
        .await
        .with_context(|| format!("cannot read {}", qualified_name(target.resource, &name)))?;

    let mut metrics = Vec::new();
    if args.cpu_percent.is_some() || args.connections_per_second.is_none() {
        metrics.push(json!({
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": args.cpu_percent.unwrap_or(80)},
            },
        }));
    }
    if let Some(rate) = &args.connections_per_second {
        let service = match &args.service {
            Some(s) => s.clone(),
            None => front_service(&client, &ns, &obj, &name).await?,
        };
        metrics.push(json!({
            "type": "Object",
            "object": {
                "describedObject": {"apiVersion": "v1", "kind": "Service", "name": service},
                "metric": {"name": CONNECTIONS_PER_SECOND},
                "target": {"type": "AverageValue", "averageValue": rate},
            },
        }));
    }
    let hpa_name = args.name.clone().unwrap_or_else(|| name.clone());
    let mut spec = json!({
        "scaleTargetRef": {
            "apiVersion": target.resource.api_version(),
            "kind": target.resource.kind,
            "name": name,
        },
        "maxReplicas": args.max,
        "metrics": metrics,
    });
    if let Some(min) = args.min {
        spec["minReplicas"] = json!(min);
    }
    let hpa = json!({
        "apiVersion": HORIZONTALPODAUTOSCALERS.api_version(),
        "kind": HORIZONTALPODAUTOSCALERS.kind,
        "metadata": {"name": hpa_name, "namespace": ns},
        "spec": spec,
    });
    client
        .create(&HORIZONTALPODAUTOSCALERS, Some(&ns), &hpa)
        .await?;
    for w in client.take_warnings() {
        tracing::warn!("{w}");
    }
    writeln!(
        ctx.out,
        "{} autoscaled",
        qualified_name(&HORIZONTALPODAUTOSCALERS, &hpa_name)
    )?;
    Ok(())
}

/// The one Service of the namespace whose selector picks the target's pods.
async fn front_service(
    client: &tugboat_api::client::Client,
    ns: &str,
    target: &Value,
    name: &str,
) -> anyhow::Result<String> {
    let labels: std::collections::BTreeMap<String, String> = target
        .pointer("/spec/template/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    let services: Vec<Service> = client
        .list_as(&SERVICES, Some(ns), &ListParams::default())
        .await?;
    let fronting: Vec<String> = services
        .iter()
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|sel| {
                    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
        })
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    match fronting.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no Service in namespace {ns} selects the pods of {name}: --connections-per-second counts the connections to one; create it, or name it with --service"
        ),
        many => bail!(
            "several Services select the pods of {name} ({}): name the one to count with --service",
            many.join(", ")
        ),
    }
}
