//! The Service allocator: cluster IPs from the service network and node ports from
//! the node-port range, as kube-apiserver's IP and port allocators hand them out
//! (a random start, then probing forward; a requested value is checked for range and
//! for being free).
//!
//! # Why an in-memory set rebuilt from the store
//!
//! The stored Services are the one record of what is allocated: nothing else is
//! written, so nothing can disagree with them after a crash. In memory, one
//! [`Mutex`] guards the set of held addresses and ports. A write first *reserves*
//! what the new object needs (under the lock, so two concurrent creates can never
//! take the same value), then writes the store, then either commits (releasing what
//! the old object held and the new one no longer does) or, when the write fails or
//! is a dry run, drops the [`Reservation`], which returns what it took. What the
//! old object held stays reserved until its replacement is stored, so a value is
//! never free while a stored Service still names it. The set is built from the
//! stored Services the first time a Service is written after the registry opens, so
//! a restarted controller knows every allocation (a crash between reserve and store
//! write loses only the reservation, which nothing stored refers to).
//!
//! # Several API servers on one store
//!
//! An in-memory set cannot stop two servers handing out one value at the same
//! instant, so then each value a write takes is also *claimed* in the store: an
//! object per value (`ip-10.96.0.12`, `port-30080`) created only if it does
//! not exist, the way kube-apiserver's IPAddress objects make an address
//! unique. A server that loses the race to create a claim chooses again. What
//! is free is read from the store each time (the stored Services and the
//! claims), so a value another server frees is free here at once. Claims of
//! failed writes and of deleted Services are removed as they happen; the
//! garbage collector removes any claim no stored Service names once it is
//! older than [`CLAIM_GRACE`] (left by a controller that died mid-write).

mod range;

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tugboat_api::resource::SERVICES;
use tugboat_api::{ApiError, FieldError, meta};

use crate::store::{Key, Store, StoreError};

pub use range::{Ipv4Cidr, PortRange, RangeError};

/// The ranges Services draw from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceNetwork {
    pub cidr: Ipv4Cidr,
    pub node_ports: PortRange,
}

#[derive(Default)]
struct Held {
    ips: HashSet<Ipv4Addr>,
    ports: HashSet<i32>,
}

/// What one Service holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Claims {
    ip: Option<Ipv4Addr>,
    ports: BTreeSet<i32>,
}

