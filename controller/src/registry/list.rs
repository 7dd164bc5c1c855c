//! Lists as clients ask for them (at a revision, in pages with a `continue`
//! token) and watches.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use serde_json::Value;
use tugboat_api::selector::{FieldSelector, Selector};
use tugboat_api::{ApiError, limits, meta};

use super::{ListOptions, ListPage, Registry, RevisionMatch, WatchItem, store_error};
use crate::store::{EventType, Key, Revision, StoreError};
use tugboat_api::resource::ResourceInfo;

/// What a `continue` token carries: the list's revision and the last key served.
/// Base64 of JSON, as kube-apiserver's own tokens are, so clients treat it as
/// opaque.
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: Revision,
    start: String,
}

impl ContinueToken {
    fn encode(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(text: &str) -> Result<ContinueToken, ApiError> {
        use base64::Engine as _;
        let bad =
            || ApiError::bad_parameter("continue", text, "not a continue token from this server");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| bad())?;
        serde_json::from_slice(&bytes).map_err(|_| bad())
    }
}

impl Registry {
    /// The latest objects of `info` in `ns`, narrowed through the store's node
    /// index when the list is of pods on one node (every agent's list, with
    /// `spec.nodeName=NODE`); `fields` is still applied by the caller.
    async fn list_latest(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        fields: &FieldSelector,
    ) -> Result<(Vec<crate::store::Stored>, Revision), ApiError> {
        let resource = info.store_name();
        let listed = match fields.required("spec.nodeName") {
            Some(node) if info == &tugboat_api::resource::PODS => {
                let by = crate::store::index::By::Node(node);
                self.store.list_by(&resource, ns, by).await
            }
            _ => self.store.list(&resource, ns).await,
        };
        listed.map_err(store_error)
    }

