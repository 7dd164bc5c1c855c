//! A pod template or pod's containers as describe shows them: image, ports, state,
//! resources, probes, environment and mounts, then volumes, node selectors and
//! tolerations.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStatus, PodSpec, PodTemplateSpec, Probe,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Writer, annotations, cell, labels, none_if_empty, time};

pub(super) fn int_or_string(v: Option<&IntOrString>) -> String {
    match v {
        Some(IntOrString::Int(i)) => i.to_string(),
        Some(IntOrString::String(s)) => s.clone(),
        None => String::new(),
    }
}

/// `http-get http://:8080/healthz delay=0s timeout=1s period=10s #success=1 #failure=3`
fn probe(p: &Probe) -> String {
    let attrs = format!(
        "delay={}s timeout={}s period={}s #success={} #failure={}",
        p.initial_delay_seconds.unwrap_or(0),
        p.timeout_seconds.unwrap_or(1),
        p.period_seconds.unwrap_or(10),
        p.success_threshold.unwrap_or(1),
        p.failure_threshold.unwrap_or(3),
    );
    if let Some(exec) = &p.exec {
        return format!(
            "exec [{}] {attrs}",
            exec.command.clone().unwrap_or_default().join(" ")
        );
    }
    if let Some(http) = &p.http_get {
        let scheme = http.scheme.as_deref().unwrap_or("HTTP").to_lowercase();
        let host = http.host.as_deref().unwrap_or("");
        let port = int_or_string(Some(&http.port));
        let path = http.path.as_deref().unwrap_or("");
        return format!("http-get {scheme}://{host}:{port}{path} {attrs}");
    }
    if let Some(tcp) = &p.tcp_socket {
        let host = tcp.host.as_deref().unwrap_or("");
        return format!(
            "tcp-socket {host}:{} {attrs}",
            int_or_string(Some(&tcp.port))
        );
    }
    if let Some(grpc) = &p.grpc {
        return format!(
            "grpc <pod>:{} {} {attrs}",
            grpc.port,
            grpc.service.as_deref().unwrap_or("")
        );
    }
    format!("unknown {attrs}")
}

fn container_state(w: &mut Writer, title: &str, state: Option<&ContainerState>) {
    let state = state.cloned().unwrap_or_default();
    if let Some(r) = &state.running {
        w.line(2, &format!("{title}:\tRunning"));
        w.line(3, &format!("Started:\t{}", time(r.started_at.as_ref())));
    } else if let Some(t) = &state.terminated {
        w.line(2, &format!("{title}:\tTerminated"));
        if let Some(reason) = t.reason.as_deref().filter(|r| !r.is_empty()) {
            w.line(3, &format!("Reason:\t{}", cell(reason)));
        }
        if let Some(message) = t.message.as_deref().filter(|m| !m.is_empty()) {
            w.line(3, &format!("Message:\t{}", cell(message)));
        }
        w.line(3, &format!("Exit Code:\t{}", t.exit_code));
        if let Some(signal) = t.signal.filter(|s| *s > 0) {
            w.line(3, &format!("Signal:\t{signal}"));
        }
        w.line(3, &format!("Started:\t{}", time(t.started_at.as_ref())));
        w.line(3, &format!("Finished:\t{}", time(t.finished_at.as_ref())));
    } else {
        w.line(2, &format!("{title}:\tWaiting"));
        if let Some(reason) = state
            .waiting
            .as_ref()
            .and_then(|s| s.reason.as_deref())
            .filter(|r| !r.is_empty())
        {
            w.line(3, &format!("Reason:\t{}", cell(reason)));
        }
    }
}

fn resource_list(
    w: &mut Writer,
    level: usize,
    title: &str,
    list: Option<&BTreeMap<String, Quantity>>,
) {
    let Some(list) = list.filter(|l| !l.is_empty()) else {
        return;
    };
    w.line(level, &format!("{title}:"));
    for (name, q) in list {
        w.line(level + 1, &format!("{name}:\t{}", q.0));
    }
}

