//! The registry: every read and write of an API object goes through here, from the
//! HTTP handlers and from the in-process controllers alike. It owns what the
//! Kubernetes API server does around storage: server-set metadata (`uid`,
//! `creationTimestamp`, `generation`, `generateName`), admission (defaulting,
//! validation, unknown fields), status and scale subresources, preconditions and
//! retries on conflict, graceful deletion, finalizers and namespace rules.
//!
//! The generic write path is here; what differs by kind (a pod's graceful
//! deletion, a namespace's termination, a node's writable status, events in a
//! terminating namespace) is that kind's [`strategy`], as kube-apiserver keeps
//! `registry/<kind>/strategy.go`.
//!
//! - [`list`](self::list): lists in pages at one revision, and watches;
//! - [`delete`](self::delete): deletion, propagation to dependents;
//! - [`write`]: building the object to admit, limits and the errors of the write path;
//! - [`typed`]: typed reads and status writes for the controllers;
//! - [`credentials`]: node credential and token records (not API objects);
//! - [`policy`]: admission that reads the store (service accounts, LimitRanges,
//!   ResourceQuotas).

pub mod credentials;
mod delete;
mod hub;
mod list;
pub use list::{Watch, WatchStart};
pub mod policy;
pub mod services;
pub mod strategy;
pub mod typed;
mod write;

use std::sync::Arc;

use serde_json::{Value, json};
use tugboat_api::admission::{self, FieldValidation};
use tugboat_api::resource::{
    HORIZONTALPODAUTOSCALERS, NAMESPACES, NODES, PODS, ResourceInfo, SERVICEACCOUNTS, SERVICES,
};
use tugboat_api::selector::{FieldSelector, Selector};
use tugboat_api::{ApiError, meta};

use crate::store::{Encoded, Key, Revision, Store, StoreError, Stored};

use write::{
    admitted_equal, check_depth, check_limits, conflict, managed_fields_warning, merge_for_write,
    namespace_for, set_type,
};
pub use write::{limit_error, pod_is_active, random_suffix, store_error};

/// The namespaces that always exist and may not be deleted (as in Kubernetes,
/// whose system namespaces controller keeps them): nodes' Leases live in
/// `kube-node-lease`, so losing it would mark every node lost.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// A check of one write against who asks for it: given the stored object and
/// what would be written (merged, before admission), refuses with the error to
/// answer. The HTTP edge passes one for writes the caller's identity restricts
/// (only a node itself may set where its agent is).
pub type WriteGuard<'a> = &'a (dyn Fn(&Value, &Value) -> Result<(), ApiError> + Send + Sync);

/// Which part of an object a write targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    Main,
    Status,
    /// A pod's binding: its node (a main-resource field) and its
    /// `PodScheduled` condition (a status field) in one write, as
    /// kube-apiserver's `pods/binding` stores them.
    Binding,
}

/// Options of a create, update or patch.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    pub field_validation: FieldValidation,
    /// `dryRun=All`: admit and answer, store nothing.
    pub dry_run: bool,
    /// Who the write is recorded under in `managedFields` (clients' writes; the
    /// controller's own reconcilers are not recorded).
    pub manager: Option<FieldManager>,
}

/// A client's field manager, and whether its write is a server-side apply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldManager {
    pub name: String,
    /// A server-side apply (`application/apply-patch+yaml`): the patch computed
    /// the object's `managedFields` itself.
    pub apply: bool,
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
    /// The store's encoding of the event's object, shared by every watcher of
    /// it: sent as it is where the object goes out unchanged as JSON. (It
    /// encodes one object only; see [`Encoded::bytes_for`].)
    pub encoded: Option<Encoded>,
}

impl WatchItem {
    /// The object's JSON as stored, if it is the stored object.
    pub fn json(&self) -> Option<&bytes::Bytes> {
        self.encoded.as_ref()?.bytes_for(&self.object)
    }
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
    /// As stored, with their encodings, for a response that sends them as they are.
    pub items: Vec<Stored>,
    /// The revision every page of this list shows.
    pub revision: Revision,
    /// Where the next page starts, when there is one.
    pub continue_token: Option<String>,
    /// How many items follow this page (only for unfiltered lists).
    pub remaining: Option<i64>,
}

/// How many times a write without a resourceVersion is retried on conflict.
const CONFLICT_RETRIES: usize = 16;

