//! The HorizontalPodAutoscaler controller (`autoscaling/v2`), as Kubernetes'
//! (pkg/controller/podautoscaler): every sync period it reads the target's
//! scale, measures each metric over the target's pods ([`metric`]), takes the
//! highest proposal ([`calc`]), passes it through the stabilization windows,
//! rate policies and bounds ([`behavior`]) and writes `spec.replicas` when it
//! changes, with a `SuccessfulRescale` event and the status kubectl shows.
//!
//! Pods and Services come from reflectors (no list per evaluation); the
//! readings from the controller's scrapes of the agents. An autoscaler is
//! evaluated at most once per sync period however often it or its status
//! changes (its own status writes would otherwise evaluate it again at once),
//! and again at once when its spec changes.
//!
//! Scale to zero (`minReplicas: 0`, allowed when the controller runs with
//! `--hpa-scale-to-zero`, and only with an `Object` metric on the Service in
//! front, as Kubernetes' HPAScaleToZero asks for an Object or External metric):
//! the autoscaler marks that Service with [`ACTIVATOR_ANNOTATION`]; a node
//! proxy holding a connection to such a Service with no endpoints asks the
//! controller to [`activate`] it, which scales the target from 0 to 1 at once,
//! and the recommendation stays at least 1 for the scale-down window after.

pub mod behavior;
pub mod calc;
pub mod metric;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{
    HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerStatus, MetricStatus,
};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tugboat_api::ApiError;
use tugboat_api::resource::{self, HORIZONTALPODAUTOSCALERS, PODS, ResourceInfo, SERVICES};
use tugboat_api::selector::Selector;
use tugboat_runtime::controller::{Action, Controller, backoff_policy};
use tugboat_runtime::object::{Object as _, ObjectRef};
use tugboat_runtime::reflector::Store;

use self::behavior::{History, Limit};
use self::metric::{Inputs, Measured, MetricError};
use super::{Error, now};
use crate::events::{self, EventType, Recorder};
use crate::metrics::Metrics;
use crate::registry::{Registry, Subresource};

pub use tugboat_api::metrics::ACTIVATOR_ANNOTATION;

/// How the autoscalers run.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// How often each autoscaler is evaluated (Kubernetes'
    /// `--horizontal-pod-autoscaler-sync-period`, 15 s).
    pub sync_period: Duration,
    /// Whether `minReplicas: 0` is allowed (Kubernetes' HPAScaleToZero gate).
    pub scale_to_zero: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sync_period: Duration::from_secs(15),
            scale_to_zero: false,
        }
    }
}

/// The connections that arrived for Services scaled to zero: when each Service
/// was last activated.
#[derive(Default)]
pub struct Activations {
    by_service: Mutex<HashMap<(String, String), Instant>>,
}

/// At most this many Services are remembered as activated (the oldest is
/// forgotten first); a forgotten activation only shortens its hold.
const MAX_ACTIVATIONS: usize = 10_000;

impl Activations {
    fn record(&self, ns: &str, service: &str) {
        let mut map = self.by_service.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ACTIVATIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert((ns.to_string(), service.to_string()), Instant::now());
    }

    fn since(&self, ns: &str, service: &str) -> Option<Duration> {
        let map = self.by_service.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(ns.to_string(), service.to_string()))
            .map(Instant::elapsed)
    }
}

/// What the controller keeps of one autoscaler between evaluations.
#[derive(Default)]
struct State {
    /// The autoscaler's uid: one deleted and made again starts afresh.
    uid: String,
    history: History,
    last_eval: Option<Instant>,
    generation: i64,
}

/// The state of `hpa`, new if there is none or it was another object's of
/// the same name. Once a sync period at most, states not evaluated for three
/// sync periods (their autoscaler was deleted) are dropped.
fn state_of<'a>(
    states: &'a mut HashMap<ObjectRef, State>,
    hpa: &HorizontalPodAutoscaler,
    period: Duration,
) -> &'a mut State {
    let stale = period.saturating_mul(3);
    states.retain(|_, st| st.last_eval.is_none_or(|t| t.elapsed() < stale));
    let uid = hpa.metadata.uid.clone().unwrap_or_default();
    let st = states.entry(hpa.object_ref()).or_default();
    if st.uid != uid {
        *st = State {
            uid,
            ..State::default()
        };
    }
    st
}

