//! The controller's keyed queue: each key waits once, at its earliest due time,
//! with the reason it was scheduled; a key being reconciled is not started again
//! until it is done.

use std::collections::{BTreeSet, HashMap, HashSet};

use tokio::time::Instant;

use crate::controller::ReconcileReason;
use crate::object::ObjectRef;

/// Keys waiting to be reconciled, each at its earliest due time.
#[derive(Default)]
pub(crate) struct Queue {
    due: HashMap<ObjectRef, (Instant, ReconcileReason)>,
    order: BTreeSet<(Instant, ObjectRef)>,
}

impl Queue {
    /// Schedules `key` at `at`, unless it already waits for an earlier time
    /// (duplicates collapse to the earliest).
    pub(crate) fn schedule(&mut self, key: ObjectRef, at: Instant, reason: ReconcileReason) {
        if let Some((existing, _)) = self.due.get(&key) {
            if *existing <= at {
                return;
            }
            self.order.remove(&(*existing, key.clone()));
        }
        self.order.insert((at, key.clone()));
        self.due.insert(key, (at, reason));
    }

    /// The earliest due time of a key that is not running.
    pub(crate) fn next_due(&self, running: &HashSet<ObjectRef>) -> Option<Instant> {
        self.order
            .iter()
            .find(|(_, k)| !running.contains(k))
            .map(|(t, _)| *t)
    }

    /// Takes the earliest key due by `now` that is not running.
    pub(crate) fn pop_due(
        &mut self,
        now: Instant,
        running: &HashSet<ObjectRef>,
    ) -> Option<(ObjectRef, ReconcileReason)> {
        let (at, key) = self
            .order
            .iter()
            // In time order: past the first not yet due, none is (without this
            // stop, a queue of many later retries was scanned whole each time).
            .take_while(|(t, _)| *t <= now)
            .find(|(_, k)| !running.contains(k))
            .cloned()?;
        self.order.remove(&(at, key.clone()));
        let (_, reason) = self.due.remove(&key)?;
        Some((key, reason))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(n: &str) -> ObjectRef {
        ObjectRef::new(Some("default"), n)
    }

    #[test]
    fn duplicate_triggers_collapse_to_the_earliest() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.schedule(
            key("a"),
            now + Duration::from_secs(5),
            ReconcileReason::ReconcilerRequestedRetry,
        );
        q.schedule(key("a"), now, ReconcileReason::ObjectUpdated(key("a")));
        q.schedule(
            key("a"),
            now + Duration::from_secs(1),
            ReconcileReason::Unknown,
        );
        assert_eq!(q.len(), 1);
        assert_eq!(
            q.pop_due(now, &HashSet::new()),
            Some((key("a"), ReconcileReason::ObjectUpdated(key("a"))))
        );
        assert_eq!(q.pop_due(now, &HashSet::new()), None);
    }

    #[test]
    fn a_running_key_is_not_started_twice() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.schedule(key("a"), now, ReconcileReason::Unknown);
        q.schedule(key("b"), now, ReconcileReason::Unknown);
        let running: HashSet<_> = [key("a")].into_iter().collect();
        assert_eq!(q.pop_due(now, &running).map(|(k, _)| k), Some(key("b")));
        assert_eq!(q.pop_due(now, &running), None);
        assert_eq!(q.next_due(&running), None);
        assert_eq!(
            q.pop_due(now, &HashSet::new()).map(|(k, _)| k),
            Some(key("a"))
        );
    }

    #[test]
    fn a_key_due_later_waits() {
        let mut q = Queue::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(2);
        q.schedule(key("a"), later, ReconcileReason::Unknown);
        assert_eq!(q.pop_due(now, &HashSet::new()), None);
        assert_eq!(q.next_due(&HashSet::new()), Some(later));
        assert!(q.pop_due(later, &HashSet::new()).is_some());
    }
}
