//! The verbs on resources: get, list, watch, create, update, patch, delete, and the
//! `status` and `scale` subresources, answered the way the Kubernetes API server
//! answers them.
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tracing::Instrument;
use tugboat_api::resource::{NODES, PODS, ResourceInfo};
use tugboat_api::{ApiError, meta};

use super::accept::{self, Shape};
use super::path::{self, Target};
use super::query::Query;
use super::request::{
    content_type, delete_options, not_allowed, parse_body, read_body, write_options,
};
use super::table::{self, Include};
use super::{
    ApiResponse, AppState, discovery, json_response, logs, respond, respond_json, scale, stream,
};
use crate::auth::authorize::{self, Attributes, Condition, Decision, Verb};
use crate::auth::{Kind, User};
use crate::patch::Patch;
use crate::registry::{ListOptions, Subresource, WatchItem, WatchStart};

pub async fn dispatch(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let user = parts.extensions.get::<User>().cloned();
    let method = parts.method;
    let uri = parts.uri;
    let headers = parts.headers;
    let span = tracing::debug_span!("request", %method, path = uri.path());
    // The span is attached to the future rather than entered: a guard held across
    // the awaits below would mark whatever else runs on this thread meanwhile.
    async {
        let result = async {
            let user = user.ok_or_else(|| ApiError::new(401, "Unauthorized", "Unauthorized"))?;
            let query = Query::parse(uri.query())?;
            let target = path::parse(uri.path())?;
            if let Target::Object {
                info,
                namespace: Some(ns),
                name,
                subresource: Some(sub),
            } = &target
                && *info == &PODS
                && stream::SUBRESOURCES.contains(&sub.as_str())
            {
                authorize_target(&user, &method, &target, &query)?;
                return stream::relay(
                    &state,
                    ns,
                    name,
                    sub,
                    &method,
                    uri.query(),
                    &headers,
                    on_upgrade,
                )
                .await;
            }
            handle(&state, &user, &method, uri.path(), &query, &headers, body).await
        }
        .await;
        match result {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(code = e.code, reason = %e.reason, message = %e.message, "request failed");
                ApiResponse(e).into_response()
            }
        }
    }
    .instrument(span)
    .await
}

/// The shortest time a watch is kept open before the server ends it (it ends
/// between this and twice this).
const MIN_WATCH_SECS: u64 = 1800;

/// The verb a request is, for authorization.
fn verb_of(method: &Method, target: &Target, query: &Query) -> Result<Option<Verb>, ApiError> {
    if let Target::Object {
        subresource: Some(sub),
        ..
    } = target
        && super::stream::SUBRESOURCES.contains(&sub.as_str())
    {
        // Connecting to a pod is a create, whatever the method (kube-apiserver's
        // check since WebSocket upgrades arrive as GET).
        return Ok(Some(Verb::Create));
    }
    Ok(Some(match (method, target) {
        (&Method::GET, Target::Collection { .. }) if query.flag("watch")? => Verb::Watch,
        (&Method::GET, Target::Collection { .. }) => Verb::List,
        (&Method::GET, _) => Verb::Get,
        (&Method::POST, _) => Verb::Create,
        (&Method::PUT, _) => Verb::Update,
        (&Method::PATCH, _) => Verb::Patch,
        (&Method::DELETE, _) => Verb::Delete,
        _ => return Ok(None),
    }))
}

