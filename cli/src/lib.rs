//! `tug`, the Tugboat command line, as a library: [`Cli`] is the parsed command line
//! and [`execute`] runs it, writing everything meant for the user to the writer it is
//! given, so tests run verbs in-process and read what they printed. The binary in
//! `main.rs` only adds signals, logging and the exit code: 1 for any error, or the
//! status a verb chose with [`error::Exit`] (`tug diff`: 1 when it found
//! differences, which in-process callers see as an `Err` after the diff was
//! written).

pub mod args;
pub mod background;
pub use tugboat_api::columns;
pub mod commands;
pub mod config;
pub mod context;
pub mod describe;
pub mod duration;
pub mod error;
pub mod manifests;
pub mod merge;
pub mod output;
pub mod rollout;
pub mod table;
pub mod target;

use std::io::Write;

use tokio_util::sync::CancellationToken;

pub use args::{Cli, Command};
pub use config::Env;
pub use context::Context;
pub use error::render as render_error;

/// Runs `cli` with the process environment, writing output to `out`. Nothing cancels
/// it: long-running verbs (`controller`, `get -w`) run until the future is dropped;
/// use [`execute_with`] to stop them gracefully.
pub async fn execute(cli: Cli, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    execute_with(cli, out, Env::from_process(), CancellationToken::new()).await
}

/// Runs `cli` with the given environment (so tests need not touch the real one) until
/// done or until `shutdown` is cancelled.
pub async fn execute_with(
    cli: Cli,
    out: &mut (dyn Write + Send),
    env: Env,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut ctx = Context {
        out,
        env,
        server_flag: cli.server,
        config_flag: cli.config,
        kubeconfig_flag: cli.kubeconfig,
        context_flag: cli.context,
        namespace_flag: cli.namespace,
        context_namespace: None,
        shutdown,
        server: None,
    };
    // The context's namespace, when there is a kubeconfig to read (verbs that
    // need none, such as `controller`, do not fail for want of one).
    ctx.context_namespace = ctx.target().ok().and_then(|t| t.namespace);
    let result = match cli.command {
        Command::Controller(args) => commands::controller::run(*args, &mut ctx).await,
        Command::Apply(args) => commands::apply::run(args, &mut ctx).await,
        Command::Get(args) => commands::get::run(args, &mut ctx).await,
        // `tug events [-w] [-A]`: kubectl's `events` verb, as `get events`.
        Command::Events(args) => {
            let get = args::GetArgs {
                targets: vec!["events".to_string()],
                all_namespaces: args.all_namespaces,
                selector: None,
                field_selector: None,
                output: None,
                show_labels: false,
                watch: args.watch,
                watch_only: false,
            };
            commands::get::run(get, &mut ctx).await
        }
        Command::Describe(args) => commands::describe::run(args, &mut ctx).await,
        Command::Scale(args) => commands::scale::run(args, &mut ctx).await,
        Command::Autoscale(args) => commands::autoscale::run(args, &mut ctx).await,
        Command::Top(args) => commands::top::run(args, &mut ctx).await,
        Command::Delete(args) => commands::delete::run(args, &mut ctx).await,
        Command::Create(args) => commands::create::run(args, &mut ctx).await,
        Command::Cordon(args) => commands::cordon::run(args, &mut ctx).await,
        Command::Uncordon(args) => commands::cordon::uncordon(args, &mut ctx).await,
        Command::Drain(args) => commands::drain::run(args, &mut ctx).await,
        Command::Version(args) => commands::version::run(args, &mut ctx).await,
        Command::Agent(args) => commands::agent::run(args, &mut ctx).await,
        Command::Up(args) => commands::up::run(args, &mut ctx).await,
        Command::Logs(args) => commands::logs::run(args, &mut ctx).await,
        Command::Wait(args) => commands::wait::run(args, &mut ctx).await,
        Command::Exec(args) => commands::exec::run(args, &mut ctx).await,
        Command::PortForward(args) => commands::port_forward::run(args, &mut ctx).await,
        Command::Cp(args) => commands::cp::run(args, &mut ctx).await,
        Command::Down(args) => commands::down::run(args, &mut ctx).await,
        Command::Kubeconfig(args) => commands::kubeconfig::run(args, &mut ctx).await,
        Command::Token(args) => commands::token::run(args, &mut ctx).await,
        Command::Rollout(args) => commands::rollout::run(args, &mut ctx).await,
        Command::Set(args) => commands::set::run(args, &mut ctx).await,
        Command::Diff(args) => commands::diff::run(args, &mut ctx).await,
        Command::Pause => {
            ctx.shutdown.cancelled().await;
            Ok(())
        }
    };
    let flushed = ctx.out.flush();
    let result = result.map_err(|e| error::explain_unreachable(e, ctx.server.as_ref()));
    result?;
    flushed?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser as _;

    use super::*;

    async fn run(args: &[&str], env: Env) -> (anyhow::Result<()>, String) {
        let cli = Cli::try_parse_from(std::iter::once("tug").chain(args.iter().copied())).unwrap();
        let mut out = Vec::new();
        let result = tokio::time::timeout(
            Duration::from_secs(20),
            execute_with(cli, &mut out, env, CancellationToken::new()),
        )
        .await
        .expect("the command finished in time");
        (result, String::from_utf8(out).unwrap())
    }

    #[tokio::test]
    async fn the_client_version_needs_no_server() {
        let (result, out) = run(&["version", "--client"], Env::default()).await;
        result.unwrap();
        assert_eq!(
            out,
            format!("Client Version: v{}\n", env!("CARGO_PKG_VERSION"))
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_is_explained_with_its_url_and_origin() {
        let (result, out) = run(
            &["get", "pods", "--server", "http://127.0.0.1:1"],
            Env::default(),
        )
        .await;
        let message = render_error(&result.unwrap_err());
        assert!(out.is_empty());
        for part in ["http://127.0.0.1:1", "from --server", "tug controller"] {
            assert!(message.contains(part), "{part} missing from {message}");
        }
    }

    #[tokio::test]
    async fn the_controller_records_its_actual_port_for_later_commands() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        let data = dir.path().join("data");
        let shutdown = CancellationToken::new();
        let controller = {
            let (config, data, shutdown) = (config.clone(), data.clone(), shutdown.clone());
            tokio::spawn(async move {
                let cli = Cli::try_parse_from([
                    "tug",
                    "--config",
                    config.to_str().unwrap(),
                    "controller",
                    "--listen",
                    "127.0.0.1:0",
                    "--data-dir",
                    data.to_str().unwrap(),
                ])
                .unwrap();
                let mut out = Vec::new();
                execute_with(cli, &mut out, Env::default(), shutdown).await
            })
        };
        let written = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Ok(Some(c)) = config::read_config(&config) {
                    break c;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the controller wrote the client config");
        let server = written.server.unwrap();
        assert!(server.starts_with("https://127.0.0.1:"), "{server}");
        assert!(!server.ends_with(":0"), "{server}");
        assert_eq!(
            written.kubeconfig,
            Some(std::path::absolute(data.join("admin.kubeconfig")).unwrap())
        );

        // The admin kubeconfig follows the address within moments.
        let out = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let (result, out) = run(
                    &["--config", config.to_str().unwrap(), "version"],
                    Env::default(),
                )
                .await;
                if result.is_ok() {
                    break out;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("tug version reached the controller with its kubeconfig");
        assert!(out.contains("Server Version: "), "{out}");

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), controller)
            .await
            .expect("the controller stopped in time")
            .unwrap()
            .unwrap();
    }
}
