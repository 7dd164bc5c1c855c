//! `tug logs POD [-c CONTAINER] [-f] [--tail N] [-p]`: a container's output, fetched
//! through the controller from the node's agent.

use anyhow::bail;
use futures::StreamExt;
use tugboat_api::resource::PODS;

use crate::args::LogsArgs;
use crate::context::Context;

pub async fn run(args: LogsArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let ns = ctx.namespace().to_string();
    let name = args
        .pod
        .strip_prefix("pod/")
        .or_else(|| args.pod.strip_prefix("pods/"))
        .unwrap_or(&args.pod)
        .to_string();
    if let Some(t) = args.tail
        && t < 0
    {
        bail!("--tail: expected a number of lines (0 or more), got {t}");
    }
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(c) = &args.container {
        query.push(("container", c.clone()));
    }
    if args.follow {
        query.push(("follow", "true".into()));
    }
    if let Some(t) = args.tail {
        query.push(("tailLines", t.to_string()));
    }
    if args.previous {
        query.push(("previous", "true".into()));
    }
    if args.timestamps {
        query.push(("timestamps", "true".into()));
    }
    let path = format!("{}/log", PODS.object_path(Some(&ns), &name));
    let mut stream = Box::pin(client.stream_path(&path, &query).await?);
    let shutdown = ctx.shutdown.clone();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            chunk = stream.next() => match chunk {
                Some(chunk) => {
                    ctx.out.write_all(&chunk?)?;
                    ctx.out.flush()?;
                }
                None => break,
            }
        }
    }
    Ok(())
}
