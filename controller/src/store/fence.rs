//! The write fence of a controller that shares its store with others: only the
//! elected leader's reconcilers write. The API (every controller serves it, as
//! every kube-apiserver does) and the election itself write from inside
//! [`exempt`]; every other write (a reconciler, the scheduler, the node
//! lifecycle controller) is refused unless this controller holds the lease and
//! renewed it within the renew deadline. So a leader that cannot renew stops
//! writing before its lease can expire and another can take over: two leaders
//! never both write, even when one of them has not noticed yet.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::index::By;
use super::{Key, Revision, Store, StoreError, Stored, WatchStream};
use crate::leader::Leadership;

tokio::task_local! {
    static EXEMPT: ();
}

/// Runs `f` with its writes let through the fence: an API request, the
/// election, the set-up every controller does at start.
pub async fn exempt<F: Future>(f: F) -> F::Output {
    EXEMPT.scope((), f).await
}

fn is_exempt() -> bool {
    EXEMPT.try_with(|_| ()).is_ok()
}

/// `inner`, with writes outside [`exempt`] refused unless `leadership` holds.
pub struct FencedStore {
    inner: Arc<dyn Store>,
    leadership: Arc<Leadership>,
}

impl FencedStore {
    pub fn new(inner: Arc<dyn Store>, leadership: Arc<Leadership>) -> Self {
        FencedStore { inner, leadership }
    }

    fn check(&self, key: &Key) -> Result<(), StoreError> {
        if is_exempt() || self.leadership.is_leader() {
            return Ok(());
        }
        Err(StoreError::Backend(format!(
            "write of {key} refused: this controller is not the leader (only the leader's reconcilers write)"
        )))
    }
}

#[async_trait::async_trait]
impl Store for FencedStore {
    async fn get(&self, key: &Key) -> Result<Option<Stored>, StoreError> {
        self.inner.get(key).await
    }

    async fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<(Vec<Stored>, Revision), StoreError> {
        self.inner.list(resource, namespace).await
    }

    async fn list_by(
        &self,
        resource: &str,
        namespace: Option<&str>,
        by: By<'_>,
    ) -> Result<(Vec<Stored>, Revision), StoreError> {
        self.inner.list_by(resource, namespace, by).await
    }

    async fn create(&self, key: &Key, object: Value) -> Result<Stored, StoreError> {
        self.check(key)?;
        self.inner.create(key, object).await
    }

    async fn update(
        &self,
        key: &Key,
        object: Value,
        expected: Option<Revision>,
    ) -> Result<Stored, StoreError> {
        self.check(key)?;
        self.inner.update(key, object, expected).await
    }

    async fn delete(&self, key: &Key, expected: Option<Revision>) -> Result<Stored, StoreError> {
        self.check(key)?;
        self.inner.delete(key, expected).await
    }

    async fn watch(
        &self,
        resource: &str,
        namespace: Option<&str>,
        after: Revision,
    ) -> Result<WatchStream, StoreError> {
        self.inner.watch(resource, namespace, after).await
    }

    async fn list_at(
        &self,
        resource: &str,
        namespace: Option<&str>,
        revision: Revision,
        after_key: Option<&Key>,
    ) -> Result<Vec<Stored>, StoreError> {
        self.inner
            .list_at(resource, namespace, revision, after_key)
            .await
    }

    async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        self.inner.wait_for(revision, timeout).await
    }

    fn revision(&self) -> Revision {
        self.inner.revision()
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.inner.check().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::RedbStore;
    use serde_json::json;

    #[tokio::test]
    async fn only_exempt_writes_pass_unless_this_controller_leads() {
        let leadership = Arc::new(Leadership::new("me".into()));
        let store = FencedStore::new(
            Arc::new(RedbStore::in_memory(100).unwrap()),
            leadership.clone(),
        );
        let key = Key::new("pods", Some("default"), "p");
        let err = store.create(&key, json!({})).await.unwrap_err();
        assert!(err.to_string().contains("not the leader"), "{err}");
        exempt(store.create(&key, json!({}))).await.unwrap();
        assert!(
            store.get(&key).await.unwrap().is_some(),
            "reads always pass"
        );

        leadership.renewed(std::time::Instant::now(), Duration::from_secs(10));
        store.update(&key, json!({"a": 1}), None).await.unwrap();
        // A renewal older than the deadline is no leadership.
        leadership.renewed(
            std::time::Instant::now() - Duration::from_secs(11),
            Duration::from_secs(10),
        );
        assert!(store.delete(&key, None).await.is_err());
        leadership.renewed(std::time::Instant::now(), Duration::from_secs(10));
        leadership.lost();
        assert!(store.delete(&key, None).await.is_err());
    }
}
