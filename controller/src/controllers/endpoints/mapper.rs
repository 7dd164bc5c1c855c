//! Which Services a pod event concerns: every Service of the pod's namespace
//! whose selector matches the pod's labels now *or* the labels it had when last
//! seen (a relabelled pod must leave the slices of the Service it left; a
//! deleted pod those of the Services it was in). Services come from a reflector;
//! the labels last seen are remembered per pod and forgotten when the pod is
//! deleted or a relist no longer holds it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Service;
use serde_json::Value;
use tugboat_runtime::reflector::Store;
use tugboat_runtime::{Event, ObjectRef};

use super::pods::{selector, selects};

type Labels = BTreeMap<String, String>;

/// The mapper's memory: one entry per pod it has seen and not seen go.
pub struct PodMapper {
    services: Store<Service>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    labels: HashMap<ObjectRef, Labels>,
    /// The pods a relist in progress has shown so far.
    relist: Option<HashSet<ObjectRef>>,
}

fn labels_of(pod: &Value) -> Labels {
    pod.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

impl PodMapper {
    pub fn new(services: Store<Service>) -> Arc<PodMapper> {
        Arc::new(PodMapper {
            services,
            state: Mutex::default(),
        })
    }

    /// The Services of `ns` that select any of `label_sets`.
    fn services_selecting(&self, ns: Option<&str>, label_sets: &[&Labels]) -> Vec<ObjectRef> {
        let found: BTreeSet<ObjectRef> = self
            .services
            .state()
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == ns)
            .filter(|s| {
                selector(s).is_some_and(|sel| label_sets.iter().any(|l| selects(sel, Some(l))))
            })
            .filter_map(|s| Some(ObjectRef::new(ns, s.metadata.name.as_deref()?)))
            .collect();
        found.into_iter().collect()
    }

    /// The Services one watch event on a pod concerns.
    pub fn map(&self, ev: &Event<Arc<Value>>) -> Vec<ObjectRef> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match ev {
            Event::Init => {
                state.relist = Some(HashSet::new());
                Vec::new()
            }
            Event::InitApply(pod) | Event::Apply(pod) => {
                let Some(key) = ObjectRef::of(pod) else {
                    return Vec::new();
                };
                if let (Event::InitApply(_), Some(seen)) = (ev, state.relist.as_mut()) {
                    seen.insert(key.clone());
                }
                let now = labels_of(pod);
                let before = state.labels.insert(key.clone(), now.clone());
                drop(state);
                let mut sets = vec![&now];
                sets.extend(before.as_ref().filter(|b| **b != now));
                self.services_selecting(key.namespace.as_deref(), &sets)
            }
            Event::Delete(pod) => {
                let Some(key) = ObjectRef::of(pod) else {
                    return Vec::new();
                };
                let before = state.labels.remove(&key);
                drop(state);
                let last = labels_of(pod);
                let mut sets = vec![&last];
                sets.extend(before.as_ref());
                self.services_selecting(key.namespace.as_deref(), &sets)
            }
            Event::InitDone => {
                // Pods the relist did not hold were deleted while the watch was down.
                let Some(seen) = state.relist.take() else {
                    return Vec::new();
                };
                let gone: Vec<(ObjectRef, Labels)> = state
                    .labels
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect::<Vec<_>>()
                    .into_iter()
                    .filter_map(|k| state.labels.remove(&k).map(|l| (k, l)))
                    .collect();
                drop(state);
                let mut out: BTreeSet<ObjectRef> = BTreeSet::new();
                for (key, labels) in &gone {
                    out.extend(self.services_selecting(key.namespace.as_deref(), &[labels]));
                }
                out.into_iter().collect()
            }
        }
    }

    /// How many pods the mapper remembers (for tests: it forgets deleted ones).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .labels
            .len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tugboat_runtime::reflector::Writer;

    use super::*;
    use crate::controllers::endpoints::pods::tests::{labels, service};

    fn pod(name: &str, app: &str) -> Arc<Value> {
        Arc::new(
            json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": app}}}),
        )
    }

    fn names(refs: Vec<ObjectRef>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    fn mapper() -> Arc<PodMapper> {
        let mut w = Writer::<Service>::new();
        let mut web = service("web", vec![]);
        let mut db = service("db", vec![]);
        db.spec.as_mut().unwrap().selector = Some(labels(&[("app", "db")]));
        let mut elsewhere = service("web-prod", vec![]);
        elsewhere.metadata.namespace = Some("prod".into());
        let mut manual = service("manual", vec![]);
        manual.spec.as_mut().unwrap().selector = None;
        web.metadata.labels = None;
        w.apply(&Event::Init);
        for s in [web, db, elsewhere, manual] {
            w.apply(&Event::InitApply(Arc::new(s)));
        }
        w.apply(&Event::InitDone);
        PodMapper::new(w.store())
    }

    #[test]
    fn a_pod_maps_to_the_services_of_its_namespace_that_select_it() {
        let m = mapper();
        assert_eq!(names(m.map(&Event::Apply(pod("a", "web")))), ["web"]);
        assert_eq!(
            names(m.map(&Event::Apply(pod("b", "other")))),
            Vec::<String>::new()
        );
        assert!(
            m.map(&Event::Apply(Arc::new(json!({})))).is_empty(),
            "no name, no panic"
        );
    }

    #[test]
    fn a_relabelled_pod_maps_to_the_service_it_left_and_the_one_it_joined() {
        let m = mapper();
        m.map(&Event::Apply(pod("a", "web")));
        assert_eq!(names(m.map(&Event::Apply(pod("a", "db")))), ["db", "web"]);
        assert_eq!(
            names(m.map(&Event::Apply(pod("a", "db")))),
            ["db"],
            "then only the new one"
        );
    }

    #[test]
    fn deleted_pods_map_to_their_services_and_are_forgotten() {
        let m = mapper();
        m.map(&Event::Apply(pod("a", "web")));
        m.map(&Event::Apply(pod("b", "db")));
        assert_eq!(names(m.map(&Event::Delete(pod("a", "web")))), ["web"]);
        assert_eq!(m.remembered(), 1);
        // A relist that no longer holds b: b was deleted while the watch was down.
        m.map(&Event::Init);
        m.map(&Event::InitApply(pod("c", "web")));
        assert_eq!(names(m.map(&Event::InitDone)), ["db"]);
        assert_eq!(m.remembered(), 1, "only c is remembered");
    }
}
