//! A container's environment as the kubelet makes it: the Service variables,
//! then `envFrom` (ConfigMaps and Secrets, with `prefix`), then `env` with
//! `value` (expanded: `$(VAR)` names an earlier variable, `$$` is a `$`) or
//! `valueFrom` (`configMapKeyRef`, `secretKeyRef`, `fieldRef`,
//! `resourceFieldRef`); and `command`/`args` expanded against the result. Pure:
//! the worker fetches the objects first ([`Fetched`]). A missing object or key
//! that is not `optional` is a [`ConfigError`] whose message is the kubelet's and
//! never holds a Secret's value.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, ResourceFieldSelector, Secret};
use tugboat_api::quantity;

/// The ConfigMaps and Secrets of the pod's namespace it refers to, by name;
/// `None`: there is no such object.
#[derive(Clone, Debug, Default)]
pub struct Fetched {
    pub config_maps: HashMap<String, Option<ConfigMap>>,
    pub secrets: HashMap<String, Option<Secret>>,
}

/// Why a container cannot be created yet (reason `CreateContainerConfigError`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// What `fieldRef`s and `resourceFieldRef`s read besides the pod.
#[derive(Clone, Debug, Default)]
pub struct PodFacts {
    pub pod_ip: Option<String>,
    pub host_ip: String,
    /// The node's CPU (millicores) and memory (bytes): what a limit that is not
    /// set reads as, as the kubelet uses the node's allocatable.
    pub node_cpu_millis: Option<i64>,
    pub node_memory: Option<i64>,
}

/// The names of the ConfigMaps and Secrets the pod refers to (env, envFrom and
/// volumes, init containers included).
pub fn references(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cms = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let Some(spec) = pod.spec.as_ref() else {
        return (cms, secrets);
    };
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
    {
        for e in c.env.iter().flatten() {
            if let Some(from) = &e.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    cms.insert(r.name.clone());
                }
                if let Some(r) = &from.secret_key_ref {
                    secrets.insert(r.name.clone());
                }
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &f.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            cms.insert(cm.name.clone());
        }
        if let Some(s) = &v.secret
            && let Some(name) = &s.secret_name
        {
            secrets.insert(name.clone());
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &src.config_map {
                cms.insert(cm.name.clone());
            }
            if let Some(s) = &src.secret {
                secrets.insert(s.name.clone());
            }
        }
    }
    (cms, secrets)
}

/// A ConfigMap's value for `key` (text data, else binary data as text).
pub fn config_map_value(cm: &ConfigMap, key: &str) -> Option<String> {
    cm.data
        .as_ref()
        .and_then(|d| d.get(key).cloned())
        .or_else(|| {
            cm.binary_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        })
}

/// The container's environment: `service_env` first, its own after (and
/// winning). The order is the kubelet's: envFrom, then env, each in order.
pub fn container_env(
    pod: &Pod,
    c: &Container,
    fetched: &Fetched,
    facts: &PodFacts,
    service_env: &[(String, String)],
) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut own: Vec<(String, String)> = Vec::new();
    let set = |own: &mut Vec<(String, String)>, k: String, v: String| match own
        .iter_mut()
        .find(|(name, _)| *name == k)
    {
        Some(slot) => slot.1 = v,
        None => own.push((k, v)),
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match fetched.config_maps.get(&r.name).cloned().flatten() {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        let name = format!("{prefix}{k}");
                        if valid_env_name(&name) {
                            set(&mut own, name, v.clone());
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError(format!("configmap \"{}\" not found", r.name))),
            }
        }
        if let Some(r) = &from.secret_ref {
            match fetched.secrets.get(&r.name).cloned().flatten() {
                Some(s) => {
                    for (k, v) in s.data.iter().flatten() {
                        let name = format!("{prefix}{k}");
                        if valid_env_name(&name) {
                            set(&mut own, name, String::from_utf8_lossy(&v.0).into_owned());
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError(format!("secret \"{}\" not found", r.name))),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (_, Some(from)) => {
                if let Some(r) = &from.config_map_key_ref {
                    match fetched.config_maps.get(&r.name).cloned().flatten() {
                        Some(cm) => match config_map_value(&cm, &r.key) {
                            Some(v) => v,
                            None if r.optional == Some(true) => continue,
                            None => {
                                return Err(ConfigError(format!(
                                    "couldn't find key {} in ConfigMap {ns}/{}",
                                    r.key, r.name
                                )));
                            }
                        },
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(ConfigError(format!("configmap \"{}\" not found", r.name)));
                        }
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    match fetched.secrets.get(&r.name).cloned().flatten() {
                        Some(s) => match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                            Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                            None if r.optional == Some(true) => continue,
                            None => {
                                return Err(ConfigError(format!(
                                    "couldn't find key {} in Secret {ns}/{}",
                                    r.key, r.name
                                )));
                            }
                        },
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(ConfigError(format!("secret \"{}\" not found", r.name)));
                        }
                    }
                } else if let Some(f) = &from.field_ref {
                    field_value(pod, &f.field_path, facts).map_err(ConfigError)?
                } else if let Some(r) = &from.resource_field_ref {
                    resource_value(pod, Some(&c.name), r, facts).map_err(ConfigError)?
                } else {
                    continue;
                }
            }
            (Some(v), None) => {
                let lookup = |name: &str| {
                    own.iter()
                        .chain(service_env.iter())
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                };
                expand(v, lookup)
            }
            (None, None) => String::new(),
        };
        set(&mut own, e.name.clone(), value);
    }
    let mut env: Vec<(String, String)> = service_env
        .iter()
        .filter(|(k, _)| !own.iter().any(|(o, _)| o == k))
        .cloned()
        .collect();
    env.extend(own);
    Ok(env)
}