/// Whether `user` may make this request: `Ok(None)` when it may outright,
/// `Ok(Some((condition, attributes)))` when the handler must also check
/// `condition` (and refuse with `attributes` when it does not hold).
fn authorize_target<'a>(
    user: &User,
    method: &Method,
    target: &'a Target,
    query: &Query,
) -> Result<Option<(Condition, Attributes<'a>)>, ApiError> {
    // Discovery is for every authenticated user.
    if matches!(target, Target::Group { .. } | Target::GroupVersion { .. }) {
        return Ok(None);
    }
    let Some(verb) = verb_of(method, target, query)? else {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow the method {method} here"
        )));
    };
    let attrs = match target {
        Target::Group { .. } | Target::GroupVersion { .. } => return Ok(None),
        Target::Collection { info, namespace } => Attributes {
            verb,
            info,
            namespace: namespace.as_deref(),
            name: None,
            subresource: None,
        },
        Target::Object {
            info,
            namespace,
            name,
            subresource,
        } => Attributes {
            verb,
            info,
            namespace: namespace.as_deref(),
            name: Some(name.as_str()),
            subresource: subresource.as_deref(),
        },
    };
    match authorize::authorize(user, &attrs) {
        Decision::Allow => Ok(None),
        Decision::Deny(reason) => Err(authorize::forbidden(user, &attrs, reason.as_deref())),
        Decision::AllowIf(c) => Ok(Some((c, attrs))),
    }
}

