//! Benchmark (not a test): how fast a Deployment's pods are replaced when one of three
//! nodes is lost (kill -9 of its agent, or a network partition), and how fast the
//! node's stale containers go once it is back. The measurement is
//! [`tugboat_tests::nodeloss`] (also used by the `compare` benchmark); its
//! documentation says what is timed and how.
//!
//! `cargo bench -p tugboat-tests --bench nodeloss` (`NODELOSS_ROUNDS`, default 3;
//! `NODELOSS_HOLD_SECS`, default 0, keeps the node away that much longer;
//! `NODELOSS_AGENT_LOGS=1` prints the cut-off agent container's log after each
//! partition round; `RUST_LOG=info` makes the agent processes of the kill rounds log).
//! Needs the Docker daemon. Everything a round creates is removed when its cluster is
//! dropped, also on error, panic or Ctrl-C; the end checks that nothing is left.

use anyhow::bail;
use tugboat_tests::bench::rounds_from_env;
use tugboat_tests::nodeloss::{DEFAULT_ROUNDS, run_and_report};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds = rounds_from_env("NODELOSS_ROUNDS", DEFAULT_ROUNDS)?;
    // On Ctrl-C the benchmark's future is dropped, and with it the round's cluster.
    tokio::select! {
        result = run_and_report(rounds) => result.map(|_| ()),
        _ = tokio::signal::ctrl_c() => bail!("interrupted; what the benchmark created was removed"),
    }
}
