//! The endpoints controller, as Kubernetes' EndpointSlice and Endpoints
//! controllers together: for every Service with a selector, the pods it selects
//! that have an address become endpoints ([`pods`]), written as EndpointSlices
//! grouped by resolved ports ([`slices`]) and as the v1 Endpoints object of the
//! Service's name ([`legacy`]), both owned by the Service (so the garbage
//! collector removes them with it). Only what changed is written.
//!
//! It runs on the shared `Controller` over Services: it owns its slices and
//! Endpoints, and a pod event reconciles every Service that selects the pod now
//! or selected it before ([`mapper`]), at once — a readiness change reaches the
//! slices without polling. Services without a selector are left to their users.

pub mod legacy;
pub mod mapper;
pub mod pods;
pub mod slices;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio_util::sync::CancellationToken;
use tugboat_api::ApiError;
use tugboat_api::resource::{ENDPOINTS, ENDPOINTSLICES, PODS, SERVICES};
use tugboat_runtime::controller::{Action, Controller, backoff_policy};

use self::mapper::PodMapper;
use self::slices::{SERVICE_NAME_LABEL, is_managed_slice_of};
use super::{Error, controller_uid};
use crate::registry::{DeleteOptions, Registry, Subresource};

pub use self::slices::{MANAGED_BY, MANAGED_BY_LABEL, MAX_ENDPOINTS_PER_SLICE};

pub struct Ctx {
    registry: Arc<Registry>,
}

pub async fn run(registry: Arc<Registry>, concurrency: usize, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx {
        registry: registry.clone(),
    });
    // The Services the pod mapper matches pods against.
    let (services, reflect) = super::services_reflector(&registry, "endpoints controller");
    let pod_mapper = PodMapper::new(services);
    let controller = Controller::new("endpoints", registry, &SERVICES)
        .owns(&ENDPOINTSLICES)
        .owns(&ENDPOINTS)
        .watches_events(&PODS, Arc::new(move |ev| pod_mapper.map(ev)))
        .concurrency(concurrency)
        .run(reconcile, backoff_policy, ctx, shutdown);
    tokio::select! {
        _ = controller => {}
        _ = reflect => {}
    }
}

pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let name = svc.metadata.name.as_deref().unwrap_or("");
    let uid = svc.metadata.uid.as_deref().unwrap_or("");
    let stored = managed_slices(&ctx.registry, ns, name).await?;
    if pods::selector(&svc).is_none() {
        // No selector: the user writes the endpoints. Ours, if the selector was
        // just removed, go.
        let mine: Vec<String> = stored
            .iter()
            .filter(|s| controller_uid(&s.metadata) == Some(uid))
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        delete_all(&ctx.registry, &ENDPOINTSLICES, ns, mine).await?;
        let endpoints: Option<Endpoints> =
            ctx.registry.get_typed(&ENDPOINTS, Some(ns), name).await?;
        if endpoints.is_some_and(|e| controller_uid(&e.metadata) == Some(uid)) {
            delete_all(&ctx.registry, &ENDPOINTS, ns, vec![name.to_string()]).await?;
        }
        return Ok(Action::await_change());
    }
    let pods: Vec<Pod> = ctx.registry.list_typed(&PODS, Some(ns)).await?;
    let endpoints = pods::service_endpoints(&svc, &pods);

    let plan = slices::plan(&stored, slices::desired_slices(&svc, &endpoints), uid);
    delete_all(&ctx.registry, &ENDPOINTSLICES, ns, plan.delete).await?;
    for slice in plan.create {
        write_slice(&ctx.registry, ns, slice).await?;
    }
    for slice in plan.update {
        write_slice(&ctx.registry, ns, slice).await?;
    }
    write_endpoints(
        &ctx.registry,
        ns,
        legacy::desired_endpoints(&svc, &endpoints),
    )
    .await?;
    Ok(Action::await_change())
}

/// The slices this controller keeps for the Service `name` (by their labels).
async fn managed_slices(
    registry: &Registry,
    ns: &str,
    name: &str,
) -> Result<Vec<EndpointSlice>, ApiError> {
    Ok(registry
        .list_typed::<EndpointSlice>(&ENDPOINTSLICES, Some(ns))
        .await?
        .into_iter()
        .filter(|s| is_managed_slice_of(s, name))
        .collect())
}

async fn delete_all(
    registry: &Registry,
    info: &'static tugboat_api::resource::ResourceInfo,
    ns: &str,
    names: Vec<String>,
) -> Result<(), ApiError> {
    for name in names {
        match registry
            .delete(info, Some(ns), &name, &DeleteOptions::default())
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Creates the slice, or brings the stored one of its name to it (a
/// read-modify-write retried on conflict; nothing written when it already says
/// the same).
async fn write_slice(registry: &Registry, ns: &str, wanted: EndpointSlice) -> Result<(), ApiError> {
    let name = wanted.metadata.name.clone().unwrap_or_default();
    let update = || {
        registry.update_typed::<EndpointSlice>(
            &ENDPOINTSLICES,
            Some(ns),
            &name,
            Subresource::Main,
            |s| {
                if slices::same_slice(s, &wanted) {
                    return false;
                }
                slices::apply(s, &wanted);
                true
            },
        )
    };
    match update().await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => match registry
            .create_typed(&ENDPOINTSLICES, Some(ns), &wanted)
            .await
        {
            Ok(_) => Ok(()),
            // Written meanwhile (a reconcile racing a restart): bring it along.
            Err(e) if e.code == 409 => update().await.map(|_| ()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Creates or updates the Service's Endpoints, when it says something else.
async fn write_endpoints(registry: &Registry, ns: &str, wanted: Endpoints) -> Result<(), ApiError> {
    let name = wanted.metadata.name.clone().unwrap_or_default();
    let update = || {
        registry.update_typed::<Endpoints>(&ENDPOINTS, Some(ns), &name, Subresource::Main, |e| {
            if legacy::same_endpoints(e, &wanted) {
                return false;
            }
            legacy::apply(e, &wanted);
            true
        })
    };
    match update().await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => {
            match registry.create_typed(&ENDPOINTS, Some(ns), &wanted).await {
                Ok(_) => Ok(()),
                Err(e) if e.code == 409 => update().await.map(|_| ()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// The label selector (`kubernetes.io/service-name=NAME`) of a Service's slices,
/// for whoever reads them (the node proxy, DNS).
pub fn slices_selector(service: &str) -> String {
    format!("{SERVICE_NAME_LABEL}={service}")
}
