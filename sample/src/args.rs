//! The command line, parsed by hand (no clap: the crate depends on std alone). Owns the
//! usage text, the `Command` the binary runs, and the errors that name the flag at fault.

use std::ffi::OsString;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Where `serve` listens when neither `--listen` nor `PORT` says otherwise.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080);

pub const USAGE: &str = "\
tug-sample: a small HTTP test workload for Tugboat (like Kubernetes' agnhost)

Usage:
  tug-sample [serve] [FLAGS]   serve HTTP (the default when no command is given)
  tug-sample version           print the version
  tug-sample help              print this help (also -h, --help)

Flags of serve:
  --listen ADDR        address to listen on, IP:PORT or :PORT
                       (default: 0.0.0.0:$PORT if PORT is set, else 0.0.0.0:8080)
  --exit-after SECS    exit the process after SECS seconds (fractions allowed: 0.5)
  --exit-code N        exit status for --exit-after, 0-255 (default 0)
  --unhealthy-after SECS
                       /healthz answers 500 after SECS seconds
  --ready-after SECS   /ready answers 503 until SECS seconds have passed
                       (default: ready at once)
  Flags also take the form --flag=VALUE.

Routes:
  GET  /          200, JSON: hostname, pod, namespace, uptime_seconds, greeting
  GET  /healthz   200 ok; 500 unhealthy after POST /fail or --unhealthy-after
  GET  /ready     200 ready; 503 not ready before --ready-after
  GET  /env       200, the environment as KEY=VALUE lines
  POST /fail      200 ok; /healthz answers 500 from then on
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

Signals: tug-sample installs no signal handlers (std has no way to). As PID 1 in a
container it therefore ignores SIGTERM, and a stop takes the whole grace period
before SIGKILL; run it with an init (docker run --init) or POST /exit to stop fast.
";

/// What the binary was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Serve(ServeArgs),
    Help,
    Version,
}

/// The flags of `serve`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeArgs {
    pub listen: SocketAddr,
    pub exit_after: Option<Duration>,
    pub exit_code: u8,
    pub unhealthy_after: Option<Duration>,
    pub ready_after: Option<Duration>,
}

/// A command line that cannot be run; the message names the flag and what it expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgsError(String);

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgsError {}

