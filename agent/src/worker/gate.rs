//! [`RetryGate`]: when a failed container (or image pull) may be tried again.

use std::time::Duration;

use tokio::time::Instant;

/// When a failed container (or image pull) may be retried: the first failure at
/// once, then the shared [`tugboat_runtime::Backoff`] sequence (doubling from
/// `initial` to `max`), reset after a long enough good run.
#[derive(Clone, Debug)]
pub struct RetryGate {
    pub initial: Duration,
    pub max: Duration,
    failures: u32,
    pub not_before: Option<Instant>,
}

impl RetryGate {
    pub fn new(initial: Duration, max: Duration) -> Self {
        RetryGate {
            initial,
            max,
            failures: 0,
            not_before: None,
        }
    }

    /// Records a failure now; the first one may retry at once.
    pub fn fail(&mut self, now: Instant) -> Duration {
        let delay = if self.failures == 0 {
            Duration::ZERO
        } else {
            tugboat_runtime::Backoff::nth(self.initial, self.max, self.failures - 1)
        };
        self.failures = self.failures.saturating_add(1);
        self.not_before = Some(now + delay);
        delay
    }

    pub fn reset(&mut self) {
        self.failures = 0;
        self.not_before = None;
    }

    pub fn ready(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }

    /// How long until a retry may go (zero when it may now).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.not_before
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_retries_at_once_then_doubles_to_the_cap() {
        let mut b = RetryGate::new(Duration::from_secs(1), Duration::from_secs(4));
        let now = Instant::now();
        let delays: Vec<u64> = (0..5).map(|_| b.fail(now).as_secs()).collect();
        assert_eq!(delays, vec![0, 1, 2, 4, 4]);
        assert!(!b.ready(now));
        b.reset();
        assert!(b.ready(now));
    }
}
