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
    /// `--kubeconfig` as given.
    pub kubeconfig_flag: Option<PathBuf>,
    /// `--context` as given.
    pub context_flag: Option<String>,
    /// `-n` as given.
    pub namespace_flag: Option<String>,
    /// The kubeconfig context's namespace, if it names one.
    pub context_namespace: Option<String>,
    /// Cancelled on the first Ctrl-C or SIGTERM; long-running verbs stop on it.
    pub shutdown: CancellationToken,
    /// The server chosen, once a verb asked for a client; kept to explain failures.
    pub server: Option<Server>,
}

impl Context<'_> {
    /// `-n`, else the kubeconfig context's namespace, else `default` (as kubectl).
    pub fn namespace(&self) -> &str {
        self.namespace_flag
            .as_deref()
            .or(self.context_namespace.as_deref())
            .unwrap_or(DEFAULT_NAMESPACE)
    }

    /// The client config file: `--config`, else from the environment.
    pub fn config_path(&self) -> Option<PathBuf> {
        self.config_flag
            .clone()
            .or_else(|| config::config_path(&self.env))
    }

    /// A client for the server and credentials chosen the way [`config`]
    /// describes (kubeconfig, tug's config file, `--server`).
    pub fn client(&mut self) -> anyhow::Result<Client> {
        let target = self.target()?;
        let client = Client::with_credentials(&target.server.url, &target.credentials)
            .with_context(|| format!("cannot use the server URL ({})", target.server.source))?;
        self.server = Some(target.server);
        Ok(client)
    }

    /// The server and credentials, resolved.
    pub fn target(&self) -> anyhow::Result<config::Target> {
        let config = self.config_path();
        config::resolve(
            &config::Flags {
                server: self.server_flag.as_deref(),
                kubeconfig: self.kubeconfig_flag.as_deref(),
                context: self.context_flag.as_deref(),
                config: config.as_deref(),
            },
            &self.env,
        )
    }
}
