//! The cluster DNS, answered by the agent on the DNS address inside the node's
//! service sandbox: `SERVICE.NAMESPACE.svc.DOMAIN` → the ClusterIP (a headless
//! Service's ready pod IPs), `_PORT._PROTO.SERVICE.NAMESPACE.svc.DOMAIN` → SRV,
//! and every other name forwarded to the node's own resolvers. The short forms
//! (`web`, `web.shop`) are the client's search path at work.
//!
//! Messages are parsed and built with hickory-proto; the records are Tugboat's own
//! (from the Services and EndpointSlices the proxy already watches).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::table::SERVICE_NAME_LABEL;

/// The TTL of every answer (CoreDNS' kubernetes plugin uses 5 s too).
const TTL: u32 = 5;
/// How long an upstream resolver has to answer a forwarded query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// The most forwarded queries in flight at once; more are answered SERVFAIL.
const MAX_FORWARDS: usize = 256;
/// The largest UDP message taken or sent.
const MAX_MESSAGE: usize = 4096;

/// The records of the cluster domain, by lower-case name with its trailing dot.
#[derive(Debug, Default, PartialEq)]
pub struct Records {
    pub domain: String,
    pub a: HashMap<String, Vec<Ipv4Addr>>,
    pub srv: HashMap<String, Vec<(u16, String)>>,
}

impl Records {
    /// Is `name` (lower case, trailing dot) inside the cluster domain?
    fn owns(&self, name: &str) -> bool {
        let suffix = format!("{}.", self.domain);
        name == suffix || name.ends_with(&format!(".{suffix}"))
    }
}

/// Builds the records from the Services and their EndpointSlices.
pub fn records(domain: &str, services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Records {
    let mut r = Records {
        domain: domain.to_ascii_lowercase(),
        ..Default::default()
    };
    for svc in services {
        let (Some(name), Some(spec)) = (svc.metadata.name.as_deref(), svc.spec.as_ref()) else {
            continue;
        };
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        let fqdn = format!("{name}.{ns}.svc.{}.", r.domain).to_ascii_lowercase();
        let headless = spec.cluster_ip.as_deref() == Some("None");
        // The service's endpoints that are ready (a headless Service's answer).
        let mut ready: Vec<(Ipv4Addr, Option<String>)> = Vec::new();
        for s in slices.iter().filter(|s| {
            s.metadata.namespace.as_deref() == Some(ns)
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .is_some_and(|n| n == name)
        }) {
            for ep in &s.endpoints {
                let ok = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
                    || spec.publish_not_ready_addresses == Some(true);
                if !ok {
                    continue;
                }
                for a in &ep.addresses {
                    if let Ok(ip) = a.parse::<Ipv4Addr>() {
                        ready.push((ip, ep.hostname.clone()));
                    }
                }
            }
        }
        ready.sort();
        ready.dedup();
        // The name each endpoint answers to: its hostname, else its IP dashed.
        let host_of = |ip: &Ipv4Addr, host: &Option<String>| {
            let label = host
                .clone()
                .unwrap_or_else(|| ip.to_string().replace('.', "-"));
            format!("{label}.{fqdn}").to_ascii_lowercase()
        };
        if headless {
            r.a.insert(fqdn.clone(), ready.iter().map(|(ip, _)| *ip).collect());
            for (ip, host) in &ready {
                r.a.entry(host_of(ip, host)).or_default().push(*ip);
            }
        } else if let Some(ip) = spec.cluster_ip.as_deref().and_then(|i| i.parse().ok()) {
            r.a.insert(fqdn.clone(), vec![ip]);
        } else {
            continue;
        }
        for p in spec.ports.iter().flatten() {
            let Some(pname) = p.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
            let srv = format!("_{pname}._{proto}.{fqdn}").to_ascii_lowercase();
            let Ok(port) = u16::try_from(p.port) else {
                continue;
            };
            let targets = if headless {
                ready.iter().map(|(ip, h)| (port, host_of(ip, h))).collect()
            } else {
                vec![(port, fqdn.clone())]
            };
            r.srv.insert(srv, targets);
        }
    }
    r
}

/// What to do with one query message.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not ours: ask the upstream resolvers.
    Forward,
    /// Not a message we answer at all (not a query).
    Drop,
}

