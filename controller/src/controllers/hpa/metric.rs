//! One metric of an autoscaler, measured: the pods' readings from the
//! controller's [`Metrics`] turned into the calculator's input, its proposal,
//! and the `currentMetrics` entry the status reports.
//!
//! What Tugboat measures: `Resource` cpu and memory from the agents' container
//! stats; and, from the node proxies, the connections each endpoint pod was
//! sent — per pod (`Pods`) or summed over a Service's pods (`Object` on a
//! Service) — as [`CONNECTIONS_PER_SECOND`] (new connections per second: for
//! HTTP, requests per second when each request opens its own connection) and
//! [`ACTIVE_CONNECTIONS`] (open now: concurrency).

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::{
    MetricIdentifier, MetricSpec, MetricStatus, MetricTarget, MetricValueStatus,
    ObjectMetricStatus, PodsMetricStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tugboat_api::metrics::{ACTIVE_CONNECTIONS, CONNECTIONS_PER_SECOND};
use tugboat_api::quantity;

use super::calc::{self, CalcError, PodInput, Proposal};
use crate::controllers::{pod_is_finished, pod_ready_since};
use crate::metrics::Metrics;

/// Kubernetes' `--horizontal-pod-autoscaler-tolerance`.
pub const TOLERANCE: f64 = 0.1;

/// Why a metric gave no proposal: the condition reason Kubernetes uses and a
/// message that names the metric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricError {
    pub reason: &'static str,
    pub message: String,
}

/// A metric's proposal and what to report of it.
#[derive(Clone, Debug)]
pub struct Measured {
    pub proposal: Proposal,
    pub status: MetricStatus,
    /// How Kubernetes names the metric in messages ("cpu resource utilization
    /// (percentage of request)").
    pub description: String,
}

/// What one evaluation sees.
pub struct Inputs<'a> {
    pub metrics: &'a Metrics,
    pub namespace: &'a str,
    /// The target's current `spec.replicas`.
    pub current: i32,
    /// The target's pods (by its selector), finished ones included.
    pub pods: &'a [std::sync::Arc<Pod>],
    /// The namespace's Services, for `Object` metrics on one.
    pub services: &'a [std::sync::Arc<Service>],
    /// Every pod of the namespace, for a Service's endpoints.
    pub namespace_pods: &'a [std::sync::Arc<Pod>],
}

/// Measures `spec` (the `i`th metric).
pub fn measure(inputs: &Inputs<'_>, spec: &MetricSpec) -> Result<Measured, MetricError> {
    match spec.type_.as_str() {
        "Resource" => {
            let Some(r) = &spec.resource else {
                return Err(invalid("a Resource metric without `resource`"));
            };
            resource(inputs, &r.name, &r.target)
        }
        "Pods" => {
            let Some(p) = &spec.pods else {
                return Err(invalid("a Pods metric without `pods`"));
            };
            pods(inputs, &p.metric, &p.target)
        }
        "Object" => {
            let Some(o) = &spec.object else {
                return Err(invalid("an Object metric without `object`"));
            };
            object(inputs, o)
        }
        other => Err(MetricError {
            reason: "InvalidMetricSourceType",
            message: format!(
                "the HPA was unable to compute the replica count: unsupported metric source type {other:?} (Tugboat serves Resource, Pods and Object)"
            ),
        }),
    }
}

fn invalid(what: &str) -> MetricError {
    MetricError {
        reason: "InvalidMetricSourceType",
        message: format!("the HPA was unable to compute the replica count: {what}"),
    }
}

fn calc_error(reason: &'static str, what: &str, e: CalcError) -> MetricError {
    MetricError {
        reason,
        message: format!(
            "the HPA was unable to compute the replica count: failed to get {what}: {e}"
        ),
    }
}

