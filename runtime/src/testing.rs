//! An in-memory [`Source`] for the runtime's own tests: objects with revisions,
//! a bounded history (older revisions answer 410), and hooks to break watches.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tugboat_api::resource::ResourceInfo;

use crate::source::{EventStream, RawEvent, RawList, Source, SourceError, WatchParams};

#[derive(Clone, Debug)]
enum Msg {
    Event(u64, RawEvent),
    Fail(SourceError),
    End,
}

#[derive(Default)]
struct Inner {
    rev: u64,
    objects: BTreeMap<String, Arc<Value>>,
    log: Vec<(u64, RawEvent)>,
    /// Watches from before this revision are 410.
    oldest: u64,
    /// What the next watch calls answer instead of a stream.
    refuse_watch: VecDeque<SourceError>,
    /// What the next list calls answer instead of a list.
    refuse_list: VecDeque<SourceError>,
    /// Objects listed as undecodable.
    undecodable: Vec<String>,
    lists: usize,
    watches: Vec<String>,
    /// Watch streams open now.
    open: usize,
    /// A failure or end sent while no watch was open: the next one gets it,
    /// so a test need not race the watcher to the moment its watch is open.
    next_stream: Option<Msg>,
}

/// Counts a watch stream as open until dropped.
struct Open(Arc<MemorySource>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.lock().open -= 1;
    }
}

pub struct MemorySource {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Msg>,
    me: std::sync::Weak<MemorySource>,
}

pub fn pod(name: &str, rev: u64) -> Value {
    json!({"metadata": {"name": name, "namespace": "default", "resourceVersion": rev.to_string()}})
}

impl MemorySource {
    pub fn new() -> Arc<MemorySource> {
        Arc::new_cyclic(|me| MemorySource {
            inner: Mutex::default(),
            tx: broadcast::channel(4096).0,
            me: me.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    /// Creates or changes `name`; returns the new revision.
    pub fn put(&self, name: &str) -> u64 {
        let mut g = self.lock();
        g.rev += 1;
        let rev = g.rev;
        let obj = Arc::new(pod(name, rev));
        let ev = if g.objects.insert(name.to_string(), obj.clone()).is_some() {
            RawEvent::Modified(obj)
        } else {
            RawEvent::Added(obj)
        };
        g.log.push((rev, ev.clone()));
        let _ = self.tx.send(Msg::Event(rev, ev));
        rev
    }

    pub fn delete(&self, name: &str) -> u64 {
        let mut g = self.lock();
        g.rev += 1;
        let rev = g.rev;
        g.objects.remove(name);
        let ev = RawEvent::Deleted(Arc::new(pod(name, rev)));
        g.log.push((rev, ev.clone()));
        let _ = self.tx.send(Msg::Event(rev, ev));
        rev
    }

    /// Forgets the history: watches from before now are 410.
    pub fn compact(&self) {
        let mut g = self.lock();
        g.oldest = g.rev;
        g.log.clear();
    }

    /// Every open watch gets `e`.
    pub fn fail_watches(&self, e: SourceError) {
        self.send_to_watches(Msg::Fail(e));
    }

    /// Every open watch ends, as a server closing it.
    pub fn end_watches(&self) {
        self.send_to_watches(Msg::End);
    }

    fn send_to_watches(&self, msg: Msg) {
        let mut g = self.lock();
        if g.open == 0 {
            g.next_stream = Some(msg);
        } else {
            let _ = self.tx.send(msg);
        }
    }

    pub fn refuse_next_watch(&self, e: SourceError) {
        self.lock().refuse_watch.push_back(e);
    }

    pub fn refuse_next_list(&self, e: SourceError) {
        self.lock().refuse_list.push_back(e);
    }

    pub fn list_undecodable(&self, problem: &str) {
        self.lock().undecodable.push(problem.to_string());
    }

    pub fn lists(&self) -> usize {
        self.lock().lists
    }

    /// The resourceVersion each watch was opened from.
    pub fn watches(&self) -> Vec<String> {
        self.lock().watches.clone()
    }
}

#[async_trait::async_trait]
impl Source for MemorySource {
    async fn get(
        &self,
        _resource: &'static ResourceInfo,
        _namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Arc<Value>>, SourceError> {
        Ok(self.lock().objects.get(name).cloned())
    }

    async fn list(
        &self,
        _resource: &'static ResourceInfo,
        _params: &WatchParams,
    ) -> Result<RawList, SourceError> {
        let mut g = self.lock();
        g.lists += 1;
        if let Some(e) = g.refuse_list.pop_front() {
            return Err(e);
        }
        Ok(RawList {
            items: g.objects.values().cloned().collect(),
            undecodable: g.undecodable.clone(),
            resource_version: g.rev.to_string(),
        })
    }

    async fn watch(
        &self,
        _resource: &'static ResourceInfo,
        _params: &WatchParams,
        resource_version: &str,
    ) -> Result<EventStream, SourceError> {
        let mut g = self.lock();
        g.watches.push(resource_version.to_string());
        if let Some(e) = g.refuse_watch.pop_front() {
            return Err(e);
        }
        let from: u64 = resource_version
            .parse()
            .map_err(|_| SourceError::Other(format!("bad resourceVersion {resource_version:?}")))?;
        if from < g.oldest {
            return Err(SourceError::Gone(format!(
                "{from} is older than {}",
                g.oldest
            )));
        }
        let rx = self.tx.subscribe();
        let backlog: Vec<_> = g
            .log
            .iter()
            .filter(|(r, _)| *r > from)
            .map(|(_, e)| Ok(e.clone()))
            .collect();
        let last = g.rev;
        let first = g.next_stream.take();
        g.open += 1;
        drop(g);
        let open = Open(self.me.upgrade().expect("the source is alive"));
        let state = (rx, first, false, open);
        let live =
            futures::stream::unfold(state, move |(mut rx, mut first, done, open)| async move {
                if done {
                    return None;
                }
                loop {
                    let msg = match first.take() {
                        Some(m) => Ok(m),
                        None => rx.recv().await,
                    };
                    match msg {
                        Ok(Msg::Event(r, _)) if r <= last => continue,
                        Ok(Msg::Event(_, e)) => return Some((Ok(e), (rx, None, false, open))),
                        Ok(Msg::Fail(e)) => return Some((Err(e), (rx, None, true, open))),
                        Ok(Msg::End) | Err(_) => return None,
                    }
                }
            });
        Ok(futures::stream::iter(backlog).chain(live).boxed())
    }
}
