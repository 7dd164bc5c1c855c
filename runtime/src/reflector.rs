//! A reflector keeps what a [`watcher`](crate::watcher) saw as a map of shared
//! objects: one [`Writer`] applies the events, any number of [`Store`] readers
//! read it without waiting on the watch (a read takes a lock for the length of
//! a map look-up, never across an `.await`). A store is ready once the first list
//! is in.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use tokio::sync::watch;

use crate::object::{Object, ObjectRef};
use crate::watcher::Event;

type Map<K> = HashMap<ObjectRef, Arc<K>>;

/// The reading side: cheap to clone, shared by every reader.
pub struct Store<K> {
    map: Arc<RwLock<Map<K>>>,
    ready: watch::Receiver<bool>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Store {
            map: self.map.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<K> Store<K> {
    pub fn get(&self, key: &ObjectRef) -> Option<Arc<K>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Every object, in no particular order.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the first list is in. Returns at once if it is; waits for
    /// ever if the writer is dropped before (so a caller bounds it).
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.clone();
        if ready.wait_for(|r| *r).await.is_err() {
            futures::future::pending::<()>().await;
        }
    }
}

/// The writing side: one per store.
pub struct Writer<K> {
    map: Arc<RwLock<Map<K>>>,
    ready: watch::Sender<bool>,
    /// The list being received, swapped in whole at `InitDone` so readers never
    /// see half a list.
    buffer: Option<Map<K>>,
}

impl<K: Object> Writer<K> {
    pub fn new() -> Writer<K> {
        let (ready, _) = watch::channel(false);
        Writer {
            map: Arc::default(),
            ready,
            buffer: None,
        }
    }

    pub fn store(&self) -> Store<K> {
        Store {
            map: self.map.clone(),
            ready: self.ready.subscribe(),
        }
    }

    pub fn apply(&mut self, ev: &Event<Arc<K>>) {
        match ev {
            Event::Init => self.buffer = Some(Map::new()),
            Event::InitApply(k) => {
                let key = k.object_ref();
                match self.buffer.as_mut() {
                    Some(b) => {
                        b.insert(key, k.clone());
                    }
                    // An InitApply without Init: take it as an update.
                    None => {
                        self.write().insert(key, k.clone());
                    }
                }
            }
            Event::InitDone => {
                if let Some(b) = self.buffer.take() {
                    *self.write() = b;
                }
                self.ready.send_replace(true);
            }
            Event::Apply(k) => {
                self.write().insert(k.object_ref(), k.clone());
            }
            Event::Delete(k) => {
                self.write().remove(&k.object_ref());
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Map<K>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K: Object> Default for Writer<K> {
    fn default() -> Self {
        Writer::new()
    }
}

/// Applies every event of `stream` to `writer`, then passes it on.
pub fn reflector<K, W>(mut writer: Writer<K>, stream: W) -> impl Stream<Item = Event<Arc<K>>> + Send
where
    K: Object + Send + Sync + 'static,
    W: Stream<Item = Event<Arc<K>>> + Send,
{
    stream.map(move |ev| {
        writer.apply(&ev);
        ev
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn obj(name: &str, round: u64) -> Arc<Value> {
        Arc::new(json!({"metadata": {"name": name, "namespace": "ns"}, "round": round}))
    }

    fn key(name: &str) -> ObjectRef {
        ObjectRef::new(Some("ns"), name)
    }

    #[tokio::test]
    async fn applies_changes_and_is_ready_after_the_first_list() {
        let mut w = Writer::<Value>::new();
        let store = w.store();
        assert!(!store.is_ready());
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(obj("a", 1)));
        w.apply(&Event::InitApply(obj("b", 1)));
        assert!(store.is_empty(), "half a list is not shown");
        w.apply(&Event::InitDone);
        tokio::time::timeout(std::time::Duration::from_secs(1), store.wait_until_ready())
            .await
            .expect("ready");
        assert_eq!(store.len(), 2);
        w.apply(&Event::Apply(obj("a", 2)));
        w.apply(&Event::Delete(obj("b", 1)));
        assert_eq!(store.get(&key("a")).unwrap()["round"], 2);
        assert!(store.get(&key("b")).is_none());
        // A relist drops what it no longer holds.
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(obj("c", 3)));
        w.apply(&Event::InitDone);
        let names: Vec<_> = store
            .state()
            .iter()
            .map(|o| o["metadata"]["name"].clone())
            .collect();
        assert_eq!(names, [json!("c")]);
    }

    /// Readers on other threads, while the writer relists over and over, only
    /// ever see a whole list: all of its objects, all from the same list.
    #[test]
    fn readers_never_see_half_a_list_under_concurrent_writes() {
        const OBJECTS: usize = 50;
        const ROUNDS: u64 = 300;
        let mut w = Writer::<Value>::new();
        let store = w.store();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let store = store.clone();
                let done = done.clone();
                std::thread::spawn(move || {
                    let mut reads = 0u64;
                    let mut last_round = 0;
                    while !done.load(std::sync::atomic::Ordering::Acquire) {
                        let state = store.state();
                        reads += 1;
                        if state.is_empty() {
                            assert!(!store.is_ready() || last_round == 0);
                            continue;
                        }
                        assert_eq!(state.len(), OBJECTS, "a list shown in part");
                        let round = state[0]["round"].as_u64().unwrap();
                        assert!(state.iter().all(|o| o["round"] == round), "two lists mixed");
                        assert!(
                            round >= last_round,
                            "went back from {last_round} to {round}"
                        );
                        last_round = round;
                    }
                    reads
                })
            })
            .collect();
        for round in 1..=ROUNDS {
            w.apply(&Event::Init);
            for i in 0..OBJECTS {
                w.apply(&Event::InitApply(obj(&format!("o{i}"), round)));
            }
            w.apply(&Event::InitDone);
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        let reads: u64 = readers
            .into_iter()
            .map(|r| r.join().expect("a reader failed"))
            .sum();
        assert!(reads > 0);
        let state = store.state();
        assert_eq!(state.len(), OBJECTS);
        assert!(state.iter().all(|o| o["round"] == ROUNDS));
    }
}
