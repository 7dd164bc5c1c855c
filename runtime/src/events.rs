//! The one event recorder, for the controllers (writing to the registry) and the
//! agent (writing over HTTP), as Kubernetes' recorder does: one `v1` Event per
//! (reporter, object, type, reason, message), named by a stable hash of those, its
//! `count` and `lastTimestamp` bumped on repeats instead of a new object each time.
//! Recording is a report, never part of the work: failures are logged, not
//! returned, and a [`Recorder::queued`] recorder never waits for the API at all.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tugboat_api::meta;
use tugboat_api::resource::EVENTS;
use tugboat_api::{Client, PatchType};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Who reports: `source.component`, `reportingInstance`, and the node for an
/// agent (`source.host`).
#[derive(Clone, Debug)]
pub struct Reporter {
    pub component: String,
    pub instance: String,
    pub host: Option<String>,
}

impl Reporter {
    /// A controller: component and instance are its name.
    pub fn controller(name: &str) -> Reporter {
        Reporter {
            component: name.to_string(),
            instance: name.to_string(),
            host: None,
        }
    }

    /// A node's agent.
    pub fn agent(node: &str) -> Reporter {
        Reporter {
            component: "tugboat-agent".to_string(),
            instance: node.to_string(),
            host: Some(node.to_string()),
        }
    }
}

/// Where events are written.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Adds one to the `count` of the event `ns/name` and sets its
    /// `lastTimestamp`; `Ok(false)` when there is no such event.
    async fn bump(&self, ns: &str, name: &str, now: &str) -> Result<bool, String>;
    /// Creates the event; `Ok(false)` when one of that name exists already
    /// (recorded before this recorder started, or by another recorder).
    async fn create(&self, ns: &str, event: Value) -> Result<bool, String>;
}

#[async_trait::async_trait]
impl EventSink for Client {
    async fn bump(&self, ns: &str, name: &str, now: &str) -> Result<bool, String> {
        let existing = match self.get(&EVENTS, Some(ns), name).await {
            Ok(e) => e,
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e.to_string()),
        };
        let count = existing["count"].as_i64().unwrap_or(1).saturating_add(1);
        let patch = json!({"count": count, "lastTimestamp": now});
        self.patch(&EVENTS, Some(ns), name, &patch, PatchType::Merge)
            .await
            .map(|_| true)
            .map_err(|e| e.to_string())
    }

    async fn create(&self, ns: &str, event: Value) -> Result<bool, String> {
        match Client::create(self, &EVENTS, Some(ns), &event).await {
            Ok(_) => Ok(true),
            Err(e) if e.api().is_some_and(|a| a.reason == "AlreadyExists") => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// FNV-1a: a stable hash (unlike `DefaultHasher`, the same across runs and
/// builds, so a restarted reporter bumps its old events). Written here because it
/// is six lines; a crate for it would be larger than the code.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The event's name: the object's name and a hash of what makes it the same event.
pub fn event_name(
    reporter: &Reporter,
    object: &Value,
    event_type: EventType,
    reason: &str,
    message: &str,
) -> String {
    let key = format!(
        "{}|{}|{}|{}|{reason}|{message}",
        reporter.component,
        reporter.instance,
        meta::uid(object).unwrap_or(""),
        event_type.as_str()
    );
    format!(
        "{}.{:016x}",
        meta::name(object).unwrap_or(""),
        fnv1a(key.as_bytes())
    )
}

/// What an event needs of a typed object: its kind and identity, as JSON.
pub fn reference<K>(object: &K) -> Value
where
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    let m = object.metadata();
    json!({
        "apiVersion": K::API_VERSION,
        "kind": K::KIND,
        "metadata": {
            "name": m.name,
            "namespace": m.namespace,
            "uid": m.uid,
            "resourceVersion": m.resource_version,
        },
    })
}

/// A new Event (`count` 1) about `object`.
pub fn new_event(
    reporter: &Reporter,
    object: &Value,
    event_type: EventType,
    reason: &str,
    message: &str,
    now: &str,
) -> Value {
    let ns = meta::namespace(object).unwrap_or("default");
    let mut source = json!({"component": reporter.component});
    if let Some(host) = &reporter.host {
        source["host"] = json!(host);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": event_name(reporter, object, event_type, reason, message),
            "namespace": ns,
        },
        "involvedObject": {
            "apiVersion": object.get("apiVersion"),
            "kind": object.get("kind"),
            "name": meta::name(object).unwrap_or(""),
            "namespace": meta::namespace(object),
            "uid": meta::uid(object).unwrap_or(""),
            "resourceVersion": meta::resource_version(object),
        },
        "reason": reason,
        "message": message,
        "type": event_type.as_str(),
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "source": source,
        "reportingComponent": reporter.component,
        "reportingInstance": reporter.instance,
    })
}

/// Events waiting to be written by a queued recorder; past this many, new ones
/// are dropped (and logged).
const QUEUE: usize = 1024;

