//! `tug set image TYPE/NAME CONTAINER=IMAGE…` and `tug set env TYPE/NAME KEY=VALUE…
//! KEY-`: kubectl's `set` verbs. Each reads the object, decides the change to its
//! pod template (a pure function of the live object and the arguments), and sends
//! it as a strategic merge patch, so containers and variables are merged by name
//! and nothing else is touched. Nothing to change sends nothing and prints
//! nothing, as kubectl does.

use anyhow::{Context as _, anyhow, bail, ensure};
use serde_json::{Map, Value, json};
use tugboat_api::resource::{DEPLOYMENTS, PODS, REPLICASETS};
use tugboat_api::{PatchType, ResourceInfo};

use crate::args::{SetArgs, SetCommand};
use crate::context::Context;
use crate::error::{self, is_unreachable};
use crate::output::qualified_name;
use crate::target::parse_targets;

pub async fn run(args: SetArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let (args, kind, what) = match args.what {
        SetCommand::Image(a) => (a.args, Change::Image, "image"),
        SetCommand::Env(a) => (
            a.args,
            Change::Env {
                containers: a.containers,
            },
            "env",
        ),
    };
    let is_pair = |a: &str| match kind {
        Change::Image => a.contains('='),
        Change::Env { .. } => a.contains('=') || a.ends_with('-'),
    };
    let (resources, pairs) = split_pairs(&args, is_pair, what)?;
    let edit = match &kind {
        Change::Image => Edit::Images(parse_images(&pairs)?),
        Change::Env { containers } => Edit::Env(parse_env(&pairs)?, containers.clone()),
    };
    let targets = parse_targets(&resources)?;
    let client = ctx.client()?;
    let ns = ctx.namespace().to_string();
    let mut errors = Vec::new();
    for t in targets {
        let pointer = pod_spec_pointer(t.resource).ok_or_else(|| {
            anyhow!(
                "{} have no pod template: tug set works on deployments, replicasets and pods",
                t.resource.plural
            )
        })?;
        let Some(name) = t.name else {
            bail!(
                "say which {} to change: `tug set {what} {}/NAME …`",
                t.resource.singular,
                t.resource.singular
            );
        };
        let qualified = qualified_name(t.resource, &name);
        let result = async {
            let live = client.get(t.resource, Some(&ns), &name).await?;
            let patch = match &edit {
                Edit::Images(images) => image_patch(&live, pointer, images),
                Edit::Env(env, containers) => env_patch(&live, pointer, containers, env),
            }
            .with_context(|| qualified.clone())?;
            let Some(patch) = patch else {
                return Ok(false);
            };
            client
                .patch(t.resource, Some(&ns), &name, &patch, PatchType::Strategic)
                .await
                .with_context(|| format!("failed to patch {what} update to pod template"))?;
            anyhow::Ok(true)
        }
        .await;
        match result {
            Ok(true) => writeln!(ctx.out, "{qualified} {what} updated")?,
            Ok(false) => {}
            Err(e) if is_unreachable(&e) => return Err(e),
            Err(e) => errors.push(e),
        }
    }
    error::collect(errors)
}

enum Change {
    Image,
    Env { containers: String },
}

enum Edit {
    Images(Vec<(String, String)>),
    Env(EnvChange, String),
}

/// Where a kind keeps the pod spec `set` changes.
fn pod_spec_pointer(r: &ResourceInfo) -> Option<&'static str> {
    if *r == DEPLOYMENTS || *r == REPLICASETS {
        Some("/spec/template/spec")
    } else if *r == PODS {
        Some("/spec")
    } else {
        None
    }
}

/// kubectl's `GetResourcesAndPairs`: the resources come first, then the pairs.
pub fn split_pairs(
    args: &[String],
    is_pair: impl Fn(&str) -> bool,
    what: &str,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let first_pair = args.iter().position(|a| is_pair(a)).unwrap_or(args.len());
    let (resources, pairs) = args.split_at(first_pair);
    if pairs.iter().any(|p| !is_pair(p)) {
        bail!(
            "all resources must be specified before {what} changes: {}",
            args.join(" ")
        );
    }
    ensure!(
        !resources.is_empty(),
        "one or more resources must be specified as <resource> <name> or <resource>/<name>"
    );
    Ok((resources.to_vec(), pairs.to_vec()))
}

/// `CONTAINER=IMAGE` pairs; `*` is every container, alone.
pub fn parse_images(pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    ensure!(!pairs.is_empty(), "at least one image update is required");
    let images = pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((c, i)) if !c.is_empty() && !i.is_empty() => Ok((c.to_string(), i.to_string())),
            _ => Err(anyhow!(
                "invalid image update {p:?}: expected CONTAINER=IMAGE"
            )),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if images.len() > 1 && images.iter().any(|(c, _)| c == "*") {
        bail!(
            "all containers are already specified by *, but saw more than one container_name=container_image pairs"
        );
    }
    Ok(images)
}

