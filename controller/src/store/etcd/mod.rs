//! The [`Store`] on etcd, for several controllers sharing one state
//! (`tug controller --store etcd://HOST:2379[,HOST:2379…]`).
//!
//! etcd's model is the store's: one revision counter for every write, an
//! object's mod revision is its `resourceVersion`, a write conditional on it is
//! one transaction (compare mod revision, then put), and a watch starts from any
//! revision etcd has not compacted. So this backend is a thin mapping, as
//! kube-apiserver's etcd3 storage is:
//!
//! - Each object is one key, `PREFIX/RESOURCE/NAMESPACE/NAME` (the namespace is
//!   empty for cluster-scoped objects), whose value is its JSON without
//!   `resourceVersion`: that is set from the key's mod revision when read, since
//!   a write cannot know its revision before it commits.
//! - Writes are transactions: create when the key does not exist, update and
//!   delete when its mod revision is the one expected. etcd commits them to a
//!   quorum's disks before it answers, so an acknowledged write survives a crash
//!   of any minority of members.
//! - Reads are served from a mirror of the prefix kept by one etcd watch, as
//!   kube-apiserver's watch cache does: the mirror keeps the same indexes and the
//!   same bounded history as the embedded backend, and every watcher of this
//!   controller is fed from it, so etcd sees one watch per controller whatever
//!   the number of clients. A read first asks etcd for its current revision and
//!   waits until the mirror has reached it, so it sees every write acknowledged
//!   before it began, whichever controller took it (a "consistent read from
//!   cache"); when the mirror does not get there in a second, the read goes to
//!   etcd itself. A write returns once the mirror holds it.
//! - The history is compacted the way kube-apiserver does it: every
//!   [`EtcdConfig::compaction_interval`], one controller (decided by a
//!   transaction on a shared key) compacts etcd to the revision seen one interval
//!   earlier.
//!
//! A controller that cannot reach etcd answers reads and writes with an error;
//! it never serves what it last saw as if it were current.

mod bootstrap;
pub mod testing;

pub use bootstrap::BootstrapError;
/// The etcd client this store is built on, for tests and tools beside it.
pub use etcd_client;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions,
    EventType as EtcdEventType, GetOptions, KeyValue, KvClient, TlsOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use serde_json::Value;
use tokio::task::JoinHandle;
use tugboat_api::limits;

use super::index::{By, Indexes};
use super::live::{Channels, key_prefix, lock};
use super::redb::History;
use super::{
    Encoded, EventType, Key, Revision, Store, StoreError, StoreEvent, Stored, WatchStream, stamp,
};

/// The prefix every key of Tugboat's lives under, unless told otherwise.
pub const DEFAULT_PREFIX: &str = "/tugboat";

/// How often etcd's history is compacted, unless told otherwise
/// (kube-apiserver's `--etcd-compaction-interval` default).
pub const DEFAULT_COMPACTION_INTERVAL: Duration = Duration::from_secs(300);

/// How many objects one read of a list asks etcd for: enough for few round
/// trips, few enough that no answer nears gRPC's message bound.
const PAGE: i64 = 500;

/// The largest answer taken from etcd. etcd itself sends at most 1.5 MiB
/// objects and splits lists into pages, so this bounds what a broken or hostile
/// server can make the controller buffer.
const MAX_MESSAGE: usize = 64 << 20;

/// How long a read waits for the mirror to reach etcd's revision before it
/// reads from etcd itself.
const MIRROR_WAIT: Duration = Duration::from_secs(1);

/// How long a write waits for the mirror to hold it before it returns anyway
/// (the write is committed either way).
const CATCH_UP: Duration = Duration::from_secs(5);

/// How long `/readyz` waits for etcd's answer (kube-apiserver's etcd check
/// waits 2 s).
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a read is tried again on other members while etcd elects a leader
/// (an election takes about a second with etcd's defaults).
const READ_RETRY: Duration = Duration::from_secs(5);

/// How long the mirror's watch of etcd waits before it starts again after an
/// error, at first and at most.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// See [`super::redb`]: a watcher that falls this far behind is ended with `Gone`.
const BROADCAST_CAPACITY: usize = 16_384;

