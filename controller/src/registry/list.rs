//! Lists as clients ask for them (at a revision, in pages with a `continue`
//! token) and watches.

use futures::{Stream, StreamExt};
use tugboat_api::selector::{FieldSelector, Selector};
use tugboat_api::{ApiError, limits, meta};

use super::{ListOptions, ListPage, Registry, RevisionMatch, WatchItem, store_error};
use crate::store::{EventType, Key, Revision, StoreError, StoreEvent};
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
                self.store.list(&resource, ns).await.map_err(store_error)?
            }
            (None, RevisionMatch::Latest) => {
                self.store.list(&resource, ns).await.map_err(store_error)?
            }
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
            items.push(stored.object);
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

    /// A watch of `info` in `ns`: from `resource_version` (exclusive) when given,
    /// else the current objects as `ADDED` first. Events not matching the selectors
    /// are left out.
    pub async fn watch(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        labels: Selector,
        fields: FieldSelector,
        resource_version: Option<Revision>,
    ) -> Result<impl Stream<Item = Result<WatchItem, ApiError>> + Send + use<>, ApiError> {
        let ns = if info.namespaced { ns } else { None };
        let (initial, from) = match resource_version {
            Some(rv) => {
                self.wait_for_revision(rv).await?;
                (Vec::new(), rv)
            }
            None => {
                let (items, rev) = self.list(info, ns, &labels, &fields).await?;
                (items, rev)
            }
        };
        let live = self
            .store
            .watch(&info.store_name(), ns, from)
            .await
            .map_err(store_error)?;
        let initial = futures::stream::iter(initial.into_iter().map(|object| {
            Ok(WatchItem {
                event_type: "ADDED",
                object,
            })
        }));
        let live = live.filter_map(move |ev| {
            let out = match ev {
                Ok(StoreEvent {
                    event_type, object, ..
                }) => {
                    if labels.matches_object(&object) && fields.matches(&object) {
                        Some(Ok(WatchItem {
                            event_type: match event_type {
                                EventType::Added => "ADDED",
                                EventType::Modified => "MODIFIED",
                                EventType::Deleted => "DELETED",
                            },
                            object,
                        }))
                    } else {
                        None
                    }
                }
                Err(e) => Some(Err(store_error(e))),
            };
            futures::future::ready(out)
        });
        Ok(initial.chain(live))
    }
}
