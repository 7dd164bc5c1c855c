//! The node's own credential at run time: the certificate the cluster CA issued
//! it (user `system:node:NAME`, valid for clients and for serving, naming the
//! node as its DNS name) with its key and the CA. The agent authenticates to the
//! controller with it, serves its log endpoint and Service tunnel with it, and
//! connects to peers' tunnels with it, checking each peer's certificate names
//! the node it meant to reach.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_rustls::TlsConnector;
use tugboat_api::Credentials;
use tugboat_tls::TlsError;
use tugboat_tls::config::{ClientAuth, ServerCheck, client_config, server_config};
use tugboat_tls::identity::{CONTROLLER_USER, CertIdentity, GROUP_CONTROLLERS};

/// More peers than this and the connector cache starts over.
const MAX_PEERS: usize = 4096;

pub struct NodeTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// Client certificates required, signed by the cluster CA.
    server: Arc<rustls::ServerConfig>,
    peers: Mutex<HashMap<String, TlsConnector>>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls").finish_non_exhaustive()
    }
}

impl NodeTls {
    pub fn new(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<NodeTls, TlsError> {
        let server = server_config(
            cert_pem.as_bytes(),
            key_pem.as_bytes(),
            ca_pem.as_bytes(),
            ClientAuth::Required,
        )?;
        Ok(NodeTls {
            ca_pem: ca_pem.to_string(),
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            server,
            peers: Mutex::new(HashMap::new()),
        })
    }

    /// The TLS configuration of the agent's endpoints.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    /// What the API client authenticates with.
    pub fn credentials(&self) -> Credentials {
        Credentials {
            ca_pem: Some(self.ca_pem.clone().into_bytes()),
            client_cert_pem: Some(self.cert_pem.clone().into_bytes()),
            client_key_pem: Some(self.key_pem.clone().into_bytes()),
            ..Default::default()
        }
    }

    /// A connector to node `peer`'s endpoints: presents this node's certificate
    /// and accepts only `peer`'s.
    pub fn connector(&self, peer: &str) -> Result<TlsConnector, TlsError> {
        if let Some(c) = self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer)
        {
            return Ok(c.clone());
        }
        let config = client_config(
            Some(self.ca_pem.as_bytes()),
            Some((self.cert_pem.as_bytes(), self.key_pem.as_bytes())),
            ServerCheck::Node {
                name: peer.to_string(),
                fingerprint: None,
            },
        )?;
        let connector = TlsConnector::from(Arc::new(config));
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() >= MAX_PEERS {
            peers.clear();
        }
        peers.insert(peer.to_string(), connector.clone());
        Ok(connector)
    }
}

/// Whether a verified client certificate is the controller's.
pub fn is_controller(der: &[u8]) -> bool {
    CertIdentity::from_der(der)
        .is_ok_and(|id| id.user == CONTROLLER_USER && id.in_group(GROUP_CONTROLLERS))
}

/// The node a verified client certificate belongs to, if any.
pub fn node_of(der: &[u8]) -> Option<String> {
    CertIdentity::from_der(der)
        .ok()
        .and_then(|id| id.node().map(str::to_string))
}