/// The strategic merge patch setting `images` in the pod spec at `pointer` of
/// `live`; `None` when every image is already so. A container named in no
/// container or init container is an error, and nothing is patched.
pub fn image_patch(
    live: &Value,
    pointer: &str,
    images: &[(String, String)],
) -> anyhow::Result<Option<Value>> {
    let spec = live.pointer(pointer).cloned().unwrap_or(Value::Null);
    let mut lists = Map::new();
    for field in ["initContainers", "containers"] {
        let containers = spec[field].as_array().cloned().unwrap_or_default();
        let mut changed = Vec::new();
        for c in &containers {
            let name = c["name"].as_str().unwrap_or("");
            let wanted = images
                .iter()
                .rev()
                .find(|(n, _)| n == name || n == "*")
                .map(|(_, image)| image);
            if let Some(image) = wanted
                && c["image"].as_str() != Some(image)
            {
                changed.push(json!({"name": name, "image": image}));
            }
        }
        if !changed.is_empty() {
            lists.insert(field.to_string(), Value::Array(changed));
        }
    }
    for (name, _) in images {
        let found = ["initContainers", "containers"].iter().any(|f| {
            spec[*f]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| name == "*" || c["name"].as_str() == Some(name))
        });
        if !found {
            bail!("unable to find container named {name:?}");
        }
    }
    Ok((!lists.is_empty()).then(|| nest(pointer, Value::Object(lists))))
}

/// What `set env` was asked: variables to set, in order, and names to remove.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvChange {
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
}

/// kubectl's `ParseEnv`: `KEY=VALUE` sets, `KEY-` removes.
pub fn parse_env(pairs: &[String]) -> anyhow::Result<EnvChange> {
    let mut change = EnvChange::default();
    for p in pairs {
        if let Some((k, v)) = p.split_once('=') {
            ensure!(
                is_env_name(k),
                "{k:?} is not a valid key name: a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit"
            );
            change.set.push((k.to_string(), v.to_string()));
        } else if let Some(k) = p.strip_suffix('-').filter(|k| !k.is_empty()) {
            change.remove.push(k.to_string());
        } else {
            bail!("unknown environment variable: {p}");
        }
    }
    ensure!(
        !change.set.is_empty() || !change.remove.is_empty(),
        "at least one environment variable must be provided"
    );
    if change
        .remove
        .iter()
        .any(|r| change.set.iter().any(|(k, _)| k == r))
    {
        bail!("can not both modify and remove the same environment variable in the same command");
    }
    Ok(change)
}

/// Kubernetes' `IsEnvVarName`: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
fn is_env_name(k: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    k.chars()
        .next()
        .is_some_and(|c| ok(c) && !c.is_ascii_digit())
        && k.chars().all(ok)
}

/// The strategic merge patch making `change` in every container (and init
/// container) whose name matches `selector` (a glob); `None` when nothing would
/// change. No container matching is an error.
pub fn env_patch(
    live: &Value,
    pointer: &str,
    selector: &str,
    change: &EnvChange,
) -> anyhow::Result<Option<Value>> {
    let spec = live.pointer(pointer).cloned().unwrap_or(Value::Null);
    let mut lists = Map::new();
    let mut matched = 0;
    for field in ["initContainers", "containers"] {
        let mut changed = Vec::new();
        for c in spec[field].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or("");
            if !glob(selector, name) {
                continue;
            }
            matched += 1;
            let env = c["env"].as_array().cloned().unwrap_or_default();
            let mut items = Vec::new();
            for (k, v) in &change.set {
                let current = env.iter().find(|e| e["name"].as_str() == Some(k));
                match current {
                    Some(e) if e["value"].as_str() == Some(v) && e.get("valueFrom").is_none() => {}
                    // A value replaces a reference (valueFrom) too.
                    Some(e) if e.get("valueFrom").is_some() => {
                        items.push(json!({"name": k, "value": v, "valueFrom": null}));
                    }
                    _ => items.push(json!({"name": k, "value": v})),
                }
            }
            for k in &change.remove {
                if env.iter().any(|e| e["name"].as_str() == Some(k)) {
                    items.push(json!({"name": k, "$patch": "delete"}));
                }
            }
            if !items.is_empty() {
                changed.push(json!({"name": name, "env": items}));
            }
        }
        if !changed.is_empty() {
            lists.insert(field.to_string(), Value::Array(changed));
        }
    }
    if matched == 0 {
        bail!("does not have any containers matching {selector:?}");
    }
    Ok((!lists.is_empty()).then(|| nest(pointer, Value::Object(lists))))
}

/// `*` any run of characters, `?` any one, the rest literally.
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    go(&p, &n)
}