fn claims(svc: &Value) -> Claims {
    let ip = svc
        .pointer("/spec/clusterIPs/0")
        .or_else(|| svc.pointer("/spec/clusterIP"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
        .filter_map(|n| i32::try_from(n).ok())
        .filter(|n| *n != 0)
        .collect();
    Claims { ip, ports }
}

/// The store resource claims are kept under. API resources are stored as
/// `plural` or `plural.group` and no plural starts with `_`, so no object of
/// the API can have this key, and the API never serves it.
pub const CLAIMS: &str = "_serviceclaims";

/// How old a claim no stored Service names must be before the garbage
/// collector removes it: far longer than any write between claiming and
/// storing its Service takes, and than clocks of controllers differ.
pub const CLAIM_GRACE: Duration = Duration::from_secs(120);

/// How many times a write chooses again after other servers claimed what it
/// chose, before it gives up with a conflict.
const CLAIM_ATTEMPTS: usize = 8;

/// The claim keys of what `c` holds.
fn claim_keys(c: &Claims) -> Vec<Key> {
    c.ip.iter()
        .map(|ip| format!("ip-{ip}"))
        .chain(c.ports.iter().map(|p| format!("port-{p}")))
        .map(|name| Key::new(CLAIMS, None, name))
        .collect()
}

/// `namespace/name` of a Service, as its claims name it.
fn owner_of(svc: &Value) -> String {
    format!(
        "{}/{}",
        meta::namespace(svc).unwrap_or(""),
        meta::name(svc).unwrap_or("")
    )
}

/// The allocator of one registry.
pub struct Allocator {
    network: ServiceNetwork,
    held: OnceCell<Mutex<Held>>,
    /// Other API servers allocate from the same ranges (several controllers on
    /// one etcd): values are claimed in this store (see the module's notes).
    shared: OnceLock<Arc<dyn Store>>,
}

impl Allocator {
    pub fn new(network: ServiceNetwork) -> Self {
        Allocator {
            network,
            held: OnceCell::new(),
            shared: OnceLock::new(),
        }
    }

    pub fn network(&self) -> ServiceNetwork {
        self.network
    }

    /// Other API servers allocate from the same ranges, in `store`: every
    /// value taken is claimed there, and what is free is read from there.
    pub fn set_shared(&self, store: Arc<dyn Store>) {
        let _ = self.shared.set(store);
    }

    /// Is allocation shared with other API servers?
    pub fn is_shared(&self) -> bool {
        self.shared.get().is_some()
    }

    /// What the stored Services and claims hold.
    async fn in_use(store: &dyn Store) -> Result<Held, ApiError> {
        let mut held = Held::default();
        let (services, _) = store
            .list(&SERVICES.store_name(), None)
            .await
            .map_err(super::store_error)?;
        for s in services {
            let c = claims(&s.object);
            held.ips.extend(c.ip);
            held.ports.extend(c.ports);
        }
        let (claimed, _) = store.list(CLAIMS, None).await.map_err(super::store_error)?;
        for c in claimed {
            let name = meta::name(&c.object).unwrap_or("");
            if let Some(ip) = name.strip_prefix("ip-").and_then(|s| s.parse().ok()) {
                held.ips.insert(ip);
            } else if let Some(port) = name.strip_prefix("port-").and_then(|s| s.parse().ok()) {
                held.ports.insert(port);
            }
        }
        Ok(held)
    }

    /// [`Allocator::reserve`] with other API servers: choose from what the
    /// store says is free, claim what was chosen, and choose again when
    /// another server claimed it first.
    async fn reserve_shared<'a>(
        &'a self,
        store: &Arc<dyn Store>,
        new: &mut Value,
        old: Option<&Value>,
    ) -> Result<Reservation<'a>, ApiError> {
        let before = old.map(claims).unwrap_or_default();
        let owner = owner_of(new);
        for _ in 0..CLAIM_ATTEMPTS {
            let mut held = Self::in_use(&**store).await?;
            let mut chosen = new.clone();
            let mut taken = Claims::default();
            let mut errs = Vec::new();
            self.claim_ip(&mut held, &mut chosen, &before, &mut taken, &mut errs)?;
            self.claim_ports(&mut held, &mut chosen, &before, &mut taken, &mut errs)?;
            if !errs.is_empty() {
                let name = meta::name(new).unwrap_or("");
                return Err(ApiError::invalid("Service", "", name, errs));
            }
            let mut made = Claims::default();
            let mut lost = false;
            for (key, value) in claim_keys(&taken).into_iter().zip(values(&taken)) {
                let claim = json!({
                    "metadata": {"name": key.name, "creationTimestamp": meta::now_rfc3339()},
                    "service": owner,
                });
                match store.create(&key, claim).await {
                    Ok(_) => value.add_to(&mut made),
                    Err(StoreError::AlreadyExists(_)) => {
                        tracing::debug!(claim = %key.name, "another API server claimed it first; choosing again");
                        lost = true;
                        break;
                    }
                    Err(e) => {
                        drop_claims(store, &made, &owner).await;
                        return Err(super::store_error(e));
                    }
                }
            }
            if lost {
                drop_claims(store, &made, &owner).await;
                continue;
            }
            *new = chosen;
            let after = claims(new);
            let released = Claims {
                ip: before.ip.filter(|ip| after.ip != Some(*ip)),
                ports: before.ports.difference(&after.ports).copied().collect(),
            };
            return Ok(Reservation {
                held: None,
                taken,
                released,
                shared: Some((Arc::clone(store), owner)),
            });
        }
        Err(ApiError::conflict(
            "services",
            meta::name(new).unwrap_or(""),
            &format!(
                "other API servers claimed every cluster IP or node port chosen, {CLAIM_ATTEMPTS} times in a row; try again"
            ),
        ))
    }

    /// The held set, built from the stored Services on first use.
    async fn held(&self, store: &dyn Store) -> Result<&Mutex<Held>, ApiError> {
        self.held
            .get_or_try_init(|| async {
                let (services, _) = store
                    .list(&SERVICES.store_name(), None)
                    .await
                    .map_err(super::store_error)?;
                let mut held = Held::default();
                for s in services {
                    let c = claims(&s.object);
                    let name = meta::name(&s.object).unwrap_or("");
                    if let Some(ip) = c.ip
                        && !held.ips.insert(ip)
                    {
                        tracing::warn!(service = name, %ip, "a stored Service shares its cluster IP with another");
                    }
                    for port in c.ports {
                        if !held.ports.insert(port) {
                            tracing::warn!(service = name, port, "a stored Service shares a node port with another");
                        }
                    }
                }
                tracing::debug!(ips = held.ips.len(), ports = held.ports.len(), "service allocations loaded");
                Ok(Mutex::new(held))
            })
            .await
    }

    /// Reserves what `new` needs beyond what `old` (the stored object, on updates)
    /// holds, filling in the cluster IP and node ports left out.
    pub async fn reserve<'a>(
        &'a self,
        store: &dyn Store,
        new: &mut Value,
        old: Option<&Value>,
    ) -> Result<Reservation<'a>, ApiError> {
        if let Some(shared) = self.shared.get() {
            return self.reserve_shared(shared, new, old).await;
        }
        let held = self.held(store).await?;
        let before = old.map(claims).unwrap_or_default();
        let mut guard = lock(held);
        let mut taken = Claims::default();
        let mut errs = Vec::new();
        let result = self.claim_ip(&mut guard, new, &before, &mut taken, &mut errs);
        let result =
            result.and_then(|()| self.claim_ports(&mut guard, new, &before, &mut taken, &mut errs));
        if result.is_err() || !errs.is_empty() {
            give_back(&mut guard, &taken);
            drop(guard);
            result?;
            let name = meta::name(new).unwrap_or("");
            return Err(ApiError::invalid("Service", "", name, errs));
        }
        drop(guard);
        let after = claims(new);
        let released = Claims {
            ip: before.ip.filter(|ip| after.ip != Some(*ip)),
            ports: before.ports.difference(&after.ports).copied().collect(),
        };
        Ok(Reservation {
            held: Some(held),
            taken,
            released,
            shared: None,
        })
    }

    fn claim_ip(
        &self,
        held: &mut Held,
        svc: &mut Value,
        before: &Claims,
        taken: &mut Claims,
        errs: &mut Vec<FieldError>,
    ) -> Result<(), ApiError> {
        let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
            return Ok(());
        };
        let wanted = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if wanted == "None" {
            return Ok(());
        }
        let cidr = self.network.cidr;
        let ip = if wanted.is_empty() {
            let (first, count) = cidr.dynamic();
            let start = random() % count;
            let found = (0..count)
                .map(|i| Ipv4Addr::from(first + ((start + i) % count) as u32))
                .find(|ip| !held.ips.contains(ip));
            let Some(ip) = found else {
                return Err(ApiError::internal(format!(
                    "failed to allocate a serviceIP: range is full: every address of the service network {cidr} is held; delete a Service or start the controller with a wider --service-cidr"
                )));
            };
            ip
        } else {
            // Admission let only IPv4 addresses through.
            let Ok(ip) = wanted.parse::<Ipv4Addr>() else {
                return Ok(());
            };
            if before.ip == Some(ip) {
                return Ok(());
            }
            let field = "spec.clusterIPs[0]";
            if !cidr.contains_usable(ip) {
                errs.push(FieldError::invalid(
                    field,
                    format!("\"{ip}\""),
                    &format!(
                        "provided IP is not in the valid range. The range of valid IPs is {cidr}"
                    ),
                ));
                return Ok(());
            }
            if held.ips.contains(&ip) {
                errs.push(FieldError::invalid(
                    field,
                    format!("\"{ip}\""),
                    "provided IP is already allocated",
                ));
                return Ok(());
            }
            ip
        };
        held.ips.insert(ip);
        taken.ip = Some(ip);
        spec.insert("clusterIP".into(), json!(ip.to_string()));
        spec.insert("clusterIPs".into(), json!([ip.to_string()]));
        Ok(())
    }

    fn claim_ports(
        &self,
        held: &mut Held,
        svc: &mut Value,
        before: &Claims,
        taken: &mut Claims,
        errs: &mut Vec<FieldError>,
    ) -> Result<(), ApiError> {
        let spec = svc.get("spec");
        let kind = spec
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        let allocate = match kind {
            "NodePort" => true,
            "LoadBalancer" => spec
                .and_then(|s| s.get("allocateLoadBalancerNodePorts"))
                .and_then(Value::as_bool)
                .unwrap_or(true),
            _ => false,
        };
        let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else {
            return Ok(());
        };
        let range = self.network.node_ports;
        // The ports this Service names (a TCP and a UDP port may share one).
        let mut mine = BTreeSet::new();
        let mut missing = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let asked = p
                .get("nodePort")
                .and_then(Value::as_i64)
                .and_then(|n| i32::try_from(n).ok())
                .filter(|n| *n != 0);
            let Some(n) = asked else {
                missing.push(i);
                continue;
            };
            if before.ports.contains(&n) || mine.contains(&n) {
                mine.insert(n);
                continue;
            }
            let field = format!("spec.ports[{i}].nodePort");
            if !range.contains(n) {
                errs.push(FieldError::invalid(
                    field,
                    n,
                    &format!("provided port is not in the valid range. The range of valid ports is {range}"),
                ));
            } else if held.ports.contains(&n) {
                errs.push(FieldError::invalid(
                    field,
                    n,
                    "provided port is already allocated",
                ));
            } else {
                held.ports.insert(n);
                taken.ports.insert(n);
                mine.insert(n);
            }
        }
        if !allocate {
            return Ok(());
        }
        for i in missing {
            let count = range.len();
            let start = random() % count;
            let found = (0..count)
                .map(|k| i32::from(range.first) + ((start + k) % count) as i32)
                .find(|n| !held.ports.contains(n));
            let Some(n) = found else {
                return Err(ApiError::internal(format!(
                    "failed to allocate a nodePort: range is full: every port of the node-port range {range} is held; delete a NodePort Service or start the controller with a wider --service-node-port-range"
                )));
            };
            held.ports.insert(n);
            taken.ports.insert(n);
            if let Some(port) = ports.get_mut(i).and_then(Value::as_object_mut) {
                port.insert("nodePort".into(), json!(n));
            }
        }
        Ok(())
    }

    /// Frees what a deleted Service held.
    pub fn release(&self, svc: &Value) {
        if let Some(store) = self.shared.get() {
            spawn_drop_claims(Arc::clone(store), claims(svc), owner_of(svc));
        }
        if let Some(held) = self.held.get() {
            give_back(&mut lock(held), &claims(svc));
        }
    }
}

