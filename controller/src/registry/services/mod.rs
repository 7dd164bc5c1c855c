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

mod range;

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tugboat_api::resource::SERVICES;
use tugboat_api::{ApiError, FieldError, meta};

use crate::store::Store;

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

/// The allocator of one registry.
pub struct Allocator {
    network: ServiceNetwork,
    held: OnceCell<Mutex<Held>>,
    /// Other API servers allocate from the same ranges (several controllers on
    /// one etcd): what they gave out is read from the store before each
    /// reservation.
    shared: std::sync::atomic::AtomicBool,
}

impl Allocator {
    pub fn new(network: ServiceNetwork) -> Self {
        Allocator {
            network,
            held: OnceCell::new(),
            shared: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn network(&self) -> ServiceNetwork {
        self.network
    }

    /// Other API servers allocate from the same ranges.
    ///
    /// Before each reservation, the addresses and ports of every stored
    /// Service are added to what this server holds, so it never gives out one
    /// another server gave out before. Two servers reserving at the same
    /// instant can still pick the same one (kube-apiserver closes that with an
    /// allocation object written by compare-and-swap); and what another
    /// server frees stays held here until this one restarts.
    pub fn set_shared(&self) {
        self.shared
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Adds what the stored Services hold (given out by other servers).
    async fn merge_stored(&self, store: &dyn Store, held: &Mutex<Held>) -> Result<(), ApiError> {
        let (services, _) = store
            .list(&SERVICES.store_name(), None)
            .await
            .map_err(super::store_error)?;
        let mut held = lock(held);
        for s in services {
            let c = claims(&s.object);
            held.ips.extend(c.ip);
            held.ports.extend(c.ports);
        }
        Ok(())
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
        let held = self.held(store).await?;
        if self.shared.load(std::sync::atomic::Ordering::Relaxed) {
            self.merge_stored(store, held).await?;
        }
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
        if let Some(held) = self.held.get() {
            give_back(&mut lock(held), &claims(svc));
        }
    }
}

/// What a write reserved: returned on drop unless [`Reservation::commit`]ted.
pub struct Reservation<'a> {
    held: Option<&'a Mutex<Held>>,
    taken: Claims,
    released: Claims,
}

impl Reservation<'_> {
    /// For writes of kinds that allocate nothing.
    pub fn none() -> Self {
        Reservation {
            held: None,
            taken: Claims::default(),
            released: Claims::default(),
        }
    }

    /// The write is stored: keep what was taken, free what the old object held and
    /// the new one does not.
    pub fn commit(mut self) {
        if let Some(held) = self.held.take() {
            give_back(&mut lock(held), &self.released);
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            give_back(&mut lock(held), &self.taken);
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
