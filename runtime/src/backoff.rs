//! One back-off for every retry loop: a delay that starts at `initial`, doubles
//! after each failure and stops growing at `max`; [`Backoff::reset`] after a
//! success. No jitter: Tugboat's loops each talk to one server of their own, so
//! there is no herd to spread.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay after `failures` failures in a row (0: the first one), without
    /// keeping state: `initial × 2^failures`, at most `max`.
    pub fn nth(initial: Duration, max: Duration, failures: u32) -> Duration {
        let cap = max.max(initial);
        initial
            .checked_mul(1u32 << failures.min(31))
            .unwrap_or(cap)
            .min(cap)
    }

    /// The delay to wait now; the one after it is twice as long (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let now = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        now
    }

    /// After a success: the next delay is `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// Sleeps the next delay; `false` when `shutdown` came first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let d = self.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// Sleeps the next delay (for a caller whose own drop is its cancellation).
    pub async fn sleep(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(100 * MS, 500 * MS);
        let seen: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(seen, [100 * MS, 200 * MS, 400 * MS, 500 * MS, 500 * MS]);
        b.reset();
        assert_eq!(b.next_delay(), 100 * MS);
    }

    #[test]
    fn nth_matches_the_stateful_sequence_and_never_overflows() {
        let mut b = Backoff::new(100 * MS, Duration::from_secs(300));
        for n in 0..40 {
            assert_eq!(
                Backoff::nth(100 * MS, Duration::from_secs(300), n),
                b.next_delay()
            );
        }
        assert_eq!(
            Backoff::nth(Duration::MAX, Duration::from_secs(1), u32::MAX),
            Duration::MAX
        );
        assert_eq!(Backoff::nth(MS, Duration::ZERO, 3), MS);
    }
}