pub struct Ctx {
    registry: Arc<Registry>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    activations: Arc<Activations>,
    pods: Store<Pod>,
    services: Store<Service>,
    states: Mutex<HashMap<ObjectRef, State>>,
    config: Config,
}

pub async fn run(
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    activations: Arc<Activations>,
    config: Config,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    let (pods, drive_pods) = super::reflector::<Pod>(&registry, &PODS, "autoscaler pods");
    let (services, drive_services) = super::services_reflector(&registry, "autoscaler services");
    let ctx = Arc::new(Ctx {
        registry: registry.clone(),
        recorder: events::recorder(registry.clone(), "horizontal-pod-autoscaler"),
        metrics,
        activations,
        pods,
        services,
        states: Mutex::new(HashMap::new()),
        config,
    });
    let controller = Controller::new(
        "horizontal-pod-autoscaler",
        registry,
        &HORIZONTALPODAUTOSCALERS,
    )
    .concurrency(concurrency)
    .run(reconcile, backoff_policy, ctx, shutdown);
    tokio::select! {
        _ = controller => {}
        _ = drive_pods => {}
        _ = drive_services => {}
    }
}

/// The resource of a scale target: a kind with a `scale` subresource.
fn target_info(api_version: Option<&str>, kind: &str) -> Option<&'static ResourceInfo> {
    match api_version {
        Some(v) => resource::by_kind(v, kind),
        None => resource::ALL.iter().copied().find(|r| r.kind == kind),
    }
    .filter(|r| r.has_scale)
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
) -> HorizontalPodAutoscalerCondition {
    HorizontalPodAutoscalerCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: None,
    }
}

/// `new` with each condition's transition time carried over from `old` when
/// its status did not change.
fn with_transitions(
    old: Option<&Vec<HorizontalPodAutoscalerCondition>>,
    new: Vec<HorizontalPodAutoscalerCondition>,
) -> Vec<HorizontalPodAutoscalerCondition> {
    new.into_iter()
        .map(|mut c| {
            let before = old
                .into_iter()
                .flatten()
                .find(|o| o.type_ == c.type_ && o.status == c.status);
            c.last_transition_time = before
                .and_then(|o| o.last_transition_time.clone())
                .or_else(|| Some(now()));
            c
        })
        .collect()
}

fn rules(hpa: &HorizontalPodAutoscaler, up: bool) -> HPAScalingRules {
    let behavior = hpa.spec.as_ref().and_then(|s| s.behavior.as_ref());
    let given = behavior.and_then(|b| {
        if up {
            b.scale_up.clone()
        } else {
            b.scale_down.clone()
        }
    });
    if behavior.is_none() {
        return behavior::legacy_rules(up);
    }
    let defaults = behavior::default_rules(up);
    match given {
        None => defaults,
        Some(r) => HPAScalingRules {
            stabilization_window_seconds: r
                .stabilization_window_seconds
                .or(defaults.stabilization_window_seconds),
            select_policy: r.select_policy.or(defaults.select_policy),
            policies: r.policies.filter(|p| !p.is_empty()).or(defaults.policies),
            tolerance: r.tolerance,
        },
    }
}

/// The Services the autoscaler's `Object` metrics describe.
fn described_services(hpa: &HorizontalPodAutoscaler) -> Vec<String> {
    hpa.spec
        .iter()
        .flat_map(|s| s.metrics.iter().flatten())
        .filter_map(|m| m.object.as_ref())
        .filter(|o| o.described_object.kind == "Service")
        .map(|o| o.described_object.name.clone())
        .collect()
}

/// What an evaluation concluded, for the status.
struct Outcome {
    desired: i32,
    metrics: Vec<MetricStatus>,
    conditions: Vec<HorizontalPodAutoscalerCondition>,
    scaled: bool,
}

