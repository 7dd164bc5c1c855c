//! The service load balancer, as k3s's servicelb: a LoadBalancer Service is
//! reachable on its nodePorts at every node (each agent listens on them), so its
//! `status.loadBalancer.ingress` is the InternalIP of every Ready node
//! ([`ingress`]). Other Services have an empty `status.loadBalancer`: a stale
//! ingress goes when a Service stops being a LoadBalancer.
//!
//! It runs on the shared `Controller` over Services; a node event reconciles
//! every LoadBalancer Service, but only when it changes what the node offers
//! (Ready-ness or address), not on every heartbeat ([`mapper`]). The status is
//! written only when it says something else. Services naming a
//! `loadBalancerClass` belong to that implementation and are left alone.

pub mod ingress;
pub mod mapper;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, Node, Service};
use tokio_util::sync::CancellationToken;
use tugboat_api::ApiError;
use tugboat_api::resource::{NODES, SERVICES};
use tugboat_runtime::controller::{Action, Controller, backoff_policy};

use self::ingress::{balanced, current_ingress, desired_ingress, is_load_balancer};
use self::mapper::NodeMapper;
use super::Error;
use crate::registry::{Registry, Subresource};

pub struct Ctx {
    registry: Arc<Registry>,
}

pub async fn run(registry: Arc<Registry>, concurrency: usize, shutdown: CancellationToken) {
    let ctx = Arc::new(Ctx {
        registry: registry.clone(),
    });
    // The Services a node change requeues.
    let (services, reflect) = super::services_reflector(&registry, "service load balancer");
    let node_mapper = NodeMapper::new(services);
    let controller = Controller::new("servicelb", registry, &SERVICES)
        .watches_events(&NODES, Arc::new(move |ev| node_mapper.map(ev)))
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
    let wanted = if balanced(&svc) {
        let nodes: Vec<Node> = ctx.registry.list_typed(&NODES, None).await?;
        desired_ingress(&svc, &nodes)
    } else if is_load_balancer(&svc) {
        // Another implementation's (its loadBalancerClass): not ours to write.
        return Ok(Action::await_change());
    } else {
        Vec::new()
    };
    if current_ingress(&svc) != wanted {
        write_ingress(&ctx.registry, &svc, &wanted).await?;
    }
    Ok(Action::await_change())
}

/// Sets the stored Service's ingress to `wanted` through `/status`, unless it
/// already says that, or the stored Service is no longer the one `wanted` was
/// computed for (recreated, or its type changed: its own event reconciles it
/// again). A Service deleted meanwhile is nothing to write.
async fn write_ingress(
    registry: &Registry,
    svc: &Service,
    wanted: &[LoadBalancerIngress],
) -> Result<(), ApiError> {
    let ns = svc.metadata.namespace.as_deref();
    let name = svc.metadata.name.as_deref().unwrap_or("");
    let uid = svc.metadata.uid.as_deref();
    let balancing = balanced(svc);
    let written = registry
        .update_typed::<Service>(&SERVICES, ns, name, Subresource::Status, |s| {
            if s.metadata.uid.as_deref() != uid
                || balanced(s) != balancing
                || current_ingress(s) == wanted
            {
                return false;
            }
            let lb = s
                .status
                .get_or_insert_with(Default::default)
                .load_balancer
                .get_or_insert_with(Default::default);
            lb.ingress = (!wanted.is_empty()).then(|| wanted.to_vec());
            true
        })
        .await;
    match written {
        Ok(Some(_)) => {
            tracing::debug!(service = %format!("{}/{name}", ns.unwrap_or("")), ingress = wanted.len(), "wrote load balancer ingress");
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}