/// Checks a condition that needs the stored object: the pod must be bound to
/// the node asking. A pod that does not exist is a 404, as for anyone. Returns
/// the pod's UID, so that a delete can be made conditional on it.
async fn check_stored(
    state: &AppState,
    user: &User,
    condition: &Option<(Condition, Attributes<'_>)>,
) -> Result<Option<String>, ApiError> {
    let Some((Condition::PodBoundTo(node), attrs)) = condition else {
        return Ok(None);
    };
    let name = attrs.name.unwrap_or("");
    let pod = state
        .registry
        .get(attrs.info, attrs.namespace, name)
        .await?;
    let bound = pod.pointer("/spec/nodeName").and_then(Value::as_str);
    if bound == Some(node.as_str()) {
        return Ok(meta::uid(&pod).map(str::to_string));
    }
    Err(authorize::forbidden(
        user,
        attrs,
        Some(&format!(
            "no relationship found between node '{node}' and this object"
        )),
    ))
}

/// Checks a condition on the request itself: a node's list or watch of pods
/// must select its own.
fn check_selector(
    user: &User,
    query: &Query,
    condition: &Option<(Condition, Attributes<'_>)>,
) -> Result<(), ApiError> {
    let Some((Condition::SelectsNode(node), attrs)) = condition else {
        return Ok(());
    };
    if authorize::selects_node(query.get("fieldSelector"), node) {
        return Ok(());
    }
    Err(authorize::forbidden(
        user,
        attrs,
        Some(&format!(
            "node {node:?} can only list and watch pods with fieldSelector spec.nodeName={node}"
        )),
    ))
}

/// Checks a condition on the object created: a node creates only its own Node
/// and Lease.
fn check_created(
    user: &User,
    obj: &Value,
    condition: &Option<(Condition, Attributes<'_>)>,
) -> Result<(), ApiError> {
    let Some((Condition::CreatesName(want), attrs)) = condition else {
        return Ok(());
    };
    if meta::name(obj) == Some(want.as_str()) {
        return Ok(());
    }
    Err(authorize::forbidden(
        user,
        attrs,
        Some(&format!("node {want:?} may create only its own")),
    ))
}

type Guard = Box<dyn Fn(&Value, &Value) -> Result<(), ApiError> + Send + Sync>;

/// What `user` may not change in a write of `info`/`name`, whatever the
/// authorizer allowed: where a node's agent is (anyone but that node), what a
/// node may not change about its own Node (NodeRestriction), and — for a node
/// writing a pod's status — that the pod is still bound to it. None without
/// authentication (`--insecure-http`).
fn write_guard(
    user: &User,
    info: &'static ResourceInfo,
    name: &str,
    condition: &Option<(Condition, Attributes<'_>)>,
    insecure: bool,
) -> Option<Guard> {
    if insecure {
        return None;
    }
    if info == &NODES {
        let address = node_address_guard(user, name);
        let own = matches!(&user.kind, Kind::Node(n) if n == name);
        let restrict = node_self_guard(name, true);
        return Some(Box::new(move |old: &Value, new: &Value| {
            address(old, new)?;
            if own {
                restrict(old, new)?;
            }
            Ok(())
        }));
    }
    if let Some((Condition::PodBoundTo(node), _)) = condition {
        let node = node.clone();
        return Some(Box::new(move |old: &Value, _new: &Value| {
            match old.pointer("/spec/nodeName").and_then(Value::as_str) {
                Some(n) if n == node => Ok(()),
                _ => Err(ApiError::forbidden(format!(
                    "no relationship found between node '{node}' and this object"
                ))),
            }
        }));
    }
    None
}

/// The labels a node may set on itself (NodeRestriction's allowed set under
/// the `kubernetes.io` and `k8s.io` prefixes); others under those prefixes, and
/// all of `node-restriction.kubernetes.io/`, are an admin's to set.
fn node_may_set_label(key: &str) -> bool {
    const ALLOWED: [&str; 8] = [
        "kubernetes.io/hostname",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "node.kubernetes.io/instance-type",
    ];
    let (prefix, _) = key.split_once('/').unwrap_or(("", key));
    let restricted = prefix == "kubernetes.io"
        || prefix == "k8s.io"
        || prefix.ends_with(".kubernetes.io")
        || prefix.ends_with(".k8s.io");
    !restricted || ALLOWED.contains(&key)
}

/// What a node may not change about its own Node (Kubernetes' NodeRestriction):
/// its spec (taints, unschedulable: a cordon or drain is an admin's), its
/// finalizers and owners (which would keep it from being deleted, and its
/// credential from being revoked), and restricted labels.
fn node_self_guard(
    name: &str,
    update: bool,
) -> impl Fn(&Value, &Value) -> Result<(), ApiError> + Send + Sync + use<> {
    let name = name.to_string();
    move |old: &Value, new: &Value| {
        let refuse = |what: String| {
            Err(ApiError::forbidden(format!(
                "nodes {name:?} is forbidden: node {name:?} may not change {what} of its own Node"
            )))
        };
        let empty =
            |v: Option<&Value>| v.is_none_or(|v| v.is_null() || v == &json!({}) || v == &json!([]));
        let differ = |path: &str| {
            let (a, b) = (old.pointer(path), new.pointer(path));
            a != b && !(empty(a) && empty(b))
        };
        if update && differ("/spec") {
            return refuse("spec (taints, unschedulable)".into());
        }
        for (path, what) in [
            ("/metadata/finalizers", "metadata.finalizers"),
            ("/metadata/ownerReferences", "metadata.ownerReferences"),
        ] {
            if differ(path) {
                return refuse(what.into());
            }
        }
        let labels = |v: &Value| -> std::collections::BTreeMap<String, Value> {
            v.pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        };
        let (before, after) = (labels(old), labels(new));
        for key in before.keys().chain(after.keys()) {
            if before.get(key) != after.get(key) && !node_may_set_label(key) {
                return refuse(format!("label {key}"));
            }
        }
        Ok(())
    }
}

/// Where a node's agent is (its addresses and endpoint port) is set only by
/// that node: the controller connects there, and only the node knows.
fn node_address_guard(
    user: &User,
    name: &str,
) -> impl Fn(&Value, &Value) -> Result<(), ApiError> + Send + Sync + use<> {
    let user = user.clone();
    let name = name.to_string();
    move |old: &Value, new: &Value| {
        if matches!(&user.kind, Kind::Node(n) if *n == name) {
            return Ok(());
        }
        for field in ["/status/addresses", "/status/daemonEndpoints"] {
            if old.pointer(field) != new.pointer(field) {
                return Err(ApiError::forbidden(format!(
                    "nodes {name:?} is forbidden: User {:?} cannot change {}: only node {name}'s own credential may set where its agent is (restart its agent with --address to change it)",
                    user.name,
                    field.trim_start_matches('/').replace('/', "."),
                )));
            }
        }
        Ok(())
    }
}

async fn handle(
    state: &Arc<AppState>,
    user: &User,
    method: &Method,
    path: &str,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let target = path::parse(path)?;
    let registry = &state.registry;
    let condition = authorize_target(user, method, &target, query)?;
    check_selector(user, query, &condition)?;
    let bound_uid = check_stored(state, user, &condition).await?;
    // Read only once the caller may make this request at all.
    let body = &read_body(headers, body).await?;
    let insecure = matches!(state.auth.mode, crate::auth::Mode::InsecureHttp);
    let proto = accept::prefers_protobuf(headers);
    match &target {
        Target::Group { group } => match discovery::group(group) {
            Some(doc) if method == Method::GET => Ok(json_response(StatusCode::OK, &doc, &[])),
            _ => Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            )),
        },
        Target::GroupVersion { group, version } => match discovery::resource_list(group, version) {
            Some(doc) if method == Method::GET => Ok(json_response(StatusCode::OK, &doc, &[])),
            _ => Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource ({path})"),
            )),
        },
        Target::Collection { info, namespace } => {
            let info: &'static ResourceInfo = info;
            let ns = namespace.as_deref();
            match *method {
                Method::GET if query.flag("watch")? => watch(state, info, ns, query, headers).await,
                Method::GET => list(state, info, ns, query, headers).await,
                Method::POST => {
                    if namespace.is_none() && info.namespaced {
                        return Err(ApiError::method_not_allowed(format!(
                            "create {} needs a namespace: POST to {}",
                            info.plural,
                            info.collection_path(Some("NAMESPACE"))
                        )));
                    }
                    let opts = write_options(query, headers)?;
                    let (obj, mut warnings) = parse_body(info, body, headers, &opts)?;
                    check_created(user, &obj, &condition)?;
                    if info == &NODES && !insecure {
                        let name = meta::name(&obj).unwrap_or("");
                        node_address_guard(user, name)(&json!({}), &obj)?;
                        if matches!(&user.kind, Kind::Node(n) if n == name) {
                            node_self_guard(name, false)(&json!({}), &obj)?;
                        }
                    }
                    let written = registry.create(info, ns, obj, opts).await?;
                    warnings.extend(written.warnings);
                    Ok(respond(
                        StatusCode::CREATED,
                        &written.object,
                        &warnings,
                        proto,
                    ))
                }
                _ => Err(not_allowed(method, path)),
            }
        }
        Target::Object {
            info,
            namespace,
            name,
            subresource,
        } => {
            let info: &'static ResourceInfo = info;
            let name = name.as_str();
            let ns = namespace.as_deref();
            let sub = subresource.as_deref();
            let guard = write_guard(user, info, name, &condition, insecure);
            let guard = guard.as_deref();
            match (sub, method.clone()) {
                (None | Some("status"), Method::GET) => {
                    let shape = accept::read_shape(headers)?;
                    let include = Include::from_query(query)?;
                    let stored = registry
                        .get_stored(info, ns, name)
                        .await?
                        .ok_or_else(|| ApiError::not_found(&info.store_name(), name))?;
                    // Plain JSON is the object as stored: its bytes as they were
                    // encoded when it was written.
                    if shape == Shape::Json
                        && let Some(json) = stored.json()
                    {
                        return Ok(respond_json(StatusCode::OK, json.clone()));
                    }
                    let body = table::object(info, &stored.object, shape, include, true);
                    Ok(respond(StatusCode::OK, &body, &[], proto))
                }
                (None | Some("status"), Method::PUT) => {
                    let opts = write_options(query, headers)?;
                    let (obj, mut warnings) = parse_body(info, body, headers, &opts)?;
                    let written = registry
                        .update(info, ns, name, obj, subresource_of(info, sub)?, opts, guard)
                        .await?;
                    warnings.extend(written.warnings);
                    Ok(respond(StatusCode::OK, &written.object, &warnings, proto))
                }
                (None, Method::PATCH) if is_apply(content_type(headers)) => {
                    apply(state, info, ns, name, query, headers, body, guard, proto).await
                }
                (None | Some("status"), Method::PATCH) => {
                    let patch = Patch::parse(content_type(headers), body)?;
                    let written = registry
                        .patch(
                            info,
                            ns,
                            name,
                            &patch,
                            subresource_of(info, sub)?,
                            write_options(query, headers)?,
                            guard,
                        )
                        .await?;
                    Ok(respond(
                        StatusCode::OK,
                        &written.object,
                        &written.warnings,
                        proto,
                    ))
                }
                (None, Method::DELETE) => {
                    let mut opts = delete_options(query, body, headers)?;
                    // A node releases the very pod it was found bound to.
                    if let Some(uid) = bound_uid {
                        opts.precondition_uid.get_or_insert(uid);
                    }
                    let obj = registry.delete(info, ns, name, &opts).await?;
                    if meta::is_deleting(&obj) {
                        return Ok(respond(StatusCode::ACCEPTED, &obj, &[], proto));
                    }
                    // Gone at once: kube-apiserver answers with the object only for
                    // the kinds whose registries return it, else a Success Status.
                    if matches!(info.kind, "Pod" | "Service" | "Namespace") {
                        return Ok(respond(StatusCode::OK, &obj, &[], proto));
                    }
                    let status = json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Success",
                        "details": {"name": name, "group": info.group, "kind": info.plural,
                                    "uid": meta::uid(&obj).unwrap_or("")},
                    });
                    Ok(respond(StatusCode::OK, &status, &[], proto))
                }
                (Some("log"), Method::GET) if info.kind == "Pod" => {
                    logs::pod_log(state, ns.unwrap_or("default"), name, query).await
                }
                (Some("scale"), m) if info.has_scale => {
                    scale::scale(state, info, ns, name, &m, query, headers, body).await
                }
                (Some(other), _) if other != "status" && other != "scale" => Err(ApiError::new(
                    404,
                    "NotFound",
                    format!(
                        "{} has no subresource \"{other}\" here yet",
                        info.store_name()
                    ),
                )),
                _ => Err(not_allowed(method, path)),
            }
        }
    }
}

