//! `kubectl exec` and `kubectl attach`, as the kubelet serves them: the controller
//! relays the client's WebSocket upgrade here (`/exec/{ns}/{pod}/{container}`,
//! `/attach/...`), and the session speaks Kubernetes' channel protocol
//! (`v5.channel.k8s.io`, `v4.channel.k8s.io`): every binary message is one
//! channel byte and its data — 0 stdin, 1 stdout, 2 stderr, 3 the final `Status`
//! (with the exit code), 4 terminal resizes, and in v5 255 closing a stream.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::AgentCtx;
use crate::runtime::{SessionId, StreamOutput, StreamRequest};

/// The channel protocols offered, most preferred first.
pub const CHANNEL_PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Query parameters with repeats kept (`command=sh&command=-c`).
pub use tugboat_api::query::pairs as query_pairs;

/// A boolean as Go's `strconv.ParseBool` reads it (the Python client sends `True`).
fn flag(pairs: &[(String, String)], name: &str) -> bool {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .is_some_and(|(_, v)| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// What a session asks for, from its query; an exec must name a command.
pub fn stream_request(pairs: &[(String, String)], exec: bool) -> Result<StreamRequest, String> {
    let command: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if exec && command.is_empty() {
        return Err("you must specify at least one command for the container".into());
    }
    let req = StreamRequest {
        command: if exec { command } else { Vec::new() },
        stdin: flag(pairs, "stdin"),
        stdout: flag(pairs, "stdout"),
        stderr: flag(pairs, "stderr"),
        tty: flag(pairs, "tty"),
    };
    if !req.stdin && !req.stdout && !req.stderr {
        return Err("you must specify at least one of stdin, stdout, stderr".into());
    }
    Ok(req)
}

/// The `Status` sent on the error channel when the session ends: success, or the
/// exit code as kubectl and the client libraries read it (the `ExitCode` cause
/// first, its message the code).
pub fn exit_status(code: Option<i64>) -> Value {
    match code {
        None | Some(0) => json!({"metadata": {}, "status": "Success"}),
        Some(code) => {
            let code = code.clamp(0, 255);
            json!({
                "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            })
        }
    }
}

fn failure(message: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError"})
}

/// Upgrades to a session with container `id`.
pub fn upgrade(
    ctx: Arc<AgentCtx>,
    ws: WebSocketUpgrade,
    id: String,
    req: StreamRequest,
    shutdown: CancellationToken,
) -> Response {
    let ws = ws.protocols(CHANNEL_PROTOCOLS);
    if ws.selected_protocol().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "exec and attach speak the WebSocket subprotocols {}\n",
                CHANNEL_PROTOCOLS.join(", ")
            ),
        )
            .into_response();
    }
    ws.on_upgrade(move |socket| async move {
        run(ctx, socket, id, req, shutdown).await;
    })
}

async fn run(
    ctx: Arc<AgentCtx>,
    socket: WebSocket,
    id: String,
    req: StreamRequest,
    shutdown: CancellationToken,
) {
    let v5 = socket.protocol().and_then(|p| p.to_str().ok()) == Some(CHANNEL_PROTOCOLS[0]);
    let (mut sink, mut stream) = socket.split();
    let session = match ctx.runtime.session(&id, &req).await {
        Ok(s) => s,
        Err(e) => {
            let status = failure(&e.to_string());
            let _ = sink
                .send(channel(ERROR, status.to_string().as_bytes()))
                .await;
            let _ = sink.send(close()).await;
            return;
        }
    };
    let session_id = session.id.clone();
    let mut input = Some(session.input);
    let mut output = session.output;
    let mut output_done = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            chunk = output.next(), if !output_done => match chunk {
                Some(Ok(StreamOutput::Stdout(b))) => {
                    if sink.send(channel(STDOUT, &b)).await.is_err() { return; }
                }
                Some(Ok(StreamOutput::Stderr(b))) => {
                    let ch = if req.tty { STDOUT } else { STDERR };
                    if sink.send(channel(ch, &b)).await.is_err() { return; }
                }
                Some(Err(e)) => {
                    tracing::debug!(node = %ctx.node, error = %e, "session output failed");
                    output_done = true;
                }
                None => output_done = true,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    handle_input(&ctx, &session_id, &mut input, &data, v5).await;
                }
                Some(Ok(Message::Text(t))) => {
                    handle_input(&ctx, &session_id, &mut input, t.as_bytes(), v5).await;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // The client has gone; what runs in the container keeps running
                    // (the engine cannot stop an exec), as with the kubelet.
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
        if output_done {
            break;
        }
    }
    let status = match ctx.runtime.exit_code(&session_id).await {
        Ok(code) => exit_status(code),
        Err(e) => failure(&e.to_string()),
    };
    let _ = sink
        .send(channel(ERROR, status.to_string().as_bytes()))
        .await;
    let _ = sink.send(close()).await;
}

async fn handle_input(
    ctx: &AgentCtx,
    session: &SessionId,
    input: &mut Option<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>>,
    data: &[u8],
    v5: bool,
) {
    let Some((&ch, payload)) = data.split_first() else {
        return;
    };
    match ch {
        STDIN => {
            if let Some(w) = input.as_mut()
                && (w.write_all(payload).await.is_err() || w.flush().await.is_err())
            {
                *input = None;
            }
        }
        RESIZE => {
            #[derive(serde::Deserialize)]
            struct Size {
                #[serde(rename = "Width")]
                width: u16,
                #[serde(rename = "Height")]
                height: u16,
            }
            if let Ok(size) = serde_json::from_slice::<Size>(payload)
                && size.width > 0
                && size.height > 0
                && let Err(e) = ctx.runtime.resize(session, size.width, size.height).await
            {
                tracing::debug!(error = %e, "cannot resize the terminal");
            }
        }
        // v5: the client closed a stream; only its stdin matters here.
        CLOSE if v5 && payload.first() == Some(&STDIN) => {
            if let Some(mut w) = input.take() {
                let _ = w.shutdown().await;
            }
        }
        _ => {}
    }
}

fn channel(ch: u8, data: &[u8]) -> Message {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(ch);
    out.extend_from_slice(data);
    Message::Binary(Bytes::from(out))
}

fn close() -> Message {
    Message::Close(Some(CloseFrame {
        code: 1000,
        reason: "".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_keep_their_order_and_flags_read_like_go() {
        let pairs = query_pairs(Some(
            "command=sh&command=-c&command=exit+3&stdout=true&stderr=True&stdin=0",
        ));
        let req = stream_request(&pairs, true).unwrap();
        assert_eq!(req.command, ["sh", "-c", "exit 3"]);
        assert!(req.stdout && req.stderr && !req.stdin && !req.tty);
        assert!(stream_request(&query_pairs(Some("stdout=true")), true).is_err());
        assert!(stream_request(&query_pairs(Some("command=ls")), true).is_err());
        let attach = stream_request(&query_pairs(Some("stdout=1&command=x")), false).unwrap();
        assert!(attach.command.is_empty());
    }

    #[test]
    fn the_exit_code_is_the_first_cause() {
        assert_eq!(exit_status(Some(0))["status"], "Success");
        assert_eq!(exit_status(None)["status"], "Success");
        let s = exit_status(Some(3));
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(
            exit_status(Some(300))["details"]["causes"][0]["message"],
            "255"
        );
    }
}
