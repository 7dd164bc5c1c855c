//! The one watch loop: list, then watch from the list's resourceVersion; resume
//! from the last resourceVersion seen when a watch ends; relist at once on 410
//! Gone; relist with back-off when an event cannot be read (resuming would replay
//! it for ever); back off on every other failure. The stream never ends by
//! itself: drop it to stop.
//!
//! As kube-runtime's watcher, a list shows as [`Event::Init`], one
//! [`Event::InitApply`] per object, then [`Event::InitDone`]: a consumer that
//! keeps state replaces it at `InitDone` (objects deleted while the watch was
//! down are not in the new list).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tugboat_api::resource::ResourceInfo;

use crate::backoff::Backoff;
use crate::source::{EventStream, RawEvent, Source, SourceError, WatchParams};

/// What a watcher tells.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<K> {
    /// A list starts.
    Init,
    /// An object of the list.
    InitApply(K),
    /// The list is complete: whatever was not in it is gone.
    InitDone,
    /// An object was added or changed.
    Apply(K),
    /// An object was deleted (its last state).
    Delete(K),
}

impl<K> Event<K> {
    /// The object, for the events that carry one.
    pub fn object(&self) -> Option<&K> {
        match self {
            Event::InitApply(k) | Event::Apply(k) | Event::Delete(k) => Some(k),
            Event::Init | Event::InitDone => None,
        }
    }

    pub fn map<T>(self, f: impl FnOnce(K) -> T) -> Event<T> {
        match self {
            Event::Init => Event::Init,
            Event::InitApply(k) => Event::InitApply(f(k)),
            Event::InitDone => Event::InitDone,
            Event::Apply(k) => Event::Apply(f(k)),
            Event::Delete(k) => Event::Delete(f(k)),
        }
    }
}

/// How a watcher waits and what it calls itself in its logs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Who watches, for the logs (`"scheduler"`, `"agent node-1"`…).
    pub name: String,
    pub params: WatchParams,
    /// Back-off after a failure: first delay…
    pub backoff_initial: Duration,
    /// …doubling up to this.
    pub backoff_max: Duration,
    /// Pause before resuming a watch the server ended normally.
    pub resume_delay: Duration,
    /// Watch from this resourceVersion first, without a list (for a caller
    /// that just listed); a 410 there lists as usual.
    pub start_from: Option<String>,
}

impl Config {
    pub fn new(name: impl Into<String>) -> Config {
        Config {
            name: name.into(),
            params: WatchParams::default(),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            resume_delay: Duration::from_millis(100),
            start_from: None,
        }
    }

    /// Starts with a watch from `resource_version` instead of a list.
    pub fn start_from(mut self, resource_version: Option<String>) -> Config {
        self.start_from = resource_version.filter(|rv| !rv.is_empty());
        self
    }

    pub fn params(mut self, params: WatchParams) -> Config {
        self.params = params;
        self
    }

    pub fn backoff(mut self, initial: Duration, max: Duration) -> Config {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }
}

/// Problems already logged, so one bad object is reported once, not on every
/// relist. Bounded: forgotten (and so reported again) past this many.
const MAX_REPORTED: usize = 1000;

struct State<S: ?Sized> {
    source: Arc<S>,
    resource: &'static ResourceInfo,
    config: Config,
    resource_version: Option<String>,
    stream: Option<EventStream>,
    pending: VecDeque<Event<Arc<Value>>>,
    backoff: Backoff,
    reported: HashSet<String>,
}

impl<S: Source + ?Sized> State<S> {
    fn report_once(&mut self, problem: &str) -> bool {
        if self.reported.len() >= MAX_REPORTED {
            self.reported.clear();
        }
        self.reported.insert(problem.to_string())
    }