/// `command` and `args` with `$(VAR)` expanded against the container's final
/// environment, as the kubelet does.
pub fn expand_command(
    c: &Container,
    env: &[(String, String)],
) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let each = |list: &Option<Vec<String>>| {
        list.as_ref()
            .map(|l| l.iter().map(|s| expand(s, lookup)).collect())
    };
    (each(&c.command), each(&c.args))
}

/// Kubernetes' variable expansion (`third_party/forked/golang/expansion`):
/// `$(NAME)` is NAME's value, or left as it is when NAME is unknown; `$$` is a
/// `$`; a `$` before anything else stays.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.extend_from_slice(&bytes[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let (read, advance) = match rest.as_bytes()[0] {
                b'$' => ("$".to_string(), 1),
                b'(' => match rest[1..].find(')') {
                    Some(i) => {
                        let name = &rest[1..1 + i];
                        let v = lookup(name).unwrap_or_else(|| format!("$({name})"));
                        (v, i + 2)
                    }
                    None => ("$(".to_string(), 1),
                },
                _ => ("$".to_string(), 0),
            };
            out.extend_from_slice(read.as_bytes());
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.extend_from_slice(&bytes[checkpoint.min(bytes.len())..]);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('=') && name.chars().all(|c| !c.is_control())
}

/// A `fieldRef`'s value.
pub fn field_value(pod: &Pod, path: &str, facts: &PodFacts) -> Result<String, String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let bracketed = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['"))
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    if let Some(key) = bracketed("metadata.labels") {
        return Ok(m
            .labels
            .as_ref()
            .and_then(|l| l.get(&key).cloned())
            .unwrap_or_default());
    }
    if let Some(key) = bracketed("metadata.annotations") {
        return Ok(m
            .annotations
            .as_ref()
            .and_then(|l| l.get(&key).cloned())
            .unwrap_or_default());
    }
    let text = match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone().unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        other => return Err(format!("unsupported fieldRef fieldPath {other:?}")),
    };
    Ok(text)
}

