//! Benchmark (not a test): how fast a Deployment heals after one of its containers
//! is killed, side by side with Docker Swarm on the same daemon, image and replica
//! count, in the same run. The measurement is [`tugboat_tests::selfheal`] (also used
//! by the `compare` benchmark); its documentation says what is timed and how.
//!
//! `cargo bench -p tugboat-tests --bench selfheal` (`SELFHEAL_ROUNDS`, default 20).
//! Needs the Docker daemon. A daemon outside any swarm is made a single-node swarm
//! for the run and leaves it at the end (also on error, panic, Ctrl-C or SIGTERM); one
//! already in a swarm stays in it. Only what the benchmark created is removed.

use anyhow::bail;
use tokio::signal::unix::{SignalKind, signal};
use tugboat_tests::bench::rounds_from_env;
use tugboat_tests::selfheal::{DEFAULT_ROUNDS, run_and_report};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds = rounds_from_env("SELFHEAL_ROUNDS", DEFAULT_ROUNDS)?;
    // On Ctrl-C or SIGTERM the benchmark's future is dropped, and with it every guard
    // of the measurement, which removes what it created.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = run_and_report(rounds) => result.map(|_| ()),
        _ = interrupt.recv() => bail!("interrupted"),
        _ = terminate.recv() => bail!("terminated"),
    }
}
