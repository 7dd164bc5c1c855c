//! `tug wait --for=CONDITION TYPE/NAME... [--timeout=30s]`: blocks until each
//! object meets the condition — `condition=NAME[=VALUE]` (a status condition,
//! VALUE `True` by default), `delete` (the object is gone) or
//! `jsonpath={.path}[=VALUE]` — reading the object, then watching it, as
//! kubectl does. On timeout it fails with kubectl's
//! `timed out waiting for the condition on jobs/NAME`.

use std::time::Duration;

use anyhow::{anyhow, bail};
use futures::StreamExt;
use serde_json::Value;
use tokio::time::Instant;
use tugboat_api::{Client, ListParams, ResourceInfo};

use crate::args::WaitArgs;
use crate::context::Context;
use crate::output::qualified_name;
use crate::target::parse_targets;

/// What `--for` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The object is gone.
    Delete,
    /// A `status.conditions` entry of this type (compared ignoring case) with
    /// this status.
    Status { kind: String, value: String },
    /// The value at a simple JSONPath (`{.status.phase}`, `{.items[0].x}`):
    /// equal to `value`, or present when there is none.
    JsonPath {
        path: Vec<Step>,
        value: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Field(String),
    Index(usize),
}

impl Condition {
    pub fn parse(text: &str) -> anyhow::Result<Condition> {
        if text.eq_ignore_ascii_case("delete") {
            return Ok(Condition::Delete);
        }
        if let Some(rest) = text.strip_prefix("condition=") {
            let (kind, value) = rest.split_once('=').unwrap_or((rest, "True"));
            if kind.is_empty() {
                bail!("--for: a condition needs a name: condition=NAME[=VALUE]");
            }
            return Ok(Condition::Status {
                kind: kind.to_string(),
                value: value.to_string(),
            });
        }
        if let Some(rest) = text.strip_prefix("jsonpath=") {
            let (expr, value) = match rest.rfind('}') {
                Some(end) => {
                    let (expr, tail) = rest.split_at(end + 1);
                    let value = tail.strip_prefix('=').map(str::to_string);
                    if !tail.is_empty() && value.is_none() {
                        bail!("--for: unrecognized jsonpath condition {text:?}");
                    }
                    (expr, value)
                }
                None => match rest.split_once('=') {
                    Some((e, v)) => (e, Some(v.to_string())),
                    None => (rest, None),
                },
            };
            return Ok(Condition::JsonPath {
                path: parse_path(expr)?,
                value,
            });
        }
        bail!(
            "unrecognized condition: {text:?} (expected delete, condition=NAME[=VALUE] or jsonpath={{.PATH}}=VALUE)"
        )
    }

    /// Does `obj` (as it is now) meet the condition? Never for `Delete`: a
    /// present object is not deleted.
    pub fn met(&self, obj: &Value) -> bool {
        match self {
            Condition::Delete => false,
            Condition::Status { kind, value } => obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| {
                    c["type"]
                        .as_str()
                        .is_some_and(|t| t.eq_ignore_ascii_case(kind))
                        && c["status"]
                            .as_str()
                            .is_some_and(|s| s.eq_ignore_ascii_case(value))
                }),
            Condition::JsonPath { path, value } => {
                let mut at = obj;
                for step in path {
                    let next = match step {
                        Step::Field(f) => at.get(f),
                        Step::Index(i) => at.get(*i),
                    };
                    match next {
                        Some(v) => at = v,
                        None => return false,
                    }
                }
                match value {
                    None => !at.is_null(),
                    Some(want) => match at {
                        Value::String(s) => s == want,
                        Value::Null => false,
                        other => serde_json::from_str::<Value>(want).ok().as_ref() == Some(other),
                    },
                }
            }
        }
    }
}

/// `{.status.phase}` or `.status.containerStatuses[0].ready` as steps.
fn parse_path(expr: &str) -> anyhow::Result<Vec<Step>> {
    let inner = expr
        .trim()
        .strip_prefix('{')
        .and_then(|e| e.strip_suffix('}'))
        .unwrap_or(expr)
        .trim();
    let inner = inner.strip_prefix('.').ok_or_else(|| {
        anyhow!("--for: a jsonpath starts with a dot: {{.status.phase}}, got {expr:?}")
    })?;
    let mut steps = Vec::new();
    for part in inner.split('.') {
        let (field, mut rest) = part.split_once('[').map_or((part, ""), |(f, r)| (f, r));
        if !field.is_empty() {
            steps.push(Step::Field(field.to_string()));
        }
        while !rest.is_empty() {
            let (index, tail) = rest
                .split_once(']')
                .ok_or_else(|| anyhow!("--for: unclosed [ in jsonpath {expr:?}"))?;
            let i = index.parse::<usize>().map_err(|_| {
                anyhow!("--for: only numeric indexes are supported in jsonpath {expr:?}")
            })?;
            steps.push(Step::Index(i));
            rest = tail.strip_prefix('[').unwrap_or(tail);
        }
        if field.is_empty() && part.is_empty() {
            bail!("--for: empty field in jsonpath {expr:?}");
        }
    }
    Ok(steps)
}

