//! Which Services a node event concerns: every LoadBalancer Service this
//! controller serves (from a reflector), but only when the event changes what
//! the node serves on — its Ready-ness or its addresses. Agents post status
//! every few seconds; those heartbeats requeue nothing. What each node offered
//! when last seen is remembered and forgotten when it is deleted or a relist no
//! longer holds it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Node, Service};
use serde::Deserialize;
use serde_json::Value;
use tugboat_api::meta;
use tugboat_runtime::reflector::Store;
use tugboat_runtime::{Event, ObjectRef};

use super::ingress::{NodeOffer, balanced};

/// The mapper's memory: what each node it has seen (and not seen go) offered.
pub struct NodeMapper {
    services: Store<Service>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    nodes: HashMap<String, NodeOffer>,
    /// The nodes a relist in progress has shown so far.
    relist: Option<HashSet<String>>,
}

/// What a node in a watch event offers; one that does not decode offers nothing.
fn offer_of(node: &Value) -> NodeOffer {
    Node::deserialize(node)
        .map(|n| NodeOffer::of(&n))
        .unwrap_or_default()
}

impl NodeMapper {
    pub fn new(services: Store<Service>) -> Arc<NodeMapper> {
        Arc::new(NodeMapper {
            services,
            state: Mutex::default(),
        })
    }

    /// Every LoadBalancer Service this controller serves.
    fn load_balancers(&self) -> Vec<ObjectRef> {
        let found: BTreeSet<ObjectRef> = self
            .services
            .state()
            .iter()
            .filter(|s| balanced(s))
            .filter_map(|s| {
                Some(ObjectRef::new(
                    s.metadata.namespace.as_deref(),
                    s.metadata.name.as_deref()?,
                ))
            })
            .collect();
        found.into_iter().collect()
    }

    /// The Services one watch event on a node concerns.
    pub fn map(&self, ev: &Event<Arc<Value>>) -> Vec<ObjectRef> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let changed = match ev {
            Event::Init => {
                state.relist = Some(HashSet::new());
                false
            }
            Event::InitApply(node) | Event::Apply(node) => {
                let Some(name) = meta::name(node) else {
                    return Vec::new();
                };
                if let (Event::InitApply(_), Some(seen)) = (ev, state.relist.as_mut()) {
                    seen.insert(name.to_string());
                }
                let now = offer_of(node);
                let before = state.nodes.insert(name.to_string(), now.clone());
                NodeOffer::changes_ingress(before.as_ref(), Some(&now))
            }
            Event::Delete(node) => {
                let Some(name) = meta::name(node) else {
                    return Vec::new();
                };
                let before = state.nodes.remove(name);
                NodeOffer::changes_ingress(before.as_ref(), None)
            }
            Event::InitDone => {
                // Nodes the relist did not hold were deleted while the watch was down.
                let Some(seen) = state.relist.take() else {
                    return Vec::new();
                };
                let mut changed = false;
                state.nodes.retain(|name, offer| {
                    let keep = seen.contains(name);
                    changed |= !keep && NodeOffer::changes_ingress(Some(offer), None);
                    keep
                });
                changed
            }
        };
        drop(state);
        if changed {
            self.load_balancers()
        } else {
            Vec::new()
        }
    }

    /// How many nodes the mapper remembers (for tests: it forgets deleted ones).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .nodes
            .len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tugboat_runtime::reflector::Writer;

    use super::*;
    use crate::controllers::servicelb::ingress::tests::service;

    fn node(name: &str, ready: &str, ip: &str, heartbeat: &str) -> Arc<Value> {
        Arc::new(json!({
            "metadata": {"name": name},
            "status": {
                "conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat}],
                "addresses": [{"type": "InternalIP", "address": ip}]
            }
        }))
    }

    fn names(refs: Vec<ObjectRef>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    fn mapper() -> Arc<NodeMapper> {
        let mut w = Writer::<Service>::new();
        let mut classed = service("other-lb", "LoadBalancer");
        classed.spec.as_mut().unwrap().load_balancer_class = Some("example.com/lb".into());
        let mut prod = service("lb-prod", "LoadBalancer");
        prod.metadata.namespace = Some("prod".into());
        w.apply(&Event::Init);
        for s in [
            service("lb", "LoadBalancer"),
            service("web", "ClusterIP"),
            service("np", "NodePort"),
            classed,
            prod,
        ] {
            w.apply(&Event::InitApply(Arc::new(s)));
        }
        w.apply(&Event::InitDone);
        NodeMapper::new(w.store())
    }

    #[test]
    fn a_node_turning_ready_or_moving_maps_to_every_load_balancer_and_heartbeats_to_none() {
        let m = mapper();
        let t1 = "2026-01-01T00:00:01Z";
        let t2 = "2026-01-01T00:00:02Z";
        assert_eq!(
            names(m.map(&Event::Apply(node("a", "True", "10.0.0.1", t1)))),
            ["lb", "lb-prod"]
        );
        assert!(
            m.map(&Event::Apply(node("a", "True", "10.0.0.1", t2)))
                .is_empty(),
            "a heartbeat requeues nothing"
        );
        assert_eq!(
            m.map(&Event::Apply(node("a", "True", "10.0.0.2", t2)))
                .len(),
            2
        );
        assert_eq!(
            m.map(&Event::Apply(node("a", "False", "10.0.0.2", t2)))
                .len(),
            2
        );
        assert!(
            m.map(&Event::Apply(node("a", "False", "10.0.0.3", t2)))
                .is_empty()
        );
        assert!(
            m.map(&Event::Apply(Arc::new(json!({})))).is_empty(),
            "no name, no panic"
        );
    }

    #[test]
    fn deleted_ready_nodes_map_to_every_load_balancer_and_are_forgotten() {
        let m = mapper();
        let t = "2026-01-01T00:00:01Z";
        m.map(&Event::Apply(node("a", "True", "10.0.0.1", t)));
        m.map(&Event::Apply(node("b", "True", "10.0.0.2", t)));
        m.map(&Event::Apply(node("c", "False", "10.0.0.3", t)));
        assert_eq!(
            m.map(&Event::Delete(node("a", "True", "10.0.0.1", t)))
                .len(),
            2
        );
        assert!(
            m.map(&Event::Delete(node("c", "False", "10.0.0.3", t)))
                .is_empty()
        );
        assert_eq!(m.remembered(), 1);
        // A relist that no longer holds b: b was deleted while the watch was down.
        m.map(&Event::Init);
        assert!(
            m.map(&Event::InitApply(node("d", "False", "10.0.0.4", t)))
                .is_empty()
        );
        assert_eq!(names(m.map(&Event::InitDone)), ["lb", "lb-prod"]);
        assert_eq!(m.remembered(), 1, "only d is remembered");
        // A relist holding the same nodes, unchanged, requeues nothing.
        m.map(&Event::Init);
        assert!(
            m.map(&Event::InitApply(node("d", "False", "10.0.0.4", t)))
                .is_empty()
        );
        assert!(m.map(&Event::InitDone).is_empty());
    }
}