    async fn next(&mut self) -> Event<Arc<Value>> {
        let resource = self.resource.plural;
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return ev;
            }
            if let Some(stream) = self.stream.as_mut() {
                match stream.next().await {
                    Some(Ok(ev)) => {
                        let (ev, object) = match ev {
                            RawEvent::Added(o) | RawEvent::Modified(o) => {
                                (Event::Apply(o.clone()), o)
                            }
                            RawEvent::Deleted(o) => (Event::Delete(o.clone()), o),
                            RawEvent::Bookmark(rv) => {
                                if !rv.is_empty() {
                                    self.resource_version = Some(rv);
                                }
                                continue;
                            }
                        };
                        if let Some(rv) = tugboat_api::meta::resource_version(&object) {
                            self.resource_version = Some(rv.to_string());
                        }
                        self.backoff.reset();
                        return ev;
                    }
                    Some(Err(SourceError::Gone(why))) => {
                        tracing::debug!(watcher = %self.config.name, resource, %why, "watch history gone; relisting");
                        self.stream = None;
                        self.resource_version = None;
                    }
                    Some(Err(SourceError::Decode(problem))) => {
                        if self.report_once(&problem) {
                            tracing::error!(watcher = %self.config.name, resource, %problem, "an event cannot be read; relisting without it");
                        }
                        self.stream = None;
                        self.resource_version = None;
                        self.backoff.sleep().await;
                    }
                    Some(Err(SourceError::Other(e))) => {
                        tracing::info!(watcher = %self.config.name, resource, error = %e, "watch broke; resuming");
                        self.stream = None;
                        tokio::time::sleep(self.config.resume_delay).await;
                    }
                    None => {
                        self.stream = None;
                        tokio::time::sleep(self.config.resume_delay).await;
                    }
                }
                continue;
            }
            match self.resource_version.clone() {
                None => match self.source.list(self.resource, &self.config.params).await {
                    Ok(list) => {
                        for problem in &list.undecodable {
                            if self.report_once(problem) {
                                tracing::error!(watcher = %self.config.name, resource, %problem, "an object cannot be read; it is skipped, the others are seen");
                            }
                        }
                        if list.undecodable.is_empty() {
                            self.backoff.reset();
                        }
                        self.pending.push_back(Event::Init);
                        self.pending
                            .extend(list.items.into_iter().map(Event::InitApply));
                        self.pending.push_back(Event::InitDone);
                        self.resource_version = Some(list.resource_version);
                    }
                    Err(e) => {
                        tracing::warn!(watcher = %self.config.name, resource, error = %e, "cannot list; retrying");
                        self.backoff.sleep().await;
                    }
                },
                Some(rv) => match self
                    .source
                    .watch(self.resource, &self.config.params, &rv)
                    .await
                {
                    Ok(stream) => self.stream = Some(stream),
                    Err(SourceError::Gone(_)) => self.resource_version = None,
                    Err(e) => {
                        tracing::warn!(watcher = %self.config.name, resource, error = %e, "cannot watch; retrying");
                        self.backoff.sleep().await;
                    }
                },
            }
        }
    }
}

/// Watches `resource` on `source`, objects as JSON (shared, not copied).
pub fn watch_raw<S: Source + ?Sized>(
    source: Arc<S>,
    resource: &'static ResourceInfo,
    config: Config,
) -> impl Stream<Item = Event<Arc<Value>>> + Send + 'static {
    let state = State {
        source,
        resource,
        backoff: Backoff::new(config.backoff_initial, config.backoff_max),
        resource_version: config.start_from.clone(),
        config,
        stream: None,
        pending: VecDeque::new(),
        reported: HashSet::new(),
    };
    futures::stream::unfold(state, |mut state| async move {
        let ev = state.next().await;
        Some((ev, state))
    })
}

/// Watches `resource` on `source`, each object decoded as `K`. An object that
/// does not decode as `K` is logged once and left out (so a consumer that keeps
/// state does not see it, as if it did not exist).
pub fn watch<K, S>(
    source: Arc<S>,
    resource: &'static ResourceInfo,
    config: Config,
) -> impl Stream<Item = Event<Arc<K>>> + Send + 'static
where
    K: DeserializeOwned + Send + Sync + 'static,
    S: Source + ?Sized,
{
    let name = config.name.clone();
    let mut reported: HashSet<String> = HashSet::new();
    watch_raw(source, resource, config).filter_map(move |ev| {
        let out = match ev {
            Event::Init => Some(Event::Init),
            Event::InitDone => Some(Event::InitDone),
            Event::InitApply(o) => decode(&o, &name, &mut reported).map(Event::InitApply),
            Event::Apply(o) => decode(&o, &name, &mut reported).map(Event::Apply),
            Event::Delete(o) => decode(&o, &name, &mut reported).map(Event::Delete),
        };
        futures::future::ready(out)
    })
}