/// A resource's usage of one pod, in base units (cores, bytes), from its
/// containers' readings; `None` without a reading of this pod (the same uid:
/// a pod recreated under the same name is not its predecessor).
fn pod_usage(metrics: &Metrics, pod: &Pod, resource: &str) -> Option<f64> {
    let ns = pod.metadata.namespace.as_deref()?;
    let name = pod.metadata.name.as_deref()?;
    let reading = metrics.pod(ns, name)?;
    if let Some(uid) = pod.metadata.uid.as_deref()
        && !reading.uid.is_empty()
        && reading.uid != uid
    {
        return None;
    }
    // Saturating: the figures come from a node.
    let sum: u64 = match resource {
        "cpu" => reading
            .containers
            .iter()
            .fold(0u64, |s, c| s.saturating_add(c.cpu_nano_cores)),
        _ => reading
            .containers
            .iter()
            .fold(0u64, |s, c| s.saturating_add(c.memory_working_set_bytes)),
    };
    Some(if resource == "cpu" {
        sum as f64 / 1e9
    } else {
        sum as f64
    })
}

/// The sum of the pod's containers' requests of `resource`, in base units;
/// `None` when a container has none (Kubernetes refuses utilization then).
fn pod_request(pod: &Pod, resource: &str) -> Option<f64> {
    let containers = &pod.spec.as_ref()?.containers;
    let mut sum = 0.0;
    for c in containers {
        let q = c.resources.as_ref()?.requests.as_ref()?.get(resource)?;
        sum += quantity::parse(&q.0)?;
    }
    Some(sum)
}

/// Is the pod ignored (being deleted, or finished), and is it unready for this
/// resource? For cpu, as Kubernetes: pending or not Ready, or Ready for less
/// than one sampling window (its reading still covers its start-up).
fn pod_state(pod: &Pod, resource: Option<&str>, window: Duration) -> (bool, bool) {
    let ignored = pod.metadata.deletion_timestamp.is_some() || pod_is_finished(pod);
    let pending = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_none_or(|p| p == "Pending");
    let unready = pending
        || (resource == Some("cpu")
            && match pod_ready_since(pod) {
                None => true,
                Some(since) => since.is_some_and(|t| {
                    jiff::Timestamp::now().duration_since(t).as_secs_f64() < window.as_secs_f64()
                }),
            });
    (ignored, unready)
}

fn resource(
    inputs: &Inputs<'_>,
    name: &str,
    target: &MetricTarget,
) -> Result<Measured, MetricError> {
    if name != "cpu" && name != "memory" {
        return Err(MetricError {
            reason: "FailedGetResourceMetric",
            message: format!(
                "the HPA was unable to compute the replica count: no metrics for resource {name:?} (Tugboat measures cpu and memory)"
            ),
        });
    }
    let window = inputs.metrics.interval();
    let pods: Vec<PodInput> = inputs
        .pods
        .iter()
        .map(|p| {
            let (ignored, unready) = pod_state(p, Some(name), window);
            PodInput {
                name: p.metadata.name.clone().unwrap_or_default(),
                ignored,
                unready,
                value: pod_usage(inputs.metrics, p, name),
                request: pod_request(p, name),
            }
        })
        .collect();
    let utilization = target.type_ == "Utilization";
    let target_value = if utilization {
        f64::from(target.average_utilization.unwrap_or(80))
    } else {
        quantity_value(target.average_value.as_ref()).ok_or_else(|| {
            invalid(&format!(
                "resource {name}: target.averageValue is not a quantity"
            ))
        })?
    };
    let what = if utilization {
        format!("{name} resource utilization (percentage of request)")
    } else {
        format!("{name} resource")
    };
    let proposal = calc::per_pod(
        inputs.current,
        &pods,
        target_value,
        utilization,
        TOLERANCE,
        name,
    )
    .map_err(|e| {
        calc_error(
            "FailedGetResourceMetric",
            &format!("{name} resource metric value"),
            e,
        )
    })?;
    // What to report: the average usage per ready pod, and as a percentage.
    let readings: Vec<(f64, Option<f64>)> = pods
        .iter()
        .filter(|p| !p.ignored && !p.unready)
        .filter_map(|p| p.value.map(|v| (v, p.request)))
        .collect();
    let average = readings.iter().map(|(v, _)| v).sum::<f64>() / readings.len().max(1) as f64;
    let current = MetricValueStatus {
        average_utilization: utilization.then(|| proposal.current.round() as i32),
        average_value: Some(format_quantity(average, name == "cpu")),
        value: None,
    };
    Ok(Measured {
        status: MetricStatus {
            type_: "Resource".into(),
            resource: Some(ResourceMetricStatus {
                name: name.to_string(),
                current,
            }),
            ..Default::default()
        },
        proposal,
        description: what,
    })
}

