//! Pod Security Admission's `baseline` level, as kube-apiserver enforces it.
//!
//! A Tugboat pod runs straight on the host's container engine, so a manifest that
//! asks for the host's namespaces, a hostPath mount, a privileged container or
//! extra capabilities gets the host itself. Kubernetes users already state what a
//! namespace may run with the `pod-security.kubernetes.io/enforce` label; honouring
//! it, and enforcing `baseline` where the label is absent, means an arbitrary
//! manifest cannot take the host over unless someone opted in. The checks and their
//! messages follow the pod-security-admission policy code (`policy/check_*.go`, as
//! of Kubernetes 1.33, the API version Tugboat speaks) word for word, so a refusal
//! reads exactly as it would from a Kubernetes cluster.
//!
//! The module is pure, from labels and a `PodSpec` to a verdict, so that pod
//! admission and namespace admission share it and it can be tested without a server.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, SELinuxOptions, SecurityContext};

use crate::status::FieldError;

/// The namespace label that sets the enforced level.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// Kubernetes' words for a label value outside the three levels, in its order.
const MUST_BE_A_LEVEL: &str = "must be one of privileged, baseline, restricted";

/// A Pod Security Standards level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    /// Reads a label value: `privileged`, `baseline` or `restricted`.
    pub fn parse(value: &str) -> Result<Level, String> {
        match value {
            "privileged" => Ok(Level::Privileged),
            "baseline" => Ok(Level::Baseline),
            "restricted" => Ok(Level::Restricted),
            _ => Err(format!(
                "unknown Pod Security level {value:?}: {MUST_BE_A_LEVEL}"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// The level enforced in a namespace from its labels: the [`ENFORCE_LABEL`] value,
/// and `Baseline` when the label is absent (Tugboat's default is baseline, unlike
/// Kubernetes' privileged default). An unparseable value counts as `Baseline`:
/// namespace admission refuses such values ([`namespace_label_errors`]), so only a
/// namespace stored before that check could carry one.
pub fn namespace_level(labels: Option<&BTreeMap<String, String>>) -> Level {
    labels
        .and_then(|l| l.get(ENFORCE_LABEL))
        .and_then(|v| Level::parse(v).ok())
        .unwrap_or(Level::Baseline)
}

/// Field errors for a Namespace's labels: an [`ENFORCE_LABEL`] value that is not one
/// of the three levels, as kube-apiserver reports it:
/// `metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: "x": must be one of privileged, baseline, restricted`.
pub fn namespace_label_errors(labels: Option<&BTreeMap<String, String>>) -> Vec<FieldError> {
    let Some(value) = labels.and_then(|l| l.get(ENFORCE_LABEL)) else {
        return Vec::new();
    };
    if Level::parse(value).is_ok() {
        return Vec::new();
    }
    vec![FieldError::invalid(
        format!("metadata.labels[{ENFORCE_LABEL}]"),
        format!("{value:?}"),
        MUST_BE_A_LEVEL,
    )]
}

/// What a pod spec does that `level` forbids, as Kubernetes words it after
/// `violates PodSecurity "baseline:latest": `, e.g.
/// `host namespaces (hostNetwork=true, hostPID=true), hostPath volumes (volume "docker"), privileged (container "c" must not set securityContext.privileged=true)`.
///
/// `None` when nothing is forbidden. `Privileged` forbids nothing; `Restricted` is
/// enforced as `Baseline` (Tugboat does not implement the restricted checks yet).
pub fn violations(level: Level, spec: &PodSpec) -> Option<String> {
    if level == Level::Privileged {
        return None;
    }
    let containers = containers(spec);
    let found: Vec<String> = BASELINE
        .iter()
        .filter_map(|check| check(spec, &containers))
        .collect();
    (!found.is_empty()).then(|| found.join(", "))
}

/// One baseline check: the entry it contributes, `<reason> (<detail>)`, if any.
type Check = fn(&PodSpec, &[Visited<'_>]) -> Option<String>;

/// The baseline checks in the order Kubernetes runs them, which is sorted by check
/// ID (not by reason): appArmorProfile, capabilities_baseline, hostNamespaces,
/// hostPathVolumes, [hostPorts], privileged, procMount, seLinuxOptions,
/// seccompProfile_baseline, sysctls, windowsHostProcess.
///
/// hostPorts is deliberately not checked: Tugboat publishes container ports on the
/// host the way `docker run -p` does, and that is how its users reach a pod.
const BASELINE: [Check; 10] = [
    app_armor_profile,
    capabilities,
    host_namespaces,
    host_path_volumes,
    privileged,
    proc_mount,
    se_linux_options,
    seccomp_profile,
    sysctls,
    windows_host_process,
];

/// One container of any kind, with what the checks read from it.
struct Visited<'a> {
    name: &'a str,
    security: Option<&'a SecurityContext>,
}

/// Init containers, then regular ones, then ephemeral ones, as Kubernetes visits them.
fn containers(spec: &PodSpec) -> Vec<Visited<'_>> {
    let regular = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .map(|c| Visited {
            name: &c.name,
            security: c.security_context.as_ref(),
        });
    let ephemeral = spec.ephemeral_containers.iter().flatten().map(|c| Visited {
        name: &c.name,
        security: c.security_context.as_ref(),
    });
    regular.chain(ephemeral).collect()
}

/// The names of the containers whose security context `bad` objects to.
fn offenders<'a>(
    containers: &[Visited<'a>],
    mut bad: impl FnMut(&'a SecurityContext) -> bool,
) -> Vec<&'a str> {
    containers
        .iter()
        .filter(|c| c.security.is_some_and(&mut bad))
        .map(|c| c.name)
        .collect()
}

fn entry(reason: &str, detail: &str) -> String {
    format!("{reason} ({detail})")
}

fn pluralize<'a>(singular: &'a str, plural: &'a str, count: usize) -> &'a str {
    if count == 1 { singular } else { plural }
}

/// `"a", "b"`, quoted as Go's `joinQuote` does (no escaping).
fn join_quote<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items
        .into_iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `container "a"` or `containers "a", "b"`.
fn containers_phrase(names: &[&str]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names.iter().copied())
    )
}

/// Who set a forbidden value: `pod`, `containers "a", "b"`, or
/// `pod and container "a"`; `None` when nobody did.
fn setters(pod: bool, containers: &[&str]) -> Option<String> {
    let mut who = Vec::new();
    if pod {
        who.push("pod".to_string());
    }
    if !containers.is_empty() {
        who.push(containers_phrase(containers));
    }
    (!who.is_empty()).then(|| who.join(" and "))
}

/// Who sets a profile type other than RuntimeDefault and Localhost (the pod,
/// read by `pod_type`, and the containers, by `container_type`), and which
/// types: AppArmor and seccomp profiles are judged alike.
fn unconfined<'a>(
    spec: &'a PodSpec,
    containers: &[Visited<'a>],
    pod_type: impl Fn(&'a PodSecurityContext) -> Option<&'a str>,
    container_type: impl Fn(&'a SecurityContext) -> Option<&'a str>,
) -> Option<(String, BTreeSet<&'a str>)> {
    let allowed = |t: &str| t == "RuntimeDefault" || t == "Localhost";
    let mut values = BTreeSet::new();
    let mut pod = false;
    if let Some(t) = pod_security(spec).and_then(&pod_type)
        && !allowed(t)
    {
        pod = true;
        values.insert(t);
    }
    let bad = offenders(containers, |s| match container_type(s) {
        Some(t) if !allowed(t) => {
            values.insert(t);
            true
        }
        _ => false,
    });
    let who = setters(pod, &bad)?;
    Some((who, values))
}

/// AppArmor profile types other than RuntimeDefault and Localhost (the
/// `container.apparmor.security.beta.kubernetes.io/*` annotations are metadata,
/// which this module does not see).
fn app_armor_profile(spec: &PodSpec, containers: &[Visited<'_>]) -> Option<String> {
    let (who, values) = unconfined(
        spec,
        containers,
        |p| p.app_armor_profile.as_ref().map(|p| p.type_.as_str()),
        |c| c.app_armor_profile.as_ref().map(|p| p.type_.as_str()),
    )?;
    Some(entry(
        pluralize(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            values.len(),
        ),
        &format!(
            "{who} must not set AppArmor profile type to {}",
            join_quote(values)
        ),
    ))
}

/// Capabilities added beyond the container runtime's default set.
fn capabilities(_: &PodSpec, containers: &[Visited<'_>]) -> Option<String> {
    const ALLOWED: [&str; 13] = [
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    ];
    let mut added = BTreeSet::new();
    let bad = offenders(containers, |s| {
        let mut valid = true;
        for cap in s.capabilities.iter().flat_map(|c| c.add.iter().flatten()) {
            if !ALLOWED.contains(&cap.as_str()) {
                valid = false;
                added.insert(cap.as_str());
            }
        }
        !valid
    });
    if bad.is_empty() {
        return None;
    }
    Some(entry(
        "non-default capabilities",
        &format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&bad),
            join_quote(added)
        ),
    ))
}

fn host_namespaces(spec: &PodSpec, _: &[Visited<'_>]) -> Option<String> {
    let set: Vec<&str> = [
        (spec.host_network, "hostNetwork=true"),
        (spec.host_pid, "hostPID=true"),
        (spec.host_ipc, "hostIPC=true"),
    ]
    .into_iter()
    .filter(|(on, _)| *on == Some(true))
    .map(|(_, what)| what)
    .collect();
    (!set.is_empty()).then(|| entry("host namespaces", &set.join(", ")))
}

fn host_path_volumes(spec: &PodSpec, _: &[Visited<'_>]) -> Option<String> {
    let names: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.host_path.is_some())
        .map(|v| v.name.as_str())
        .collect();
    if names.is_empty() {
        return None;
    }
    Some(entry(
        "hostPath volumes",
        &format!(
            "{} {}",
            pluralize("volume", "volumes", names.len()),
            join_quote(names)
        ),
    ))
}

fn privileged(_: &PodSpec, containers: &[Visited<'_>]) -> Option<String> {
    let bad = offenders(containers, |s| s.privileged == Some(true));
    if bad.is_empty() {
        return None;
    }
    Some(entry(
        "privileged",
        &format!(
            "{} must not set securityContext.privileged=true",
            containers_phrase(&bad)
        ),
    ))
}

/// procMount other than `Default` unmasks /proc. (Kubernetes can relax this for
/// pods in a user namespace, behind a gate that is off by default; Tugboat does not.)
fn proc_mount(_: &PodSpec, containers: &[Visited<'_>]) -> Option<String> {
    let mut types = BTreeSet::new();
    let bad = offenders(containers, |s| match s.proc_mount.as_deref() {
        Some(t) if t != "Default" => {
            types.insert(t);
            true
        }
        _ => false,
    });
    if bad.is_empty() {
        return None;
    }
    Some(entry(
        "procMount",
        &format!(
            "{} must not set securityContext.procMount to {}",
            containers_phrase(&bad),
            join_quote(types)
        ),
    ))
}

/// SELinux types outside the container ones, and any user or role.
fn se_linux_options(spec: &PodSpec, containers: &[Visited<'_>]) -> Option<String> {
    const ALLOWED: [&str; 5] = [
        "",
        "container_t",
        "container_init_t",
        "container_kvm_t",
        "container_engine_t",
    ];
    let mut types = BTreeSet::new();
    let (mut user, mut role) = (false, false);
    let mut forbidden = |o: &SELinuxOptions| {
        let mut valid = true;
        let ty = o.type_.as_deref().unwrap_or("");
        if !ALLOWED.contains(&ty) {
            valid = false;
            types.insert(ty.to_string());
        }
        if o.user.as_deref().is_some_and(|u| !u.is_empty()) {
            valid = false;
            user = true;
        }
        if o.role.as_deref().is_some_and(|r| !r.is_empty()) {
            valid = false;
            role = true;
        }
        !valid
    };
    let pod = pod_security(spec)
        .and_then(|s| s.se_linux_options.as_ref())
        .is_some_and(&mut forbidden);
    let bad = offenders(containers, |s| {
        s.se_linux_options.as_ref().is_some_and(&mut forbidden)
    });
    let who = setters(pod, &bad)?;
    let mut what = Vec::new();
    if !types.is_empty() {
        what.push(format!(
            "{} {}",
            pluralize("type", "types", types.len()),
            join_quote(types.iter().map(String::as_str))
        ));
    }
    if user {
        what.push("user may not be set".to_string());
    }
    if role {
        what.push("role may not be set".to_string());
    }
    Some(entry(
        "seLinuxOptions",
        &format!(
            "{who} set forbidden securityContext.seLinuxOptions: {}",
            what.join("; ")
        ),
    ))
}

/// Seccomp profile types other than RuntimeDefault and Localhost.
fn seccomp_profile(spec: &PodSpec, containers: &[Visited<'_>]) -> Option<String> {
    let (who, values) = unconfined(
        spec,
        containers,
        |p| p.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        |c| c.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
    )?;
    Some(entry(
        "seccompProfile",
        &format!(
            "{who} must not set securityContext.seccompProfile.type to {}",
            join_quote(values)
        ),
    ))
}

/// Sysctls outside the namespaced, isolated set (Kubernetes 1.32+'s list).
fn sysctls(spec: &PodSpec, _: &[Visited<'_>]) -> Option<String> {
    const SAFE: [&str; 12] = [
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
    ];
    let names: Vec<&str> = pod_security(spec)
        .iter()
        .flat_map(|s| s.sysctls.iter().flatten())
        .map(|s| s.name.as_str())
        .filter(|n| !SAFE.contains(n))
        .collect();
    (!names.is_empty()).then(|| entry("forbidden sysctls", &names.join(", ")))
}

fn windows_host_process(spec: &PodSpec, containers: &[Visited<'_>]) -> Option<String> {
    let pod = pod_security(spec)
        .and_then(|s| s.windows_options.as_ref())
        .is_some_and(|w| w.host_process == Some(true));
    let bad = offenders(containers, |s| {
        s.windows_options
            .as_ref()
            .is_some_and(|w| w.host_process == Some(true))
    });
    let who = setters(pod, &bad)?;
    Some(entry(
        "hostProcess",
        &format!("{who} must not set securityContext.windowsOptions.hostProcess=true"),
    ))
}

fn pod_security(spec: &PodSpec) -> Option<&PodSecurityContext> {
    spec.security_context.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn spec(v: Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    /// A pod with one container `c` whose securityContext is `sc`.
    fn with_container_security(sc: Value) -> PodSpec {
        spec(json!({"containers": [{"name": "c", "image": "x", "securityContext": sc}]}))
    }

    fn baseline(s: &PodSpec) -> Option<String> {
        violations(Level::Baseline, s)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_plain_pod_passes() {
        let s = spec(json!({
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]
        }));
        assert_eq!(baseline(&s), None);
    }

    #[test]
    fn explicitly_safe_settings_pass() {
        let s = spec(json!({
            "hostNetwork": false, "hostPID": false, "hostIPC": false,
            "securityContext": {
                "seccompProfile": {"type": "RuntimeDefault"},
                "appArmorProfile": {"type": "Localhost", "localhostProfile": "p"},
                "seLinuxOptions": {"type": "container_t", "level": "s0:c1,c2"},
                "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"},
                            {"name": "net.ipv4.tcp_rmem", "value": "4096 87380 6291456"}],
                "windowsOptions": {"hostProcess": false}
            },
            "containers": [{"name": "c", "image": "x", "securityContext": {
                "privileged": false,
                "procMount": "Default",
                "capabilities": {"add": ["NET_BIND_SERVICE", "CHOWN"], "drop": ["ALL"]},
                "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"},
                "appArmorProfile": {"type": "RuntimeDefault"},
                "seLinuxOptions": {"type": "container_engine_t"}
            }}]
        }));
        assert_eq!(baseline(&s), None);
    }

    #[test]
    fn host_ports_are_allowed_because_tugboat_publishes_ports_like_docker_run_p() {
        let s = spec(json!({"containers": [{"name": "c", "image": "x",
            "ports": [{"containerPort": 80, "hostPort": 8080}]}]}));
        assert_eq!(baseline(&s), None);
    }

    #[test]
    fn host_namespaces_are_listed_network_pid_ipc() {
        let s = spec(
            json!({"hostIPC": true, "hostPID": true, "hostNetwork": true,
            "containers": [{"name": "c", "image": "x"}]}),
        );
        assert_eq!(
            baseline(&s).as_deref(),
            Some("host namespaces (hostNetwork=true, hostPID=true, hostIPC=true)")
        );
        let s = spec(json!({"hostPID": true, "containers": [{"name": "c", "image": "x"}]}));
        assert_eq!(
            baseline(&s).as_deref(),
            Some("host namespaces (hostPID=true)")
        );
    }

    #[test]
    fn a_privileged_container_is_refused() {
        let s = with_container_security(json!({"privileged": true}));
        assert_eq!(
            baseline(&s).as_deref(),
            Some("privileged (container \"c\" must not set securityContext.privileged=true)")
        );
    }

    #[test]
    fn non_default_capabilities_are_refused_sorted_and_default_ones_pass() {
        let s = with_container_security(
            json!({"capabilities": {"add": ["SYS_ADMIN", "CHOWN", "NET_ADMIN"]}}),
        );
        assert_eq!(
            baseline(&s).as_deref(),
            Some(
                "non-default capabilities (container \"c\" must not include \"NET_ADMIN\", \"SYS_ADMIN\" in securityContext.capabilities.add)"
            )
        );
        let s = with_container_security(json!({"capabilities": {"add": ["KILL", "SETUID"]}}));
        assert_eq!(baseline(&s), None);
    }

    #[test]
    fn host_path_volumes_are_named() {
        let s = spec(json!({
            "volumes": [{"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}},
                        {"name": "scratch", "emptyDir": {}}],
            "containers": [{"name": "c", "image": "x"}]
        }));
        assert_eq!(
            baseline(&s).as_deref(),
            Some("hostPath volumes (volume \"docker\")")
        );
    }

    #[test]
    fn a_proc_mount_other_than_default_is_refused() {
        let s = with_container_security(json!({"procMount": "Unmasked"}));
        assert_eq!(
            baseline(&s).as_deref(),
            Some(
                "procMount (container \"c\" must not set securityContext.procMount to \"Unmasked\")"
            )
        );
    }

    #[test]
    fn unconfined_seccomp_is_refused_at_pod_and_container_level() {
        let s = spec(json!({
            "securityContext": {"seccompProfile": {"type": "Unconfined"}},
            "containers": [{"name": "c", "image": "x",
                "securityContext": {"seccompProfile": {"type": "Unconfined"}}}]
        }));
        assert_eq!(
            baseline(&s).as_deref(),
            Some(
                "seccompProfile (pod and container \"c\" must not set securityContext.seccompProfile.type to \"Unconfined\")"
            )
        );
        let s = spec(json!({
            "securityContext": {"seccompProfile": {"type": "Unconfined"}},
            "containers": [{"name": "c", "image": "x"}]
        }));
        assert_eq!(
            baseline(&s).as_deref(),
            Some(
                "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")"
            )
        );
    }

    #[test]
    fn unsafe_sysctls_are_named_in_order_and_safe_ones_pass() {
        let s = spec(json!({
            "securityContext": {"sysctls": [
                {"name": "kernel.msgmax", "value": "1"},
                {"name": "net.ipv4.tcp_syncookies", "value": "1"},
                {"name": "net.core.somaxconn", "value": "1024"}
            ]},
            "containers": [{"name": "c", "image": "x"}]
        }));
        assert_eq!(
            baseline(&s).as_deref(),
            Some("forbidden sysctls (kernel.msgmax, net.core.somaxconn)")
        );
    }

    #[test]
    fn unconfined_app_armor_is_refused_with_kubernetes_singular_or_plural_reason() {
        let s = with_container_security(json!({"appArmorProfile": {"type": "Unconfined"}}));
        assert_eq!(
            baseline(&s).as_deref(),
            Some(
                "forbidden AppArmor profile (container \"c\" must not set AppArmor profile type to \"Unconfined\")"
            )
        );
        let s = spec(json!({
            "securityContext": {"appArmorProfile": {"type": "Unconfined"}},
            "containers": [{"name": "c", "image": "x",
                "securityContext": {"appArmorProfile": {"type": "Bogus"}}}]
        }));
        assert_eq!(
            baseline(&s).as_deref(),
            Some(
                "forbidden AppArmor profiles (pod and container \"c\" must not set AppArmor profile type to \"Bogus\", \"Unconfined\")"
            )
        );
    }

    #[test]
    fn se_linux_type_user_and_role_are_refused() {
        let s = with_container_security(json!({"seLinuxOptions": {"type": "spc_t"}}));
        assert_eq!(
            baseline(&s).as_deref(),
            Some(
                "seLinuxOptions (container \"c\" set forbidden securityContext.seLinuxOptions: type \"spc_t\")"
            )
        );
        let s = spec(json!({
            "securityContext": {"seLinuxOptions": {"type": "unconfined_t", "user": "system_u"}},
            "containers": [{"name": "c", "image": "x",
                "securityContext": {"seLinuxOptions": {"type": "spc_t", "role": "system_r"}}}]
        }));
        assert_eq!(
            baseline(&s).as_deref(),
            Some(
                "seLinuxOptions (pod and container \"c\" set forbidden securityContext.seLinuxOptions: types \"spc_t\", \"unconfined_t\"; user may not be set; role may not be set)"
            )
        );
    }

    #[test]
    fn windows_host_process_is_refused() {
        let s = spec(json!({
            "securityContext": {"windowsOptions": {"hostProcess": true}},
            "containers": [{"name": "c", "image": "x",
                "securityContext": {"windowsOptions": {"hostProcess": true}}}]
        }));
        assert_eq!(
            baseline(&s).as_deref(),
            Some(
                "hostProcess (pod and container \"c\" must not set securityContext.windowsOptions.hostProcess=true)"
            )
        );
    }

    #[test]
    fn init_and_ephemeral_containers_are_checked_init_first() {
        let s = spec(json!({
            "initContainers": [{"name": "setup", "image": "x", "securityContext": {"privileged": true}}],
            "containers": [{"name": "app", "image": "x", "securityContext": {"privileged": true}}],
            "ephemeralContainers": [{"name": "debug", "image": "x", "securityContext": {"privileged": true}}]
        }));
        assert_eq!(
            baseline(&s).as_deref(),
            Some(
                "privileged (containers \"setup\", \"app\", \"debug\" must not set securityContext.privileged=true)"
            )
        );
    }

    #[test]
    fn several_containers_and_volumes_get_plural_wording() {
        let s = spec(json!({
            "volumes": [{"name": "a", "hostPath": {"path": "/a"}}, {"name": "b", "hostPath": {"path": "/b"}}],
            "containers": [
                {"name": "a", "image": "x", "securityContext": {"capabilities": {"add": ["NET_RAW"]}}},
                {"name": "b", "image": "x", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}
            ]
        }));
        assert_eq!(
            baseline(&s).as_deref(),
            Some(
                "non-default capabilities (containers \"a\", \"b\" must not include \"NET_RAW\", \"SYS_ADMIN\" in securityContext.capabilities.add), hostPath volumes (volumes \"a\", \"b\")"
            )
        );
    }

    #[test]
    fn several_violations_are_joined_in_kubernetes_check_order() {
        let s = spec(json!({
            "hostNetwork": true, "hostPID": true,
            "volumes": [{"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}],
            "containers": [{"name": "c", "image": "x", "securityContext": {"privileged": true}}]
        }));
        assert_eq!(
            baseline(&s).as_deref(),
            Some(
                "host namespaces (hostNetwork=true, hostPID=true), hostPath volumes (volume \"docker\"), privileged (container \"c\" must not set securityContext.privileged=true)"
            )
        );
    }

    #[test]
    fn every_check_at_once_comes_out_ordered_by_kubernetes_check_id() {
        let s = spec(json!({
            "hostIPC": true,
            "securityContext": {
                "sysctls": [{"name": "kernel.msgmax", "value": "1"}],
                "windowsOptions": {"hostProcess": true}
            },
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            "containers": [{"name": "c", "image": "x", "securityContext": {
                "appArmorProfile": {"type": "Unconfined"},
                "capabilities": {"add": ["SYS_ADMIN"]},
                "privileged": true,
                "procMount": "Unmasked",
                "seLinuxOptions": {"user": "root"},
                "seccompProfile": {"type": "Unconfined"}
            }}]
        }));
        let got = baseline(&s).unwrap();
        let reasons: Vec<&str> = got
            .split("), ")
            .map(|e| e.split(" (").next().unwrap())
            .collect();
        assert_eq!(
            reasons,
            [
                "forbidden AppArmor profile",
                "non-default capabilities",
                "host namespaces",
                "hostPath volumes",
                "privileged",
                "procMount",
                "seLinuxOptions",
                "seccompProfile",
                "forbidden sysctls",
                "hostProcess",
            ]
        );
        assert!(got.contains(
            "seLinuxOptions (container \"c\" set forbidden securityContext.seLinuxOptions: user may not be set)"
        ));
    }

    #[test]
    fn privileged_level_allows_everything() {
        let s = spec(json!({
            "hostNetwork": true, "hostPID": true, "hostIPC": true,
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            "containers": [{"name": "c", "image": "x", "securityContext": {
                "privileged": true, "capabilities": {"add": ["ALL"]}}}]
        }));
        assert_eq!(violations(Level::Privileged, &s), None);
        assert!(violations(Level::Baseline, &s).is_some());
    }

    #[test]
    fn restricted_is_enforced_as_baseline_for_now() {
        let plain = spec(json!({"containers": [{"name": "c", "image": "x"}]}));
        assert_eq!(violations(Level::Restricted, &plain), None);
        let s = with_container_security(json!({"privileged": true}));
        assert_eq!(
            violations(Level::Restricted, &s),
            violations(Level::Baseline, &s)
        );
    }

    #[test]
    fn namespace_level_defaults_to_baseline() {
        assert_eq!(namespace_level(None), Level::Baseline);
        assert_eq!(
            namespace_level(Some(&labels(&[("team", "a")]))),
            Level::Baseline
        );
        assert_eq!(
            namespace_level(Some(&labels(&[(ENFORCE_LABEL, "bogus")]))),
            Level::Baseline
        );
    }

    #[test]
    fn namespace_level_reads_the_enforce_label() {
        for level in [Level::Privileged, Level::Baseline, Level::Restricted] {
            let l = labels(&[(ENFORCE_LABEL, level.as_str())]);
            assert_eq!(namespace_level(Some(&l)), level);
        }
    }

    #[test]
    fn level_parse_names_the_value_and_the_accepted_ones() {
        assert_eq!(Level::parse("restricted"), Ok(Level::Restricted));
        let err = Level::parse("Baseline").unwrap_err();
        assert_eq!(
            err,
            "unknown Pod Security level \"Baseline\": must be one of privileged, baseline, restricted"
        );
    }

    #[test]
    fn a_bad_label_value_is_a_field_error_naming_the_value() {
        let errs = namespace_label_errors(Some(&labels(&[(ENFORCE_LABEL, "strict")])));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].reason, "FieldValueInvalid");
        assert_eq!(
            errs[0].to_string(),
            "metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted"
        );
    }

    #[test]
    fn good_or_absent_labels_are_not_field_errors() {
        assert!(namespace_label_errors(None).is_empty());
        assert!(namespace_label_errors(Some(&labels(&[("team", "a")]))).is_empty());
        assert!(namespace_label_errors(Some(&labels(&[(ENFORCE_LABEL, "privileged")]))).is_empty());
    }
}
