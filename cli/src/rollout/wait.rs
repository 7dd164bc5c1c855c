//! Following a rollout until it is done, for `rollout status` and `apply --wait`:
//! the Deployment is read, then watched (`fieldSelector=metadata.name=NAME`)
//! from that version, read again when the watch ends, and each change is
//! judged by `status::verdict`. Piped, kubectl's line is printed whenever it
//! changes; on a terminal a progress bar is redrawn in place instead.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tugboat_api::resource::{DEPLOYMENTS, PODS};
use tugboat_api::{Client, ListParams};

use super::status::{Progress, Verdict, pod_warning, verdict, with_warning};
use crate::columns::selector_string;
use crate::duration::format_flag;

/// How to follow a rollout.
#[derive(Clone, Copy, Debug)]
pub struct Follow {
    /// Keep watching until done; `false`: judge once and return (kubectl's
    /// `--watch=false`, which succeeds whatever the verdict).
    pub watch: bool,
    /// Give up at this instant; the duration is the `--timeout` to name.
    pub deadline: Option<(Instant, Duration)>,
    /// Draw a progress bar in place rather than print lines.
    pub terminal: bool,
}

impl Follow {
    /// Watch until done, for at most `timeout` (zero: as long as it takes).
    pub fn until_done(timeout: Duration, terminal: bool) -> Follow {
        Follow {
            watch: true,
            deadline: (!timeout.is_zero()).then(|| (Instant::now() + timeout, timeout)),
            terminal,
        }
    }
}

/// Follows the Deployment `name` until it has rolled out (`Ok`), fails
/// (`ProgressDeadlineExceeded`, deleted), the deadline passes or `shutdown` is
/// cancelled; every error names the Deployment.
pub async fn rollout(
    client: &Client,
    ns: &str,
    name: &str,
    follow: Follow,
    out: &mut (dyn Write + Send),
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut screen = Screen::new(follow.terminal);
    let sleep = async {
        match follow.deadline {
            Some((at, _)) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    let outcome = {
        let watching = watch(client, ns, name, follow.watch, out, &mut screen);
        tokio::select! {
            r = watching => Ok(r),
            () = sleep => Err(Stopped::TimedOut),
            () = shutdown.cancelled() => Err(Stopped::Interrupted),
        }
    };
    let result = match outcome {
        Ok(r) => r,
        Err(Stopped::TimedOut) => {
            let timeout = follow.deadline.map(|(_, d)| d).unwrap_or_default();
            Err(anyhow!(
                "timed out waiting for the condition: deployment {name:?} did not finish rolling out within --timeout {}{}",
                format_flag(timeout),
                screen
                    .last
                    .as_deref()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default()
            ))
        }
        Err(Stopped::Interrupted) => Err(anyhow!(
            "interrupted while waiting for deployment {name:?} to roll out"
        )),
    };
    screen.finish(out, result.as_ref().ok().and_then(|v| v.as_deref()))?;
    result.map(|_| ())
}

/// Why following stopped before the rollout said so.
enum Stopped {
    TimedOut,
    Interrupted,
}

/// The read-watch loop; returns the final line to print when done.
async fn watch(
    client: &Client,
    ns: &str,
    name: &str,
    keep_watching: bool,
    out: &mut (dyn Write + Send),
    screen: &mut Screen,
) -> anyhow::Result<Option<String>> {
    let params = ListParams {
        field_selector: Some(format!("metadata.name={name}")),
        ..Default::default()
    };
    loop {
        let d: Deployment = client.get_as(&DEPLOYMENTS, Some(ns), name).await?;
        if let Some(done) = judge(client, &d, out, screen).await? {
            return Ok(Some(done));
        }
        if !keep_watching {
            return Ok(None);
        }
        let from = d.metadata.resource_version.clone();
        let events = client
            .watch(&DEPLOYMENTS, Some(ns), &params, from.as_deref())
            .await
            .with_context(|| format!("cannot watch deployment {name:?}"))?;
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            // A broken stream or an ERROR event (410 Gone): read it afresh.
            let Ok(event) = event else { break };
            match event.event_type.as_str() {
                "ADDED" | "MODIFIED" => {
                    let d: Deployment = serde_json::from_value(event.object)
                        .with_context(|| format!("cannot read deployment {name:?}"))?;
                    if let Some(done) = judge(client, &d, out, screen).await? {
                        return Ok(Some(done));
                    }
                }
                "DELETED" => bail!("deployment {name:?} has been deleted"),
                "ERROR" => break,
                _ => {}
            }
        }
        // Watches end (the server closes them after a while): go on from a
        // fresh read, without spinning if the server is going away.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Shows where `d` stands; `Some(line)` once done, an error when failed.
async fn judge(
    client: &Client,
    d: &Deployment,
    out: &mut (dyn Write + Send),
    screen: &mut Screen,
) -> anyhow::Result<Option<String>> {
    match verdict(d) {
        Verdict::Done(line) => Ok(Some(line)),
        Verdict::Failed(why) => {
            screen.clear(out)?;
            Err(anyhow!(why))
        }
        Verdict::Waiting(line) => {
            let warning = warning(client, d).await;
            let line = with_warning(&line, warning.as_deref());
            screen.show(out, d, &line, warning.as_deref())?;
            Ok(None)
        }
    }
}

/// kubectl's warning about the Deployment's pods, if one is stuck; best effort.
async fn warning(client: &Client, d: &Deployment) -> Option<String> {
    let selector = selector_string(&d.spec.as_ref()?.selector);
    let params = ListParams {
        label_selector: Some(selector),
        ..Default::default()
    };
    let ns = d.metadata.namespace.as_deref();
    let pods: Vec<Pod> = client.list_as(&PODS, ns, &params).await.ok()?;
    pod_warning(&pods)
}

/// What has been shown: the last line (printed once per change) or the bar
/// (redrawn in place).
struct Screen {
    terminal: bool,
    last: Option<String>,
    bar_drawn: bool,
}

impl Screen {
    fn new(terminal: bool) -> Screen {
        Screen {
            terminal,
            last: None,
            bar_drawn: false,
        }
    }

    fn show(
        &mut self,
        out: &mut (dyn Write + Send),
        d: &Deployment,
        line: &str,
        warning: Option<&str>,
    ) -> std::io::Result<()> {
        if self.terminal {
            let name = d.metadata.name.as_deref().unwrap_or("");
            let mut bar = Progress::of(d).bar(name, 20);
            if let Some(w) = warning {
                bar.push_str(&format!(" (Warning: {w})"));
            }
            // Back to the start of the line, clear it, draw.
            write!(out, "\r\x1b[2K{bar}")?;
            out.flush()?;
            self.bar_drawn = true;
        } else if self.last.as_deref() != Some(line) {
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        self.last = Some(line.to_string());
        Ok(())
    }

    /// Takes the bar away, so what follows starts on a clean line.
    fn clear(&mut self, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
        if self.bar_drawn {
            write!(out, "\r\x1b[2K")?;
            self.bar_drawn = false;
        }
        Ok(())
    }

    /// Ends the display: the final line when done; on a terminal the bar's last
    /// state stays (ended by a newline) when it did not finish, so the error
    /// printed after it reads against it.
    fn finish(&mut self, out: &mut (dyn Write + Send), done: Option<&str>) -> std::io::Result<()> {
        match done {
            Some(line) => {
                self.clear(out)?;
                writeln!(out, "{line}")?;
            }
            None if self.bar_drawn => writeln!(out)?,
            None => {}
        }
        out.flush()
    }
}