/// The connections metric `name` of the pod at `ip`; a pod no proxy reported
/// had none, once the proxies are being scraped at all.
fn connections(metrics: &Metrics, name: &str, ip: IpAddr) -> Option<f64> {
    let (rate, active) = match metrics.requests(ip) {
        Some(r) => r,
        None if metrics.scraping() => (Some(0.0), 0),
        None => return None,
    };
    match name {
        CONNECTIONS_PER_SECOND => rate,
        _ => Some(active as f64),
    }
}

fn unknown_metric(kind: &'static str, name: &str) -> MetricError {
    MetricError {
        reason: kind,
        message: format!(
            "the HPA was unable to compute the replica count: unable to get metric {name}: Tugboat serves {CONNECTIONS_PER_SECOND} and {ACTIVE_CONNECTIONS} (and Resource cpu and memory)"
        ),
    }
}

fn pod_ip(pod: &Pod) -> Option<IpAddr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

fn pods(
    inputs: &Inputs<'_>,
    metric: &MetricIdentifier,
    target: &MetricTarget,
) -> Result<Measured, MetricError> {
    if metric.name != CONNECTIONS_PER_SECOND && metric.name != ACTIVE_CONNECTIONS {
        return Err(unknown_metric("FailedGetPodsMetric", &metric.name));
    }
    let window = inputs.metrics.interval();
    let pods: Vec<PodInput> = inputs
        .pods
        .iter()
        .map(|p| {
            let (ignored, unready) = pod_state(p, None, window);
            PodInput {
                name: p.metadata.name.clone().unwrap_or_default(),
                ignored,
                unready,
                value: pod_ip(p).and_then(|ip| connections(inputs.metrics, &metric.name, ip)),
                request: None,
            }
        })
        .collect();
    let target_value = quantity_value(target.average_value.as_ref()).ok_or_else(|| {
        invalid(&format!(
            "pods metric {}: target.averageValue is not a quantity",
            metric.name
        ))
    })?;
    let proposal = calc::per_pod(
        inputs.current,
        &pods,
        target_value,
        false,
        TOLERANCE,
        &metric.name,
    )
    .map_err(|e| {
        calc_error(
            "FailedGetPodsMetric",
            &format!("pods metric value {}", metric.name),
            e,
        )
    })?;
    Ok(Measured {
        status: MetricStatus {
            type_: "Pods".into(),
            pods: Some(PodsMetricStatus {
                metric: metric.clone(),
                current: MetricValueStatus {
                    average_value: Some(format_quantity(proposal.current, false)),
                    ..Default::default()
                },
            }),
            ..Default::default()
        },
        proposal,
        description: format!("pods metric {}", metric.name),
    })
}

