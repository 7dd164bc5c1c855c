//! The `tug-sample` binary: parses the command line and runs the command; a bad
//! command line exits 2 (help and `--version` exit 0), a server that cannot listen
//! exits 1.

use std::process::ExitCode;

use tugboat_sample::args::{self, Command};
use tugboat_sample::server;

fn main() -> ExitCode {
    let command = match args::parse(std::env::args_os(), |name| std::env::var(name).ok()) {
        Ok(command) => command,
        // Prints help and the version to stdout with status 0, errors to stderr with 2.
        Err(err) => err.exit(),
    };
    match command {
        Command::Version => {
            println!("tug-sample {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Pause => match tugboat_sample::pause::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("tug-sample pause: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => {
            // One thread is plenty for a test workload, and keeps replicas light.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("tug-sample: cannot start the async runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            let Err(err) = runtime.block_on(server::serve(args));
            eprintln!("tug-sample: {err}");
            ExitCode::FAILURE
        }
    }
}
