//! `tug top nodes|pods`: current CPU and memory use from the controller's
//! metrics.k8s.io API, in kubectl's columns (`CPU(cores)` in millicores,
//! `MEMORY(bytes)` in MiB; a node's share of its allocatable capacity).

use anyhow::bail;
use serde::Deserialize;
use serde_json::Value;
use tugboat_api::client::{Client, ListParams};
use tugboat_api::resource::NODES;

use crate::args::{TopArgs, TopCommand, TopNodesArgs, TopPodsArgs, TopSort};
use crate::context::Context;
use crate::table::render_rows;

const METRICS: &str = "/apis/metrics.k8s.io/v1beta1";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Usage {
    #[serde(default)]
    cpu: Option<String>,
    #[serde(default)]
    memory: Option<String>,
}

impl Usage {
    fn millicores(&self) -> i64 {
        self.cpu
            .as_deref()
            .and_then(tugboat_api::quantity::cpu_millis)
            .unwrap_or(0)
    }

    fn bytes(&self) -> i64 {
        self.memory
            .as_deref()
            .and_then(tugboat_api::quantity::bytes)
            .unwrap_or(0)
    }
}

#[derive(Deserialize)]
struct Meta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Deserialize)]
struct NodeMetrics {
    metadata: Meta,
    usage: Usage,
}

#[derive(Deserialize)]
struct ContainerMetrics {
    name: String,
    usage: Usage,
}

#[derive(Deserialize)]
struct PodMetrics {
    metadata: Meta,
    containers: Vec<ContainerMetrics>,
}

pub async fn run(args: TopArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    match args.what {
        TopCommand::Nodes(a) => nodes(a, ctx).await,
        TopCommand::Pods(a) => pods(a, ctx).await,
    }
}

fn cpu(millis: i64) -> String {
    format!("{millis}m")
}

fn memory(bytes: i64) -> String {
    format!("{}Mi", bytes / (1024 * 1024))
}

fn query(path: &str, selector: Option<&str>) -> String {
    match selector {
        Some(s) => format!(
            "{path}?labelSelector={}",
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
        ),
        None => path.to_string(),
    }
}

async fn items<T: for<'de> Deserialize<'de>>(
    client: &Client,
    path: &str,
    single: bool,
) -> anyhow::Result<Vec<T>> {
    let v = client.get_path(path).await?;
    if single {
        return Ok(vec![serde_json::from_value(v)?]);
    }
    let items = v.get("items").cloned().unwrap_or(Value::Array(Vec::new()));
    Ok(serde_json::from_value(items)?)
}

async fn nodes(args: TopNodesArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let path = match &args.name {
        Some(n) => format!("{METRICS}/nodes/{n}"),
        None => query(&format!("{METRICS}/nodes"), args.selector.as_deref()),
    };
    let mut found: Vec<NodeMetrics> = items(&client, &path, args.name.is_some()).await?;
    if found.is_empty() {
        bail!(
            "metrics not available yet: no node has been measured (the controller reads each agent every --metrics-interval, 15 s by default)"
        );
    }
    let capacity: std::collections::HashMap<String, (i64, i64)> = client
        .list_as::<k8s_openapi::api::core::v1::Node>(&NODES, None, &ListParams::default())
        .await?
        .into_iter()
        .filter_map(|n| {
            let name = n.metadata.name?;
            let status = n.status?;
            let a = status.allocatable.or(status.capacity)?;
            let c = a
                .get("cpu")
                .and_then(|q| tugboat_api::quantity::cpu_millis(&q.0))?;
            let m = a
                .get("memory")
                .and_then(|q| tugboat_api::quantity::bytes(&q.0))?;
            Some((name, (c, m)))
        })
        .collect();
    match args.sort_by {
        Some(TopSort::Cpu) => found.sort_by_key(|n| std::cmp::Reverse(n.usage.millicores())),
        Some(TopSort::Memory) => found.sort_by_key(|n| std::cmp::Reverse(n.usage.bytes())),
        None => found.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name)),
    }
    let percent = |used: i64, of: Option<i64>| match of {
        Some(of) if of > 0 => format!("{}%", used.saturating_mul(100) / of),
        _ => "<unknown>".into(),
    };
    let mut rows = vec![
        ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
            .map(String::from)
            .to_vec(),
    ];
    for n in &found {
        let cap = capacity.get(&n.metadata.name);
        rows.push(vec![
            n.metadata.name.clone(),
            cpu(n.usage.millicores()),
            percent(n.usage.millicores(), cap.map(|c| c.0)),
            memory(n.usage.bytes()),
            percent(n.usage.bytes(), cap.map(|c| c.1)),
        ]);
    }
    write!(ctx.out, "{}", render_rows(&rows))?;
    Ok(())
}

async fn pods(args: TopPodsArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let ns = ctx.namespace().to_string();
    let path = match (&args.name, args.all_namespaces) {
        (Some(_), true) => bail!("a pod name needs a namespace: drop -A (use -n NAMESPACE)"),
        (Some(n), false) => format!("{METRICS}/namespaces/{ns}/pods/{n}"),
        (None, true) => query(&format!("{METRICS}/pods"), args.selector.as_deref()),
        (None, false) => query(
            &format!("{METRICS}/namespaces/{ns}/pods"),
            args.selector.as_deref(),
        ),
    };
    let mut found: Vec<PodMetrics> = items(&client, &path, args.name.is_some()).await?;
    if found.is_empty() {
        if args.all_namespaces {
            bail!(
                "no pods have been measured yet (the controller reads each agent every --metrics-interval, 15 s by default)"
            );
        }
        bail!(
            "no pods have been measured yet in namespace {ns} (the controller reads each agent every --metrics-interval, 15 s by default)"
        );
    }
    let total = |p: &PodMetrics| -> (i64, i64) {
        p.containers.iter().fold((0, 0), |(c, m), x| {
            (c + x.usage.millicores(), m + x.usage.bytes())
        })
    };
    match args.sort_by {
        Some(TopSort::Cpu) => found.sort_by_key(|p| std::cmp::Reverse(total(p).0)),
        Some(TopSort::Memory) => found.sort_by_key(|p| std::cmp::Reverse(total(p).1)),
        None => found.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        }),
    }
    let mut header: Vec<String> = Vec::new();
    if args.all_namespaces {
        header.push("NAMESPACE".into());
    }
    if args.containers {
        header.push("POD".into());
    }
    header.extend(["NAME", "CPU(cores)", "MEMORY(bytes)"].map(String::from));
    let mut rows = vec![header];
    for p in &found {
        let prefix = |row: &mut Vec<String>| {
            if args.all_namespaces {
                row.push(p.metadata.namespace.clone().unwrap_or_default());
            }
        };
        if args.containers {
            for c in &p.containers {
                let mut row = Vec::new();
                prefix(&mut row);
                row.extend([
                    p.metadata.name.clone(),
                    c.name.clone(),
                    cpu(c.usage.millicores()),
                    memory(c.usage.bytes()),
                ]);
                rows.push(row);
            }
        } else {
            let (c, m) = total(p);
            let mut row = Vec::new();
            prefix(&mut row);
            row.extend([p.metadata.name.clone(), cpu(c), memory(m)]);
            rows.push(row);
        }
    }
    write!(ctx.out, "{}", render_rows(&rows))?;
    Ok(())
}
