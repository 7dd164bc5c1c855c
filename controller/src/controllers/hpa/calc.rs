//! How many replicas one metric asks for: Kubernetes' replica calculator
//! (pkg/controller/podautoscaler/replica_calculator.go), as pure functions.
//!
//! `desired = ceil(current × metric / target)` outside a tolerance (0.1), over
//! the pods that are ready and have a reading; then, when some pods are
//! unready or have no reading, recomputed as Kubernetes does: on a scale-up,
//! missing and unready pods count as using nothing; on a scale-down, missing
//! pods count as using all of their request (or the target if above 100 %),
//! or exactly the target average (so a lack of data never drives the count
//! down); and if that recomputation reverses the direction or lands
//! within the tolerance, nothing changes.

/// One pod as the calculator sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodInput {
    pub name: String,
    /// Being deleted or failed: not counted at all.
    pub ignored: bool,
    /// Not Ready (or still Pending).
    pub unready: bool,
    /// The metric's reading for the pod (CPU in millicores, memory in bytes, a
    /// rate…), `None` when there is none.
    pub value: Option<f64>,
    /// For utilization: the sum of the pod's containers' requests of the
    /// resource.
    pub request: Option<f64>,
}

/// What a calculation gives: the replica count, and the current value to
/// report (a utilization in percent, or an average).
#[derive(Clone, Debug, PartialEq)]
pub struct Proposal {
    pub replicas: i32,
    pub current: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CalcError {
    #[error("did not receive metrics for any ready pod")]
    NoMetrics,
    #[error("missing request for {resource} in pod {pod}")]
    MissingRequest { resource: String, pod: String },
    #[error("no pods match the target's selector")]
    NoPods,
}

fn ceil(x: f64) -> i32 {
    let c = x.ceil();
    if c >= f64::from(i32::MAX) {
        i32::MAX
    } else if c <= 0.0 {
        0
    } else {
        c as i32
    }
}

/// The usage ratio of `pods` against `target`: utilization (sum of values over
/// sum of requests, in percent, against a target percent) when `utilization`,
/// else the average value against a target average.
fn ratio(pods: &[(f64, f64)], target: f64, utilization: bool) -> (f64, f64) {
    let sum: f64 = pods.iter().map(|(v, _)| v).sum();
    if utilization {
        let requests: f64 = pods.iter().map(|(_, r)| r).sum();
        let percent = if requests > 0.0 {
            sum * 100.0 / requests
        } else {
            0.0
        };
        (percent / target, percent)
    } else {
        let average = if pods.is_empty() {
            0.0
        } else {
            sum / pods.len() as f64
        };
        (average / target, average)
    }
}

/// Replicas for a per-pod metric: `Resource` (as a utilization of requests
/// when `utilization`, else an average value) or `Pods` (an average value).
/// `resource` names the resource for errors.
pub fn per_pod(
    current: i32,
    pods: &[PodInput],
    target: f64,
    utilization: bool,
    tolerance: f64,
    resource: &str,
) -> Result<Proposal, CalcError> {
    let counted: Vec<&PodInput> = pods.iter().filter(|p| !p.ignored).collect();
    if counted.is_empty() {
        return Err(CalcError::NoPods);
    }
    if utilization && let Some(p) = counted.iter().find(|p| p.request.is_none_or(|r| r <= 0.0)) {
        return Err(CalcError::MissingRequest {
            resource: resource.to_string(),
            pod: p.name.clone(),
        });
    }
    let request = |p: &PodInput| p.request.unwrap_or(0.0);
    let ready: Vec<(f64, f64)> = counted
        .iter()
        .filter(|p| !p.unready)
        .filter_map(|p| p.value.map(|v| (v, request(p))))
        .collect();
    if ready.is_empty() {
        return Err(CalcError::NoMetrics);
    }
    let unready: Vec<&&PodInput> = counted.iter().filter(|p| p.unready).collect();
    let missing: Vec<&&PodInput> = counted
        .iter()
        .filter(|p| !p.unready && p.value.is_none())
        .collect();
    let (usage_ratio, current_value) = ratio(&ready, target, utilization);
    let scale_up_with_unready = !unready.is_empty() && usage_ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if (1.0 - usage_ratio).abs() <= tolerance {
            return Ok(Proposal {
                replicas: current,
                current: current_value,
            });
        }
        return Ok(Proposal {
            replicas: ceil(usage_ratio * ready.len() as f64),
            current: current_value,
        });
    }
    let mut all = ready.clone();
    if usage_ratio < 1.0 {
        // Scaling down: a pod without a reading uses all of its request (or
        // the target, when that is above 100 %), or the target average.
        for p in &missing {
            let v = if utilization {
                request(p) * target.max(100.0) / 100.0
            } else {
                target
            };
            all.push((v, request(p)));
        }
    } else if usage_ratio > 1.0 {
        // Scaling up: a pod without a reading uses nothing.
        for p in &missing {
            all.push((0.0, request(p)));
        }
    }
    if scale_up_with_unready {
        for p in &unready {
            all.push((0.0, request(p)));
        }
    }
    let (new_ratio, _) = ratio(&all, target, utilization);
    let reversed = (usage_ratio < 1.0 && new_ratio > 1.0) || (usage_ratio > 1.0 && new_ratio < 1.0);
    if (1.0 - new_ratio).abs() <= tolerance || reversed {
        return Ok(Proposal {
            replicas: current,
            current: current_value,
        });
    }
    let replicas = ceil(new_ratio * all.len() as f64);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(Proposal {
            replicas: current,
            current: current_value,
        });
    }
    Ok(Proposal {
        replicas,
        current: current_value,
    })
}