/// `value` under the JSON pointer `pointer`: `/spec/template/spec` →
/// `{"spec": {"template": {"spec": value}}}`.
fn nest(pointer: &str, value: Value) -> Value {
    pointer
        .split('/')
        .filter(|s| !s.is_empty())
        .rev()
        .fold(value, |inner, key| json!({ key: inner }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Value {
        json!({"spec": {"template": {"spec": {
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [
                {"name": "web", "image": "a:1", "env": [
                    {"name": "A", "value": "1"},
                    {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
                ]},
                {"name": "side", "image": "b:1"}
            ]
        }}}})
    }

    const T: &str = "/spec/template/spec";

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn resources_come_before_pairs() {
        let is_pair = |a: &str| a.contains('=');
        let (r, p) =
            split_pairs(&strings(&["deploy", "web", "web=a:2"]), is_pair, "image").unwrap();
        assert_eq!((r, p), (strings(&["deploy", "web"]), strings(&["web=a:2"])));
        let err = split_pairs(
            &strings(&["deploy/web", "web=a:2", "deploy/api"]),
            is_pair,
            "image",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("all resources must be specified before image changes"),
            "{err}"
        );
        assert!(split_pairs(&strings(&["web=a:2"]), is_pair, "image").is_err());
    }

    #[test]
    fn an_image_patch_names_only_the_containers_that_change() {
        let images = parse_images(&strings(&["web=a:2", "side=b:1"])).unwrap();
        assert_eq!(
            image_patch(&deployment(), T, &images).unwrap(),
            Some(
                json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "a:2"}]}}}})
            )
        );
        let same = parse_images(&strings(&["web=a:1"])).unwrap();
        assert_eq!(image_patch(&deployment(), T, &same).unwrap(), None);
    }

    #[test]
    fn star_sets_every_container_and_init_container() {
        let images = parse_images(&strings(&["*=c:1"])).unwrap();
        let patch = image_patch(&deployment(), T, &images).unwrap().unwrap();
        let spec = &patch["spec"]["template"]["spec"];
        assert_eq!(
            spec["initContainers"],
            json!([{"name": "init", "image": "c:1"}])
        );
        assert_eq!(spec["containers"].as_array().unwrap().len(), 2);
        assert!(parse_images(&strings(&["*=c:1", "web=a:2"])).is_err());
    }

    #[test]
    fn an_unknown_container_is_named_and_nothing_is_patched() {
        let images = parse_images(&strings(&["web=a:2", "db=pg:16"])).unwrap();
        let err = image_patch(&deployment(), T, &images)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "unable to find container named \"db\"");
        assert!(parse_images(&strings(&["web="])).is_err());
    }

    #[test]
    fn env_is_parsed_as_kubectl_does() {
        let c = parse_env(&strings(&["A=1", "B=x=y", "C-"])).unwrap();
        assert_eq!(
            c,
            EnvChange {
                set: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
                remove: vec!["C".into()],
            }
        );
        assert!(
            parse_env(&strings(&["1A=x"]))
                .unwrap_err()
                .to_string()
                .contains("not a valid key name")
        );
        assert!(parse_env(&strings(&["A=1", "A-"])).is_err());
        assert!(parse_env(&strings(&["-"])).is_err());
    }

    #[test]
    fn an_env_patch_sets_replaces_and_removes_by_name() {
        let c = parse_env(&strings(&["A=2", "NEW=n", "SECRET=plain", "GONE-", "A2-"])).unwrap();
        let patch = env_patch(&deployment(), T, "web", &c).unwrap().unwrap();
        assert_eq!(
            patch,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [
                {"name": "A", "value": "2"},
                {"name": "NEW", "value": "n"},
                {"name": "SECRET", "value": "plain", "valueFrom": null}
            ]}]}}}})
        );
        let remove = parse_env(&strings(&["A-"])).unwrap();
        let patch = env_patch(&deployment(), T, "*", &remove).unwrap().unwrap();
        assert_eq!(
            patch["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "env": [{"name": "A", "$patch": "delete"}]}])
        );
    }

    #[test]
    fn env_goes_to_every_container_by_default_and_nowhere_twice() {
        let c = parse_env(&strings(&["X=1"])).unwrap();
        let patch = env_patch(&deployment(), T, "*", &c).unwrap().unwrap();
        let spec = &patch["spec"]["template"]["spec"];
        assert_eq!(spec["containers"].as_array().unwrap().len(), 2);
        assert_eq!(spec["initContainers"].as_array().unwrap().len(), 1);
        let same = parse_env(&strings(&["A=1"])).unwrap();
        assert_eq!(env_patch(&deployment(), T, "web", &same).unwrap(), None);
    }

    #[test]
    fn a_container_selector_matching_nothing_is_an_error() {
        let c = parse_env(&strings(&["X=1"])).unwrap();
        let err = env_patch(&deployment(), T, "db*", &c)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "does not have any containers matching \"db*\"");
        assert!(env_patch(&deployment(), T, "si?e", &c).unwrap().is_some());
    }
}
