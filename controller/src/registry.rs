//! The registry: every read and write of an API object goes through here, from the
//! HTTP handlers and from the in-process controllers alike. It owns what the
//! Kubernetes API server does around storage: server-set metadata (`uid`,
//! `creationTimestamp`, `generation`, `generateName`), admission (defaulting,
//! validation, unknown fields), status and scale subresources, preconditions and
//! retries on conflict, graceful deletion, finalizers and namespace rules.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use serde_json::{Map, Value, json};
use tugboat_api::admission::{self, FieldValidation};
use tugboat_api::resource::{self, NAMESPACES, ResourceInfo};
use tugboat_api::selector::{FieldSelector, Selector};
use tugboat_api::{ApiError, FieldError, limits, meta};

use crate::store::{EventType, Key, Revision, Store, StoreError, StoreEvent, Stored};

/// The namespaces that always exist and may not be deleted (as in Kubernetes,
/// whose system namespaces controller keeps them): nodes' Leases live in
/// `kube-node-lease`, so losing it would mark every node lost.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Which part of an object a write targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    Main,
    Status,
}

/// Options of a create, update or patch.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOptions {
    pub field_validation: FieldValidation,
    /// `dryRun=All`: admit and answer, store nothing.
    pub dry_run: bool,
}

/// How dependents are treated when their owner is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Propagation {
    /// Delete the owner now; the garbage collector deletes the dependents.
    #[default]
    Background,
    /// Same as background here (the owner does not wait for its dependents).
    Foreground,
    /// Keep the dependents, removing their owner reference.
    Orphan,
}

#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub propagation: Propagation,
    /// `None`: the object's own grace period; `Some(0)`: delete now.
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    /// `dryRun=All`: answer what the delete would do, change nothing.
    pub dry_run: bool,
}

/// A written object and the warnings for the client.
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// One event of a watch, already filtered by the watcher's selectors.
#[derive(Clone, Debug)]
pub struct WatchItem {
    pub event_type: &'static str,
    pub object: Arc<Value>,
}

/// Which state a list shows (`resourceVersion` and `resourceVersionMatch`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RevisionMatch {
    /// No resourceVersion (or `0`): the latest state.
    #[default]
    Latest,
    /// The latest state, once the store has reached this revision.
    NotOlderThan(Revision),
    /// Exactly the state at this revision.
    Exact(Revision),
}

/// How a client asked for a list.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: RevisionMatch,
}

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    pub items: Vec<Arc<Value>>,
    /// The revision every page of this list shows.
    pub revision: Revision,
    /// Where the next page starts, when there is one.
    pub continue_token: Option<String>,
    /// How many items follow this page (only for unfiltered lists).
    pub remaining: Option<i64>,
}

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

/// How many times a write without a resourceVersion is retried on conflict.
const CONFLICT_RETRIES: usize = 16;

pub struct Registry {
    store: Arc<dyn Store>,
}

impl Registry {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Registry { store }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn key(info: &ResourceInfo, ns: Option<&str>, name: &str) -> Key {
        Key::new(
            info.store_name(),
            if info.namespaced { ns } else { None },
            name,
        )
    }