/// One value of a [`Claims`].
#[derive(Clone, Copy)]
enum Claimed {
    Ip(Ipv4Addr),
    Port(i32),
}

impl Claimed {
    fn add_to(self, c: &mut Claims) {
        match self {
            Claimed::Ip(ip) => c.ip = Some(ip),
            Claimed::Port(p) => {
                c.ports.insert(p);
            }
        }
    }
}

/// The values of `c`, in the order of [`claim_keys`].
fn values(c: &Claims) -> Vec<Claimed> {
    c.ip.iter()
        .map(|ip| Claimed::Ip(*ip))
        .chain(c.ports.iter().map(|p| Claimed::Port(*p)))
        .collect()
}

/// Removes the claims of `c` that `owner` holds (a claim another Service holds
/// is left alone). Failures are logged: the garbage collector removes what is
/// left once no stored Service names it.
async fn drop_claims(store: &Arc<dyn Store>, c: &Claims, owner: &str) {
    for key in claim_keys(c) {
        let removed = crate::store::fence::exempt(async {
            let Some(claim) = store.get(&key).await? else {
                return Ok(());
            };
            if claim.object["service"].as_str() != Some(owner) {
                return Ok(());
            }
            store.delete(&key, Some(claim.revision)).await.map(drop)
        })
        .await;
        match removed {
            Ok(()) | Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
            Err(e) => {
                tracing::warn!(claim = %key.name, error = %e, "cannot remove a Service claim; the garbage collector will")
            }
        }
    }
}