/// TLS to etcd: the CA that signed its serving certificates, and this
/// controller's client certificate and key when etcd asks for one (PEM).
#[derive(Clone, Default)]
pub struct EtcdTls {
    pub ca: Option<Vec<u8>>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca", &self.ca.is_some())
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

/// Where the etcd cluster is and how to use it.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// `host:port` of each member (or a URL, `http://` or `https://`).
    pub endpoints: Vec<String>,
    /// Every key is under `PREFIX/`, so several clusters can share one etcd.
    pub prefix: String,
    /// TLS to etcd; `None` for plain HTTP.
    pub tls: Option<EtcdTls>,
    /// etcd's user name and password, when its authentication is on.
    pub user: Option<(String, String)>,
    /// What the mirror keeps for watches resuming from an older revision.
    pub history: History,
    /// How often etcd's history is compacted.
    pub compaction_interval: Duration,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: DEFAULT_PREFIX.to_string(),
            tls: None,
            user: None,
            history: History::default(),
            compaction_interval: DEFAULT_COMPACTION_INTERVAL,
        }
    }

    /// Parses `etcd://HOST:PORT[,HOST:PORT…]` (`--store`); `None` when `url` is
    /// not an etcd URL at all, an error naming what is wrong when it is a bad one.
    pub fn parse_url(url: &str) -> Option<Result<Vec<String>, String>> {
        let rest = url.strip_prefix("etcd://")?;
        let rest = rest.trim_end_matches('/');
        let mut endpoints = Vec::new();
        for endpoint in rest.split(',') {
            let endpoint = endpoint.trim();
            let Some((host, port)) = endpoint.rsplit_once(':') else {
                return Some(Err(format!(
                    "etcd endpoint {endpoint:?} in {url:?}: expected HOST:PORT"
                )));
            };
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Some(Err(format!(
                    "etcd endpoint {endpoint:?} in {url:?}: expected HOST:PORT with a port from 1 to 65535"
                )));
            }
            endpoints.push(endpoint.to_string());
        }
        Some(Ok(endpoints))
    }
}

fn etcd_error(what: impl fmt::Display, err: impl fmt::Display) -> StoreError {
    StoreError::Backend(format!("etcd: {what}: {err}"))
}

/// A failed read of etcd: [`StoreError::Unavailable`] when no member could
/// serve it (a read may always go again).
fn read_error(what: impl fmt::Display, err: etcd_client::Error) -> StoreError {
    if is_unavailable(&err) {
        StoreError::Unavailable(format!("etcd: {what}: {err}"))
    } else {
        etcd_error(what, err)
    }
}

/// A failed write to etcd: [`StoreError::Unavailable`] only when it surely
/// was not carried out (no member could be reached, or none had a leader);
/// an error after the request went out leaves its outcome unknown.
fn write_error(what: impl fmt::Display, err: etcd_client::Error) -> StoreError {
    if is_unreachable(&err) {
        StoreError::Unavailable(format!("etcd: {what}: {err}"))
    } else {
        etcd_error(what, err)
    }
}

/// etcd's revisions are `i64`; Tugboat's `u64`. Neither side goes negative.
fn to_revision(r: i64) -> Revision {
    u64::try_from(r).unwrap_or(0)
}

fn to_etcd(r: Revision) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

/// The first key after every key starting with `prefix`, as etcd's prefix
/// ranges use it.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: to the end of the keyspace.
    vec![0]
}

/// Is this etcd's "required revision has been compacted"?
fn is_compacted(err: &etcd_client::Error) -> bool {
    err.to_string().contains("compacted")
}

/// Is this etcd's "required revision is a future revision"?
fn is_future(err: &etcd_client::Error) -> bool {
    err.to_string().contains("future revision")
}

/// The etcd members, one client each, used one at a time.
///
/// etcd-client's own balancing keeps sending requests to a member that is
/// down (tonic's balancer does not set aside endpoints that refuse
/// connections: with one member of three killed, a third of all requests
/// failed), so requests go to one member and move to the next when it cannot
/// be reached or has no leader, as etcd's clientv3 fails over.
struct Members {
    clients: Vec<Client>,
    kvs: Vec<KvClient>,
    current: AtomicUsize,
}

/// Was the request surely not carried out, so that it may go to another
/// member: no connection was made, or the member has no leader to propose to?
fn is_unreachable(err: &etcd_client::Error) -> bool {
    let text = err.to_string();
    matches!(err, etcd_client::Error::TransportError(_))
        || text.contains("tcp connect error")
        || text.contains("no leader")
        || text.contains("connection refused")
        || text.contains("Connection refused")
}

/// Did the member refuse the connection (nothing listens there)?
fn is_refused(err: &etcd_client::Error) -> bool {
    let text = err.to_string();
    text.contains("tcp connect error")
        || text.contains("connection refused")
        || text.contains("Connection refused")
}

impl Members {
    fn index(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.clients.len()
    }

    fn client(&self) -> (usize, Client) {
        let i = self.index();
        (i, self.clients[i].clone())
    }