/// Parses the arguments after the program name. `env` looks up environment variables
/// (only `PORT`), so tests need not touch the process environment.
pub fn parse<I>(args: I, env: impl Fn(&str) -> Option<String>) -> Result<Command, ArgsError>
where
    I: IntoIterator<Item = OsString>,
{
    let args = args
        .into_iter()
        .map(|arg| {
            arg.into_string()
                .map_err(|arg| ArgsError(format!("argument {arg:?} is not valid UTF-8")))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let flags = match args.first().map(String::as_str) {
        None => &args[..],
        Some("serve") => &args[1..],
        Some("version" | "--version" | "-V") if args.len() == 1 => return Ok(Command::Version),
        Some(version @ ("version" | "--version" | "-V")) => {
            return Err(ArgsError(format!("{version} takes no arguments")));
        }
        Some("help" | "--help" | "-h") => return Ok(Command::Help),
        Some(first) if first.starts_with('-') => &args[..],
        Some(other) => {
            return Err(ArgsError(format!(
                "unknown command '{other}': expected serve, version or help"
            )));
        }
    };
    parse_serve(flags, env)
}

fn parse_serve(
    flags: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command, ArgsError> {
    let mut listen = None;
    let mut exit_after = None;
    let mut exit_code = None;
    let mut unhealthy_after = None;
    let mut ready_after = None;

    let mut rest = flags.iter();
    while let Some(arg) = rest.next() {
        if matches!(arg.as_str(), "-h" | "--help") {
            return Ok(Command::Help);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        let known = [
            "--listen",
            "--exit-after",
            "--exit-code",
            "--unhealthy-after",
            "--ready-after",
        ];
        if !known.contains(&name) {
            return Err(if name.starts_with('-') {
                ArgsError(format!(
                    "unknown flag '{name}': expected one of {}",
                    known.join(", ")
                ))
            } else {
                ArgsError(format!(
                    "unexpected argument '{arg}': serve takes only flags"
                ))
            });
        }
        let value = match inline {
            Some(value) => value,
            None => rest.next().cloned().ok_or_else(|| {
                ArgsError(format!("flag {name} needs a value: {}", expects(name)))
            })?,
        };
        match name {
            "--listen" => listen = Some(parse_listen(name, &value)?),
            "--exit-after" => exit_after = Some(parse_seconds(name, &value)?),
            "--exit-code" => exit_code = Some(parse_exit_code(name, &value)?),
            "--unhealthy-after" => unhealthy_after = Some(parse_seconds(name, &value)?),
            "--ready-after" => ready_after = Some(parse_seconds(name, &value)?),
            _ => unreachable!("checked against the known flags above"),
        }
    }

    if exit_code.is_some() && exit_after.is_none() {
        return Err(ArgsError(
            "flag --exit-code needs --exit-after SECS: it is the status to exit with then".into(),
        ));
    }
    let listen = match listen {
        Some(listen) => listen,
        None => match env("PORT").filter(|port| !port.is_empty()) {
            Some(port) => {
                let port = port.parse::<u16>().map_err(|_| {
                    ArgsError(format!(
                        "environment variable PORT: invalid value '{port}': expected a port number, 0-65535"
                    ))
                })?;
                SocketAddr::new(DEFAULT_LISTEN.ip(), port)
            }
            None => DEFAULT_LISTEN,
        },
    };
    Ok(Command::Serve(ServeArgs {
        listen,
        exit_after,
        exit_code: exit_code.unwrap_or(0),
        unhealthy_after,
        ready_after,
    }))
}

/// What a flag's value should look like, for error messages.
fn expects(flag: &str) -> &'static str {
    match flag {
        "--listen" => "expected an address, IP:PORT or :PORT (like 0.0.0.0:8080)",
        "--exit-code" => "expected an exit status, 0-255",
        _ => "expected a number of seconds, like 5 or 0.5",
    }
}

fn invalid(flag: &str, value: &str) -> ArgsError {
    ArgsError(format!(
        "flag {flag}: invalid value '{value}': {}",
        expects(flag)
    ))
}

fn parse_listen(flag: &str, value: &str) -> Result<SocketAddr, ArgsError> {
    if let Some(port) = value.strip_prefix(':') {
        let port = port.parse::<u16>().map_err(|_| invalid(flag, value))?;
        return Ok(SocketAddr::new(DEFAULT_LISTEN.ip(), port));
    }
    value.parse().map_err(|_| invalid(flag, value))
}

/// Seconds, whole or fractional, zero or more.
fn parse_seconds(flag: &str, value: &str) -> Result<Duration, ArgsError> {
    let secs = value.parse::<f64>().map_err(|_| invalid(flag, value))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(invalid(flag, value));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| invalid(flag, value))
}

fn parse_exit_code(flag: &str, value: &str) -> Result<u8, ArgsError> {
    value.parse().map_err(|_| invalid(flag, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], port: Option<&str>) -> Result<Command, ArgsError> {
        let port = port.map(str::to_string);
        parse(args.iter().map(OsString::from), |name| {
            (name == "PORT").then(|| port.clone()).flatten()
        })
    }

    fn serve(args: &[&str]) -> ServeArgs {
        match parse_with(args, None) {
            Ok(Command::Serve(serve)) => serve,
            other => panic!("expected serve for {args:?}, got {other:?}"),
        }
    }

    fn error(args: &[&str]) -> String {
        match parse_with(args, None) {
            Err(err) => err.to_string(),
            Ok(command) => panic!("expected an error for {args:?}, got {command:?}"),
        }
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
    }

    #[test]
    fn a_bad_port_in_the_environment_is_named() {
        let err = parse_with(&[], Some("http")).unwrap_err().to_string();
        assert!(err.contains("PORT") && err.contains("'http'"), "{err}");
    }

    #[test]
    fn help_and_version_are_recognised() {
        for args in [&["help"][..], &["--help"], &["-h"], &["serve", "--help"]] {
            assert_eq!(parse_with(args, None), Ok(Command::Help), "{args:?}");
        }
        for args in [&["version"][..], &["--version"], &["-V"]] {
            assert_eq!(parse_with(args, None), Ok(Command::Version), "{args:?}");
        }
    }

    #[test]
    fn an_unknown_flag_is_named_with_the_known_ones() {
        let err = error(&["serve", "--port", "80"]);
        assert!(
            err.contains("'--port'") && err.contains("--listen"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_command_is_named() {
        assert!(error(&["run"]).contains("unknown command 'run'"));
        assert!(error(&["serve", "extra"]).contains("unexpected argument 'extra'"));
    }

    #[test]
    fn a_missing_value_names_the_flag_and_what_it_expects() {
        let err = error(&["--exit-after"]);
        assert!(
            err.contains("--exit-after needs a value") && err.contains("seconds"),
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
            let err = error(args);
            assert!(
                err.contains(flag) && err.contains(expectation) && err.contains("invalid value"),
                "{args:?}: {err}"
            );
        }
    }

    #[test]
    fn exit_code_without_exit_after_is_refused() {
        assert!(error(&["--exit-code", "1"]).contains("--exit-after"));
    }

    #[test]
    fn version_with_arguments_is_refused() {
        assert!(error(&["version", "--listen", ":1"]).contains("version takes no arguments"));
    }

    #[cfg(unix)]
    #[test]
    fn an_argument_that_is_not_utf8_is_an_error_not_a_panic() {
        use std::os::unix::ffi::OsStringExt as _;
        let bad = OsString::from_vec(vec![b'-', b'-', 0xff]);
        let err = parse(vec![bad], |_| None).unwrap_err();
        assert!(err.to_string().contains("not valid UTF-8"));
    }
}
