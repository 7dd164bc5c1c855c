//! Which images the engine is known to hold, so that starting a pod does not ask
//! the engine about its image every time: an image seen present is taken as
//! present for [`FRESH`], and forgotten at once when creating a container from it
//! fails (it may have been removed). Many pods starting at once with one image
//! make one inspect between them: a check that misses holds the cache while it
//! asks, and the others find the answer.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long an image seen present is taken as present without asking again.
pub const FRESH: Duration = Duration::from_secs(30);

/// Images seen present, by reference as pods name them, with when.
#[derive(Debug, Default)]
pub struct PresentImages {
    seen: Mutex<HashMap<String, Instant>>,
}

impl PresentImages {
    /// Whether `image` is present: known from a recent look, else as `ask` (the
    /// engine) says now; a present answer is remembered.
    pub async fn present<E, F>(&self, image: &str, ask: impl FnOnce() -> F) -> Result<bool, E>
    where
        F: Future<Output = Result<bool, E>>,
    {
        let mut seen = self.seen.lock().await;
        if seen.get(image).is_some_and(|at| at.elapsed() < FRESH) {
            return Ok(true);
        }
        let present = ask().await?;
        if present {
            seen.insert(image.to_string(), Instant::now());
        } else {
            seen.remove(image);
        }
        Ok(present)
    }

    /// `image` is present (just pulled).
    pub async fn saw(&self, image: &str) {
        self.seen
            .lock()
            .await
            .insert(image.to_string(), Instant::now());
    }

    /// `image` may be gone: the next check asks the engine.
    pub async fn forget(&self, image: &str) {
        self.seen.lock().await.remove(image);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_present_image_is_asked_about_once_until_stale_or_forgotten() {
        let cache = PresentImages::default();
        let asked = AtomicUsize::new(0);
        let ask = |answer: bool| {
            asked.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, ()>(answer) }
        };
        assert_eq!(cache.present("a", || ask(true)).await, Ok(true));
        assert_eq!(cache.present("a", || ask(false)).await, Ok(true));
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        tokio::time::advance(FRESH).await;
        assert_eq!(cache.present("a", || ask(true)).await, Ok(true));
        assert_eq!(asked.load(Ordering::SeqCst), 2);
        cache.forget("a").await;
        assert_eq!(cache.present("a", || ask(false)).await, Ok(false));
        assert_eq!(cache.present("a", || ask(false)).await, Ok(false));
        assert_eq!(asked.load(Ordering::SeqCst), 4);
        cache.saw("a").await;
        assert_eq!(cache.present("a", || ask(false)).await, Ok(true));
        assert_eq!(asked.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn an_error_is_not_remembered() {
        let cache = PresentImages::default();
        assert_eq!(
            cache.present("a", || async { Err("down") }).await,
            Err("down")
        );
        assert_eq!(
            cache.present("a", || async { Ok::<_, &str>(true) }).await,
            Ok(true)
        );
    }
}