/// Replicas for an `Object` metric with a `Value` target: the object's value
/// against the target, scaled by the ready pods; from zero, `ceil(ratio)`.
pub fn object_value(
    current: i32,
    ready_pods: usize,
    value: f64,
    target: f64,
    tolerance: f64,
) -> Proposal {
    let usage_ratio = value / target;
    let replicas = if current == 0 {
        ceil(usage_ratio)
    } else if (1.0 - usage_ratio).abs() <= tolerance {
        current
    } else {
        ceil(usage_ratio * ready_pods as f64)
    };
    Proposal {
        replicas,
        current: value,
    }
}

/// Replicas for an `Object` metric with an `AverageValue` target: the
/// object's value spread over the replicas.
pub fn object_average(current: i32, value: f64, target: f64, tolerance: f64) -> Proposal {
    let usage_ratio = if current > 0 {
        value / (target * f64::from(current))
    } else {
        f64::INFINITY
    };
    let replicas = if current > 0 && (1.0 - usage_ratio).abs() <= tolerance {
        current
    } else {
        ceil(value / target)
    };
    Proposal {
        replicas,
        current: if current > 0 {
            value / f64::from(current)
        } else {
            value
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, value: Option<f64>, request: f64) -> PodInput {
        PodInput {
            name: name.into(),
            ignored: false,
            unready: false,
            value,
            request: Some(request),
        }
    }

    #[test]
    fn cpu_above_target_scales_up_by_the_ratio() {
        // Kubernetes' test "TestReplicaCalcScaleUp": 3 pods at 300, 500, 700m of
        // 1000m requests, target 30 % → 50 % / 30 % × 3 = 5.
        let pods = [
            pod("a", Some(300.0), 1000.0),
            pod("b", Some(500.0), 1000.0),
            pod("c", Some(700.0), 1000.0),
        ];
        let p = per_pod(3, &pods, 30.0, true, 0.1, "cpu").unwrap();
        assert_eq!(p.replicas, 5);
        assert!((p.current - 50.0).abs() < 1e-9);
    }

    #[test]
    fn within_the_tolerance_nothing_changes() {
        let pods = [pod("a", Some(520.0), 1000.0), pod("b", Some(500.0), 1000.0)];
        assert_eq!(
            per_pod(2, &pods, 50.0, true, 0.1, "cpu").unwrap().replicas,
            2
        );
    }

    #[test]
    fn unready_pods_count_as_idle_on_a_scale_up() {
        // TestReplicaCalcScaleUpUnreadyLessScale: 3 pods, one unready; 500m and
        // 700m of 1000m, target 30 %: ready ratio 2 → with the unready one at 0,
        // 1200/3000 = 40 % → ratio 1.33 → 4.
        let mut pods = vec![
            pod("a", Some(0.0), 1000.0),
            pod("b", Some(500.0), 1000.0),
            pod("c", Some(700.0), 1000.0),
        ];
        pods[0].unready = true;
        pods[0].value = None;
        assert_eq!(
            per_pod(3, &pods, 30.0, true, 0.1, "cpu").unwrap().replicas,
            4
        );
    }

    #[test]
    fn missing_readings_never_drive_a_scale_down() {
        // TestReplicaCalcScaleDownIncludeUnreadyPods' sibling: two pods
        // lightly used, one without a reading, counted at 100 % of its
        // request: the ratio moves toward 1 and the count falls less, here
        // not at all.
        let pods = [
            pod("a", Some(100.0), 1000.0),
            pod("b", Some(100.0), 1000.0),
            pod("c", None, 1000.0),
        ];
        let p = per_pod(3, &pods, 50.0, true, 0.1, "cpu").unwrap();
        // (100 + 100 + 1000) / 3000 = 40 % → ratio 0.8 → ceil(2.4) = 3.
        assert_eq!(p.replicas, 3);
        // Two idle ones: (0 + 0 + 1000) / 3000 = 33 % → ceil(2.0) = 2.
        let pods = [
            pod("a", Some(0.0), 1000.0),
            pod("b", Some(0.0), 1000.0),
            pod("c", None, 1000.0),
        ];
        assert_eq!(
            per_pod(3, &pods, 50.0, true, 0.1, "cpu").unwrap().replicas,
            2
        );
        // A target above 100 %: the missing pod counts at the target.
        let pods = [
            pod("a", Some(0.0), 1000.0),
            pod("b", Some(0.0), 1000.0),
            pod("c", None, 1000.0),
        ];
        // (0 + 0 + 1500) / 3000 = 50 % of 150 % → ratio 0.333 → ceil(1.0) = 1.
        assert_eq!(
            per_pod(3, &pods, 150.0, true, 0.1, "cpu").unwrap().replicas,
            1
        );
    }

    #[test]
    fn a_pod_without_a_request_is_an_error_naming_it() {
        let mut pods = vec![pod("a", Some(100.0), 1000.0)];
        pods[0].request = None;
        let e = per_pod(1, &pods, 50.0, true, 0.1, "cpu").unwrap_err();
        assert_eq!(e.to_string(), "missing request for cpu in pod a");
    }

    #[test]
    fn average_values_and_objects() {
        // Pods metric: 3 pods at 20 requests/s each, target 10/pod → 6.
        let pods = [
            pod("a", Some(20.0), 0.0),
            pod("b", Some(20.0), 0.0),
            pod("c", Some(20.0), 0.0),
        ];
        assert_eq!(
            per_pod(3, &pods, 10.0, false, 0.1, "requests-per-second")
                .unwrap()
                .replicas,
            6
        );
        // Object value: 90/s against 30/s with 2 ready pods → 6; from zero → 3.
        assert_eq!(object_value(2, 2, 90.0, 30.0, 0.1).replicas, 6);
        assert_eq!(object_value(0, 0, 0.5, 10.0, 0.1).replicas, 1);
        assert_eq!(object_value(0, 0, 0.0, 10.0, 0.1).replicas, 0);
        // Object average: 90/s, 10/s per replica → 9.
        assert_eq!(object_average(3, 90.0, 10.0, 0.1).replicas, 9);
    }
}