    /// Moves on from member `failed`, unless another request already did.
    fn next(&self, failed: usize) {
        let _ = self.current.compare_exchange(
            failed,
            (failed + 1) % self.clients.len(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Runs the write `f` on the current member's client; on every member in
    /// turn while they cannot be reached (then it was surely not carried out).
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, etcd_client::Error>
    where
        F: Fn(KvClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut tried = 0;
        loop {
            let i = self.index();
            match f(self.kvs[i].clone()).await {
                Err(e) if is_unreachable(&e) && tried + 1 < self.kvs.len() => {
                    tracing::debug!(member = i, error = %e, "etcd member unreachable; trying the next");
                    self.next(i);
                    tried += 1;
                }
                other => return other,
            }
        }
    }

    /// Runs the read `f`, which may safely be repeated: on the next member
    /// after any error of an unavailable member ("leader changed" during an
    /// election, no leader, unreachable), for up to [`READ_RETRY`].
    async fn read<T, F, Fut>(&self, f: F) -> Result<T, etcd_client::Error>
    where
        F: Fn(KvClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + READ_RETRY;
        let mut pause = Duration::from_millis(50);
        // Members that refused the connection in a row: when every one has,
        // this controller is cut off (not waiting out an election), and the
        // read fails now so that clients can go to another controller.
        let mut refused = 0;
        loop {
            let i = self.index();
            match f(self.kvs[i].clone()).await {
                Err(e) if is_unavailable(&e) && tokio::time::Instant::now() < deadline => {
                    refused = if is_refused(&e) { refused + 1 } else { 0 };
                    if refused >= self.kvs.len() {
                        return Err(e);
                    }
                    tracing::debug!(member = i, error = %e, "etcd member unavailable for a read; trying the next");
                    self.next(i);
                    if refused == 0 {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(500));
                    }
                }
                other => return other,
            }
        }
    }
}

/// Is this an error of a member that cannot serve now (gRPC's Unavailable:
/// unreachable, no leader, leader changed), after which a read may go again?
fn is_unavailable(err: &etcd_client::Error) -> bool {
    let text = err.to_string();
    is_unreachable(err)
        // How gRPC's status code `Unavailable` is shown (etcd-client does not
        // re-export tonic's `Code` to compare with).
        || text.contains("currently unavailable")
        // A connection that closed under the read (a member that just
        // started or stopped): a read may go again.
        || text.contains("operation was canceled")
        || text.contains("connection closed")
        || text.contains("transport error")
        || text.contains("broken pipe")
}

/// The [`Store`] on an etcd cluster.
///
/// Dropping it stops its watch of etcd and its compactor.
pub struct EtcdStore {
    members: Arc<Members>,
    /// `PREFIX/`, with the slash.
    prefix: String,
    /// A key that holds nothing, read for etcd's current revision. It is under
    /// the prefix and no [`Key`] encodes to it, so writes to it (none are made)
    /// would move the mirror's revision and nothing else.
    probe_key: Vec<u8>,
    mirror: Arc<Mirror>,
    tasks: Vec<JoinHandle<()>>,
}

/// The mirror of the prefix: objects, indexes, the bounded history and the live
/// channels, as the embedded backend keeps them.
struct Mirror {
    location: String,
    prefix: String,
    history_limit: History,
    state: Mutex<State>,
    events: Channels,
    revisions: tokio::sync::watch::Sender<Revision>,
    compacted: Arc<AtomicU64>,
    /// The watch of etcd failed on every member in a row: this controller is
    /// cut off, and what the mirror holds may be stale. Its watchers were
    /// ended and new ones are refused until the watch of etcd is back, so
    /// clients go to another controller (kube-apiserver's watch cache ends
    /// its watchers and stops serving when its watch of etcd ends).
    cut_off: AtomicBool,
}

impl State {
    fn view(&self) -> super::live::View<'_> {
        super::live::View {
            objects: &self.objects,
            indexes: &self.indexes,
            history: &self.history,
            revision: self.revision,
            compacted: self.compacted,
        }
    }
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Stored>,
    /// Events after `compacted` up to `revision`, oldest first, with their
    /// encoded sizes.
    history: VecDeque<(StoreEvent, usize)>,
    history_bytes: usize,
    /// The mirror holds every write up to here.
    revision: Revision,
    /// The history holds every event after this.
    compacted: Revision,
    indexes: Indexes,
}

impl Mirror {
    fn revision(&self) -> Revision {
        lock(&self.state).revision
    }

    /// The storage row (`resource/namespace/name`) of an etcd key, and its
    /// [`Key`]: `None` for keys under the prefix that are not objects.
    fn row_of(&self, key: &[u8]) -> Option<(String, Key)> {
        let row = std::str::from_utf8(key).ok()?.strip_prefix(&self.prefix)?;
        let parsed = Key::decode(row)?;
        Some((row.to_string(), parsed))
    }

    /// Replaces everything with `objects`, read at `revision`: at start, and when
    /// the watch fell behind etcd's compaction. Watchers get `Gone` and relist.
    fn reset(&self, objects: Vec<(String, Stored)>, revision: Revision) {
        let mut state = lock(&self.state);
        let mut fresh = State {
            revision,
            compacted: revision,
            ..State::default()
        };
        for (row, stored) in objects {
            fresh.indexes.replace(&row, None, Some(&stored.object));
            fresh.objects.insert(row, stored);
        }
        *state = fresh;
        self.compacted.store(revision, Ordering::Relaxed);
        self.events.close_all();
        drop(state);
        self.revisions.send_replace(revision);
    }

