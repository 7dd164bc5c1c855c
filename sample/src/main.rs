//! The `tug-sample` binary: parses the command line and runs the command; a bad
//! command line exits 2, a server that cannot listen exits 1.

use std::process::ExitCode;

use tugboat_sample::args::{self, Command, USAGE};
use tugboat_sample::server;

fn main() -> ExitCode {
    let command = args::parse(std::env::args_os().skip(1), |name| std::env::var(name).ok());
    match command {
        Ok(Command::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("tug-sample {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::Serve(args)) => {
            let Err(err) = server::serve(args);
            eprintln!("tug-sample: {err}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("tug-sample: {err}\nRun 'tug-sample --help' for usage.");
            ExitCode::from(2)
        }
    }
}