pub async fn run(args: WaitArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let condition = Condition::parse(&args.for_)?;
    let targets = parse_targets(&args.targets)?;
    let client = ctx.client()?;
    let ns = ctx.namespace().to_string();
    let deadline = Instant::now() + args.timeout;
    for target in targets {
        let Some(name) = target.name else {
            bail!(
                "name the objects to wait for: TYPE/NAME or TYPE NAME (got {} without a name)",
                target.resource.plural
            );
        };
        let ns = target.resource.namespaced.then_some(ns.as_str());
        let waited = tokio::time::timeout_at(
            deadline,
            wait_one(&client, target.resource, ns, &name, &condition),
        )
        .await;
        match waited {
            Ok(result) => result?,
            Err(_) => bail!(
                "timed out waiting for the condition on {}/{name}",
                target.resource.plural
            ),
        }
        writeln!(
            ctx.out,
            "{} condition met",
            qualified_name(target.resource, &name)
        )?;
    }
    Ok(())
}

/// Reads the object, then watches it until the condition holds. A watch that
/// ends is started again from a fresh read.
async fn wait_one(
    client: &Client,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    condition: &Condition,
) -> anyhow::Result<()> {
    let params = ListParams {
        field_selector: Some(format!("metadata.name={name}")),
        ..Default::default()
    };
    loop {
        let revision = match client.get(info, ns, name).await {
            Ok(obj) if condition.met(&obj) => return Ok(()),
            Ok(obj) => obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string),
            Err(e) if e.is_not_found() && *condition == Condition::Delete => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let events = match client.watch(info, ns, &params, revision.as_deref()).await {
            Ok(events) => events,
            Err(e) => {
                tracing::debug!(error = %e, "watch failed; reading again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let Ok(event) = event else { break };
            match event.event_type.as_str() {
                "DELETED" if *condition == Condition::Delete => return Ok(()),
                "ADDED" | "MODIFIED" if condition.met(&event.object) => return Ok(()),
                // Too old a revision, or another failure: read and watch again.
                "ERROR" => break,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn conditions_parse_as_kubectl_spells_them() {
        assert_eq!(Condition::parse("delete").unwrap(), Condition::Delete);
        assert_eq!(
            Condition::parse("condition=complete").unwrap(),
            Condition::Status {
                kind: "complete".into(),
                value: "True".into()
            }
        );
        assert_eq!(
            Condition::parse("condition=Ready=false").unwrap(),
            Condition::Status {
                kind: "Ready".into(),
                value: "false".into()
            }
        );
        assert_eq!(
            Condition::parse("jsonpath={.status.phase}=Running").unwrap(),
            Condition::JsonPath {
                path: vec![Step::Field("status".into()), Step::Field("phase".into())],
                value: Some("Running".into())
            }
        );
        assert_eq!(
            Condition::parse("jsonpath={.status.containerStatuses[0].ready}").unwrap(),
            Condition::JsonPath {
                path: vec![
                    Step::Field("status".into()),
                    Step::Field("containerStatuses".into()),
                    Step::Index(0),
                    Step::Field("ready".into())
                ],
                value: None
            }
        );
        assert!(Condition::parse("ready").is_err());
        assert!(Condition::parse("condition=").is_err());
    }

    #[test]
    fn a_condition_matches_type_and_status_ignoring_case() {
        let job = json!({"status": {"conditions": [
            {"type": "SuccessCriteriaMet", "status": "True"},
            {"type": "Complete", "status": "True"},
        ]}});
        assert!(Condition::parse("condition=complete").unwrap().met(&job));
        assert!(
            !Condition::parse("condition=complete=false")
                .unwrap()
                .met(&job)
        );
        assert!(!Condition::parse("condition=failed").unwrap().met(&job));
        assert!(!Condition::Delete.met(&job));
        assert!(
            !Condition::parse("condition=complete")
                .unwrap()
                .met(&json!({}))
        );
    }

    #[test]
    fn a_jsonpath_compares_the_value_it_finds() {
        let pod = json!({"status": {"phase": "Running", "containerStatuses": [{"ready": true}]}});
        let met = |c: &str| Condition::parse(c).unwrap().met(&pod);
        assert!(met("jsonpath={.status.phase}=Running"));
        assert!(!met("jsonpath={.status.phase}=Pending"));
        assert!(met("jsonpath={.status.containerStatuses[0].ready}=true"));
        assert!(met("jsonpath={.status.phase}"));
        assert!(!met("jsonpath={.status.podIP}"));
    }
}
