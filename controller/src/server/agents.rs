//! HTTP clients for talking to agents (the logs proxy, and exec and
//! port-forward when they come). Each node gets its own client whose TLS check
//! accepts only the certificate the controller last issued to that node (so a
//! revoked one is refused too), and which presents the controller's own client
//! certificate: whatever a Node's status says its address is, the controller
//! talks only to that node's agent.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tugboat_api::ApiError;
use tugboat_tls::ca::Issued;
use tugboat_tls::config::{ServerCheck, client_config};

/// More nodes than this and the cache starts over (clients are cheap to make).
const MAX_CACHED: usize = 4096;

pub enum AgentClients {
    /// `--insecure-http`: agents serve plain HTTP.
    Plain(reqwest::Client),
    Tls {
        ca_pem: String,
        controller: Issued,
        /// By node and the fingerprint of its credential.
        cache: Mutex<HashMap<(String, String), reqwest::Client>>,
    },
}

fn builder() -> reqwest::ClientBuilder {
    // No redirects: the agent never sends one, and following them would let
    // whoever answers at a Node's address point the controller anywhere.
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(
            tugboat_api::limits::AGENT_CONNECT_TIMEOUT_SECS,
        ))
}

impl AgentClients {
    pub fn plain() -> Result<AgentClients, ApiError> {
        tugboat_tls::install_default_provider();
        // Agents speak plain HTTP here; a TLS configuration of ours keeps
        // reqwest from looking for system roots it will never use.
        let tls = client_config(None, None, ServerCheck::Nothing)
            .map_err(|e| ApiError::internal(format!("the HTTP client for agents: {e}")))?;
        builder()
            .use_preconfigured_tls(tls)
            .build()
            .map(AgentClients::Plain)
            .map_err(|e| ApiError::internal(format!("the HTTP client for agents: {e}")))
    }

    pub fn tls(ca_pem: &str, controller: Issued) -> AgentClients {
        AgentClients::Tls {
            ca_pem: ca_pem.to_string(),
            controller,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        match self {
            AgentClients::Plain(_) => "http",
            AgentClients::Tls { .. } => "https",
        }
    }

    /// The client for node `node`'s agent, whose credential has `fingerprint`
    /// (`None`: the node has none, and nothing will be accepted as it).
    pub fn for_node(
        &self,
        node: &str,
        fingerprint: Option<&str>,
    ) -> Result<reqwest::Client, ApiError> {
        let (ca_pem, controller, cache) = match self {
            AgentClients::Plain(c) => return Ok(c.clone()),
            AgentClients::Tls {
                ca_pem,
                controller,
                cache,
            } => (ca_pem, controller, cache),
        };
        let Some(fingerprint) = fingerprint else {
            return Err(ApiError::new(
                503,
                "ServiceUnavailable",
                format!(
                    "node {node} has no credential (it never joined, or was deleted): its agent cannot be trusted"
                ),
            ));
        };
        let key = (node.to_string(), fingerprint.to_string());
        if let Some(c) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(c.clone());
        }
        let tls = client_config(
            Some(ca_pem.as_bytes()),
            Some((
                controller.cert_pem.as_bytes(),
                controller.key_pem.as_bytes(),
            )),
            ServerCheck::Node {
                name: node.to_string(),
                fingerprint: Some(fingerprint.to_string()),
            },
        )
        .map_err(|e| ApiError::internal(format!("TLS for the agent of node {node}: {e}")))?;
        let client = builder()
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| ApiError::internal(format!("the HTTP client for node {node}: {e}")))?;
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, client.clone());
        Ok(client)
    }
}