fn object(
    inputs: &Inputs<'_>,
    o: &k8s_openapi::api::autoscaling::v2::ObjectMetricSource,
) -> Result<Measured, MetricError> {
    let described = &o.described_object;
    if described.kind != "Service" {
        return Err(MetricError {
            reason: "FailedGetObjectMetric",
            message: format!(
                "the HPA was unable to compute the replica count: unable to get metric {} of {} {}: Tugboat measures Object metrics of Services only",
                o.metric.name, described.kind, described.name
            ),
        });
    }
    if o.metric.name != CONNECTIONS_PER_SECOND && o.metric.name != ACTIVE_CONNECTIONS {
        return Err(unknown_metric("FailedGetObjectMetric", &o.metric.name));
    }
    let Some(service) = inputs
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(described.name.as_str()))
    else {
        return Err(MetricError {
            reason: "FailedGetObjectMetric",
            message: format!(
                "the HPA was unable to compute the replica count: unable to get metric {} of Service {}: services \"{}\" not found",
                o.metric.name, described.name, described.name
            ),
        });
    };
    let value = service_value(inputs, service, &o.metric.name).ok_or_else(|| MetricError {
        reason: "FailedGetObjectMetric",
        message: format!(
            "the HPA was unable to compute the replica count: unable to get metric {} of Service {}: no node proxy has reported yet",
            o.metric.name, described.name
        ),
    })?;
    let ready = inputs
        .pods
        .iter()
        .filter(|p| {
            let (ignored, unready) = pod_state(p, None, Duration::ZERO);
            !ignored && !unready && pod_ready_since(p).is_some()
        })
        .count();
    let (proposal, current) = if o.target.type_ == "AverageValue" {
        let target = quantity_value(o.target.average_value.as_ref()).ok_or_else(|| {
            invalid(&format!(
                "object metric {}: target.averageValue is not a quantity",
                o.metric.name
            ))
        })?;
        let p = calc::object_average(inputs.current, value, target, TOLERANCE);
        let current = MetricValueStatus {
            average_value: Some(format_quantity(p.current, false)),
            ..Default::default()
        };
        (p, current)
    } else {
        let target = quantity_value(o.target.value.as_ref()).ok_or_else(|| {
            invalid(&format!(
                "object metric {}: target.value is not a quantity",
                o.metric.name
            ))
        })?;
        let p = calc::object_value(inputs.current, ready, value, target, TOLERANCE);
        let current = MetricValueStatus {
            value: Some(format_quantity(value, false)),
            ..Default::default()
        };
        (p, current)
    };
    Ok(Measured {
        status: MetricStatus {
            type_: "Object".into(),
            object: Some(ObjectMetricStatus {
                described_object: described.clone(),
                metric: o.metric.clone(),
                current,
            }),
            ..Default::default()
        },
        proposal,
        description: format!("{} metric {}", described.kind, o.metric.name),
    })
}

/// The metric summed over the Service's endpoint pods (the namespace's pods
/// its selector picks); `None` before any proxy reported.
fn service_value(inputs: &Inputs<'_>, service: &Service, name: &str) -> Option<f64> {
    let selector = service.spec.as_ref()?.selector.as_ref()?;
    if !inputs.metrics.scraping() {
        return None;
    }
    let selector = tugboat_api::selector::Selector::from_label_selector(
        &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: Some(selector.clone()),
            match_expressions: None,
        },
    );
    let empty = Default::default();
    inputs
        .namespace_pods
        .iter()
        .filter(|p| selector.matches(p.metadata.labels.as_ref().unwrap_or(&empty)))
        .filter_map(|p| pod_ip(p))
        .map(|ip| connections(inputs.metrics, name, ip))
        // A pod whose rate is not known yet makes the sum unknown.
        .sum::<Option<f64>>()
}

fn quantity_value(q: Option<&Quantity>) -> Option<f64> {
    q.and_then(|q| quantity::parse(&q.0))
        .filter(|v| v.is_finite())
}

/// A value as a Kubernetes quantity: in thousandths (`250m`) unless whole;
/// cpu always in millicores, as metrics-server reports it.
pub fn format_quantity(v: f64, cpu: bool) -> Quantity {
    let milli = (v * 1000.0).round();
    let milli = if milli.is_finite() {
        milli.clamp(0.0, 9.0e15) as i64
    } else {
        0
    };
    if !cpu && milli % 1000 == 0 {
        Quantity((milli / 1000).to_string())
    } else {
        Quantity(format!("{milli}m"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_as_kubernetes_writes_them() {
        assert_eq!(format_quantity(0.25, true).0, "250m");
        assert_eq!(format_quantity(2.0, true).0, "2000m");
        assert_eq!(format_quantity(3.0, false).0, "3");
        assert_eq!(format_quantity(2.5, false).0, "2500m");
        assert_eq!(format_quantity(f64::NAN, false).0, "0");
        assert_eq!(format_quantity(-1.0, false).0, "0");
    }
}