    /// Applies the events of one watch response, in order.
    fn apply(&self, events: &[etcd_client::Event]) {
        let mut state = lock(&self.state);
        let held = state.revision;
        let mut last = held;
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let revision = to_revision(kv.mod_revision());
            if revision <= held {
                // Already held (a watch restarted from an earlier revision).
                continue;
            }
            last = last.max(revision);
            let Some((row, key)) = self.row_of(kv.key()) else {
                continue;
            };
            let current = state.objects.get(&row).map(|s| Arc::clone(&s.object));
            let change = match event.event_type() {
                EtcdEventType::Put => match decode(&key, kv.value(), revision) {
                    Ok(stored) => {
                        let event_type = if current.is_some() {
                            EventType::Modified
                        } else {
                            EventType::Added
                        };
                        Some((event_type, stored, current))
                    }
                    Err(error) => {
                        tracing::error!(%key, revision, %error, "cannot read an object written to etcd; the mirror goes on without this write");
                        None
                    }
                },
                EtcdEventType::Delete => {
                    // The last state, stamped with the deletion's revision, as
                    // Kubernetes sends it; from etcd's previous value, else
                    // from the mirror.
                    let last_state = match event.prev_kv() {
                        Some(prev) => decode(&key, prev.value(), revision).ok(),
                        None => current.as_ref().and_then(|object| {
                            let mut object = Value::clone(object);
                            stamp(&key, &mut object, revision).ok()?;
                            encoded(object, revision).ok()
                        }),
                    };
                    last_state.map(|stored| (EventType::Deleted, stored, None))
                }
            };
            let Some((event_type, stored, prev)) = change else {
                continue;
            };
            let size = stored.json().map_or(0, Bytes::len);
            let old = match event_type {
                EventType::Deleted => state.objects.remove(&row),
                EventType::Added | EventType::Modified => {
                    state.objects.insert(row.clone(), stored.clone())
                }
            };
            let new = match event_type {
                EventType::Deleted => None,
                EventType::Added | EventType::Modified => Some(&*stored.object),
            };
            state
                .indexes
                .replace(&row, old.as_ref().map(|o| &*o.object), new);
            let event = StoreEvent {
                revision,
                event_type,
                key,
                object: stored.object,
                prev: match event_type {
                    EventType::Modified => prev,
                    EventType::Added | EventType::Deleted => None,
                },
                encoded: stored.encoded,
            };
            self.events.send(&event);
            state.history.push_back((event, size));
            state.history_bytes = state.history_bytes.saturating_add(size);
            state.revision = revision;
            while state.history.len() > 1
                && (state.history.len() > self.history_limit.events
                    || state.history_bytes > self.history_limit.bytes)
            {
                if let Some((dropped, size)) = state.history.pop_front() {
                    state.history_bytes -= size;
                    state.compacted = dropped.revision;
                }
            }
        }
        state.revision = state.revision.max(last);
        self.compacted.store(state.compacted, Ordering::Relaxed);
        let revision = state.revision;
        drop(state);
        self.revisions.send_replace(revision);
    }

    async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        let mut rx = self.revisions.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision)).await,
            Ok(Ok(_))
        )
    }
}

/// An object as read from etcd: its JSON with `resourceVersion` set to
/// `revision`, encoded once for every reader.
fn decode(key: &Key, value: &[u8], revision: Revision) -> Result<Stored, StoreError> {
    let mut object: Value = serde_json::from_slice(value)
        .map_err(|e| etcd_error(format_args!("read {key} at revision {revision}"), e))?;
    stamp(key, &mut object, revision)?;
    encoded(object, revision)
}

fn encoded(object: Value, revision: Revision) -> Result<Stored, StoreError> {
    let bytes =
        Bytes::from(serde_json::to_vec(&object).map_err(|e| etcd_error("encode an object", e))?);
    let object = Arc::new(object);
    let encoded = Encoded::new(&object, bytes);
    Ok(Stored {
        object,
        revision,
        encoded: Some(encoded),
    })
}

/// The value written for `object`: its JSON without `resourceVersion`, after
/// the same checks the embedded backend makes, so nothing goes into etcd that
/// cannot be read back.
fn value_of(key: &Key, mut object: Value) -> Result<Vec<u8>, StoreError> {
    stamp(key, &mut object, 0)?;
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resourceVersion");
    }
    limits::check_depth(&object).map_err(|e| StoreError::Limit(key.clone(), e))?;
    let bytes =
        serde_json::to_vec(&object).map_err(|e| etcd_error(format_args!("encode {key}"), e))?;
    if bytes.len() > limits::MAX_OBJECT_BYTES {
        return Err(StoreError::Limit(
            key.clone(),
            limits::LimitError::TooLarge { size: bytes.len() },
        ));
    }
    Ok(bytes)
}

