//! The command line, parsed by clap: `tug-sample [serve] [FLAGS]`, `tug-sample version`,
//! `tug-sample help`. Owns the `Command` the binary runs and the value parsers whose
//! errors name the flag, the value and what it expects.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};

/// Where `serve` listens when neither `--listen` nor `PORT` says otherwise.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080);

const ROUTES: &str = "\
Routes:
  GET  /          200, JSON: hostname, pod, namespace, uptime_seconds, greeting
  GET  /healthz   200 ok; 500 unhealthy after POST /fail or --unhealthy-after
  GET  /ready     200 ready; 503 not ready before --ready-after
  GET  /env       200, the environment as KEY=VALUE lines
  POST /fail      200 ok; /healthz answers 500 from then on
  GET  /resolve?name=N
                  200, N's addresses through the system resolver, space-separated
  GET  /fetch?addr=HOST:PORT
                  200, the body of GET / at HOST:PORT
  POST /unready   200 ok; /ready answers 503 until POST /ready
  POST /ready     200 ok; /ready answers 200 again
  POST /crash     200 ok, then the process exits with status 1
  POST /exit?code=N
                  200 ok, then the process exits with status N (default 0)
  HEAD works wherever GET does. A known path with another method gets 405;
  anything else 404. Every request is logged to stdout as one line.

Environment:
  PORT                            port to listen on when --listen is absent
  POD_NAME, TUG_POD_NAME          the pod's name, shown by GET /
  POD_NAMESPACE, TUG_POD_NAMESPACE
                                  the pod's namespace, shown by GET /
  GREETING                        a string shown by GET /

Signals: SIGTERM and SIGINT end the process at once with status 0, so a stop does not
wait out the grace period even as PID 1 in a container.";

/// tug-sample: a small HTTP test workload for Tugboat (like Kubernetes' agnhost).
/// Without a command it serves.
#[derive(Debug, Parser)]
#[command(
    name = "tug-sample",
    bin_name = "tug-sample",
    version,
    args_conflicts_with_subcommands = true,
    after_help = ROUTES
)]
struct Cli {
    #[command(subcommand)]
    command: Option<CliCommand>,
    #[command(flatten)]
    serve: ServeFlags,
}

#[derive(Debug, Subcommand)]
enum CliCommand {
    /// Serve HTTP (the default when no command is given).
    #[command(after_help = ROUTES)]
    Serve(ServeFlags),
    /// Hold a pod's network namespace: sleep until SIGTERM or SIGINT (exit 0),
    /// reaping orphaned children meanwhile (it runs as PID 1 of a pod sandbox).
    Pause,
    /// Print the version.
    Version,
}

/// The flags of `serve`, as given. A flag given twice takes its last value.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
struct ServeFlags {
    /// Address to listen on, IP:PORT or :PORT
    /// [default: 0.0.0.0:$PORT if PORT is set, else 0.0.0.0:8080]
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    listen: Option<SocketAddr>,
    /// Exit the process after SECS seconds (fractions allowed: 0.5).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, allow_negative_numbers = true)]
    exit_after: Option<Duration>,
    /// Exit status for --exit-after, 0-255 [default: 0].
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_exit_code,
        allow_negative_numbers = true,
        requires = "exit_after"
    )]
    exit_code: Option<u8>,
    /// /healthz answers 500 after SECS seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, allow_negative_numbers = true)]
    unhealthy_after: Option<Duration>,
    /// /ready answers 503 until SECS seconds have passed [default: ready at once].
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, allow_negative_numbers = true)]
    ready_after: Option<Duration>,
    /// Also answer UDP on ADDR (IP:PORT or :PORT): every datagram comes back as
    /// "HOSTNAME DATAGRAM".
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    udp: Option<SocketAddr>,
}

/// What the binary was asked to do. Help and `--version` are not here: clap answers
/// them as errors of kind `DisplayHelp` and `DisplayVersion`, whose `exit` prints to
/// stdout and exits 0.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Serve(ServeArgs),
    Pause,
    Version,
}

/// The flags of `serve`, with the listen address resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeArgs {
    pub listen: SocketAddr,
    pub exit_after: Option<Duration>,
    pub exit_code: u8,
    pub unhealthy_after: Option<Duration>,
    pub ready_after: Option<Duration>,
    pub udp: Option<SocketAddr>,
}

/// Parses the command line, program name first. `env` looks up environment variables
/// (only `PORT`), so tests need not touch the process environment. A bad command line
/// is a clap error: `exit` prints it with the usage and exits 2.
pub fn parse<I, T>(args: I, env: impl Fn(&str) -> Option<String>) -> Result<Command, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    let flags = match cli.command {
        Some(CliCommand::Version) => return Ok(Command::Version),
        Some(CliCommand::Pause) => return Ok(Command::Pause),
        Some(CliCommand::Serve(flags)) => flags,
        None => cli.serve,
    };
    let listen = match flags.listen {
        Some(listen) => listen,
        None => match env("PORT").filter(|port| !port.is_empty()) {
            Some(port) => {
                let port = port.parse::<u16>().map_err(|_| {
                    Cli::command().error(
                        ErrorKind::ValueValidation,
                        format!(
                            "environment variable PORT: invalid value '{port}': expected a port number, 0-65535"
                        ),
                    )
                })?;
                SocketAddr::new(DEFAULT_LISTEN.ip(), port)
            }
            None => DEFAULT_LISTEN,
        },
    };
    Ok(Command::Serve(ServeArgs {
        listen,
        exit_after: flags.exit_after,
        exit_code: flags.exit_code.unwrap_or(0),
        unhealthy_after: flags.unhealthy_after,
        ready_after: flags.ready_after,
        udp: flags.udp,
    }))
}