fn subresource_of(info: &ResourceInfo, sub: Option<&str>) -> Result<Subresource, ApiError> {
    match sub {
        None => Ok(Subresource::Main),
        Some("status") if info.has_status => Ok(Subresource::Status),
        Some(other) => Err(ApiError::new(
            404,
            "NotFound",
            format!("{} has no subresource \"{other}\"", info.store_name()),
        )),
    }
}

async fn list(
    state: &Arc<AppState>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let shape = accept::read_shape(headers)?;
    let include = Include::from_query(query)?;
    let (labels, fields) = query.selectors(info.kind)?;
    let limit = query.count("limit")?.filter(|l| *l > 0);
    let continue_token = query.get("continue").filter(|c| !c.is_empty());
    let resource_version = query.revision_match()?;
    if continue_token.is_some() && query.resource_version()?.is_some() {
        return Err(ApiError::bad_parameter(
            "resourceVersion",
            query.get("resourceVersion").unwrap_or(""),
            "specifying resource version is not allowed when using continue",
        ));
    }
    query.count("timeoutSeconds")?;
    let opts = ListOptions {
        limit: limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
        continue_token: continue_token.map(str::to_string),
        resource_version,
    };
    let page = state
        .registry
        .list_page(info, ns, &labels, &fields, &opts)
        .await?;
    let mut metadata = json!({"resourceVersion": page.revision.to_string()});
    if let Some(c) = &page.continue_token {
        metadata["continue"] = json!(c);
    }
    if let Some(r) = page.remaining {
        metadata["remainingItemCount"] = json!(r);
    }
    if shape == Shape::Json {
        return Ok(respond_json(
            StatusCode::OK,
            table::json_list(info, &page.items, &metadata).into(),
        ));
    }
    let items: Vec<&Value> = page.items.iter().map(|s| &*s.object).collect();
    let body = table::list(info, &items, shape, include, metadata);
    Ok(respond(
        StatusCode::OK,
        &body,
        &[],
        shape == Shape::Protobuf,
    ))
}

