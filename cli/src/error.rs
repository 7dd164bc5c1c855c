//! How failures reach the user: API errors in kubectl's words
//! (`Error from server (NotFound): deployments.apps "web" not found`), everything else
//! as `error: …`, several independent failures one per line, and an unreachable server
//! explained with the URL tried, how it was chosen and what to do. [`Exit`] lets a verb
//! choose its exit status (every other error exits 1).

use std::fmt;

use tugboat_api::{ApiError, ClientError};

use crate::config::Server;

/// Failures of independent items (documents of `apply`, names of `delete`), reported
/// together once every item has been tried.
#[derive(Debug)]
pub struct Failures(pub Vec<anyhow::Error>);

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(render).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for Failures {}

/// A verb's own exit status, for verbs whose status says more than "failed":
/// `tug diff` exits 1 when it found differences (having printed them, it has
/// nothing to add on stderr) and 2 when it failed, as `kubectl diff` does.
///
/// It travels as an error so `execute_with` keeps returning `anyhow::Result<()>`:
/// the binary exits with [`exit_code`] and prints [`report`] if there is one; an
/// in-process caller (the tests' `tug` helper) sees an `Err` whose output was
/// written as usual, so a diff with differences is an error that still carries
/// the printed diff.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    /// What went wrong, reported on stderr like any error; `None` when the output
    /// already said it all.
    pub error: Option<anyhow::Error>,
    /// What the status means, for in-process callers (`differences found`).
    pub meaning: &'static str,
}

impl Exit {
    /// Exit with `code` and print nothing more.
    pub fn quiet(code: u8, meaning: &'static str) -> Exit {
        Exit {
            code,
            error: None,
            meaning,
        }
    }

    /// Report `error` as usual, but exit with `code`.
    pub fn failed(code: u8, error: anyhow::Error) -> Exit {
        Exit {
            code,
            error: Some(error),
            meaning: "failed",
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            Some(e) => f.write_str(&render(e)),
            None => write!(f, "{} (exit status {})", self.meaning, self.code),
        }
    }
}

impl std::error::Error for Exit {}

/// The status `tug` exits with for `err`: an [`Exit`]'s code, else 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.downcast_ref::<Exit>().map_or(1, |e| e.code)
}

/// What to print on stderr for `err`, if anything (a quiet [`Exit`] prints nothing).
pub fn report(err: &anyhow::Error) -> Option<String> {
    match err.downcast_ref::<Exit>() {
        Some(Exit { error: None, .. }) => None,
        _ => Some(render(err)),
    }
}

/// Folds per-item errors into one result.
pub fn collect(errors: Vec<anyhow::Error>) -> anyhow::Result<()> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors
            .into_iter()
            .next()
            .unwrap_or_else(|| anyhow::anyhow!("failed"))),
        _ => Err(Failures(errors).into()),
    }
}

/// The text to print on stderr for `err` (one or more lines, no trailing newline).
pub fn render(err: &anyhow::Error) -> String {
    if let Some(failures) = err.downcast_ref::<Failures>() {
        return failures.to_string();
    }
    if let Some(exit) = err.downcast_ref::<Exit>() {
        return exit.to_string();
    }
    let message = chain_message(err);
    match api_error(err) {
        Some(api) if api.reason.is_empty() => format!("Error from server: {message}"),
        Some(api) => format!("Error from server ({}): {message}", api.reason),
        None => format!("error: {message}"),
    }
}

/// The server's error, if `err` is (or wraps) one.
pub fn api_error(err: &anyhow::Error) -> Option<&ApiError> {
    err.chain().find_map(|e| {
        e.downcast_ref::<ClientError>()
            .and_then(ClientError::api)
            .or_else(|| e.downcast_ref::<ApiError>())
    })
}

/// Whether `err` is the server saying the object does not exist.
pub fn is_not_found(err: &anyhow::Error) -> bool {
    api_error(err).is_some_and(ApiError::is_not_found)
}

/// `context: context: cause`, without repeating a cause an outer message already
/// quotes (the client's errors include their source in their own text).
fn chain_message(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in err.chain() {
        let text = e.to_string();
        if parts.last().is_some_and(|prev| prev.contains(&text)) {
            continue;
        }
        parts.push(text);
        if e.downcast_ref::<ClientError>()
            .and_then(ClientError::api)
            .is_some()
        {
            break;
        }
    }
    parts.join(": ")
}

