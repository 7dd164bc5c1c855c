//! What every verb is handed: where to write, the global flags, the environment, the
//! shutdown token, and a client for the API server chosen the documented way.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tugboat_api::Client;

use crate::config::{self, Env, Server};

/// The namespace when neither `-n` nor a manifest names one.
pub const DEFAULT_NAMESPACE: &str = "default";

pub struct Context<'a> {
    /// All user-facing output goes here (stdout in the binary, a buffer in tests).
    pub out: &'a mut (dyn Write + Send),
    pub env: Env,
    /// `--server` as given.
    pub server_flag: Option<String>,
    /// `--config` as given.
    pub config_flag: Option<PathBuf>,
    /// `-n` as given.
    pub namespace_flag: Option<String>,
    /// Cancelled on the first Ctrl-C or SIGTERM; long-running verbs stop on it.
    pub shutdown: CancellationToken,
    /// The server chosen, once a verb asked for a client; kept to explain failures.
    pub server: Option<Server>,
}

impl Context<'_> {
    /// `-n`, else `default`.
    pub fn namespace(&self) -> &str {
        self.namespace_flag.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }

    /// The client config file: `--config`, else from the environment.
    pub fn config_path(&self) -> Option<PathBuf> {
        self.config_flag
            .clone()
            .or_else(|| config::config_path(&self.env))
    }

    /// A client for the server chosen by `--server`, `TUG_SERVER`, the config file or
    /// the default, in that order.
    pub fn client(&mut self) -> anyhow::Result<Client> {
        let config = self.config_path();
        let server =
            config::resolve_server(self.server_flag.as_deref(), &self.env, config.as_deref())?;
        let client = Client::new(&server.url)
            .with_context(|| format!("cannot use the server URL ({})", server.source))?;
        self.server = Some(server);
        Ok(client)
    }
}