async fn watch(
    state: &Arc<AppState>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let shape = accept::read_shape(headers)?;
    let include = Include::from_query(query)?;
    let (labels, fields) = query.selectors(info.kind)?;
    let from = query.resource_version()?;
    let bookmarks = query.flag("allowWatchBookmarks")?;
    let send_initial = match query.get("sendInitialEvents") {
        None | Some("") => None,
        Some(_) => Some(query.flag("sendInitialEvents")?),
    };
    if send_initial == Some(true) {
        // kube-apiserver's rules for a streaming list.
        if !bookmarks {
            return Err(ApiError::bad_parameter(
                "allowWatchBookmarks",
                query.get("allowWatchBookmarks").unwrap_or(""),
                "sendInitialEvents requires allowWatchBookmarks=true",
            ));
        }
        if query.get("resourceVersionMatch") != Some("NotOlderThan") {
            return Err(ApiError::bad_parameter(
                "resourceVersionMatch",
                query.get("resourceVersionMatch").unwrap_or(""),
                "sendInitialEvents requires resourceVersionMatch=NotOlderThan",
            ));
        }
    }
    let start = match (send_initial, from) {
        (Some(true), rv) => WatchStart::Initial(rv),
        (Some(false), None) => WatchStart::Now,
        (_, Some(rv)) => WatchStart::After(rv),
        (None, None) => WatchStart::Initial(None),
    };
    // Every watch ends within 30 to 60 minutes (kube-apiserver's
    // --min-request-timeout, randomised the same way), so clients relist and
    // re-authenticate: a revoked node or deleted token does not keep a stream.
    let server_max = Duration::from_secs(
        MIN_WATCH_SECS + (uuid::Uuid::new_v4().as_u128() % u128::from(MIN_WATCH_SECS)) as u64,
    );
    let timeout = Some(
        query
            .count("timeoutSeconds")?
            .map(Duration::from_secs)
            .map_or(server_max, |t| t.min(server_max)),
    );
    let watch = match state.registry.watch(info, ns, labels, fields, start).await {
        Ok(w) => w,
        // Too old a revision: one ERROR event, as kube-apiserver sends it, so
        // that clients relist.
        Err(e) if e.code == 410 => {
            let frame = watch_frame(("ERROR".to_string(), status_object(&e)), shape);
            return Ok(watch_response(Body::from(frame), shape));
        }
        Err(e) => return Err(e),
    };
    let shutdown = state.shutdown.clone();
    let initial_end = send_initial == Some(true);
    let mut last_rv = watch.revision.to_string();
    let initial = futures::stream::iter(watch.initial.into_iter().map(|object| {
        Ok(WatchItem {
            event_type: "ADDED",
            object,
            encoded: None,
        })
    }));
    // The end of the initial events, when asked for: a BOOKMARK at the revision
    // they show, annotated as client-go's streaming lists expect.
    let end_marker = futures::stream::iter(initial_end.then(|| Ok(bookmark(info, &last_rv, true))));
    let ticks = if bookmarks {
        let every =
            tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        tokio_stream::wrappers::IntervalStream::new(every)
            .map(|_| {
                Ok(WatchItem {
                    event_type: "BOOKMARK",
                    object: Arc::new(Value::Null),
                    encoded: None,
                })
            })
            .left_stream()
    } else {
        futures::stream::pending().right_stream()
    };
    let events = initial
        .chain(end_marker)
        .chain(futures::stream::select(watch.live, ticks));
    let mut first = true;
    let lines = events
        .map(move |item| {
            let line = match item {
                Ok(item) if item.event_type == "BOOKMARK" && item.object.is_null() => (
                    "BOOKMARK".to_string(),
                    (*bookmark(info, &last_rv, false).object).clone(),
                ),
                Ok(item) => {
                    if let Some(rv) = item
                        .object
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                    {
                        last_rv = rv.to_string();
                    }
                    if item.event_type == "BOOKMARK" {
                        return Ok::<_, std::convert::Infallible>(Bytes::from(watch_frame(
                            ("BOOKMARK".to_string(), (*item.object).clone()),
                            shape,
                        )));
                    }
                    // Plain JSON sends the object as stored, encoded once for
                    // every watcher when it was written.
                    if shape == Shape::Json
                        && let Some(json) = item.json()
                    {
                        return Ok(Bytes::from(json_watch_frame(item.event_type, json)));
                    }
                    // Column definitions go with the first event only, as
                    // kube-apiserver sends them; kubectl keeps them.
                    let object = table::object(info, &item.object, shape, include, first);
                    first = false;
                    (item.event_type.to_string(), object)
                }
                Err(e) => ("ERROR".to_string(), status_object(&e)),
            };
            Ok::<_, std::convert::Infallible>(Bytes::from(watch_frame(line, shape)))
        })
        .take_until(async move { shutdown.cancelled().await });
    let body = match timeout {
        Some(t) => Body::from_stream(lines.take_until(tokio::time::sleep(t))),
        None => Body::from_stream(lines),
    };
    Ok(watch_response(body, shape))
}

