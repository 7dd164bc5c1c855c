//! `POST /burn?seconds=S&millicores=M`: keeps `M` thousandths of a CPU busy
//! for `S` seconds, for autoscaling demonstrations and tests. Each whole core
//! is one thread spinning; a fraction is a thread busy for that share of every
//! 100 ms. Bounded: at most [`MAX_SECONDS`] long, [`MAX_MILLICORES`] at once
//! and [`MAX_THREADS`] burning threads in all; a burn over the bound is
//! refused with 429, not queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const MAX_SECONDS: u64 = 600;
pub const MAX_MILLICORES: u64 = 4000;
pub const MAX_THREADS: usize = 16;

const SLICE: Duration = Duration::from_millis(100);

/// How many burning threads run now.
#[derive(Debug, Default)]
pub struct Burners(Arc<AtomicUsize>);

/// Why a burn was refused: the status and a message naming the parameter.
pub type Refusal = (u16, String);

fn param(query: Option<&str>, key: &str, default: u64, max: u64) -> Result<u64, Refusal> {
    match crate::routes::query_param(query, key) {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err((
                400,
                format!(
                    "query parameter {key}: expected a whole number from 1 to {max}, got {v:?}"
                ),
            )),
        },
    }
}

impl Burners {
    /// Starts a burn; returns what it does.
    pub fn start(&self, query: Option<&str>) -> Result<String, Refusal> {
        let seconds = param(query, "seconds", 30, MAX_SECONDS)?;
        let millicores = param(query, "millicores", 1000, MAX_MILLICORES)?;
        let whole = (millicores / 1000) as usize;
        let fraction = millicores % 1000;
        let threads = whole + usize::from(fraction > 0);
        let running = self.0.clone();
        if running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n + threads <= MAX_THREADS).then_some(n + threads)
            })
            .is_err()
        {
            return Err((
                429,
                format!(
                    "already burning with {} threads; at most {MAX_THREADS} at once",
                    running.load(Ordering::SeqCst)
                ),
            ));
        }
        let until = Instant::now() + Duration::from_secs(seconds);
        for i in 0..threads {
            let share = if i < whole { 1000 } else { fraction };
            let counter = running.clone();
            let spawned = std::thread::Builder::new()
                .name("burn".into())
                .spawn(move || {
                    burn(until, share);
                    counter.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                running.fetch_sub(1, Ordering::SeqCst);
            }
        }
        Ok(format!("burning {millicores}m for {seconds}s\n"))
    }
}

/// Busy for `share` thousandths of every slice until `until`.
fn burn(until: Instant, share: u64) {
    let busy = SLICE * u32::try_from(share).unwrap_or(1000) / 1000;
    let mut x: u64 = 1;
    while Instant::now() < until {
        let slice_start = Instant::now();
        while slice_start.elapsed() < busy {
            // Work the optimizer cannot drop.
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let rest = SLICE.saturating_sub(slice_start.elapsed());
        if !rest.is_zero() {
            std::thread::sleep(rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_named() {
        let b = Burners::default();
        assert_eq!(b.start(Some("seconds=0")).unwrap_err().0, 400);
        let e = b.start(Some("millicores=9000")).unwrap_err();
        assert!(e.1.contains("millicores"), "{}", e.1);
        assert!(
            b.start(Some("seconds=1&millicores=250"))
                .unwrap()
                .contains("250m")
        );
    }

    #[test]
    fn too_many_threads_are_refused() {
        let b = Burners::default();
        b.0.store(MAX_THREADS, Ordering::SeqCst);
        assert_eq!(b.start(Some("seconds=1")).unwrap_err().0, 429);
    }
}