/// [`drop_claims`] from a synchronous place (a dropped reservation), when
/// there is a runtime to run it on.
fn spawn_drop_claims(store: Arc<dyn Store>, c: Claims, owner: String) {
    if c.ip.is_none() && c.ports.is_empty() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(async move { drop_claims(&store, &c, &owner).await });
        }
        Err(_) => {
            tracing::debug!(%owner, "no runtime to remove Service claims on; the garbage collector will")
        }
    }
}

/// Removes claims that no stored Service names and that are older than
/// `grace` (their write failed and the controller died before removing them).
/// Returns how many were removed.
pub async fn remove_stray_claims(store: &dyn Store, grace: Duration) -> Result<usize, StoreError> {
    let (claimed, _) = store.list(CLAIMS, None).await?;
    if claimed.is_empty() {
        return Ok(0);
    }
    let (services, _) = store.list(&SERVICES.store_name(), None).await?;
    let named: HashSet<Key> = services
        .iter()
        .flat_map(|s| claim_keys(&claims(&s.object)))
        .collect();
    let now = jiff::Timestamp::now();
    let mut removed = 0;
    for c in claimed {
        let key = Key::new(CLAIMS, None, meta::name(&c.object).unwrap_or(""));
        if named.contains(&key) {
            continue;
        }
        let made = c.object["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        let old_enough =
            made.is_none_or(|t| t.as_second().saturating_add(grace) <= now.as_second());
        if !old_enough {
            continue;
        }
        match store.delete(&key, Some(c.revision)).await {
            Ok(_) => {
                tracing::info!(claim = %key.name, service = c.object["service"].as_str().unwrap_or(""), "removed a Service claim no stored Service names");
                removed += 1;
            }
            Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// What a write reserved: returned on drop unless [`Reservation::commit`]ted.
pub struct Reservation<'a> {
    held: Option<&'a Mutex<Held>>,
    taken: Claims,
    released: Claims,
    /// With other API servers: the store `taken` is claimed in, and the
    /// Service the claims name.
    shared: Option<(Arc<dyn Store>, String)>,
}

impl Reservation<'_> {
    /// For writes of kinds that allocate nothing.
    pub fn none() -> Self {
        Reservation {
            held: None,
            taken: Claims::default(),
            released: Claims::default(),
            shared: None,
        }
    }

    /// The write is stored: keep what was taken, free what the old object held and
    /// the new one does not.
    pub fn commit(mut self) {
        if let Some(held) = self.held.take() {
            give_back(&mut lock(held), &self.released);
        }
        if let Some((store, owner)) = self.shared.take() {
            spawn_drop_claims(store, std::mem::take(&mut self.released), owner);
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            give_back(&mut lock(held), &self.taken);
        }
        if let Some((store, owner)) = self.shared.take() {
            spawn_drop_claims(store, std::mem::take(&mut self.taken), owner);
        }
    }
}

fn give_back(held: &mut Held, c: &Claims) {
    if let Some(ip) = c.ip {
        held.ips.remove(&ip);
    }
    for p in &c.ports {
        held.ports.remove(p);
    }
}

/// The sets stay consistent whatever panicked while holding the lock (every change
/// is one insert or remove), so a poisoned lock is used as is.
fn lock(m: &Mutex<Held>) -> MutexGuard<'_, Held> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where probing starts: random, so that allocations spread over the range as
/// Kubernetes spreads them.
fn random() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[8], bytes[9],
    ])
}

#[cfg(test)]
mod tests;