/// Every object under `prefix` as of one revision (the latest, or `at`), read
/// in pages that all show that revision, from `start` on.
async fn read_all(
    kv: &mut KvClient,
    start: Vec<u8>,
    end: Vec<u8>,
    at: Option<Revision>,
) -> Result<(Vec<KeyValue>, Revision), etcd_client::Error> {
    let mut out = Vec::new();
    let mut from = start;
    let mut revision = at.map(to_etcd);
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if let Some(r) = revision {
            options = options.with_revision(r);
        }
        let mut response = kv.get(from.clone(), Some(options)).await?;
        let read_at = response.header().map_or(0, |h| h.revision());
        let at = *revision.get_or_insert(read_at);
        let more = response.more();
        let kvs = response.take_kvs();
        let Some(last) = kvs.last() else {
            return Ok((out, to_revision(at)));
        };
        from = last.key().to_vec();
        from.push(0);
        out.extend(kvs);
        if !more {
            return Ok((out, to_revision(at)));
        }
    }
}

impl EtcdStore {
    /// Connects to etcd, reads everything under the prefix into the mirror and
    /// starts following it.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdStore, StoreError> {
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let endpoints: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("{scheme}://{e}")
                }
            })
            .collect();
        let location = format!("etcd {}", endpoints.join(","));
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            // A member cut off from the others answers "no leader" at once,
            // and the request goes to another.
            .with_require_leader(true);
        if let Some(tls) = &config.tls {
            let mut t = TlsOptions::new();
            if let Some(ca) = &tls.ca {
                t = t.ca_certificate(etcd_client::Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.identity {
                t = t.identity(etcd_client::Identity::from_pem(cert, key));
            }
            options = options.with_tls(t);
        }
        if let Some((user, password)) = &config.user {
            options = options.with_user(user, password);
        }
        let mut clients = Vec::new();
        for endpoint in &endpoints {
            clients.push(
                Client::connect([endpoint], Some(options.clone()))
                    .await
                    .map_err(|e| etcd_error(format_args!("connect to {endpoint}"), e))?,
            );
        }
        let kvs = clients
            .iter()
            .map(|c| c.kv_client().max_decoding_message_size(MAX_MESSAGE))
            .collect();
        let members = Arc::new(Members {
            clients,
            kvs,
            current: AtomicUsize::new(0),
        });
        let prefix = format!("{}/", config.prefix.trim_end_matches('/'));
        let mirror = Arc::new(Mirror {
            location: location.clone(),
            prefix: prefix.clone(),
            history_limit: config.history,
            state: Mutex::new(State::default()),
            events: Channels::new(BROADCAST_CAPACITY),
            revisions: tokio::sync::watch::channel(0).0,
            compacted: Arc::new(AtomicU64::new(0)),
            cut_off: AtomicBool::new(false),
        });
        load(&mirror, &members).await?;
        let mut tasks = vec![tokio::spawn(follow(
            Arc::clone(&mirror),
            Arc::clone(&members),
        ))];
        if !config.compaction_interval.is_zero() {
            tasks.push(tokio::spawn(compact(
                Arc::clone(&members),
                format!("{prefix}compact_rev_key").into_bytes(),
                config.compaction_interval,
            )));
        }
        tracing::info!(%location, prefix = %config.prefix, revision = mirror.revision(), "store on etcd");
        Ok(EtcdStore {
            members,
            probe_key: format!("{prefix}revision").into_bytes(),
            prefix,
            mirror,
            tasks,
        })
    }

    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, etcd_client::Error> {
        self.members
            .call(|mut kv| {
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await
    }

    fn etcd_key(&self, key: &Key) -> Vec<u8> {
        format!("{}{}", self.prefix, key.encode()).into_bytes()
    }

    /// Waits until the mirror holds every write etcd had acknowledged when this
    /// was called; whether it does (else the read goes to etcd itself).
    async fn sync(&self) -> Result<bool, StoreError> {
        let response = self
            .members
            .read(|mut kv| {
                let key = self.probe_key.clone();
                async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
            })
            .await
            .map_err(|e| read_error("read the current revision", e))?;
        let revision = to_revision(response.header().map_or(0, |h| h.revision()));
        // The latest write may be outside the prefix (another cluster sharing
        // the etcd), where the mirror's watch sees nothing: then the mirror
        // never reaches it, and the read goes to etcd. etcd's progress reports
        // would tell the mirror how far it is, but etcd before 3.4.31 and 3.5.13
        // may send one ahead of the events it covers (etcd issue 15220), as
        // seen here with 3.4.23; kube-apiserver does not trust them either.
        Ok(self.mirror.wait_for(revision, MIRROR_WAIT).await)
    }

    /// Waits until the mirror holds `revision`, for a write to be read back.
    async fn catch_up(&self, revision: Revision) -> bool {
        self.mirror.wait_for(revision, CATCH_UP).await
    }

    /// Every object under `prefix` (a row prefix) read from etcd itself, with
    /// the revision it was read at.
    async fn read_etcd(&self, prefix: &str) -> Result<(Vec<Stored>, Revision), StoreError> {
        let start = format!("{}{prefix}", self.prefix).into_bytes();
        let end = prefix_end(&start);
        let (kvs, revision) = self
            .members
            .read(|mut kv| {
                let (start, end) = (start.clone(), end.clone());
                async move { read_all(&mut kv, start, end, None).await }
            })
            .await
            .map_err(|e| read_error(format_args!("list {prefix}"), e))?;
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let Some((_, key)) = self.mirror.row_of(kv.key()) else {
                continue;
            };
            out.push(decode(&key, kv.value(), to_revision(kv.mod_revision()))?);
        }
        Ok((out, revision))
    }

    /// The answer to a committed write: the mirror's copy once it holds it
    /// (shared with every watcher), else what was written.
    async fn written(
        &self,
        key: &Key,
        revision: Revision,
        object: Value,
    ) -> Result<Stored, StoreError> {
        if !self.catch_up(revision).await {
            tracing::warn!(%key, revision, "the write is committed but this controller's mirror is behind");
        }
        if let Some(stored) = lock(&self.mirror.state).objects.get(&key.encode())
            && stored.revision == revision
        {
            return Ok(stored.clone());
        }
        let mut object = object;
        stamp(key, &mut object, revision)?;
        encoded(object, revision)
    }

    /// The current state of `key` in etcd, for the error of a failed
    /// transaction: `NotFound`, or the revision it is at.
    fn refusal(key: &Key, expected: Option<Revision>, responses: &[TxnOpResponse]) -> StoreError {
        let actual = responses.iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| to_revision(kv.mod_revision())),
            _ => None,
        });
        match (actual, expected) {
            (None, _) => StoreError::NotFound(key.clone()),
            (Some(actual), Some(expected)) => StoreError::Conflict {
                key: key.clone(),
                expected,
                actual,
            },
            // Only a conditional write can be refused for an existing key.
            (Some(actual), None) => StoreError::Backend(format!(
                "etcd refused a write of {key} at revision {actual}"
            )),
        }
    }

    /// The condition a write of `key` holds on: it exists, at `expected` if given.
    fn exists(etcd_key: &[u8], expected: Option<Revision>) -> Compare {
        match expected {
            Some(r) => Compare::mod_revision(etcd_key.to_vec(), CompareOp::Equal, to_etcd(r)),
            None => Compare::version(etcd_key.to_vec(), CompareOp::Greater, 0),
        }
    }

    /// A client of the etcd member in use, for what goes beside the store.
    pub fn client(&self) -> Client {
        self.members.client().1
    }
}