fn decode<K: DeserializeOwned>(
    o: &Value,
    watcher: &str,
    reported: &mut HashSet<String>,
) -> Option<Arc<K>> {
    match K::deserialize(o) {
        Ok(k) => Some(Arc::new(k)),
        Err(e) => {
            let what = format!(
                "{}/{}: {e}",
                tugboat_api::meta::namespace(o).unwrap_or(""),
                tugboat_api::meta::name(o).unwrap_or("")
            );
            if reported.len() >= MAX_REPORTED {
                reported.clear();
            }
            if reported.insert(what.clone()) {
                tracing::error!(watcher, problem = %what, "an object does not decode; it is left out");
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use tugboat_api::resource::PODS;

    use super::*;
    use crate::testing::{MemorySource, pod};

    type Events = Pin<Box<dyn Stream<Item = Event<Arc<Value>>> + Send>>;

    fn start(src: &Arc<MemorySource>) -> Events {
        let config = Config {
            resume_delay: Duration::from_millis(5),
            ..Config::new("test").backoff(Duration::from_millis(10), Duration::from_millis(40))
        };
        Box::pin(watch_raw(src.clone(), &PODS, config))
    }

    async fn next(events: &mut Events) -> Event<String> {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("an event within 5 s")
            .expect("the watcher does not end");
        ev.map(|o| {
            format!(
                "{}@{}",
                o["metadata"]["name"].as_str().unwrap(),
                o["metadata"]["resourceVersion"].as_str().unwrap()
            )
        })
    }

    async fn expect_list(events: &mut Events, items: &[&str]) {
        assert_eq!(next(events).await, Event::Init);
        for item in items {
            assert_eq!(next(events).await, Event::InitApply(item.to_string()));
        }
        assert_eq!(next(events).await, Event::InitDone);
    }

    #[tokio::test]
    async fn lists_then_watches_from_the_lists_revision() {
        let src = MemorySource::new();
        src.put("a");
        src.put("b");
        let mut events = start(&src);
        expect_list(&mut events, &["a@1", "b@2"]).await;
        src.put("a");
        src.delete("b");
        assert_eq!(next(&mut events).await, Event::Apply("a@3".into()));
        assert_eq!(next(&mut events).await, Event::Delete("b@4".into()));
        assert_eq!(src.watches(), ["2"]);
        assert_eq!(src.lists(), 1);
    }

    #[tokio::test]
    async fn a_watcher_started_from_a_revision_watches_first_and_lists_only_on_410() {
        let src = MemorySource::new();
        src.put("a");
        src.put("b");
        let config = Config {
            resume_delay: Duration::from_millis(5),
            ..Config::new("test")
                .backoff(Duration::from_millis(10), Duration::from_millis(40))
                .start_from(Some("1".into()))
        };
        let mut events: Events = Box::pin(watch_raw(src.clone(), &PODS, config));
        // What came after revision 1, with no list first.
        assert_eq!(next(&mut events).await, Event::Apply("b@2".into()));
        assert_eq!(src.lists(), 0);
        assert_eq!(src.watches(), ["1"]);
        // Too old a revision: a list, as any watcher does.
        src.compact();
        let config = Config::new("test").start_from(Some("1".into()));
        let mut events: Events = Box::pin(watch_raw(src.clone(), &PODS, config));
        expect_list(&mut events, &["a@1", "b@2"]).await;
        assert_eq!(src.lists(), 1);
    }

    #[tokio::test]
    async fn a_watch_that_ends_resumes_from_the_last_revision_without_relisting() {
        let src = MemorySource::new();
        src.put("a");
        let mut events = start(&src);
        expect_list(&mut events, &["a@1"]).await;
        src.put("b");
        assert_eq!(next(&mut events).await, Event::Apply("b@2".into()));
        src.end_watches();
        // Written while no watch is open: seen on the resumed watch.
        src.put("c");
        assert_eq!(next(&mut events).await, Event::Apply("c@3".into()));
        assert_eq!(src.lists(), 1);
        assert_eq!(src.watches().first().map(String::as_str), Some("1"));
        assert!(
            src.watches().iter().skip(1).all(|rv| rv == "2"),
            "{:?}",
            src.watches()
        );
        // A broken connection resumes the same way.
        src.fail_watches(SourceError::Other("connection reset".into()));
        src.put("d");
        assert_eq!(next(&mut events).await, Event::Apply("d@4".into()));
        assert_eq!(src.lists(), 1);
    }

    #[tokio::test]
    async fn gone_relists_and_the_new_list_replaces_the_old() {
        let src = MemorySource::new();
        src.put("a");
        src.put("b");
        let mut events = start(&src);
        expect_list(&mut events, &["a@1", "b@2"]).await;
        // While the watch is down, b is deleted and the history compacted.
        src.refuse_next_watch(SourceError::Other("refused".into()));
        src.end_watches();
        src.delete("b");
        src.put("c");
        src.compact();
        expect_list(&mut events, &["a@1", "c@4"]).await;
        assert_eq!(src.lists(), 2);
        // A 410 in the middle of a watch relists too.
        src.fail_watches(SourceError::Gone("too old".into()));
        expect_list(&mut events, &["a@1", "c@4"]).await;
        src.put("d");
        assert_eq!(next(&mut events).await, Event::Apply("d@5".into()));
    }

    #[tokio::test]
    async fn failures_back_off_and_reconnect() {
        let src = MemorySource::new();
        src.put("a");
        for _ in 0..3 {
            src.refuse_next_list(SourceError::Other("connection refused".into()));
        }
        let started = tokio::time::Instant::now();
        let mut events = start(&src);
        expect_list(&mut events, &["a@1"]).await;
        // 10 + 20 + 40 ms of back-off before the fourth list.
        assert!(started.elapsed() >= Duration::from_millis(70));
        assert_eq!(src.lists(), 4);
        for _ in 0..2 {
            src.refuse_next_watch(SourceError::Other("connection refused".into()));
        }
        src.put("b");
        assert_eq!(next(&mut events).await, Event::Apply("b@2".into()));
        assert_eq!(src.watches(), ["1", "1", "1"]);
    }

    #[tokio::test]
    async fn an_unreadable_event_relists_instead_of_replaying_it() {
        let src = MemorySource::new();
        src.put("a");
        let mut events = start(&src);
        expect_list(&mut events, &["a@1"]).await;
        src.list_undecodable("item 1: recursion limit exceeded");
        src.fail_watches(SourceError::Decode("recursion limit exceeded".into()));
        // The list leaves the bad object out; the others are still seen.
        expect_list(&mut events, &["a@1"]).await;
        src.put("b");
        assert_eq!(next(&mut events).await, Event::Apply("b@2".into()));
        assert_eq!(src.lists(), 2);
    }

    #[tokio::test]
    async fn typed_watch_leaves_out_what_does_not_decode() {
        #[derive(serde::Deserialize, Debug)]
        struct Named {
            metadata: Meta,
        }
        #[derive(serde::Deserialize, Debug)]
        struct Meta {
            name: String,
        }
        let src = MemorySource::new();
        src.put("a");
        let mut events = Box::pin(watch::<Named, _>(src.clone(), &PODS, Config::new("typed")));
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(5), events.next())
                .await
                .unwrap()
                .unwrap()
                .map(|n| n.metadata.name.clone())
        };
        assert_eq!(next().await, Event::Init);
        assert_eq!(next().await, Event::InitApply("a".to_string()));
        assert_eq!(next().await, Event::InitDone);
        let _ = pod("unused", 0);
        src.put("b");
        assert_eq!(next().await, Event::Apply("b".to_string()));
    }
}