const EXPECT_ADDRESS: &str = "expected an address, IP:PORT or :PORT (like 0.0.0.0:8080)";
const EXPECT_SECONDS: &str = "expected a number of seconds, like 5 or 0.5";
const EXPECT_EXIT_CODE: &str = "expected an exit status, 0-255";

fn parse_listen(value: &str) -> Result<SocketAddr, &'static str> {
    if let Some(port) = value.strip_prefix(':') {
        let port = port.parse::<u16>().map_err(|_| EXPECT_ADDRESS)?;
        return Ok(SocketAddr::new(DEFAULT_LISTEN.ip(), port));
    }
    value.parse().map_err(|_| EXPECT_ADDRESS)
}

/// Seconds, whole or fractional, zero or more.
fn parse_seconds(value: &str) -> Result<Duration, &'static str> {
    let secs = value.parse::<f64>().map_err(|_| EXPECT_SECONDS)?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(EXPECT_SECONDS);
    }
    Duration::try_from_secs_f64(secs).map_err(|_| EXPECT_SECONDS)
}

fn parse_exit_code(value: &str) -> Result<u8, &'static str> {
    value.parse().map_err(|_| EXPECT_EXIT_CODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], port: Option<&str>) -> Result<Command, clap::Error> {
        let port = port.map(str::to_string);
        let argv = std::iter::once("tug-sample").chain(args.iter().copied());
        parse(argv, |name| {
            (name == "PORT").then(|| port.clone()).flatten()
        })
    }

    fn serve(args: &[&str]) -> ServeArgs {
        match parse_with(args, None) {
            Ok(Command::Serve(serve)) => serve,
            other => panic!("expected serve for {args:?}, got {other:?}"),
        }
    }

    /// The error for `args`: its kind and its message as the user sees it.
    fn error(args: &[&str]) -> (ErrorKind, String) {
        match parse_with(args, None) {
            Err(err) => (err.kind(), err.to_string()),
            Ok(command) => panic!("expected an error for {args:?}, got {command:?}"),
        }
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_arguments_serve_on_the_default_address() {
        let args = serve(&[]);
        assert_eq!(args.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(args.exit_after, None);
        assert_eq!(args.exit_code, 0);
        assert_eq!(args.ready_after, None);
        assert_eq!(args.unhealthy_after, None);
        assert_eq!(serve(&["serve"]), args);
    }

    #[test]
    fn every_flag_is_read_in_both_forms() {
        let args = serve(&[
            "serve",
            "--listen",
            "127.0.0.1:9000",
            "--exit-after=2.5",
            "--exit-code",
            "3",
            "--unhealthy-after",
            "10",
            "--ready-after=0.5",
        ]);
        assert_eq!(args.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(args.exit_after, Some(Duration::from_millis(2500)));
        assert_eq!(args.exit_code, 3);
        assert_eq!(args.unhealthy_after, Some(Duration::from_secs(10)));
        assert_eq!(args.ready_after, Some(Duration::from_millis(500)));
    }

    #[test]
    fn flags_without_the_serve_command_still_serve() {
        assert_eq!(
            serve(&["--listen", ":9090"]).listen,
            "0.0.0.0:9090".parse().unwrap()
        );
        assert_eq!(serve(&["--exit-after", "1", "--exit-code=4"]).exit_code, 4);
    }

    #[test]
    fn a_flag_given_twice_takes_its_last_value() {
        assert_eq!(
            serve(&["serve", "--listen", ":1", "--listen", ":2"]).listen,
            "0.0.0.0:2".parse().unwrap()
        );
        assert_eq!(
            serve(&["--ready-after", "1", "--ready-after=2"]).ready_after,
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn an_ipv6_address_can_be_listened_on() {
        assert_eq!(
            serve(&["--listen", "[::1]:80"]).listen,
            "[::1]:80".parse().unwrap()
        );
    }

    #[test]
    fn port_from_the_environment_applies_only_without_listen() {
        let Ok(Command::Serve(args)) = parse_with(&[], Some("9999")) else {
            panic!("expected serve");
        };
        assert_eq!(args.listen, "0.0.0.0:9999".parse().unwrap());
        let Ok(Command::Serve(args)) = parse_with(&["--listen", "127.0.0.1:1"], Some("9999"))
        else {
            panic!("expected serve");
        };
        assert_eq!(args.listen, "127.0.0.1:1".parse().unwrap());
        let Ok(Command::Serve(args)) = parse_with(&[], Some("")) else {
            panic!("expected serve");
        };
        assert_eq!(args.listen, DEFAULT_LISTEN, "an empty PORT is no PORT");
    }

    #[test]
    fn a_bad_port_in_the_environment_is_named_and_exits_2() {
        let err = parse_with(&[], Some("http")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = err.to_string();
        assert!(err.contains("PORT") && err.contains("'http'"), "{err}");
    }

    #[test]
    fn help_and_version_are_recognised() {
        for args in [
            &["help"][..],
            &["--help"],
            &["-h"],
            &["serve", "--help"],
            &["help", "serve"],
        ] {
            let err = parse_with(args, None).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(err.exit_code(), 0, "{args:?}");
            let help = err.to_string();
            assert!(
                help.contains("--exit-after <SECS>") && help.contains("POST /crash"),
                "{args:?}: {help}"
            );
        }
        assert_eq!(parse_with(&["version"], None).unwrap(), Command::Version);
        assert_eq!(parse_with(&["pause"], None).unwrap(), Command::Pause);
        for args in [&["--version"][..], &["-V"]] {
            let err = parse_with(args, None).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::DisplayVersion, "{args:?}");
            assert_eq!(
                err.to_string(),
                format!("tug-sample {}\n", env!("CARGO_PKG_VERSION"))
            );
        }
    }

    #[test]
    fn an_unknown_flag_is_named_and_exits_2() {
        for args in [&["serve", "--port", "80"][..], &["--port", "80"]] {
            let (kind, err) = error(args);
            assert_eq!(kind, ErrorKind::UnknownArgument, "{err}");
            assert!(err.contains("'--port'"), "{err}");
            assert_eq!(parse_with(args, None).unwrap_err().exit_code(), 2);
        }
    }

    #[test]
    fn an_unknown_command_or_a_stray_argument_is_named() {
        let (kind, err) = error(&["run"]);
        assert_eq!(kind, ErrorKind::InvalidSubcommand, "{err}");
        assert!(err.contains("'run'"), "{err}");
        let (kind, err) = error(&["serve", "extra"]);
        assert_eq!(kind, ErrorKind::UnknownArgument, "{err}");
        assert!(err.contains("'extra'"), "{err}");
    }

    #[test]
    fn a_missing_value_names_the_flag() {
        let (kind, err) = error(&["--exit-after"]);
        assert_eq!(kind, ErrorKind::InvalidValue, "{err}");
        assert!(
            err.contains("--exit-after <SECS>") && err.contains("value is required"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_flag_the_value_and_the_expectation() {
        let cases = [
            (&["--listen", "localhost"][..], "--listen", "IP:PORT"),
            (&["--listen", ":99999"], "--listen", "IP:PORT"),
            (&["--exit-after", "soon"], "--exit-after", "seconds"),
            (&["--exit-after", "-1"], "--exit-after", "seconds"),
            (&["--ready-after", "NaN"], "--ready-after", "seconds"),
            (&["--unhealthy-after=inf"], "--unhealthy-after", "seconds"),
            (
                &["--exit-after", "1", "--exit-code", "256"],
                "--exit-code",
                "0-255",
            ),
            (
                &["--exit-after", "1", "--exit-code", "-1"],
                "--exit-code",
                "0-255",
            ),
        ];
        for (args, flag, expectation) in cases {
            let (kind, err) = error(args);
            assert_eq!(kind, ErrorKind::ValueValidation, "{args:?}: {err}");
            let value = args.last().unwrap().rsplit('=').next().unwrap();
            assert!(
                err.contains(flag)
                    && err.contains(expectation)
                    && err.contains(&format!("invalid value '{value}'")),
                "{args:?}: {err}"
            );
        }
    }

    #[test]
    fn exit_code_without_exit_after_is_refused() {
        let (kind, err) = error(&["--exit-code", "1"]);
        assert_eq!(kind, ErrorKind::MissingRequiredArgument, "{err}");
        assert!(err.contains("--exit-after"), "{err}");
    }

    #[test]
    fn version_with_arguments_is_refused() {
        let (kind, err) = error(&["version", "--listen", ":1"]);
        assert_eq!(kind, ErrorKind::UnknownArgument, "{err}");
    }

    #[test]
    fn flags_before_a_command_are_refused() {
        let (kind, _) = error(&["--listen", ":1", "serve"]);
        assert_eq!(kind, ErrorKind::ArgumentConflict);
    }

    #[cfg(unix)]
    #[test]
    fn an_argument_that_is_not_utf8_is_an_error_not_a_panic() {
        use std::os::unix::ffi::OsStringExt as _;
        for arg in [
            vec![b'-', b'-', 0xff],
            vec![b'-', b'-', b'l', b'i', b's', b't', b'e', b'n', b'=', 0xff],
        ] {
            let argv = [OsString::from("tug-sample"), OsString::from_vec(arg)];
            let err = parse(argv, |_| None).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{err}");
        }
    }
}