/// One `Containers:` section. `indent` is the template's extra indentation (kubectl
/// puts a space before container names inside a pod template).
pub(super) fn containers(
    w: &mut Writer,
    title: &str,
    containers: &[Container],
    statuses: &[ContainerStatus],
    in_template: bool,
) {
    let space = if in_template { "  " } else { "" };
    w.line(0, &format!("{space}{title}:"));
    for c in containers {
        let status = statuses.iter().find(|s| s.name == c.name);
        let name_indent = if in_template { " " } else { "" };
        w.line(1, &format!("{name_indent}{}:", c.name));
        if let Some(s) = status {
            w.line(
                2,
                &format!("Container ID:\t{}", s.container_id.as_deref().unwrap_or("")),
            );
        }
        w.line(2, &format!("Image:\t{}", c.image.as_deref().unwrap_or("")));
        if let Some(s) = status {
            w.line(2, &format!("Image ID:\t{}", s.image_id));
        }
        let ports = c.ports.clone().unwrap_or_default();
        let port =
            |p: i32, proto: &Option<String>| format!("{p}/{}", proto.as_deref().unwrap_or("TCP"));
        let container_ports: Vec<String> = ports
            .iter()
            .map(|p| port(p.container_port, &p.protocol))
            .collect();
        let host_ports: Vec<String> = ports
            .iter()
            .map(|p| port(p.host_port.unwrap_or(0), &p.protocol))
            .collect();
        if container_ports.len() > 1 {
            w.line(2, &format!("Ports:\t{}", container_ports.join(", ")));
            w.line(2, &format!("Host Ports:\t{}", host_ports.join(", ")));
        } else {
            w.line(
                2,
                &format!("Port:\t{}", none_if_empty(&container_ports.join(""))),
            );
            w.line(
                2,
                &format!("Host Port:\t{}", none_if_empty(&host_ports.join(""))),
            );
        }
        for (title, words) in [("Command", &c.command), ("Args", &c.args)] {
            if let Some(words) = words.as_ref().filter(|w| !w.is_empty()) {
                w.line(2, &format!("{title}:"));
                for word in words {
                    for part in word.split('\n') {
                        w.line(3, part);
                    }
                }
            }
        }
        if let Some(s) = status {
            container_state(w, "State", s.state.as_ref());
            if s.last_state
                .as_ref()
                .is_some_and(|l| l.terminated.is_some())
            {
                container_state(w, "Last State", s.last_state.as_ref());
            }
            w.line(
                2,
                &format!("Ready:\t{}", if s.ready { "True" } else { "False" }),
            );
            w.line(2, &format!("Restart Count:\t{}", s.restart_count));
        }
        let resources = c.resources.clone().unwrap_or_default();
        resource_list(w, 2, "Limits", resources.limits.as_ref());
        resource_list(w, 2, "Requests", resources.requests.as_ref());
        for (title, p) in [
            ("Liveness", &c.liveness_probe),
            ("Readiness", &c.readiness_probe),
            ("Startup", &c.startup_probe),
        ] {
            if let Some(p) = p {
                w.line(2, &format!("{title}:\t{}", probe(p)));
            }
        }
        let env = c.env.clone().unwrap_or_default();
        if env.is_empty() {
            w.line(2, "Environment:\t<none>");
        } else {
            w.line(2, "Environment:");
            for e in env {
                match (&e.value_from, e.value.as_deref()) {
                    (Some(from), _) => {
                        let source = if let Some(f) = &from.field_ref {
                            format!(
                                "({}:{})",
                                f.api_version.as_deref().unwrap_or("v1"),
                                f.field_path
                            )
                        } else {
                            "<set from a reference>".to_string()
                        };
                        w.line(3, &format!("{}:\t{source}", e.name));
                    }
                    (None, value) => {
                        for (i, part) in value.unwrap_or("").split('\n').enumerate() {
                            if i == 0 {
                                w.line(3, &format!("{}:\t{}", e.name, part.replace('\t', " ")));
                            } else {
                                w.line(3, &format!("\t{}", part.replace('\t', " ")));
                            }
                        }
                    }
                }
            }
        }
        let mounts = c.volume_mounts.clone().unwrap_or_default();
        if mounts.is_empty() {
            w.line(2, "Mounts:\t<none>");
        } else {
            w.line(2, "Mounts:");
            for m in mounts {
                let mode = if m.read_only == Some(true) {
                    "ro"
                } else {
                    "rw"
                };
                w.line(3, &format!("{} from {} ({mode})", m.mount_path, m.name));
            }
        }
    }
}