/// How often a watch that allows bookmarks gets one (kube-apiserver sends them
/// about once a minute).
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// A BOOKMARK: an object of the watched kind with only a resourceVersion (and,
/// for the end of a streaming list's initial events, its annotation).
fn bookmark(info: &ResourceInfo, rv: &str, initial_end: bool) -> WatchItem {
    let mut metadata = json!({"resourceVersion": rv});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    WatchItem {
        event_type: "BOOKMARK",
        object: Arc::new(json!({
            "kind": info.kind,
            "apiVersion": info.api_version(),
            "metadata": metadata,
        })),
        encoded: None,
    }
}

fn watch_response(body: Body, shape: Shape) -> Response {
    let mut resp = Response::new(body);
    let media = if shape == Shape::Protobuf {
        "application/vnd.kubernetes.protobuf;stream=watch"
    } else {
        "application/json"
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, media.parse().expect("static header"));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        "no-cache, private".parse().expect("static header"),
    );
    resp
}

fn status_object(e: &ApiError) -> Value {
    let mut status = serde_json::to_value(e.to_status()).unwrap_or_default();
    status["kind"] = "Status".into();
    status["apiVersion"] = "v1".into();
    status
}

/// One watch event as the stream carries it: a JSON line, or a protobuf frame.
fn watch_frame((event_type, object): (String, Value), shape: Shape) -> Vec<u8> {
    if shape == Shape::Protobuf {
        match tugboat_api::protobuf::encode_watch_event(&event_type, &object) {
            Ok(frame) => return frame,
            Err(e) => {
                let status = status_object(&ApiError::internal(format!(
                    "the event cannot be sent as protobuf: {e}"
                )));
                return tugboat_api::protobuf::encode_watch_event("ERROR", &status)
                    .unwrap_or_default();
            }
        }
    }
    let mut bytes =
        serde_json::to_vec(&json!({"type": event_type, "object": object})).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// A JSON watch event around an object's JSON as stored: the same line
/// [`watch_frame`] makes, without encoding the object again.
fn json_watch_frame(event_type: &str, object: &[u8]) -> Vec<u8> {
    let event_type = Value::from(event_type).to_string();
    let mut frame = Vec::with_capacity(object.len() + event_type.len() + 22);
    frame.extend_from_slice(br#"{"object":"#);
    frame.extend_from_slice(object);
    frame.extend_from_slice(br#","type":"#);
    frame.extend_from_slice(event_type.as_bytes());
    frame.extend_from_slice(b"}\n");
    frame
}

/// `application/apply-patch+yaml` (and its JSON and CBOR siblings' names).
fn is_apply(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .starts_with("application/apply-patch")
}

/// Server-side apply: the body is the manager's whole intent for the object,
/// created if it does not exist (see [`crate::managed`]).
#[allow(clippy::too_many_arguments)]
async fn apply(
    state: &Arc<AppState>,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    query: &Query,
    headers: &HeaderMap,
    body: &Bytes,
    guard: Option<crate::registry::WriteGuard<'_>>,
    proto: bool,
) -> Result<Response, ApiError> {
    let ct = content_type(headers);
    if !ct.starts_with("application/apply-patch+yaml")
        && !ct.starts_with("application/apply-patch+json")
    {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the apply body must be application/apply-patch+yaml, not {ct}"),
        ));
    }
    let manager = query.get("fieldManager").filter(|m| !m.is_empty()).ok_or_else(|| {
        let mut e = ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        );
        e.reason = "Invalid".into();
        e.code = 422;
        e
    })?;
    crate::managed::manager_name(Some(manager), None)?;
    let force = query.flag("force")?;
    let mut opts = write_options(query, headers)?;
    opts.manager = Some(crate::registry::FieldManager {
        name: manager.to_string(),
        apply: true,
    });
    // YAML is a superset of JSON: one reader takes both.
    let (mut applied, _) = parse_body(info, body, &header_map_yaml(), &opts)?;
    if applied.get("apiVersion").and_then(Value::as_str) != Some(info.api_version().as_str())
        || applied.get("kind").and_then(Value::as_str) != Some(info.kind)
    {
        return Err(ApiError::bad_request(format!(
            "the applied object must have apiVersion {:?} and kind {:?}",
            info.api_version(),
            info.kind
        )));
    }
    match meta::name(&applied) {
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        Some(_) => {}
        None => {
            meta::metadata_mut(&mut applied).insert("name".into(), json!(name));
        }
    }
    let registry = &state.registry;
    for _ in 0..3 {
        let patch = Patch::Apply {
            applied: applied.clone(),
            manager: manager.to_string(),
            force,
        };
        match registry
            .patch(
                info,
                ns,
                name,
                &patch,
                Subresource::Main,
                opts.clone(),
                guard,
            )
            .await
        {
            Ok(written) => {
                return Ok(respond(
                    StatusCode::OK,
                    &written.object,
                    &written.warnings,
                    proto,
                ));
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        // Not there: the apply creates it, every field its manager's.
        let created = crate::managed::apply(None, &applied, manager, force)?;
        match registry.create(info, ns, created, opts.clone()).await {
            Ok(written) => {
                return Ok(respond(
                    StatusCode::CREATED,
                    &written.object,
                    &written.warnings,
                    proto,
                ));
            }
            // Created meanwhile by someone else: apply to it.
            Err(e) if e.code == 409 && e.reason == "AlreadyExists" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(
        &info.store_name(),
        name,
        "the object was created and deleted while being applied; try again",
    ))
}

/// Headers that make `parse_body` read YAML.
fn header_map_yaml() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        "application/yaml".parse().expect("static header"),
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_around_the_stored_bytes_is_the_frame_encoding_would_make() {
        let objects = [
            json!({}),
            json!({"metadata": {"name": "a", "resourceVersion": "7"},
                   "data": {"q": "say \"hi\"\n\t\\ </script>", "u": "grüße 🚢 \u{2028}",
                            "n": [1.5, -0.0, 1e300, 12345678901234567890u64]}}),
        ];
        for object in objects {
            let stored = serde_json::to_vec(&object).unwrap();
            for event_type in ["ADDED", "MODIFIED", "DELETED"] {
                let spliced = json_watch_frame(event_type, &stored);
                let encoded = watch_frame((event_type.to_string(), object.clone()), Shape::Json);
                assert_eq!(
                    String::from_utf8_lossy(&spliced),
                    String::from_utf8_lossy(&encoded)
                );
                let line: Value = serde_json::from_slice(&spliced).unwrap();
                assert_eq!(
                    (&line["type"], &line["object"]),
                    (&json!(event_type), &object)
                );
            }
        }
    }
}