struct Pending {
    object: Value,
    event_type: EventType,
    reason: String,
    message: String,
}

/// client-go's spam filter: each object may have this many events from one
/// recorder at once…
const SPAM_BURST: f64 = 25.0;
/// …and one more every this many seconds after that; the rest are dropped
/// (a ReplicaSet of a thousand pods records 25 `SuccessfulCreate`s, not 1,000).
const SPAM_REFILL_SECONDS: f64 = 300.0;
/// Objects (and event names) a recorder remembers; past this, it forgets them
/// all and starts over (an event then costs one more request, a filter starts
/// full again).
const REMEMBERED: usize = 8_192;

/// What a recorder remembers between events.
#[derive(Default)]
struct Memo {
    /// The names of the events it wrote: a repeat is bumped, a new one created
    /// without first asking whether it exists.
    written: std::collections::HashSet<String>,
    /// Per object (its uid): tokens left and when they were counted.
    buckets: std::collections::HashMap<String, (f64, std::time::Instant)>,
}

impl Memo {
    /// Whether an event about the object `uid` may be written now.
    fn allow(&mut self, uid: &str) -> bool {
        if self.buckets.len() >= REMEMBERED && !self.buckets.contains_key(uid) {
            self.buckets.clear();
        }
        let now = std::time::Instant::now();
        let (tokens, at) = self
            .buckets
            .entry(uid.to_string())
            .or_insert((SPAM_BURST, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() / SPAM_REFILL_SECONDS).min(SPAM_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn remember(&mut self, name: &str) {
        if self.written.len() >= REMEMBERED {
            self.written.clear();
        }
        self.written.insert(name.to_string());
    }
}

#[derive(Clone)]
pub struct Recorder {
    sink: Arc<dyn EventSink>,
    reporter: Arc<Reporter>,
    queue: Option<mpsc::Sender<Pending>>,
    memo: Arc<std::sync::Mutex<Memo>>,
}

impl Recorder {
    /// A recorder that writes each event before `record` returns.
    pub fn new(sink: Arc<dyn EventSink>, reporter: Reporter) -> Recorder {
        Recorder {
            sink,
            reporter: Arc::new(reporter),
            queue: None,
            memo: Arc::default(),
        }
    }

    /// This recorder, writing in order from one background task instead, so the
    /// work never waits on an event (a restart does not wait for three API
    /// writes). The task ends when the last clone of the returned recorder is
    /// dropped, or when `shutdown` is cancelled (what is still queued then is
    /// dropped); it runs on `tracker`, so the process waits for it.
    pub fn queued(self, tracker: &TaskTracker, shutdown: CancellationToken) -> Recorder {
        let (tx, mut rx) = mpsc::channel::<Pending>(QUEUE);
        let writer = Recorder {
            queue: None,
            ..self.clone()
        };
        tracker.spawn(async move {
            let drain = async {
                while let Some(p) = rx.recv().await {
                    writer
                        .write(&p.object, p.event_type, &p.reason, &p.message)
                        .await;
                }
            };
            tokio::select! {
                _ = drain => {}
                _ = shutdown.cancelled() => {}
            }
        });
        Recorder {
            queue: Some(tx),
            ..self
        }
    }

    /// Records an event about a typed object.
    pub async fn publish<K>(&self, object: &K, event_type: EventType, reason: &str, message: &str)
    where
        K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
    {
        self.record(&reference(object), event_type, reason, message)
            .await
    }

    pub async fn record(&self, object: &Value, event_type: EventType, reason: &str, message: &str) {
        match &self.queue {
            Some(tx) => {
                let pending = Pending {
                    object: object.clone(),
                    event_type,
                    reason: reason.to_string(),
                    message: message.to_string(),
                };
                if tx.try_send(pending).is_err() {
                    tracing::debug!(reason, "event queue full or closed; event dropped");
                }
            }
            None => self.write(object, event_type, reason, message).await,
        }
    }

    pub async fn normal(&self, object: &Value, reason: &str, message: &str) {
        self.record(object, EventType::Normal, reason, message)
            .await;
    }

    pub async fn warning(&self, object: &Value, reason: &str, message: &str) {
        self.record(object, EventType::Warning, reason, message)
            .await;
    }

    async fn write(&self, object: &Value, event_type: EventType, reason: &str, message: &str) {
        let ns = meta::namespace(object).unwrap_or("default");
        let now = meta::now_rfc3339();
        let name = event_name(&self.reporter, object, event_type, reason, message);
        let (allowed, known) = {
            let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            let uid = meta::uid(object).unwrap_or_else(|| meta::name(object).unwrap_or(""));
            (memo.allow(uid), memo.written.contains(&name))
        };
        if !allowed {
            tracing::debug!(reason, event = %name, "too many events about one object; event dropped");
            return;
        }
        let result = if known {
            match self.sink.bump(ns, &name, &now).await {
                Ok(true) => Ok(()),
                // Gone meanwhile (expired): a new one.
                Ok(false) => self
                    .sink
                    .create(
                        ns,
                        new_event(&self.reporter, object, event_type, reason, message, &now),
                    )
                    .await
                    .map(drop),
                Err(e) => Err(e),
            }
        } else {
            // New to this recorder: created first, bumped only if it exists
            // (written before a restart, or by another recorder).
            let event = new_event(&self.reporter, object, event_type, reason, message, &now);
            match self.sink.create(ns, event).await {
                Ok(true) => Ok(()),
                Ok(false) => self.sink.bump(ns, &name, &now).await.map(drop),
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(()) => self
                .memo
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remember(&name),
            Err(e) => tracing::debug!(error = %e, reason, "cannot record event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Memory(Mutex<BTreeMap<String, Value>>);

    #[async_trait::async_trait]
    impl EventSink for Memory {
        async fn bump(&self, ns: &str, name: &str, now: &str) -> Result<bool, String> {
            let mut m = self.0.lock().unwrap();
            let Some(e) = m.get_mut(&format!("{ns}/{name}")) else {
                return Ok(false);
            };
            e["count"] = json!(e["count"].as_i64().unwrap() + 1);
            e["lastTimestamp"] = json!(now);
            Ok(true)
        }

        async fn create(&self, ns: &str, event: Value) -> Result<bool, String> {
            let name = event["metadata"]["name"].as_str().unwrap().to_string();
            let mut m = self.0.lock().unwrap();
            let key = format!("{ns}/{name}");
            if m.contains_key(&key) {
                return Ok(false);
            }
            m.insert(key, event);
            Ok(true)
        }
    }

    fn pod(uid: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web-1", "namespace": "team", "uid": uid, "resourceVersion": "7"}})
    }

    #[tokio::test]
    async fn repeats_bump_the_count_and_differences_make_new_events() {
        let sink = Arc::new(Memory::default());
        let r = Recorder::new(sink.clone(), Reporter::agent("node-1"));
        r.warning(&pod("u1"), "BackOff", "Back-off restarting")
            .await;
        r.warning(&pod("u1"), "BackOff", "Back-off restarting")
            .await;
        r.warning(&pod("u2"), "BackOff", "Back-off restarting")
            .await;
        r.normal(&pod("u1"), "BackOff", "Back-off restarting").await;
        let m = sink.0.lock().unwrap();
        assert_eq!(m.len(), 3, "{:?}", m.keys());
        let counts: Vec<i64> = m.values().map(|e| e["count"].as_i64().unwrap()).collect();
        assert_eq!(counts.iter().sum::<i64>(), 4);
        let e = m.values().find(|e| e["count"] == 2).unwrap();
        assert_eq!(e["involvedObject"]["kind"], "Pod");
        assert_eq!(e["involvedObject"]["namespace"], "team");
        assert_eq!(
            e["source"],
            json!({"component": "tugboat-agent", "host": "node-1"})
        );
        assert_eq!(e["reportingInstance"], "node-1");
        assert!(
            e["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("web-1.")
        );
    }

    #[tokio::test]
    async fn a_queued_recorder_writes_in_the_background() {
        let sink = Arc::new(Memory::default());
        let r = Recorder::new(sink.clone(), Reporter::controller("default-scheduler"))
            .queued(&TaskTracker::new(), CancellationToken::new());
        r.warning(&pod("u1"), "FailedScheduling", "0/1 nodes are available")
            .await;
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while sink.0.lock().unwrap().is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the event is written");
        let m = sink.0.lock().unwrap();
        let e = m.values().next().unwrap();
        assert_eq!(e["source"], json!({"component": "default-scheduler"}));
    }

    #[tokio::test]
    async fn one_object_gets_at_most_a_burst_of_events_as_client_go_allows() {
        let sink = Arc::new(Memory::default());
        let r = Recorder::new(sink.clone(), Reporter::controller("replicaset-controller"));
        for i in 0..40 {
            r.normal(
                &pod("rs"),
                "SuccessfulCreate",
                &format!("Created pod: web-{i}"),
            )
            .await;
        }
        // Another object has its own allowance.
        r.normal(&pod("other"), "SuccessfulCreate", "Created pod: x")
            .await;
        let m = sink.0.lock().unwrap();
        assert_eq!(m.len(), 26, "25 about the first object, 1 about the other");
    }

    #[test]
    fn names_are_stable_across_runs() {
        let r = Reporter::controller("deployment-controller");
        let a = event_name(
            &r,
            &pod("u1"),
            EventType::Normal,
            "ScalingReplicaSet",
            "Scaled up",
        );
        assert_eq!(
            a,
            event_name(
                &r,
                &pod("u1"),
                EventType::Normal,
                "ScalingReplicaSet",
                "Scaled up"
            )
        );
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
