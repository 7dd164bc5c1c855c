//! `tug exec POD [-c C] [-i] [-t] -- COMMAND...`: a command in a pod's container,
//! over the same WebSocket channel protocol kubectl speaks (`v5.channel.k8s.io`):
//! stdin on channel 0, stdout 1, stderr 2, the final status (with the exit code)
//! on 3. `tug exec` exits with the command's exit code, as kubectl does.

use std::io::Write;

use anyhow::{Context as _, bail};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tugboat_api::Client;
use tugboat_api::resource::PODS;

use crate::args::ExecArgs;
use crate::context::Context;
use crate::error::Exit;

pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The command exited with this code.
    Exited(u8),
    /// The session failed: the server's message.
    Failed(String),
}

/// Runs `command` in `pod`'s `container` (its default one when `None`): writes its
/// stdout to `stdout` and its stderr to `stderr` (both to `stdout` with a
/// terminal), feeds it `stdin` until that ends.
#[allow(clippy::too_many_arguments)]
pub async fn run_in_pod(
    client: &Client,
    ns: &str,
    pod: &str,
    container: Option<&str>,
    command: &[String],
    stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    tty: bool,
    stdout: &mut (dyn Write + Send),
    stderr: &mut (dyn Write + Send),
) -> anyhow::Result<Ended> {
    let mut query: Vec<(&str, String)> = command.iter().map(|c| ("command", c.clone())).collect();
    if let Some(c) = container {
        query.push(("container", c.to_string()));
    }
    query.push(("stdout", "true".into()));
    if !tty {
        query.push(("stderr", "true".into()));
    }
    if stdin.is_some() {
        query.push(("stdin", "true".into()));
    }
    if tty {
        query.push(("tty", "true".into()));
    }
    let path = format!("{}/exec", PODS.object_path(Some(ns), pod));
    let (upgraded, protocol) = client.websocket(&path, &query, &PROTOCOLS).await?;
    let v5 = protocol == PROTOCOLS[0];
    let ws = WebSocketStream::from_raw_socket(upgraded, Role::Client, None).await;
    let (mut sink, mut stream) = ws.split();
    // Stdin is pumped by a task of its own; its end is sent as v5's close of
    // channel 0 (v4 has no way to say it).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(16);
    if let Some(mut input) = stdin {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut msg = Vec::with_capacity(n + 1);
                        msg.push(0u8);
                        msg.extend_from_slice(&buf[..n]);
                        if tx.send(Message::Binary(msg.into())).await.is_err() {
                            return;
                        }
                    }
                }
            }
            if v5 {
                let _ = tx.send(Message::Binary(vec![255u8, 0].into())).await;
            }
        });
    } else {
        drop(tx);
    }
    let mut status: Option<Value> = None;
    let mut input_open = true;
    loop {
        tokio::select! {
            out = rx.recv(), if input_open => match out {
                Some(msg) => sink.send(msg).await.context("sending stdin")?,
                None => input_open = false,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    let Some((&ch, payload)) = data.split_first() else { continue };
                    match ch {
                        1 => { stdout.write_all(payload)?; stdout.flush()?; }
                        2 => { stderr.write_all(payload)?; stderr.flush()?; }
                        3 => status = serde_json::from_slice(payload).ok(),
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(anyhow::Error::new(e).context("the exec session failed")),
            },
        }
    }
    Ok(ended(status.as_ref()))
}

/// What the status on the error channel says.
pub fn ended(status: Option<&Value>) -> Ended {
    let Some(status) = status else {
        return Ended::Failed("the session ended without a status".into());
    };
    if status["status"] == "Success" {
        return Ended::Exited(0);
    }
    if status["reason"] == "NonZeroExitCode"
        && let Some(code) = status
            .pointer("/details/causes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.parse::<u8>().ok())
    {
        return Ended::Exited(code);
    }
    Ended::Failed(
        status["message"]
            .as_str()
            .unwrap_or("the command failed")
            .to_string(),
    )
}

/// Puts the terminal in raw mode while alive (for `-t`), restoring it on drop.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        if tcsetattr(&stdin, SetArg::TCSANOW, &raw).is_err() {
            return RawMode(None);
        }
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

pub async fn run(args: ExecArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    if args.command.is_empty() {
        bail!("you must specify at least one command for the container: tug exec POD -- COMMAND");
    }
    let client = ctx.client()?;
    let ns = ctx.namespace().to_string();
    let pod = crate::commands::port_forward::pod_for(&client, &ns, &args.pod).await?;
    let tty = args.tty && std::io::stdin().is_terminal();
    if args.tty && !tty {
        tracing::warn!("Unable to use a TTY - input is not a terminal or the right kind of file");
    }
    let stdin: Option<Box<dyn AsyncRead + Send + Unpin>> = if args.stdin {
        Some(Box::new(tokio::io::stdin()))
    } else {
        None
    };
    let _raw = tty.then(RawMode::enter);
    let mut stderr = std::io::stderr();
    let ended = run_in_pod(
        &client,
        &ns,
        &pod,
        args.container.as_deref(),
        &args.command,
        stdin,
        tty,
        ctx.out,
        &mut stderr,
    )
    .await?;
    drop(_raw);
    match ended {
        Ended::Exited(0) => Ok(()),
        Ended::Exited(code) => Err(Exit::failed(
            code,
            anyhow::anyhow!("command terminated with exit code {code}"),
        )
        .into()),
        Ended::Failed(message) => bail!("{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_exit_code_comes_from_the_status() {
        assert_eq!(ended(Some(&json!({"status": "Success"}))), Ended::Exited(0));
        let failed = json!({"status": "Failure", "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}});
        assert_eq!(ended(Some(&failed)), Ended::Exited(3));
        let other = json!({"status": "Failure", "message": "no such container"});
        assert_eq!(
            ended(Some(&other)),
            Ended::Failed("no such container".into())
        );
        assert!(matches!(ended(None), Ended::Failed(_)));
    }
}