/// Reads everything into the mirror.
async fn load(mirror: &Mirror, members: &Members) -> Result<(), StoreError> {
    let start = mirror.prefix.clone().into_bytes();
    let end = prefix_end(&start);
    let (kvs, revision) = members
        .read(|mut kv| {
            let (start, end) = (start.clone(), end.clone());
            async move { read_all(&mut kv, start, end, None).await }
        })
        .await
        .map_err(|e| read_error(format_args!("read {}", mirror.location), e))?;
    let mut objects = Vec::with_capacity(kvs.len());
    for kv in kvs {
        let Some((row, key)) = mirror.row_of(kv.key()) else {
            continue;
        };
        match decode(&key, kv.value(), to_revision(kv.mod_revision())) {
            Ok(stored) => objects.push((row, stored)),
            Err(error) => {
                tracing::error!(%key, %error, "cannot read an object in etcd; it is left there and the controller runs without it")
            }
        }
    }
    mirror.reset(objects, revision);
    Ok(())
}

/// Follows every change under the prefix into the mirror, for as long as the
/// store lives: after an error it watches again from the mirror's revision, and
/// when etcd has compacted past that, it reads everything again.
async fn follow(mirror: Arc<Mirror>, members: Arc<Members>) {
    let mut retry = RETRY_FIRST;
    // Watches of etcd that failed in a row; as many as there are members
    // means none can be reached.
    let mut failures = 0;
    let failed = |failures: &mut usize| {
        *failures += 1;
        if *failures >= members.clients.len() && !mirror.cut_off.swap(true, Ordering::SeqCst) {
            tracing::error!(location = %mirror.location, "cut off from etcd: ending every watch on this controller, and refusing new ones until etcd is back");
            mirror.events.close_all();
        }
    };
    loop {
        let from = mirror.revision().saturating_add(1);
        let options = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(to_etcd(from));
        let (member, client) = members.client();
        let watched = client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .watch(mirror.prefix.clone(), Some(options))
            .await;
        let mut stream = match watched {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(location = %mirror.location, %error, "cannot watch etcd; trying again");
                failed(&mut failures);
                members.next(member);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(response)) => {
                    retry = RETRY_FIRST;
                    failures = 0;
                    if mirror.cut_off.swap(false, Ordering::SeqCst) {
                        tracing::info!(location = %mirror.location, "etcd reached again: serving watches");
                    }
                    if response.compact_revision() > 0 {
                        tracing::warn!(location = %mirror.location, compacted = response.compact_revision(), from, "etcd compacted past this controller's view; reading everything again");
                        if let Err(error) = load(&mirror, &members).await {
                            tracing::warn!(%error, "cannot read etcd again");
                            tokio::time::sleep(retry).await;
                        }
                        break;
                    }
                    if response.canceled() {
                        tracing::warn!(location = %mirror.location, reason = response.cancel_reason(), "etcd ended the watch; watching again");
                        break;
                    }
                    mirror.apply(response.events());
                }
                Ok(None) => {
                    tracing::warn!(location = %mirror.location, "etcd closed the watch; watching again");
                    members.next(member);
                    break;
                }
                Err(error) => {
                    tracing::warn!(location = %mirror.location, %error, "the watch of etcd failed; watching again");
                    failed(&mut failures);
                    members.next(member);
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(RETRY_MAX);
                    break;
                }
            }
        }
    }
}