    /// A list as a client asked for it: at a resourceVersion, in pages of `limit`
    /// with a `continue` token, as kube-apiserver serves them. Every page shows
    /// the same moment: a later page whose range changed since the first one is
    /// `410 Expired`, and the client lists again (client-go's pager does so).
    pub async fn list_page(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        labels: &Selector,
        fields: &FieldSelector,
        opts: &ListOptions,
    ) -> Result<ListPage, ApiError> {
        let ns = if info.namespaced { ns } else { None };
        let resource = info.store_name();
        let (objects, revision) = match (&opts.continue_token, opts.resource_version) {
            (Some(token), _) => {
                let token = ContinueToken::decode(token)?;
                let after = Key::decode(&token.start).ok_or_else(|| {
                    ApiError::bad_parameter(
                        "continue",
                        &token.start,
                        "not a continue token from this server",
                    )
                })?;
                if after.resource != resource
                    || ns.is_some_and(|n| after.namespace.as_deref() != Some(n))
                {
                    return Err(ApiError::bad_parameter(
                        "continue",
                        &token.start,
                        "the continue token is for another list",
                    ));
                }
                let items = self
                    .store
                    .list_at(&resource, ns, token.rv, Some(&after))
                    .await
                    .map_err(|e| match e {
                        StoreError::Gone { .. } => ApiError::gone(
                            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                        ),
                        other => store_error(other),
                    })?;
                (items, token.rv)
            }
            (None, RevisionMatch::Exact(rv)) => {
                self.wait_for_revision(rv).await?;
                let items =
                    self.store
                        .list_at(&resource, ns, rv, None)
                        .await
                        .map_err(|e| match e {
                            StoreError::Gone { compacted, .. } => ApiError::gone(format!(
                                "too old resource version: {rv} ({compacted})"
                            )),
                            other => store_error(other),
                        })?;
                (items, rv)
            }
            (None, RevisionMatch::NotOlderThan(rv)) => {
                self.wait_for_revision(rv).await?;
                self.list_latest(info, ns, fields).await?
            }
            (None, RevisionMatch::Latest) => self.list_latest(info, ns, fields).await?,
        };
        let limit = opts.limit.map(|l| l.min(limits::MAX_LIST_LIMIT));
        let mut items = Vec::new();
        let mut last_key = None;
        let mut more = false;
        let mut remaining = 0i64;
        for stored in objects {
            let o = &stored.object;
            if !(labels.matches_object(o) && fields.matches(o)) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                more = true;
                remaining += 1;
                continue;
            }
            last_key = Some(Self::key(
                info,
                meta::namespace(o),
                meta::name(o).unwrap_or(""),
            ));
            items.push(stored);
        }
        let continue_token = match (more, last_key) {
            (true, Some(k)) => Some(
                ContinueToken {
                    rv: revision,
                    start: k.encode(),
                }
                .encode(),
            ),
            _ => None,
        };
        Ok(ListPage {
            items,
            revision,
            // Kubernetes counts the rest only when no selector narrows the list.
            remaining: (continue_token.is_some() && labels.is_empty() && fields.is_empty())
                .then_some(remaining),
            continue_token,
        })
    }

    /// Waits (a bounded time) until the store reaches `rv`; a revision it does not
    /// reach in time is "Too large resource version", as kube-apiserver answers.
    pub async fn wait_for_revision(&self, rv: Revision) -> Result<(), ApiError> {
        if rv <= self.store.revision() {
            return Ok(());
        }
        let wait = std::time::Duration::from_secs(limits::FUTURE_REVISION_WAIT_SECS);
        if self.store.wait_for(rv, wait).await {
            return Ok(());
        }
        Err(ApiError::resource_version_too_large(
            rv,
            self.store.revision(),
        ))
    }

    /// A watch of `info` in `ns`. `start` says where it begins: the current
    /// objects first as `ADDED` (at a state not older than the revision given), or
    /// the events after a revision, or what happens from now on.
    ///
    /// With selectors, an object that stops matching comes as `DELETED` (its last
    /// matching state at the new revision) and one that starts matching as `ADDED`,
    /// as kube-apiserver's watch cache sends them, so that a filtered informer
    /// forgets what left its selection.
    pub async fn watch(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        labels: Selector,
        fields: FieldSelector,
        start: WatchStart,
    ) -> Result<Watch, ApiError> {
        let ns = if info.namespaced { ns } else { None };
        let filtered = !labels.is_empty() || !fields.is_empty();
        let (initial, from) = match start {
            WatchStart::After(rv) => {
                self.wait_for_revision(rv).await?;
                (Vec::new(), rv)
            }
            WatchStart::Initial(at_least) => {
                if let Some(rv) = at_least {
                    self.wait_for_revision(rv).await?;
                }
                self.list(info, ns, &labels, &fields).await?
            }
            WatchStart::Now => (Vec::new(), self.store.revision()),
        };
        let live = self
            .hubs
            .watch(
                &info.store_name(),
                ns,
                fields.required(super::hub::NODE_FIELD),
                from,
            )
            .await
            .map_err(store_error)?;
        let live = live.filter_map(move |ev| {
            let out = match ev {
                Ok(ev) if filtered => transition(
                    ev.event_type,
                    ev.object,
                    ev.prev.as_deref(),
                    &labels,
                    &fields,
                )
                .map(|item| {
                    item.map(|item| WatchItem {
                        encoded: ev.encoded,
                        ..item
                    })
                }),
                Ok(ev) => Some(Ok(WatchItem {
                    event_type: event_name(ev.event_type),
                    object: ev.object,
                    encoded: ev.encoded,
                })),
                Err(e) => Some(Err(store_error(e))),
            };
            futures::future::ready(out)
        });
        Ok(Watch {
            initial,
            revision: from,
            live: Box::pin(live),
        })
    }
}

/// Where a watch begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchStart {
    /// The events after this revision.
    After(Revision),
    /// The current objects (at a state not older than the revision, if given),
    /// then what happens next.
    Initial(Option<Revision>),
    /// What happens from now on.
    Now,
}