pub struct Registry {
    store: Arc<dyn Store>,
    services: services::Allocator,
    /// Whether an autoscaler may have `minReplicas: 0` (`--hpa-scale-to-zero`).
    scale_to_zero: std::sync::atomic::AtomicBool,
    /// Serializes quota-checked creates per namespace (see [`policy`]).
    quota_locks: policy::QuotaLocks,
    /// Watches served from one store subscription per resource.
    hubs: hub::Hubs,
    /// This controller's name in its Events' `reportingInstance` (its name in
    /// the leader election); the component's name until set.
    instance: std::sync::OnceLock<String>,
}

impl Registry {
    /// A registry whose Services draw from the default ranges (`10.96.0.0/16`,
    /// `30000-32767`).
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_network(store, services::ServiceNetwork::default())
    }

    /// A registry whose Services draw cluster IPs and node ports from `network`.
    pub fn with_network(store: Arc<dyn Store>, network: services::ServiceNetwork) -> Self {
        Registry {
            hubs: hub::Hubs::new(Arc::clone(&store)),
            store,
            services: services::Allocator::new(network),
            scale_to_zero: std::sync::atomic::AtomicBool::new(false),
            quota_locks: policy::QuotaLocks::default(),
            instance: std::sync::OnceLock::new(),
        }
    }

    /// Other controllers serve the same store: Service allocations are read
    /// from it before each one (see [`services::Allocator::set_shared`]).
    pub fn set_shared(&self) {
        self.services.set_shared(Arc::clone(&self.store));
    }

    /// Removes Service claims no stored Service names (see
    /// [`services::remove_stray_claims`]), when allocation is shared.
    pub async fn remove_stray_service_claims(&self) -> Result<usize, crate::store::StoreError> {
        if !self.services.is_shared() {
            return Ok(0);
        }
        services::remove_stray_claims(&*self.store, services::CLAIM_GRACE).await
    }

    /// Names this controller in its Events (`reportingInstance`), as
    /// kube-controller-manager names its instance: once, at start.
    pub fn set_instance(&self, instance: &str) {
        let _ = self.instance.set(instance.to_string());
    }

    /// This controller's name in its Events, if set.
    pub fn instance(&self) -> Option<&str> {
        self.instance.get().map(String::as_str)
    }

    /// Allows (or refuses) autoscalers with `minReplicas: 0`.
    pub fn set_scale_to_zero(&self, allowed: bool) {
        self.scale_to_zero
            .store(allowed, std::sync::atomic::Ordering::Relaxed);
    }

    /// Refuses an autoscaler with `minReplicas: 0` unless scale to zero is on,
    /// as kube-apiserver does without the HPAScaleToZero feature gate.
    fn check_features(&self, info: &ResourceInfo, object: &Value) -> Result<(), ApiError> {
        if info != &HORIZONTALPODAUTOSCALERS
            || object.pointer("/spec/minReplicas").and_then(Value::as_i64) != Some(0)
            || self
                .scale_to_zero
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(());
        }
        Err(ApiError::invalid(
            info.kind,
            info.group,
            meta::name(object).unwrap_or(""),
            vec![tugboat_api::FieldError::invalid(
                "spec.minReplicas",
                0,
                "must be greater than or equal to 1 (scaling to zero is off: start the controller with --hpa-scale-to-zero)",
            )],
        ))
    }

    /// The ranges Services draw from (what the node proxies serve).
    pub fn service_network(&self) -> services::ServiceNetwork {
        self.services.network()
    }

    /// Reserves the cluster IP and node ports a Service write needs (nothing for
    /// other kinds, or for status writes).
    async fn reserve(
        &self,
        info: &ResourceInfo,
        object: &mut Value,
        old: Option<&Value>,
        sub: Subresource,
    ) -> Result<services::Reservation<'_>, ApiError> {
        if info != &SERVICES || sub != Subresource::Main {
            return Ok(services::Reservation::none());
        }
        self.services.reserve(&*self.store, object, old).await
    }

    /// Frees what a deleted object held: a Service's cluster IP and node ports,
    /// a Node's credential (deleting a Node revokes it, as Kubernetes' node
    /// authorizer stops trusting a node that no longer exists).
    async fn release(&self, info: &ResourceInfo, deleted: &Value) {
        if info == &SERVICES {
            self.services.release(deleted);
        }
        if info == &NODES
            && let Some(name) = meta::name(deleted)
            && let Err(e) = self.revoke_node_credential(name).await
        {
            tracing::warn!(node = name, error = %e, "cannot revoke the deleted node's credential");
        }
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

    /// The objects of `info` in `ns` whose controller (the owner reference
    /// marked `controller: true`) has uid `owner_uid`, in key order: the pods of
    /// a ReplicaSet or Job, the ReplicaSets of a Deployment. From the store's
    /// controller index, so it costs what the owner has, not what the namespace has.
    pub async fn list_controlled(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        owner_uid: &str,
    ) -> Result<Vec<Arc<Value>>, ApiError> {
        let ns = if info.namespaced { ns } else { None };
        let by = crate::store::index::By::Controller(owner_uid);
        Ok(self
            .store
            .list_by(&info.store_name(), ns, by)
            .await
            .map_err(store_error)?
            .0
            .into_iter()
            .map(|s| s.object)
            .collect())
    }

    /// Checks the namespace an object is to be created in exists and is not being
    /// deleted; returns it.
    async fn check_namespace(&self, info: &ResourceInfo, ns: &str) -> Result<Arc<Value>, ApiError> {
        let Some(namespace) = self.try_get(&NAMESPACES, None, ns).await? else {
            return Err(ApiError::not_found("namespaces", ns));
        };
        if meta::is_deleting(&namespace) && !strategy::of(info).allowed_in_terminating_namespace() {
            return Err(ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                info.store_name(),
                "",
            ))
            .with_message_fixup(info, ns));
        }
        Ok(namespace)
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
        let mut warnings = if opts.manager.as_ref().is_some_and(|m| m.apply) {
            Vec::new()
        } else {
            managed_fields_warning(&body, None)
        };
        // The `generateName` prefix, when the name was made here.
        let mut generated: Option<String> = None;
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
                generated = Some(prefix.to_string());
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
            ] {
                m.remove(server_set);
            }
            // Computed by an apply, else not a client's to set.
            if !opts.manager.as_ref().is_some_and(|m| m.apply) {
                m.remove("managedFields");
            }
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
            if info.has_spec {
                m.insert("generation".into(), json!(1));
            }
        }
        set_type(info, &mut body);
        let kind = strategy::of(info);
        if kind.status_is_subresource(info)
            && let Some(obj) = body.as_object_mut()
        {
            obj.remove("status");
        }
        kind.prepare_for_create(&mut body);
        let namespace = match &ns {
            Some(ns) => Some(self.check_namespace(info, ns).await?),
            None => None,
        };
        let applied_fields = body.pointer("/metadata/managedFields").cloned();
        let mut admitted = admission::admit(info, body, None, opts.field_validation)?;
        match &opts.manager {
            // An apply that creates: the fields are the applier's (see `managed::apply`).
            Some(m) if m.apply => {
                if let Some(fields) = applied_fields {
                    meta::metadata_mut(&mut admitted.object).insert("managedFields".into(), fields);
                }
            }
            Some(m) => crate::managed::record_update(None, &mut admitted.object, &m.name),
            None => {}
        }
        self.check_features(info, &admitted.object)?;
        if info == &PODS
            && let Some(ns) = &ns
        {
            self.admit_pod(ns, &mut admitted.object).await?;
        }
        if let Some(namespace) = &namespace {
            pod_security(info, namespace, &mut admitted)?;
        }
        // Last, as kube-apiserver runs ResourceQuota; held until stored.
        let _quota_lock = match &ns {
            Some(ns) => self.check_quota(info, ns, &admitted.object).await?,
            None => None,
        };
        if let Some(prefix) = &generated {
            self.unique_generated_name(info, ns.as_deref(), prefix, &mut admitted.object)
                .await?;
        }
        let name = meta::name(&admitted.object).unwrap_or("").to_string();
        let reservation = self
            .reserve(info, &mut admitted.object, None, Subresource::Main)
            .await?;
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
        reservation.commit();
        if info == &NAMESPACES {
            // The namespace's `default` ServiceAccount comes with it, so its first
            // pods need not wait for the serviceaccounts controller.
            Box::pin(self.ensure_service_account(&name, policy::DEFAULT_SERVICE_ACCOUNT)).await;
        }
        Ok(Written {
            object: (*stored.object).clone(),
            warnings,
        })
    }

    /// A generated name that collides with a stored object is drawn again, up
    /// to 7 more times, as kube-apiserver does since 1.32 (`RetryGenerateName`):
    /// five random characters collide about once in a namespace of 30,000 pods
    /// with one prefix, and a controller's create should not fail for it.
    async fn unique_generated_name(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        prefix: &str,
        object: &mut Value,
    ) -> Result<(), ApiError> {
        for _ in 0..7 {
            let name = meta::name(object).unwrap_or("");
            let key = Self::key(info, ns, name);
            if self.store.get(&key).await.map_err(store_error)?.is_none() {
                break;
            }
            let name = format!("{prefix}{}", random_suffix());
            meta::metadata_mut(object).insert("name".into(), json!(name));
        }
        Ok(())
    }

    /// Creates the ServiceAccount `name` in `ns` unless it exists (best effort:
    /// the serviceaccounts controller makes up for a failure).
    pub async fn ensure_service_account(&self, ns: &str, name: &str) {
        let body = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": ns}});
        match self
            .create(&SERVICEACCOUNTS, Some(ns), body, WriteOptions::default())
            .await
        {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => {
                tracing::debug!(namespace = ns, account = name, error = %e.message, "cannot create the service account yet");
            }
        }
    }

    /// PUT: replaces the object (or only its status). A `metadata.resourceVersion` in
    /// the body is a precondition; without one the write is retried on conflict.
    #[allow(clippy::too_many_arguments)]
    pub async fn update(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        body: Value,
        sub: Subresource,
        opts: WriteOptions,
        guard: Option<WriteGuard<'_>>,
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
            guard,
        )
        .await
    }

    /// PATCH with a merge, strategic-merge or JSON patch.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        patch: &crate::patch::Patch,
        sub: Subresource,
        opts: WriteOptions,
        guard: Option<WriteGuard<'_>>,
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
            guard,
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
                None,
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
        guard: Option<WriteGuard<'_>>,
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
            let apply =
                opts.manager.as_ref().is_some_and(|m| m.apply) && sub != Subresource::Status;
            let applied_fields = if apply {
                incoming.pointer("/metadata/managedFields").cloned()
            } else {
                None
            };
            // A client's own managedFields replace the recorded ones, as in
            // Kubernetes (kubectl moves a client-side apply's fields this way).
            let sent_fields = match (&opts.manager, incoming.pointer("/metadata/managedFields")) {
                (Some(_), Some(sent))
                    if !apply && Some(sent) != old.pointer("/metadata/managedFields") =>
                {
                    Some(crate::managed::from_client(sent))
                }
                _ => None,
            };
            let mut warnings = if apply || opts.manager.is_some() {
                Vec::new()
            } else {
                managed_fields_warning(&incoming, Some(old))
            };
            let mut merged = merge_for_write(info, old, incoming, sub)?;
            let set_fields = |obj: &mut Value| {
                let m = meta::metadata_mut(obj);
                match &applied_fields {
                    Some(f) => {
                        m.insert("managedFields".into(), f.clone());
                    }
                    None => {
                        m.remove("managedFields");
                    }
                }
            };
            if apply {
                set_fields(&mut merged);
            } else if let Some(sent) = &sent_fields {
                // Compared with the old object below: a write of only these is a
                // write.
                let m = meta::metadata_mut(&mut merged);
                match sent {
                    Some(f) => m.insert("managedFields".into(), f.clone()),
                    None => m.remove("managedFields"),
                };
            }
            if let Some(guard) = guard {
                guard(old, &merged)?;
            }
            if merged == *old {
                return Ok(Written {
                    object: old.clone(),
                    warnings,
                });
            }
            let admitted = admission::admit(info, merged, Some(old), opts.field_validation)?;
            if sub != Subresource::Status {
                self.check_features(info, &admitted.object)?;
            }
            warnings.extend(admitted.warnings);
            let mut object = admitted.object;
            if sub != Subresource::Status {
                match (&opts.manager, sent_fields) {
                    (Some(_), _) if apply => set_fields(&mut object),
                    (Some(_), Some(Some(fields))) => {
                        meta::metadata_mut(&mut object).insert("managedFields".into(), fields);
                    }
                    // An empty list: start over, every field the writer's.
                    (Some(m), Some(None)) => {
                        meta::metadata_mut(&mut object).remove("managedFields");
                        crate::managed::record_update(None, &mut object, &m.name);
                    }
                    (Some(m), None) => {
                        crate::managed::record_update(Some(old), &mut object, &m.name)
                    }
                    (None, _) => {}
                }
            }
            let reservation = self.reserve(info, &mut object, Some(old), sub).await?;
            check_limits(info, name, &object)?;
            if admitted_equal(&object, old) {
                return Ok(Written {
                    object: old.clone(),
                    warnings,
                });
            }
            if sub != Subresource::Status && info.has_spec && object.get("spec") != old.get("spec")
            {
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
                    if finalized {
                        drop(reservation);
                        self.release(info, old).await;
                    } else {
                        reservation.commit();
                    }
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

    /// Creates the namespaces that exist from the start.
    pub async fn ensure_namespace(&self, name: &str) -> Result<(), ApiError> {
        if self.try_get(&NAMESPACES, None, name).await?.is_some() {
            return Ok(());
        }
        let mut body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        // kube-system holds the cluster's own agents (log shippers, network
        // plugins: DaemonSets that mount host paths), so it is made privileged,
        // as Kubernetes leaves it; every other namespace starts at baseline.
        if name == "kube-system" {
            body["metadata"]["labels"] = json!({
                tugboat_api::pod_security::ENFORCE_LABEL: "privileged"
            });
        }
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

/// Pod Security admission at the namespace's level (`baseline` unless the
/// namespace's `pod-security.kubernetes.io/enforce` label says otherwise): a pod
/// that breaks it is refused with Kubernetes' 403, whoever creates it (a
/// ReplicaSet's pods too); a Deployment or ReplicaSet whose template breaks it
/// is admitted with Kubernetes' warning, as its pods will be refused.
fn pod_security(
    info: &ResourceInfo,
    namespace: &Value,
    admitted: &mut admission::Admitted,
) -> Result<(), ApiError> {
    use tugboat_api::pod_security::{Level, namespace_level, violations};
    let spec = match info.kind {
        "Pod" => admitted.object.get("spec"),
        "Deployment" | "ReplicaSet" | "DaemonSet" | "ReplicationController" | "Job" => {
            admitted.object.pointer("/spec/template/spec")
        }
        "CronJob" => admitted
            .object
            .pointer("/spec/jobTemplate/spec/template/spec"),
        _ => return Ok(()),
    };
    let Some(spec) = spec else {
        return Ok(());
    };
    // Admission decoded it just now; if it cannot be read, refuse rather than
    // admit unchecked.
    let spec = serde_json::from_value(spec.clone()).map_err(|e| {
        ApiError::internal(format!(
            "cannot check the pod spec against Pod Security: {e}"
        ))
    })?;
    let labels = namespace
        .pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok());
    let level = match namespace_level(labels.as_ref()) {
        // Restricted's own checks are not implemented: baseline's apply.
        Level::Restricted => Level::Baseline,
        other => other,
    };
    let Some(found) = violations(level, &spec) else {
        return Ok(());
    };
    let policy = format!("{}:latest", level.as_str());
    if info.kind == "Pod" {
        let name = meta::name(&admitted.object).unwrap_or("");
        let ns = meta::namespace(&admitted.object).unwrap_or("");
        let mut e = ApiError::forbidden(format!(
            "pods {name:?} is forbidden: violates PodSecurity {policy:?}: {found} (to allow it, label the namespace: {}={} on namespace {ns})",
            tugboat_api::pod_security::ENFORCE_LABEL,
            Level::Privileged.as_str(),
        ));
        e.name = Some(name.to_string());
        e.kind = Some("pods".to_string());
        e.group = Some(String::new());
        return Err(e);
    }
    admitted.warnings.push(format!(
        "would violate PodSecurity {policy:?}: {found} (label the namespace {}=privileged to allow it)",
        tugboat_api::pod_security::ENFORCE_LABEL
    ));
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::RedbStore;
    use tugboat_api::resource::CONFIGMAPS;

    #[tokio::test]
    async fn a_generated_name_that_is_taken_is_drawn_again() {
        let registry = Registry::new(Arc::new(RedbStore::in_memory(100).unwrap()));
        registry.ensure_namespace("default").await.unwrap();
        let cm = |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
        registry
            .create(
                &CONFIGMAPS,
                Some("default"),
                cm("web-xxxxx"),
                WriteOptions::default(),
            )
            .await
            .unwrap();
        // As if the random suffix had come out as the stored one's.
        let mut object = cm("web-xxxxx");
        registry
            .unique_generated_name(&CONFIGMAPS, Some("default"), "web-", &mut object)
            .await
            .unwrap();
        let name = meta::name(&object).unwrap();
        assert_ne!(name, "web-xxxxx");
        assert!(
            name.starts_with("web-") && name.len() == "web-xxxxx".len(),
            "{name}"
        );
        // A free name is kept.
        let mut free = cm("web-yyyyy");
        registry
            .unique_generated_name(&CONFIGMAPS, Some("default"), "web-", &mut free)
            .await
            .unwrap();
        assert_eq!(meta::name(&free), Some("web-yyyyy"));
    }
}