    pub async fn get(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Arc<Value>, ApiError> {
        match self
            .store
            .get(&Self::key(info, ns, name))
            .await
            .map_err(store_error)?
        {
            Some(s) => Ok(s.object),
            None => Err(ApiError::not_found(&info.store_name(), name)),
        }
    }

    /// Like [`Registry::get`], `None` when absent.
    pub async fn try_get(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Arc<Value>>, ApiError> {
        match self.get(info, ns, name).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Objects of `info` in `ns` (all namespaces when `None`) matching both selectors,
    /// with the revision the list was read at.
    pub async fn list(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        labels: &Selector,
        fields: &FieldSelector,
    ) -> Result<(Vec<Arc<Value>>, Revision), ApiError> {
        let ns = if info.namespaced { ns } else { None };
        let (items, rev) = self
            .store
            .list(&info.store_name(), ns)
            .await
            .map_err(store_error)?;
        let items = items
            .into_iter()
            .map(|s| s.object)
            .filter(|o| labels.matches_object(o) && fields.matches(o))
            .collect();
        Ok((items, rev))
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

    /// Everything of `info` in `ns`, unfiltered.
    pub async fn list_all(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
    ) -> Result<Vec<Arc<Value>>, ApiError> {
        Ok(self
            .list(info, ns, &Selector::everything(), &FieldSelector::default())
            .await?
            .0)
    }

    /// Checks the namespace an object is to be created in exists and is not being deleted.
    async fn check_namespace(&self, info: &ResourceInfo, ns: &str) -> Result<(), ApiError> {
        let Some(namespace) = self.try_get(&NAMESPACES, None, ns).await? else {
            return Err(ApiError::not_found("namespaces", ns));
        };
        if meta::is_deleting(&namespace) && info.kind != "Event" {
            return Err(ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                info.store_name(),
                "",
            ))
            .with_message_fixup(info, ns));
        }
        Ok(())
    }

    pub async fn create(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        mut body: Value,
        opts: WriteOptions,
    ) -> Result<Written, ApiError> {
        admission::check_type(info, &body)?;
        check_depth(info, &body)?;
        let ns = namespace_for(info, ns, &body)?;
        let mut warnings = managed_fields_warning(&body, None);
        {
            let m = meta::metadata_mut(&mut body);
            if let Some(ns) = &ns {
                m.insert("namespace".into(), json!(ns));
            } else {
                m.remove("namespace");
            }
            let has_name = m
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            if !has_name && let Some(prefix) = m.get("generateName").and_then(Value::as_str) {
                let name = format!("{prefix}{}", random_suffix());
                m.insert("name".into(), json!(name));
            }
            for server_set in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "selfLink",
                "managedFields",
            ] {
                m.remove(server_set);
            }
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
            if info.has_spec {
                m.insert("generation".into(), json!(1));
            }
        }
        set_type(info, &mut body);
        if info.has_status
            && info.kind != "Node"
            && let Some(obj) = body.as_object_mut()
        {
            obj.remove("status");
        }
        if info.kind == "Pod" {
            body["status"] = json!({ "phase": "Pending" });
        }
        if let Some(ns) = &ns {
            self.check_namespace(info, ns).await?;
        }
        let admitted = admission::admit(info, body, None, opts.field_validation)?;
        let name = meta::name(&admitted.object).unwrap_or("").to_string();
        check_limits(info, &name, &admitted.object)?;
        warnings.extend(admitted.warnings);
        if opts.dry_run {
            return Ok(Written {
                object: admitted.object,
                warnings,
            });
        }
        let stored = self
            .store
            .create(&Self::key(info, ns.as_deref(), &name), admitted.object)
            .await
            .map_err(|e| match e {
                StoreError::AlreadyExists(_) => ApiError::already_exists(&info.store_name(), &name),
                other => store_error(other),
            })?;
        Ok(Written {
            object: (*stored.object).clone(),
            warnings,
        })
    }

    /// PUT: replaces the object (or only its status). A `metadata.resourceVersion` in
    /// the body is a precondition; without one the write is retried on conflict.
    pub async fn update(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        body: Value,
        sub: Subresource,
        opts: WriteOptions,
    ) -> Result<Written, ApiError> {
        admission::check_type(info, &body)?;
        if let Some(body_name) = meta::name(&body)
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        namespace_for(info, ns, &body)?;
        let precondition = meta::resource_version(&body).map(str::to_string);
        self.write_loop(
            info,
            ns,
            name,
            precondition,
            opts,
            |_old| Ok(body.clone()),
            sub,
        )
        .await
    }

    /// PATCH with a merge, strategic-merge or JSON patch.
    pub async fn patch(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        patch: &crate::patch::Patch,
        sub: Subresource,
        opts: WriteOptions,
    ) -> Result<Written, ApiError> {
        let precondition = patch.resource_version();
        self.write_loop(
            info,
            ns,
            name,
            precondition,
            opts,
            |old| patch.apply(old),
            sub,
        )
        .await
    }

    /// Read-modify-write for controllers: `change` edits the current object (returning
    /// false when nothing needs writing); retried on conflict.
    pub async fn update_with(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        sub: Subresource,
        mut change: impl FnMut(&mut Value) -> bool,
    ) -> Result<Option<Value>, ApiError> {
        let mut unchanged = false;
        let result = self
            .write_loop(
                info,
                ns,
                name,
                None,
                WriteOptions::default(),
                |old| {
                    let mut new = old.clone();
                    unchanged = !change(&mut new);
                    Ok(new)
                },
                sub,
            )
            .await?;
        Ok((!unchanged).then_some(result.object))
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_loop(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        precondition: Option<String>,
        opts: WriteOptions,
        mut make: impl FnMut(&Value) -> Result<Value, ApiError>,
        sub: Subresource,
    ) -> Result<Written, ApiError> {
        let key = Self::key(info, ns, name);
        let expected: Option<Revision> = match &precondition {
            Some(rv) => Some(rv.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "metadata.resourceVersion: Invalid value: \"{rv}\": must be a decimal revision"
                ))
            })?),
            None => None,
        };
        for _ in 0..CONFLICT_RETRIES {
            let Some(current) = self.store.get(&key).await.map_err(store_error)? else {
                return Err(ApiError::not_found(&info.store_name(), name));
            };
            if let Some(exp) = expected
                && exp != current.revision
            {
                return Err(conflict(info, name));
            }
            let old = &*current.object;
            let incoming = make(old)?;
            // Before anything walks it recursively (merging, decoding): a patch
            // can build what no body could carry.
            check_depth(info, &incoming)?;
            let mut warnings = managed_fields_warning(&incoming, Some(old));
            let merged = merge_for_write(info, old, incoming, sub)?;
            if merged == *old {
                return Ok(Written {
                    object: old.clone(),
                    warnings,
                });
            }
            let admitted = admission::admit(info, merged, Some(old), opts.field_validation)?;
            warnings.extend(admitted.warnings);
            let mut object = admitted.object;
            check_limits(info, name, &object)?;
            if admitted_equal(&object, old) {
                return Ok(Written {
                    object: old.clone(),
                    warnings,
                });
            }
            if sub == Subresource::Main && info.has_spec && object.get("spec") != old.get("spec") {
                let generation = old
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    + 1;
                meta::metadata_mut(&mut object).insert("generation".into(), json!(generation));
            }
            if opts.dry_run {
                return Ok(Written { object, warnings });
            }
            // A deleting object whose last finalizer was removed goes away now.
            let finalized = meta::is_deleting(old)
                && object
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty)
                && old
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|f| !f.is_empty());
            let result = if finalized {
                self.store.delete(&key, Some(current.revision)).await
            } else {
                self.store
                    .update(&key, object, Some(current.revision))
                    .await
            };
            match result {
                Ok(stored) => {
                    return Ok(Written {
                        object: (*stored.object).clone(),
                        warnings,
                    });
                }
                Err(StoreError::Conflict { .. }) if expected.is_none() => continue,
                Err(StoreError::Conflict { .. }) => return Err(conflict(info, name)),
                Err(StoreError::NotFound(_)) => {
                    return Err(ApiError::not_found(&info.store_name(), name));
                }
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(conflict(info, name))
    }

    /// DELETE. Bound pods and objects with finalizers are marked for deletion
    /// (`deletionTimestamp`) and finished later; everything else goes at once. A
    /// namespace is marked `Terminating` and emptied by the namespace controller.
    pub async fn delete(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let key = Self::key(info, ns, name);
        if info.kind == "Namespace" && SYSTEM_NAMESPACES.contains(&name) {
            let mut e = ApiError::forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            ));
            e.kind = Some("namespaces".into());
            e.name = Some(name.to_string());
            return Err(e);
        }
        for _ in 0..CONFLICT_RETRIES {
            let Some(current) = self.store.get(&key).await.map_err(store_error)? else {
                return Err(ApiError::not_found(&info.store_name(), name));
            };
            let obj = &*current.object;
            if let Some(uid) = &opts.precondition_uid
                && meta::uid(obj) != Some(uid.as_str())
            {
                return Err(ApiError::conflict(
                    &info.store_name(),
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(obj).unwrap_or("")
                    ),
                ));
            }
            if let Some(rv) = &opts.precondition_resource_version
                && meta::resource_version(obj) != Some(rv.as_str())
            {
                return Err(conflict(info, name));
            }
            if opts.propagation == Propagation::Orphan && !opts.dry_run {
                self.orphan_dependents(obj).await?;
            }
            let graceful_pod = info.kind == "Pod"
                && obj
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty())
                && !matches!(
                    obj.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                )
                && opts.grace_period_seconds != Some(0);
            let has_finalizers = obj
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
            let mark = graceful_pod || has_finalizers || info.kind == "Namespace";
            if mark {
                if meta::is_deleting(obj) && !graceful_pod {
                    return Ok(obj.clone());
                }
                let mut marked = obj.clone();
                let grace = opts.grace_period_seconds.unwrap_or_else(|| {
                    obj.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(30)
                });
                let m = meta::metadata_mut(&mut marked);
                if !meta::is_deleting(obj) {
                    m.insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
                }
                if graceful_pod {
                    let previous = obj
                        .pointer("/metadata/deletionGracePeriodSeconds")
                        .and_then(Value::as_i64);
                    if previous.is_some_and(|p| p <= grace) {
                        return Ok(obj.clone());
                    }
                    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                }
                if info.kind == "Namespace" {
                    marked["status"]["phase"] = json!("Terminating");
                }
                if opts.dry_run {
                    return Ok(marked);
                }
                match self
                    .store
                    .update(&key, marked, Some(current.revision))
                    .await
                {
                    Ok(stored) => return Ok((*stored.object).clone()),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(store_error(e)),
                }
            }
            if opts.dry_run {
                return Ok(obj.clone());
            }
            match self.store.delete(&key, Some(current.revision)).await {
                Ok(stored) => return Ok((*stored.object).clone()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound(_)) => {
                    return Err(ApiError::not_found(&info.store_name(), name));
                }
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(conflict(info, name))
    }

    /// Removes the object now, whatever its grace period or finalizers (the agent's
    /// last word on a pod, the namespace controller's on a namespace).
    pub async fn delete_now(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        match self.store.delete(&Self::key(info, ns, name), None).await {
            Ok(stored) => Ok((*stored.object).clone()),
            Err(StoreError::NotFound(_)) => Err(ApiError::not_found(&info.store_name(), name)),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Drops `owner`'s references from everything that names it.
    async fn orphan_dependents(&self, owner: &Value) -> Result<(), ApiError> {
        let Some(uid) = meta::uid(owner) else {
            return Ok(());
        };
        for info in resource::ALL.iter().copied().filter(|r| r.namespaced) {
            for dep in self.list_all(info, meta::namespace(owner)).await? {
                if !meta::owner_uids(&dep).contains(&uid) {
                    continue;
                }
                let name = meta::name(&dep).unwrap_or("").to_string();
                let result = self
                    .update_with(info, meta::namespace(&dep), &name, Subresource::Main, |o| {
                        let Some(refs) = o
                            .pointer_mut("/metadata/ownerReferences")
                            .and_then(Value::as_array_mut)
                        else {
                            return false;
                        };
                        let before = refs.len();
                        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                        refs.len() != before
                    })
                    .await;
                match result {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
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

    /// Creates the namespaces that exist from the start.
    pub async fn ensure_namespace(&self, name: &str) -> Result<(), ApiError> {
        if self.try_get(&NAMESPACES, None, name).await?.is_some() {
            return Ok(());
        }
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match self
            .create(&NAMESPACES, None, body, WriteOptions::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.reason == "AlreadyExists" => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn revision(&self) -> Revision {
        self.store.revision()
    }

    /// The stored object with its revision (for callers that pass preconditions on).
    pub async fn get_stored(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Stored>, ApiError> {
        self.store
            .get(&Self::key(info, ns, name))
            .await
            .map_err(store_error)
    }
}

trait MessageFixup {
    fn with_message_fixup(self, info: &ResourceInfo, ns: &str) -> Self;
}

impl MessageFixup for ApiError {
    /// Kubernetes' wording for creating into a terminating namespace omits the name.
    fn with_message_fixup(mut self, info: &ResourceInfo, ns: &str) -> Self {
        self.message = format!(
            "{} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            info.store_name()
        );
        self
    }
}

/// Builds the object to admit: a status write takes only the status from `incoming`;
/// a main write keeps the old status (when the kind has a status subresource) and the
/// server-owned metadata.
fn merge_for_write(
    info: &ResourceInfo,
    old: &Value,
    incoming: Value,
    sub: Subresource,
) -> Result<Value, ApiError> {
    if !incoming.is_object() {
        return Err(ApiError::bad_request(format!(
            "expected a {} object",
            info.kind
        )));
    }
    let mut new = match sub {
        Subresource::Status => {
            let mut new = old.clone();
            match incoming.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            new
        }
        Subresource::Main => {
            let mut new = incoming;
            if info.has_status && info.kind != "Node" {
                let obj = new.as_object_mut().expect("checked to be an object above");
                match old.get("status") {
                    Some(s) => {
                        obj.insert("status".into(), s.clone());
                    }
                    None => {
                        obj.remove("status");
                    }
                }
            }
            new
        }
    };
    set_type(info, &mut new);
    let old_meta: Map<String, Value> = old
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let m = meta::metadata_mut(&mut new);
    for server_owned in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
        "name",
        // Tugboat tracks no field managers yet (no server-side apply), so what a
        // client sends here is not kept: storing arbitrary JSON that nothing reads
        // is how a client could nest an object too deep to load again.
        "managedFields",
    ] {
        match old_meta.get(server_owned) {
            Some(v) => {
                m.insert(server_owned.into(), v.clone());
            }
            None => {
                m.remove(server_owned);
            }
        }
    }
    if let Some(rv) = old_meta.get("resourceVersion") {
        m.insert("resourceVersion".into(), rv.clone());
    }
    Ok(new)
}

/// Equal but for `resourceVersion` (a no-op write is not stored again).
fn admitted_equal(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        v
    };
    strip(a) == strip(b)
}

fn set_type(info: &ResourceInfo, body: &mut Value) {
    if let Some(obj) = body.as_object_mut() {
        obj.insert("apiVersion".into(), json!(info.api_version()));
        obj.insert("kind".into(), json!(info.kind));
    }
}

/// The namespace a write goes to: the URL's, checked against the body's.
fn namespace_for(
    info: &ResourceInfo,
    url_ns: Option<&str>,
    body: &Value,
) -> Result<Option<String>, ApiError> {
    if !info.namespaced {
        return Ok(None);
    }
    let body_ns = meta::namespace(body).filter(|n| !n.is_empty());
    match (url_ns, body_ns) {
        (Some(u), Some(b)) if u != b => Err(ApiError::bad_request(format!(
            "the namespace of the provided object ({b}) does not match the namespace sent on the request ({u})"
        ))),
        (Some(u), _) => Ok(Some(u.to_string())),
        (None, Some(b)) => Ok(Some(b.to_string())),
        (None, None) => Ok(Some("default".to_string())),
    }
}

fn conflict(info: &ResourceInfo, name: &str) -> ApiError {
    ApiError::conflict(
        &info.store_name(),
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Gone {
            requested,
            compacted,
        } => ApiError::gone(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        StoreError::NotFound(key) => ApiError::not_found(&key.resource, &key.name),
        StoreError::AlreadyExists(key) => ApiError::already_exists(&key.resource, &key.name),
        StoreError::Conflict { key, .. } => ApiError::conflict(
            &key.resource,
            &key.name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ),
        StoreError::Limit(key, e) => limit_error(&key.resource, &key.name, &e),
        StoreError::Backend(msg) => ApiError::internal(format!("storage error: {msg}")),
    }
}

/// An object outside the bounds, answered as kube-apiserver would: 413 for its
/// size, 422 naming the field for its depth.
pub fn limit_error(resource: &str, name: &str, e: &limits::LimitError) -> ApiError {
    match e {
        limits::LimitError::TooLarge { .. } => ApiError::too_large(format!(
            "Request entity too large: {resource} \"{name}\": {e}"
        )),
        limits::LimitError::TooDeep { path } => {
            let mut err = ApiError::new(
                422,
                "Invalid",
                format!("{resource} \"{name}\" is invalid: {e}"),
            );
            err.causes.push(FieldError {
                reason: "FieldValueInvalid",
                field: path.clone(),
                message: format!(
                    "Invalid value: nested more than {} levels deep",
                    limits::MAX_DEPTH
                ),
            });
            err
        }
    }
}

fn check_depth(info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    limits::check_depth(obj)
        .map_err(|e| limit_error(&info.store_name(), meta::name(obj).unwrap_or(""), &e))
}

fn check_limits(info: &ResourceInfo, name: &str, obj: &Value) -> Result<(), ApiError> {
    limits::check_object(obj).map_err(|e| limit_error(&info.store_name(), name, &e))
}

/// The warning for `managedFields` a client sent that are not kept.
fn managed_fields_warning(incoming: &Value, old: Option<&Value>) -> Vec<String> {
    let sent = incoming.pointer("/metadata/managedFields");
    let had = old.and_then(|o| o.pointer("/metadata/managedFields"));
    match sent {
        Some(Value::Array(a)) if !a.is_empty() && sent != had => vec![
            "metadata.managedFields: ignored: Tugboat does not track field managers yet (server-side apply is not supported)".to_string(),
        ],
        _ => Vec::new(),
    }
}

/// Five characters from Kubernetes' alphabet for generated names (no vowels, so no words).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// Is this a pod that still needs a node or is still running?
pub fn pod_is_active(pod: &Value) -> bool {
    !meta::is_deleting(pod)
        && !matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
}