pub async fn reconcile(hpa: Arc<HorizontalPodAutoscaler>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = hpa.object_ref();
    if hpa.metadata.deletion_timestamp.is_some() {
        ctx.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        return Ok(Action::await_change());
    }
    let Some(spec) = hpa.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    if !ctx.pods.is_ready() || !ctx.services.is_ready() {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let period = ctx.config.sync_period;
    let generation = hpa.metadata.generation.unwrap_or(0);
    {
        let states = ctx.states.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(st) = states.get(&key)
            && st.generation == generation
            && st.uid == hpa.metadata.uid.as_deref().unwrap_or_default()
            && let Some(last) = st.last_eval
        {
            let since = last.elapsed();
            if since < period {
                return Ok(Action::requeue(period.saturating_sub(since)));
            }
        }
    }
    let ns = hpa.metadata.namespace.as_deref().unwrap_or("default");
    let name = hpa.metadata.name.as_deref().unwrap_or("");
    let target = &spec.scale_target_ref;
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let old_status = hpa.status.as_ref();

    let scale = match target_info(target.api_version.as_deref(), &target.kind) {
        None => Err(format!(
            "the HPA controller was unable to get the target's current scale: {} {:?} has no scale subresource (Tugboat scales Deployments and ReplicaSets)",
            target.api_version.as_deref().unwrap_or(""),
            target.kind
        )),
        Some(info) => match ctx.registry.get(info, Some(ns), &target.name).await {
            Ok(obj) => Ok((info, obj)),
            Err(e) => Err(format!(
                "the HPA controller was unable to get the target's current scale: {}",
                e.message
            )),
        },
    };
    // The target's replicas as its status reports them, from the same read.
    let current_replicas = scale
        .as_ref()
        .ok()
        .and_then(|(_, o)| o.pointer("/status/replicas").and_then(Value::as_i64))
        .and_then(|r| i32::try_from(r).ok());
    let outcome = match scale {
        Err(message) => {
            ctx.recorder
                .publish(&*hpa, EventType::Warning, "FailedGetScale", &message)
                .await;
            Outcome {
                desired: old_status.map_or(0, |s| s.desired_replicas),
                metrics: Vec::new(),
                conditions: vec![condition("AbleToScale", false, "FailedGetScale", message)],
                scaled: false,
            }
        }
        Ok((info, obj)) => evaluate(&hpa, &ctx, info, &obj, ns, min, max).await?,
    };
    let status = HorizontalPodAutoscalerStatus {
        current_replicas: Some(current_replicas.unwrap_or(0)),
        desired_replicas: outcome.desired,
        current_metrics: (!outcome.metrics.is_empty()).then_some(outcome.metrics),
        conditions: Some(with_transitions(
            old_status.and_then(|s| s.conditions.as_ref()),
            outcome.conditions,
        )),
        last_scale_time: if outcome.scaled {
            Some(now())
        } else {
            old_status.and_then(|s| s.last_scale_time.clone())
        },
        observed_generation: Some(generation),
    };
    {
        let mut states = ctx.states.lock().unwrap_or_else(|e| e.into_inner());
        let st = state_of(&mut states, &hpa, period);
        st.last_eval = Some(Instant::now());
        st.generation = generation;
    }
    match ctx
        .registry
        .write_status(&HORIZONTALPODAUTOSCALERS, Some(ns), name, &status)
        .await
    {
        Ok(_) => {}
        Err(e) if e.is_not_found() => return Ok(Action::await_change()),
        Err(e) => return Err(e.into()),
    }
    if min == 0 {
        mark_services(&ctx, &hpa, ns, name).await;
    }
    Ok(Action::requeue(period))
}

/// Marks the Services of the autoscaler's Object metrics as activated by it.
async fn mark_services(ctx: &Ctx, hpa: &HorizontalPodAutoscaler, ns: &str, name: &str) {
    for service in described_services(hpa) {
        let marked = ctx
            .registry
            .update_with(&SERVICES, Some(ns), &service, Subresource::Main, |s| {
                let annotations = &mut s["metadata"]["annotations"];
                if annotations
                    .get(ACTIVATOR_ANNOTATION)
                    .and_then(Value::as_str)
                    == Some(name)
                {
                    return false;
                }
                if !annotations.is_object() {
                    *annotations = json!({});
                }
                annotations[ACTIVATOR_ANNOTATION] = json!(name);
                true
            })
            .await;
        if let Err(e) = marked
            && !e.is_not_found()
        {
            tracing::warn!(service, error = %e.message, "cannot mark the Service for activation from zero");
        }
    }
}

/// Takes [`ACTIVATOR_ANNOTATION`] off Service `service`.
async fn unmark_service(registry: &Registry, ns: &str, service: &str) {
    let unmarked = registry
        .update_with(&SERVICES, Some(ns), service, Subresource::Main, |s| {
            s["metadata"]["annotations"]
                .as_object_mut()
                .and_then(|a| a.remove(ACTIVATOR_ANNOTATION))
                .is_some()
        })
        .await;
    match unmarked {
        Ok(Some(_)) => {
            tracing::info!(
                service,
                namespace = ns,
                "no autoscaler scales the Service from zero any more; unmarked it"
            );
        }
        Ok(None) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => {
            tracing::warn!(service, error = %e.message, "cannot unmark a Service no autoscaler scales from zero");
        }
    }
}

/// One evaluation of an autoscaler whose target is `obj`.
async fn evaluate(
    hpa: &HorizontalPodAutoscaler,
    ctx: &Ctx,
    info: &'static ResourceInfo,
    obj: &Value,
    ns: &str,
    min: i32,
    max: i32,
) -> Result<Outcome, Error> {
    let target = &hpa
        .spec
        .as_ref()
        .map(|s| s.scale_target_ref.clone())
        .unwrap_or_default();
    let current = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .and_then(|r| i32::try_from(r).ok())
        .unwrap_or(1);
    let able = condition(
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale".into(),
    );
    if current == 0 && min > 0 {
        return Ok(Outcome {
            desired: 0,
            metrics: Vec::new(),
            conditions: vec![
                able,
                condition(
                    "ScalingActive",
                    false,
                    "ScalingDisabled",
                    "scaling is disabled since the replica count of the target is zero".into(),
                ),
            ],
            scaled: false,
        });
    }
    let selector: Option<LabelSelector> = obj
        .pointer("/spec/selector")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    let Some(selector) = selector.map(|s| Selector::from_label_selector(&s)) else {
        let message = format!(
            "the HPA target's scale is missing a selector: {} {} has no spec.selector",
            target.kind, target.name
        );
        ctx.recorder
            .publish(hpa, EventType::Warning, "InvalidSelector", &message)
            .await;
        return Ok(Outcome {
            desired: current,
            metrics: Vec::new(),
            conditions: vec![
                able,
                condition("ScalingActive", false, "InvalidSelector", message),
            ],
            scaled: false,
        });
    };
    let empty = Default::default();
    let namespace_pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
        .collect();
    let pods: Vec<Arc<Pod>> = namespace_pods
        .iter()
        .filter(|p| selector.matches(p.metadata.labels.as_ref().unwrap_or(&empty)))
        .cloned()
        .collect();
    let services: Vec<Arc<Service>> = ctx
        .services
        .state()
        .into_iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
        .collect();
    let inputs = Inputs {
        metrics: &ctx.metrics,
        namespace: ns,
        current,
        pods: &pods,
        services: &services,
        namespace_pods: &namespace_pods,
    };
    let specs = hpa
        .spec
        .as_ref()
        .and_then(|s| s.metrics.clone())
        .unwrap_or_default();
    let results: Vec<Result<Measured, MetricError>> =
        specs.iter().map(|m| metric::measure(&inputs, m)).collect();
    let valid: Vec<&Measured> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let first_error = results.iter().find_map(|r| r.as_ref().err()).cloned();
    // One entry per metric, in order (kubectl pairs them by position); a
    // metric that could not be measured has its type only, as in Kubernetes.
    let statuses: Vec<MetricStatus> = results
        .iter()
        .zip(&specs)
        .map(|(r, spec)| match r {
            Ok(m) => m.status.clone(),
            Err(_) => MetricStatus {
                type_: spec.type_.clone(),
                ..Default::default()
            },
        })
        .collect();
    let Some(best) = valid.iter().max_by_key(|m| m.proposal.replicas) else {
        let e = first_error.unwrap_or(MetricError {
            reason: "InvalidMetricSourceType",
            message: "the HPA has no metrics".into(),
        });
        ctx.recorder
            .publish(hpa, EventType::Warning, e.reason, &e.message)
            .await;
        return Ok(Outcome {
            desired: current,
            metrics: statuses,
            conditions: vec![able, condition("ScalingActive", false, e.reason, e.message)],
            scaled: false,
        });
    };
    let mut recommendation = best.proposal.replicas;
    let mut reason = format!("{} above target", best.description);
    if let Some(e) = &first_error {
        ctx.recorder
            .publish(hpa, EventType::Warning, e.reason, &e.message)
            .await;
        if recommendation < current {
            // As Kubernetes: with a metric missing, never scale down on the
            // others; the failure is what the status says.
            return Ok(Outcome {
                desired: current,
                metrics: statuses,
                conditions: vec![
                    able,
                    condition("ScalingActive", false, e.reason, e.message.clone()),
                ],
                scaled: false,
            });
        }
    }
    let down = rules(hpa, false);
    let up = rules(hpa, true);
    let hold = Duration::from_secs(
        u64::try_from(down.stabilization_window_seconds.unwrap_or(300).max(0)).unwrap_or(0),
    )
    .max(ctx.config.sync_period * 2);
    if recommendation < 1
        && described_services(hpa)
            .iter()
            .any(|s| ctx.activations.since(ns, s).is_some_and(|t| t <= hold))
    {
        recommendation = 1;
        reason = "a connection arrived while scaled to zero".into();
    }
    let (desired, limit) = {
        let mut states = ctx.states.lock().unwrap_or_else(|e| e.into_inner());
        let st = state_of(&mut states, hpa, ctx.config.sync_period);
        behavior::decide(
            &mut st.history,
            Instant::now(),
            current,
            recommendation,
            min,
            max,
            &up,
            &down,
        )
    };
    let mut conditions = vec![
        able,
        condition(
            "ScalingActive",
            true,
            "ValidMetricFound",
            format!(
                "the HPA was able to successfully calculate a replica count from {}",
                best.description
            ),
        ),
        match limit {
            Limit::None => condition(
                "ScalingLimited",
                false,
                limit.reason(),
                limit.message().into(),
            ),
            _ => condition(
                "ScalingLimited",
                true,
                limit.reason(),
                limit.message().into(),
            ),
        },
    ];
    if desired == current {
        return Ok(Outcome {
            desired,
            metrics: statuses,
            conditions,
            scaled: false,
        });
    }
    if desired < current {
        reason = "All metrics below target".into();
    }
    if matches!(limit, Limit::TooFew) && desired > current {
        reason = "Current number of replicas below Spec.MinReplicas".into();
    }
    if matches!(limit, Limit::TooMany) && desired < current {
        reason = "Current number of replicas above Spec.MaxReplicas".into();
    }
    match set_replicas(&ctx.registry, info, ns, &target.name, current, desired).await {
        Ok(false) => {
            // Someone else changed the count since it was read: decide again
            // on the next evaluation, from what it is now.
            tracing::debug!(hpa = %hpa.object_ref(), "the target's replicas changed during the evaluation; not rescaling");
            Ok(Outcome {
                desired: current,
                metrics: statuses,
                conditions,
                scaled: false,
            })
        }
        Ok(true) => {
            {
                let mut states = ctx.states.lock().unwrap_or_else(|e| e.into_inner());
                state_of(&mut states, hpa, ctx.config.sync_period)
                    .history
                    .scaled(Instant::now(), desired - current);
            }
            ctx.recorder
                .publish(
                    hpa,
                    EventType::Normal,
                    "SuccessfulRescale",
                    &format!("New size: {desired}; reason: {reason}"),
                )
                .await;
            conditions[0] = condition(
                "AbleToScale",
                true,
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {desired}"),
            );
            Ok(Outcome {
                desired,
                metrics: statuses,
                conditions,
                scaled: true,
            })
        }
        Err(e) => {
            let message = format!(
                "New size: {desired}; reason: {reason}; error: {}",
                e.message
            );
            ctx.recorder
                .publish(hpa, EventType::Warning, "FailedRescale", &message)
                .await;
            conditions[0] = condition(
                "AbleToScale",
                false,
                "FailedUpdateScale",
                format!(
                    "the HPA controller was unable to update the target scale: {}",
                    e.message
                ),
            );
            Ok(Outcome {
                desired: current,
                metrics: statuses,
                conditions,
                scaled: false,
            })
        }
    }
}

/// Writes the target's `spec.replicas`, as its scale subresource would, if
/// it is still `from` (the count the decision was made on); `false` when
/// someone else changed it meanwhile (a `tug scale`, an activation).
async fn set_replicas(
    registry: &Registry,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    from: i32,
    replicas: i32,
) -> Result<bool, ApiError> {
    let moved = std::sync::atomic::AtomicBool::new(false);
    registry
        .update_with(info, Some(ns), name, Subresource::Main, |o| {
            let stored = o.pointer("/spec/replicas").and_then(Value::as_i64);
            let from_stored = stored.unwrap_or(1);
            moved.store(
                from_stored != i64::from(from) && stored != Some(i64::from(replicas)),
                std::sync::atomic::Ordering::Relaxed,
            );
            if from_stored != i64::from(from) {
                return false;
            }
            o["spec"]["replicas"] = json!(replicas);
            true
        })
        .await?;
    Ok(!moved.load(std::sync::atomic::Ordering::Relaxed))
}

/// A connection arrived at Service `service` in `ns` while it had no
/// endpoints: every autoscaler that scales it from zero scales its target to 1
/// now (a target already above 0 is left alone). Returns how many targets were
/// scaled; an error when no autoscaler with `minReplicas: 0` has an Object
/// metric on the Service (the proxy then stops holding its connections).
pub async fn activate(
    registry: &Registry,
    activations: &Activations,
    recorder: &Recorder,
    ns: &str,
    service: &str,
) -> Result<usize, ApiError> {
    let hpas: Vec<HorizontalPodAutoscaler> = registry
        .list_typed(&HORIZONTALPODAUTOSCALERS, Some(ns))
        .await?;
    let ours: Vec<&HorizontalPodAutoscaler> = hpas
        .iter()
        .filter(|h| h.spec.as_ref().is_some_and(|s| s.min_replicas == Some(0)))
        .filter(|h| described_services(h).iter().any(|s| s == service))
        .collect();
    if ours.is_empty() {
        // The Service was marked by an autoscaler since deleted or raised
        // above zero: unmark it, so its connections are not held any more.
        unmark_service(registry, ns, service).await;
        return Err(ApiError::new(
            404,
            "NotFound",
            format!(
                "no HorizontalPodAutoscaler in namespace {ns} scales Service {service} from zero (minReplicas: 0 with an Object metric on it)"
            ),
        ));
    }
    activations.record(ns, service);
    let mut scaled = 0;
    for hpa in ours {
        let Some(spec) = hpa.spec.as_ref() else {
            continue;
        };
        let target = &spec.scale_target_ref;
        let Some(info) = target_info(target.api_version.as_deref(), &target.kind) else {
            continue;
        };
        let written = registry
            .update_with(info, Some(ns), &target.name, Subresource::Main, |o| {
                if o.pointer("/spec/replicas").and_then(Value::as_i64) != Some(0) {
                    return false;
                }
                o["spec"]["replicas"] = json!(1);
                true
            })
            .await;
        // One autoscaler's missing target does not keep the others from
        // waking theirs.
        let written = match written {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(hpa = %hpa.object_ref(), target = %target.name, error = %e.message, "cannot scale an autoscaler's target from zero");
                continue;
            }
        };
        if written.is_some() {
            scaled += 1;
            recorder
                .publish(
                    hpa,
                    EventType::Normal,
                    "SuccessfulRescale",
                    &format!(
                        "New size: 1; reason: a connection to Service {service} arrived while scaled to zero"
                    ),
                )
                .await;
        }
    }
    Ok(scaled)
}
