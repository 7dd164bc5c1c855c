//! A DaemonSet's rollout as kubectl judges it (its `DaemonSetStatusViewer`):
//! only a `RollingUpdate` DaemonSet has one; it is done once its status has
//! observed the spec and every node that should run it has an updated,
//! available pod. [`follow`] polls until then.

use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, bail};
use k8s_openapi::api::apps::v1::DaemonSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tugboat_api::Client;
use tugboat_api::resource::DAEMONSETS;

use super::status::Verdict;
use crate::duration::format_flag;

/// How often the DaemonSet is read while waiting.
const POLL: Duration = Duration::from_millis(500);

/// kubectl's verdict on `ds`; an error for one that has no rollout.
pub fn verdict(ds: &DaemonSet) -> anyhow::Result<Verdict> {
    let name = ds.metadata.name.as_deref().unwrap_or("");
    let strategy = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate");
    if strategy != "RollingUpdate" {
        bail!("rollout status is only available for RollingUpdate strategy type");
    }
    let status = ds.status.clone().unwrap_or_default();
    if ds.metadata.generation.unwrap_or(0) > status.observed_generation.unwrap_or(0) {
        return Ok(Verdict::Waiting(
            "Waiting for daemon set spec update to be observed...".into(),
        ));
    }
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    let available = status.number_available.unwrap_or(0);
    if updated < desired {
        return Ok(Verdict::Waiting(format!(
            "Waiting for daemon set {name:?} rollout to finish: {updated} out of {desired} new pods have been updated..."
        )));
    }
    if available < desired {
        return Ok(Verdict::Waiting(format!(
            "Waiting for daemon set {name:?} rollout to finish: {available} of {desired} updated pods are available..."
        )));
    }
    Ok(Verdict::Done(format!(
        "daemon set {name:?} successfully rolled out"
    )))
}

/// Prints kubectl's lines for the DaemonSet `name` until it has rolled out,
/// `timeout` (zero: none) passes or `shutdown` is cancelled; with `watch`
/// false, judges once.
pub async fn follow(
    client: &Client,
    ns: &str,
    name: &str,
    watch: bool,
    timeout: Duration,
    out: &mut (dyn Write + Send),
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
    let mut last: Option<String> = None;
    loop {
        let ds: DaemonSet = client.get_as(&DAEMONSETS, Some(ns), name).await?;
        match verdict(&ds)? {
            Verdict::Done(line) => {
                writeln!(out, "{line}")?;
                return Ok(());
            }
            Verdict::Failed(why) => return Err(anyhow!(why)),
            Verdict::Waiting(line) => {
                if last.as_deref() != Some(line.as_str()) {
                    writeln!(out, "{line}")?;
                    out.flush()?;
                }
                last = Some(line);
            }
        }
        if !watch {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            bail!(
                "timed out waiting for the condition: daemon set {name:?} did not finish rolling out within --timeout {}",
                format_flag(timeout)
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => bail!("interrupted while waiting for daemon set {name:?} to roll out"),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DaemonSetSpec, DaemonSetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn ds(desired: i32, updated: i32, available: i32) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("x".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(DaemonSetSpec::default()),
            status: Some(DaemonSetStatus {
                observed_generation: Some(1),
                desired_number_scheduled: desired,
                updated_number_scheduled: Some(updated),
                number_available: Some(available),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_lines_are_kubectls() {
        assert_eq!(
            verdict(&ds(2, 1, 2)).unwrap(),
            Verdict::Waiting(
                "Waiting for daemon set \"x\" rollout to finish: 1 out of 2 new pods have been updated...".into()
            )
        );
        assert_eq!(
            verdict(&ds(2, 2, 1)).unwrap(),
            Verdict::Waiting(
                "Waiting for daemon set \"x\" rollout to finish: 1 of 2 updated pods are available...".into()
            )
        );
        assert_eq!(
            verdict(&ds(2, 2, 2)).unwrap(),
            Verdict::Done("daemon set \"x\" successfully rolled out".into())
        );
        let mut unobserved = ds(2, 2, 2);
        unobserved.metadata.generation = Some(2);
        assert!(
            matches!(verdict(&unobserved).unwrap(), Verdict::Waiting(l) if l.contains("spec update"))
        );
    }
}