/// Labels or annotations as the downward API writes them: `key="value"` lines,
/// sorted by key.
fn format_map(map: Option<&std::collections::BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `resourceFieldRef`'s value: the container's limit or request divided by
/// `divisor` (rounded up); an unset limit is the node's figure.
pub fn resource_value(
    pod: &Pod,
    container: Option<&str>,
    r: &ResourceFieldSelector,
    facts: &PodFacts,
) -> Result<String, String> {
    let name = r.container_name.as_deref().or(container).unwrap_or("");
    let spec = pod.spec.clone().unwrap_or_default();
    let c = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .ok_or_else(|| format!("resourceFieldRef: no container {name:?} in the pod"))?;
    let res = c.resources.clone().unwrap_or_default();
    let (kind, which) = r
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resource {:?}", r.resource))?;
    let list = match kind {
        "limits" => res.limits.unwrap_or_default(),
        "requests" => res.requests.unwrap_or_default(),
        _ => return Err(format!("unsupported resource {:?}", r.resource)),
    };
    let divisor = r.divisor.as_ref().map(|d| d.0.as_str()).unwrap_or("1");
    let ceil = |a: i64, b: i64| if b <= 0 { a } else { (a + b - 1) / b };
    match which {
        "cpu" => {
            let millis = list
                .get("cpu")
                .and_then(|q| quantity::cpu_millis(&q.0))
                .or(if kind == "limits" {
                    facts.node_cpu_millis
                } else {
                    None
                })
                .unwrap_or(0);
            let div = quantity::cpu_millis(divisor).unwrap_or(1000).max(1);
            Ok(ceil(millis, div).to_string())
        }
        "memory" => {
            let bytes = list
                .get("memory")
                .and_then(|q| quantity::bytes(&q.0))
                .or(if kind == "limits" {
                    facts.node_memory
                } else {
                    None
                })
                .unwrap_or(0);
            let div = quantity::bytes(divisor).unwrap_or(1).max(1);
            Ok(ceil(bytes, div).to_string())
        }
        _ => Err(format!("unsupported resource {:?}", r.resource)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "A" => Some("a".into()),
            "B" => Some("$(A)".into()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let cases = [
            ("$(A)", "a"),
            ("x$(A)y", "xay"),
            ("$(B)", "$(A)"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$a"),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$(A", "$(A"),
            ("$A", "$A"),
            ("a$", "a$"),
            ("$", "$"),
            ("", ""),
            ("é$(A)ü", "éaü"),
            ("$()", "$()"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, lookup), want, "{input:?}");
        }
    }

    fn pod(env: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "team", "uid": "u1",
                         "labels": {"app": "web"}, "annotations": {"note": "hi"}},
            "spec": {"nodeName": "n1", "containers": [{
                "name": "app", "image": "x",
                "command": ["run", "$(GREETING)", "$$(GREETING)"],
                "resources": {"limits": {"cpu": "1500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}},
                "env": env,
                "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
                            {"secretRef": {"name": "opt", "optional": true}}]
            }]}
        }))
        .unwrap()
    }

    fn fetched() -> Fetched {
        let mem = crate::objects::MemoryObjects::default();
        let _ = mem;
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "cfg"}, "data": {"color": "blue", "size": "L"}
        }))
        .unwrap();
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "creds"}, "data": {"password": "czNjcjN0"}
        }))
        .unwrap();
        Fetched {
            config_maps: HashMap::from([("cfg".into(), Some(cm)), ("gone".into(), None)]),
            secrets: HashMap::from([("creds".into(), Some(secret)), ("opt".into(), None)]),
        }
    }

    fn facts() -> PodFacts {
        PodFacts {
            pod_ip: Some("10.0.0.5".into()),
            host_ip: "192.0.2.1".into(),
            node_cpu_millis: Some(4000),
            node_memory: Some(8 << 30),
        }
    }

    #[test]
    fn env_reads_objects_fields_and_resources_and_expands() {
        let p = pod(json!([
            {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
            {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "MAYBE", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
            {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "GREETING", "value": "hello $(POD) on $(SVC_HOST)"},
        ]));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let svc = vec![("SVC_HOST".to_string(), "10.96.0.1".to_string())];
        let env = container_env(&p, c, &fetched(), &facts(), &svc).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CFG_color"), Some("blue"));
        assert_eq!(get("CFG_size"), Some("L"));
        assert_eq!(get("COLOR"), Some("blue"));
        assert_eq!(get("PASS"), Some("s3cr3t"));
        assert_eq!(get("MAYBE"), None);
        assert_eq!(get("POD"), Some("web-1"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("IP"), Some("10.0.0.5"));
        assert_eq!(get("CPU"), Some("2"), "1.5 CPUs rounded up");
        assert_eq!(get("CPU_M"), Some("250"));
        assert_eq!(get("MEM_MI"), Some("64"));
        assert_eq!(get("GREETING"), Some("hello web-1 on 10.96.0.1"));
        assert_eq!(env[0].0, "SVC_HOST", "the Service variables come first");
        let (command, _) = expand_command(c, &env);
        assert_eq!(
            command.unwrap(),
            ["run", "hello web-1 on 10.96.0.1", "$(GREETING)"]
        );
    }

    #[test]
    fn a_missing_object_or_key_is_the_kubelets_error_without_values() {
        let cases = [
            (
                json!({"configMapKeyRef": {"name": "gone", "key": "k"}}),
                "configmap \"gone\" not found",
            ),
            (
                json!({"configMapKeyRef": {"name": "cfg", "key": "k"}}),
                "couldn't find key k in ConfigMap team/cfg",
            ),
            (
                json!({"secretKeyRef": {"name": "nope", "key": "k"}}),
                "secret \"nope\" not found",
            ),
            (
                json!({"secretKeyRef": {"name": "creds", "key": "k"}}),
                "couldn't find key k in Secret team/creds",
            ),
        ];
        for (from, want) in cases {
            let p = pod(json!([{"name": "X", "valueFrom": from}]));
            let c = &p.spec.as_ref().unwrap().containers[0];
            let err = container_env(&p, c, &fetched(), &facts(), &[]).unwrap_err();
            assert_eq!(err.0, want);
            assert!(!err.0.contains("s3cr3t"));
        }
    }

    #[test]
    fn references_cover_env_env_from_and_volumes() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s1"}}]}],
                "containers": [{"name": "a", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c1", "key": "k"}}}]}],
                "volumes": [
                    {"name": "v1", "configMap": {"name": "c2"}},
                    {"name": "v2", "secret": {"secretName": "s2"}},
                    {"name": "v3", "projected": {"sources": [{"configMap": {"name": "c3"}}, {"secret": {"name": "s3"}}]}}
                ]
            }
        }))
        .unwrap();
        let (cms, secrets) = references(&p);
        assert_eq!(cms.into_iter().collect::<Vec<_>>(), ["c1", "c2", "c3"]);
        assert_eq!(secrets.into_iter().collect::<Vec<_>>(), ["s1", "s2", "s3"]);
    }
}
