//! The `tug` binary: parses the command line, sets up logging to stderr, turns Ctrl-C
//! and SIGTERM into a graceful shutdown (a second one exits at once), runs the verb
//! with stdout as its output, and reports failure kubectl's way with a non-zero exit
//! (1, or the status the verb chose: `tug_cli::error::Exit`).

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use tugboat_cli::error::{exit_code, report};
use tugboat_cli::{Cli, Command, Env, execute_with};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The controller tells what it does; a one-shot command only warns.
    let default_level = match cli.command {
        Command::Controller(_) | Command::Agent(_) | Command::Up(_) => "info",
        Command::Pause => "warn",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .init();

    let shutdown = CancellationToken::new();
    // The one task outside any tracker: it lives as long as the process, and is
    // what cancels everything else from the top.
    tokio::spawn(stop_on_signals(shutdown.clone()));

    let mut out = std::io::stdout();
    match execute_with(cli, &mut out, Env::from_process(), shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(text) = report(&err) {
                eprintln!("{text}");
            }
            ExitCode::from(exit_code(&err))
        }
    }
}

/// First Ctrl-C or SIGTERM: cancel, so the verb finishes cleanly. Second: exit now.
async fn stop_on_signals(shutdown: CancellationToken) {
    if signal().await.is_err() {
        return;
    }
    shutdown.cancel();
    if signal().await.is_ok() {
        eprintln!("interrupted again: exiting at once");
        std::process::exit(130);
    }
}

#[cfg(unix)]
async fn signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