/// Compacts etcd's history every `interval` to the revision seen one interval
/// before, as kube-apiserver does: whichever controller first moves the shared
/// `key` on (a transaction on its version) compacts, the others see that it has
/// been done.
async fn compact(members: Arc<Members>, key: Vec<u8>, interval: Duration) {
    let mut version = 0i64;
    let mut target = 0i64;
    loop {
        tokio::time::sleep(interval).await;
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, version)])
            .and_then([TxnOp::put(key.clone(), target.to_string(), None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let response = match members
            .call(|mut kv| {
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await
        {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(%error, "cannot take etcd's compaction turn");
                continue;
            }
        };
        let current = response.header().map_or(0, |h| h.revision());
        if response.succeeded() {
            version += 1;
            if target > 0 {
                match members
                    .call(|mut kv| async move {
                        kv.compact(target, Some(CompactionOptions::new())).await
                    })
                    .await
                {
                    Ok(_) => tracing::debug!(revision = target, "etcd compacted"),
                    Err(error) if is_compacted(&error) => {}
                    Err(error) => tracing::warn!(%error, revision = target, "cannot compact etcd"),
                }
            }
        } else if let Some(TxnOpResponse::Get(get)) = response.op_responses().first()
            && let Some(held) = get.kvs().first()
        {
            // Another controller took this turn.
            version = held.version();
        }
        target = current;
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("location", &self.mirror.location)
            .field("prefix", &self.prefix)
            .field("revision", &self.mirror.revision())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &Key) -> Result<Option<Stored>, StoreError> {
        if self.sync().await? {
            return Ok(lock(&self.mirror.state).objects.get(&key.encode()).cloned());
        }
        let response = self
            .members
            .read(|mut kv| {
                let key = self.etcd_key(key);
                async move { kv.get(key, None).await }
            })
            .await
            .map_err(|e| read_error(format_args!("read {key}"), e))?;
        match response.kvs().first() {
            Some(kv) => Ok(Some(decode(
                key,
                kv.value(),
                to_revision(kv.mod_revision()),
            )?)),
            None => Ok(None),
        }
    }

    async fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<(Vec<Stored>, Revision), StoreError> {
        let prefix = key_prefix(resource, namespace);
        if !self.sync().await? {
            return self.read_etcd(&prefix).await;
        }
        let state = lock(&self.mirror.state);
        Ok((state.view().list(resource, namespace), state.revision))
    }

    async fn list_by(
        &self,
        resource: &str,
        namespace: Option<&str>,
        by: By<'_>,
    ) -> Result<(Vec<Stored>, Revision), StoreError> {
        let prefix = key_prefix(resource, namespace);
        if !self.sync().await? {
            let (all, revision) = self.read_etcd(&prefix).await?;
            let kept = all
                .into_iter()
                .filter(|s| by.matches(resource, &s.object))
                .collect();
            return Ok((kept, revision));
        }
        let state = lock(&self.mirror.state);
        Ok((
            state.view().list_by(resource, namespace, by),
            state.revision,
        ))
    }

    async fn create(&self, key: &Key, object: Value) -> Result<Stored, StoreError> {
        let etcd_key = self.etcd_key(key);
        let value = value_of(key, object.clone())?;
        let txn = Txn::new()
            .when([Compare::create_revision(
                etcd_key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(etcd_key, value, None)]);
        let response = self
            .txn(txn)
            .await
            .map_err(|e| write_error(format_args!("create {key}"), e))?;
        if !response.succeeded() {
            return Err(StoreError::AlreadyExists(key.clone()));
        }
        let revision = to_revision(response.header().map_or(0, |h| h.revision()));
        self.written(key, revision, object).await
    }

    async fn update(
        &self,
        key: &Key,
        object: Value,
        expected: Option<Revision>,
    ) -> Result<Stored, StoreError> {
        let etcd_key = self.etcd_key(key);
        let value = value_of(key, object.clone())?;
        let txn = Txn::new()
            .when([Self::exists(&etcd_key, expected)])
            .and_then([TxnOp::put(etcd_key.clone(), value, None)])
            .or_else([TxnOp::get(etcd_key, None)]);
        let response = self
            .txn(txn)
            .await
            .map_err(|e| write_error(format_args!("update {key}"), e))?;
        if !response.succeeded() {
            return Err(Self::refusal(key, expected, &response.op_responses()));
        }
        let revision = to_revision(response.header().map_or(0, |h| h.revision()));
        self.written(key, revision, object).await
    }

    async fn delete(&self, key: &Key, expected: Option<Revision>) -> Result<Stored, StoreError> {
        let etcd_key = self.etcd_key(key);
        let txn = Txn::new()
            .when([Self::exists(&etcd_key, expected)])
            .and_then([TxnOp::delete(
                etcd_key.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(etcd_key, None)]);
        let response = self
            .txn(txn)
            .await
            .map_err(|e| write_error(format_args!("delete {key}"), e))?;
        let responses = response.op_responses();
        if !response.succeeded() {
            return Err(Self::refusal(key, expected, &responses));
        }
        let revision = to_revision(response.header().map_or(0, |h| h.revision()));
        let last = responses.iter().find_map(|r| match r {
            TxnOpResponse::Delete(d) => d.prev_kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        let Some(last) = last else {
            return Err(StoreError::NotFound(key.clone()));
        };
        // Wait for the mirror, so a read after this does not see the object.
        if !self.catch_up(revision).await {
            tracing::warn!(%key, revision, "the delete is committed but this controller's mirror is behind");
        }
        decode(key, &last, revision)
    }

    async fn watch(
        &self,
        resource: &str,
        namespace: Option<&str>,
        after: Revision,
    ) -> Result<WatchStream, StoreError> {
        if self.mirror.cut_off.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(format!(
                "{}: this controller cannot watch etcd",
                self.mirror.location
            )));
        }
        lock(&self.mirror.state).view().watch(
            &self.mirror.events,
            &self.mirror.compacted,
            true,
            resource,
            namespace,
            after,
        )
    }

    async fn list_at(
        &self,
        resource: &str,
        namespace: Option<&str>,
        revision: Revision,
        after_key: Option<&Key>,
    ) -> Result<Vec<Stored>, StoreError> {
        // etcd keeps every revision since its last compaction, so a later page
        // of a list is read as it was, not only while nothing changed.
        let prefix = format!("{}{}", self.prefix, key_prefix(resource, namespace));
        let end = prefix_end(prefix.as_bytes());
        let start = match after_key {
            Some(after) => {
                let mut k = self.etcd_key(after);
                k.push(0);
                k
            }
            None => prefix.clone().into_bytes(),
        };
        let gone = || StoreError::Gone {
            requested: revision,
            compacted: self.mirror.compacted.load(Ordering::Relaxed),
        };
        let read = self
            .members
            .read(|mut kv| {
                let (start, end) = (start.clone(), end.clone());
                async move { read_all(&mut kv, start, end, Some(revision)).await }
            })
            .await;
        let (kvs, _) = match read {
            Ok(read) => read,
            Err(e) if is_compacted(&e) || is_future(&e) => return Err(gone()),
            Err(e) => return Err(read_error(format_args!("list {resource} at {revision}"), e)),
        };
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let Some((_, key)) = self.mirror.row_of(kv.key()) else {
                continue;
            };
            out.push(decode(&key, kv.value(), to_revision(kv.mod_revision()))?);
        }
        Ok(out)
    }

    async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        self.mirror.wait_for(revision, timeout).await
    }

    fn revision(&self) -> Revision {
        self.mirror.revision()
    }

    /// Reachable and watched: the mirror's watch of etcd is up, and etcd
    /// answers a read (with a leader) within [`CHECK_TIMEOUT`].
    async fn check(&self) -> Result<(), StoreError> {
        if self.mirror.cut_off.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(format!(
                "{}: this controller cannot watch etcd",
                self.mirror.location
            )));
        }
        let read = tokio::time::timeout(
            CHECK_TIMEOUT,
            self.members.read(|mut kv| {
                let key = self.probe_key.clone();
                async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
            }),
        )
        .await;
        match read {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(read_error("check", e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "{}: no answer within {CHECK_TIMEOUT:?}",
                self.mirror.location
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