/// Replaces a connection failure by an explanation: which URL, how it was chosen, and
/// how to get a server. Other errors pass through.
pub fn explain_unreachable(err: anyhow::Error, server: Option<&Server>) -> anyhow::Error {
    let err = match err.downcast::<Exit>() {
        Ok(Exit {
            code,
            error,
            meaning,
        }) => {
            let error = error.map(|e| explain_unreachable(e, server));
            return Exit {
                code,
                error,
                meaning,
            }
            .into();
        }
        Err(err) => err,
    };
    let err = match err.downcast::<Failures>() {
        Ok(Failures(items)) => {
            let items = items
                .into_iter()
                .map(|e| explain_unreachable(e, server))
                .collect();
            return Failures(items).into();
        }
        Err(err) => err,
    };
    let Some((url, cause)) = err
        .chain()
        .find_map(|e| match e.downcast_ref::<ClientError>() {
            Some(ClientError::Connect { url, source }) => Some((url.clone(), innermost(source))),
            _ => None,
        })
    else {
        return err;
    };
    let how = server
        .map(|s| format!(" ({})", s.source))
        .unwrap_or_default();
    if cause.contains("certificate") || cause.contains("InvalidCertificate") {
        return anyhow::anyhow!(
            "cannot trust the API server at {url}{how}: {cause}. Its certificate is not from the cluster CA the kubeconfig names (another cluster?), or not valid for that address (add it with `tug controller --tls-san`)"
        );
    }
    if url.starts_with("https://") && cause.contains("InvalidContentType") {
        return anyhow::anyhow!(
            "the server at {url}{how} does not speak TLS: {cause}. Was it started with --insecure-http? Then use http://"
        );
    }
    anyhow::anyhow!(
        "cannot reach the Tugboat API server at {url}{how}: {cause}. Start one with `tug up` or `tug controller`, or point tug at a running one with --server URL"
    )
}

/// Whether `err` is a failure to connect at all (then trying more items is futile).
pub fn is_unreachable(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        matches!(
            e.downcast_ref::<ClientError>(),
            Some(ClientError::Connect { .. })
        )
    })
}

/// The root cause's text (`Connection refused (os error 111)`), which is the part that
/// helps; reqwest's outer layers only repeat the URL.
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut e = err;
    while let Some(next) = e.source() {
        e = next;
    }
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    fn not_found() -> anyhow::Error {
        ClientError::Api(ApiError::not_found("deployments.apps", "web")).into()
    }

    #[test]
    fn api_errors_read_like_kubectl() {
        assert_eq!(
            render(&not_found()),
            "Error from server (NotFound): deployments.apps \"web\" not found"
        );
    }

    #[test]
    fn context_around_an_api_error_comes_before_the_servers_message_once() {
        let err = Err::<(), _>(not_found())
            .context("error when creating \"web.yaml\"")
            .unwrap_err();
        assert_eq!(
            render(&err),
            "Error from server (NotFound): error when creating \"web.yaml\": deployments.apps \"web\" not found"
        );
    }

    #[test]
    fn other_errors_are_prefixed_with_error() {
        let err = Err::<(), _>(anyhow::anyhow!("inner"))
            .context("outer")
            .unwrap_err();
        assert_eq!(render(&err), "error: outer: inner");
    }

    #[test]
    fn several_failures_are_one_line_each() {
        let err = collect(vec![not_found(), anyhow::anyhow!("bad file")]).unwrap_err();
        assert_eq!(
            render(&err),
            "Error from server (NotFound): deployments.apps \"web\" not found\nerror: bad file"
        );
        assert!(is_not_found(&collect(vec![not_found()]).unwrap_err()));
        assert!(collect(Vec::new()).is_ok());
    }

    #[test]
    fn every_error_exits_1_unless_a_verb_chose_another_status() {
        assert_eq!(exit_code(&anyhow::anyhow!("bad")), 1);
        let differences: anyhow::Error = Exit::quiet(1, "differences found").into();
        assert_eq!(exit_code(&differences), 1);
        assert_eq!(report(&differences), None);
        assert_eq!(render(&differences), "differences found (exit status 1)");
        let failed: anyhow::Error = Exit::failed(2, not_found()).into();
        assert_eq!(exit_code(&failed), 2);
        assert_eq!(
            report(&failed).as_deref(),
            Some("Error from server (NotFound): deployments.apps \"web\" not found")
        );
    }

    #[test]
    fn an_unreachable_server_is_explained_inside_an_exit_status_too() {
        let connect = ClientError::BadUrl {
            url: "x".into(),
            message: "y".into(),
        };
        // Not a connection failure: passes through, status kept.
        let err = explain_unreachable(Exit::failed(2, connect.into()).into(), None);
        assert_eq!(exit_code(&err), 2);
    }
}