/// A watch: the objects to send first as `ADDED`, the revision they show, and
/// the events after it.
pub struct Watch {
    pub initial: Vec<Arc<Value>>,
    pub revision: Revision,
    pub live: std::pin::Pin<Box<dyn Stream<Item = Result<WatchItem, ApiError>> + Send>>,
}

fn event_name(t: EventType) -> &'static str {
    match t {
        EventType::Added => "ADDED",
        EventType::Modified => "MODIFIED",
        EventType::Deleted => "DELETED",
    }
}

/// The event a filtered watcher gets for one store event, from whether the
/// object matched before it (`prev`) and matches after it.
fn transition(
    event_type: EventType,
    object: Arc<Value>,
    prev: Option<&Value>,
    labels: &Selector,
    fields: &FieldSelector,
) -> Option<Result<WatchItem, ApiError>> {
    let matches = |o: &Value| labels.matches_object(o) && fields.matches(o);
    let now = matches(&object);
    let item = |event_type, object| {
        Some(Ok(WatchItem {
            event_type,
            object,
            encoded: None,
        }))
    };
    match event_type {
        EventType::Deleted if now => item("DELETED", object),
        EventType::Deleted => None,
        EventType::Added if now => item("ADDED", object),
        EventType::Added => None,
        EventType::Modified => {
            // Without the earlier state (an event read back from disk whose
            // predecessor is older than the history), it counts as unchanged.
            let before = prev.map_or(now, matches);
            match (before, now) {
                (true, true) => item("MODIFIED", object),
                (false, true) => item("ADDED", object),
                // It left the selection: gone, for this watcher, in its last
                // matching state at the new revision.
                (true, false) => item(
                    "DELETED",
                    prev.map_or(object.clone(), |p| with_revision(p, &object)),
                ),
                (false, false) => None,
            }
        }
    }
}

/// `previous` with the resourceVersion of `now`.
fn with_revision(previous: &Value, now: &Value) -> Arc<Value> {
    let mut out = previous.clone();
    if let Some(rv) = now.pointer("/metadata/resourceVersion")
        && let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.insert("resourceVersion".into(), rv.clone());
    }
    Arc::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, app: &str, rv: &str) -> Arc<Value> {
        Arc::new(json!({"metadata": {"name": name, "namespace": "default",
            "labels": {"app": app}, "resourceVersion": rv}}))
    }

    #[test]
    fn an_object_leaving_the_selection_is_deleted_for_the_watcher() {
        let labels = Selector::parse("app=web").unwrap();
        let fields = FieldSelector::default();
        let step = |t, o: Arc<Value>, prev: Option<Arc<Value>>| {
            transition(t, o, prev.as_deref(), &labels, &fields)
                .map(|r| r.unwrap())
                .map(|i| {
                    (
                        i.event_type,
                        i.object["metadata"]["labels"]["app"].clone(),
                        i.object["metadata"]["resourceVersion"].clone(),
                    )
                })
        };
        assert_eq!(step(EventType::Added, pod("a", "db", "1"), None), None);
        // Starts matching: ADDED, as the watch cache sends it.
        assert_eq!(
            step(
                EventType::Modified,
                pod("a", "web", "2"),
                Some(pod("a", "db", "1"))
            ),
            Some(("ADDED", json!("web"), json!("2")))
        );
        assert_eq!(
            step(
                EventType::Modified,
                pod("a", "web", "3"),
                Some(pod("a", "web", "2"))
            ),
            Some(("MODIFIED", json!("web"), json!("3")))
        );
        // Stops matching: DELETED, the last matching state at the new revision.
        assert_eq!(
            step(
                EventType::Modified,
                pod("a", "db", "4"),
                Some(pod("a", "web", "3"))
            ),
            Some(("DELETED", json!("web"), json!("4")))
        );
        assert_eq!(step(EventType::Deleted, pod("a", "db", "5"), None), None);
        assert_eq!(
            step(EventType::Deleted, pod("b", "web", "6"), None),
            Some(("DELETED", json!("web"), json!("6")))
        );
    }
}