/// How a query came: over UDP an answer must fit the client's buffer (512
/// bytes, or what its EDNS record says), over TCP up to 65 535 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Answers `query` from `records` when it is in the cluster domain. An answer
/// too large for UDP goes without its records and with the TC bit set, so the
/// client asks again over TCP.
pub fn answer(records: &Records, query: &[u8], transport: Transport) -> Answer {
    let Ok(msg) = Message::from_vec(query) else {
        return Answer::Drop;
    };
    if msg.message_type() != MessageType::Query || msg.op_code() != OpCode::Query {
        return Answer::Drop;
    }
    let Some(q) = msg.queries().first() else {
        return Answer::Drop;
    };
    let name = q.name().to_lowercase().to_ascii();
    let name = if name.ends_with('.') {
        name
    } else {
        format!("{name}.")
    };
    if !records.owns(&name) {
        return Answer::Forward;
    }
    let mut reply = Message::new();
    reply
        .set_id(msg.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_authoritative(true)
        .set_recursion_desired(msg.recursion_desired())
        .set_recursion_available(true)
        .add_query(q.clone());
    let owner = q.name().clone();
    let a = records.a.get(&name);
    let srv = records.srv.get(&name);
    match q.query_type() {
        RecordType::A | RecordType::ANY if a.is_some() => {
            for ip in a.into_iter().flatten() {
                reply.add_answer(Record::from_rdata(owner.clone(), TTL, RData::A(A(*ip))));
            }
        }
        RecordType::SRV | RecordType::ANY if srv.is_some() => {
            let targets = srv.into_iter().flatten();
            let n = u16::try_from(srv.map_or(1, Vec::len).max(1)).unwrap_or(u16::MAX);
            for (port, target) in targets {
                let Ok(t) = Name::from_ascii(target) else {
                    continue;
                };
                reply.add_answer(Record::from_rdata(
                    owner.clone(),
                    TTL,
                    RData::SRV(SRV::new(0, 100 / n.min(100), *port, t.clone())),
                ));
                if let Some(ips) = records.a.get(target) {
                    for ip in ips {
                        reply.add_additional(Record::from_rdata(t.clone(), TTL, RData::A(A(*ip))));
                    }
                }
            }
        }
        // The name exists with other records (AAAA for an IPv4 service…): no data.
        _ if a.is_some() || srv.is_some() => {}
        _ => {
            reply.set_response_code(ResponseCode::NXDomain);
        }
    }
    let limit = match transport {
        Transport::Udp => usize::from(msg.max_payload()),
        Transport::Tcp => usize::from(u16::MAX),
    };
    match reply.to_vec() {
        Ok(bytes) if bytes.len() <= limit => Answer::Reply(bytes),
        Ok(_) => {
            reply.take_answers();
            reply.take_additionals();
            reply.set_truncated(true);
            reply.to_vec().map_or(Answer::Drop, Answer::Reply)
        }
        Err(_) => Answer::Drop,
    }
}

/// A SERVFAIL for `query` (when no upstream answered).
fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    let mut reply = Message::new();
    reply
        .set_id(msg.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(msg.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(ResponseCode::ServFail);
    if let Some(q) = msg.queries().first() {
        reply.add_query(q.clone());
    }
    reply.to_vec().ok()
}

/// Serves DNS over UDP on `socket` until `stop`.
pub async fn serve_udp(
    socket: UdpSocket,
    records: Arc<RwLock<Arc<Records>>>,
    upstream: Vec<SocketAddr>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let socket = Arc::new(socket);
    let upstream = Arc::new(upstream);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS));
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, client) = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(_) => continue,
            },
        };
        let query = buf[..n].to_vec();
        let current = records.read().unwrap_or_else(|e| e.into_inner()).clone();
        match answer(&current, &query, Transport::Udp) {
            Answer::Reply(bytes) => {
                let _ = socket.send_to(&bytes, client).await;
            }
            Answer::Drop => {}
            Answer::Forward => {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    if let Some(b) = servfail(&query) {
                        let _ = socket.send_to(&b, client).await;
                    }
                    continue;
                };
                let socket = socket.clone();
                let upstream = upstream.clone();
                tracker.spawn(async move {
                    let _permit = permit;
                    let reply = match forward(&upstream, &query).await {
                        Some(r) => Some(r),
                        None => servfail(&query),
                    };
                    if let Some(r) = reply {
                        let _ = socket.send_to(&r, client).await;
                    }
                });
            }
        }
    }
}

/// How long a TCP client has to send a query, and the most served at once.
const TCP_IDLE: Duration = Duration::from_secs(10);
const MAX_TCP: usize = 256;

/// Serves DNS over TCP on `listener` until `stop` (for answers too large for
/// UDP): each message with its 2-byte length, several per connection.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    records: Arc<RwLock<Arc<Records>>>,
    upstream: Vec<SocketAddr>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let upstream = Arc::new(upstream);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_TCP));
    loop {
        let (mut conn, _) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let (records, upstream, stop) = (records.clone(), upstream.clone(), stop.clone());
        tracker.spawn(async move {
            let _permit = permit;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let len = tokio::select! {
                    _ = stop.cancelled() => return,
                    l = tokio::time::timeout(TCP_IDLE, conn.read_u16()) => match l {
                        Ok(Ok(l)) => usize::from(l),
                        _ => return,
                    },
                };
                let mut query = vec![0u8; len];
                if conn.read_exact(&mut query).await.is_err() {
                    return;
                }
                let current = records.read().unwrap_or_else(|e| e.into_inner()).clone();
                let reply = match answer(&current, &query, Transport::Tcp) {
                    Answer::Reply(b) => Some(b),
                    Answer::Drop => None,
                    // Forwarded over UDP; a truncated upstream answer is passed on as is.
                    Answer::Forward => forward(&upstream, &query)
                        .await
                        .or_else(|| servfail(&query)),
                };
                let Some(reply) = reply else { return };
                let Ok(n) = u16::try_from(reply.len()) else {
                    return;
                };
                let mut out = Vec::with_capacity(reply.len() + 2);
                out.extend_from_slice(&n.to_be_bytes());
                out.extend_from_slice(&reply);
                if conn.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Asks each upstream resolver in turn (from the agent's own network).
async fn forward(upstream: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    for server in upstream {
        let Ok(s) = super::tunnel::udp_to(*server).await else {
            continue;
        };
        if s.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; MAX_MESSAGE];
        if let Ok(Ok(n)) = tokio::time::timeout(UPSTREAM_TIMEOUT, s.recv(&mut buf)).await {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

#[cfg(test)]
mod tests;