pub(super) fn volumes(w: &mut Writer, space: &str, pod_spec: Option<&PodSpec>) {
    let volumes = pod_spec.and_then(|s| s.volumes.clone()).unwrap_or_default();
    if volumes.is_empty() {
        w.line(0, &format!("{space}Volumes:\t<none>"));
        return;
    }
    w.line(0, &format!("{space}Volumes:"));
    for v in volumes {
        w.line(0, &format!("{space}  {}:", v.name));
        let kind = if v.empty_dir.is_some() {
            "EmptyDir (a temporary directory that shares a pod's lifetime)"
        } else if let Some(h) = &v.host_path {
            w.line(
                0,
                &format!("{space}    Type:\tHostPath (bare host directory volume)"),
            );
            w.line(0, &format!("{space}    Path:\t{}", h.path));
            continue;
        } else if v.config_map.is_some() {
            "ConfigMap (a volume populated by a ConfigMap)"
        } else if v.secret.is_some() {
            "Secret (a volume populated by a Secret)"
        } else {
            "<unknown>"
        };
        w.line(0, &format!("{space}    Type:\t{kind}"));
    }
}

pub(super) fn node_selectors_and_tolerations(w: &mut Writer, space: &str, spec: Option<&PodSpec>) {
    labels(
        w,
        &format!("{space}Node-Selectors"),
        spec.and_then(|s| s.node_selector.as_ref()),
    );
    let tolerations = spec.and_then(|s| s.tolerations.clone()).unwrap_or_default();
    w.raw(0, &format!("{space}Tolerations:\t"));
    if tolerations.is_empty() {
        w.text.push_str("<none>\n");
    }
    for (i, t) in tolerations.iter().enumerate() {
        if i > 0 {
            w.raw(0, "\t");
        }
        let mut text = t.key.clone().unwrap_or_default();
        if let Some(v) = t.value.as_deref().filter(|v| !v.is_empty()) {
            text.push_str(&format!("={v}"));
        } else if t.operator.as_deref() == Some("Exists") && text.is_empty() {
            text = "op=Exists".to_string();
        }
        if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
            text.push_str(&format!(":{e}"));
        }
        if let Some(s) = t.toleration_seconds {
            text.push_str(&format!(" for {s}s"));
        }
        w.text.push_str(&format!("{}\n", cell(&text)));
    }
}

pub(super) fn pod_template(w: &mut Writer, template: Option<&PodTemplateSpec>) {
    w.line(0, "Pod Template:");
    let Some(t) = template else {
        w.line(1, "<unset>");
        return;
    };
    let meta = t.metadata.clone().unwrap_or_default();
    labels(w, "  Labels", meta.labels.as_ref());
    if meta.annotations.as_ref().is_some_and(|a| !a.is_empty()) {
        annotations(w, "  Annotations", meta.annotations.as_ref());
    }
    let spec = t.spec.as_ref();
    if let Some(sa) = spec
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
    {
        w.line(1, &format!("Service Account:\t{sa}"));
    }
    if let Some(init) = spec
        .and_then(|s| s.init_containers.as_ref())
        .filter(|i| !i.is_empty())
    {
        containers(w, "Init Containers", init, &[], true);
    }
    containers(
        w,
        "Containers",
        spec.map(|s| s.containers.as_slice()).unwrap_or_default(),
        &[],
        true,
    );
    volumes(w, "  ", spec);
    node_selectors_and_tolerations(w, "  ", spec);
}
