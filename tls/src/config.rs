//! rustls configurations for Tugboat's connections: the API server (client
//! certificates optional, so bearer tokens and anonymous health checks still
//! reach it), the agent (client certificates required), and clients that check
//! the server by name, by the node it must be, or — only to fetch a CA whose hash
//! is checked afterwards — not at all.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::{TlsError, provider};

/// Every certificate in `pem`; at least one.
pub fn cert_chain(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.to_string(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: what.to_string(),
            message: "no PEM certificate (-----BEGIN CERTIFICATE-----) found".into(),
        });
    }
    Ok(certs)
}

/// The private key in `pem` (PKCS#8, SEC1 or PKCS#1).
pub fn private_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        what: what.to_string(),
        message: e.to_string(),
    })
}

/// A root store holding the certificates of `pem`.
pub fn root_store(pem: &[u8], what: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in cert_chain(pem, what)? {
        roots.add(cert).map_err(|e| TlsError::Config {
            what: what.to_string(),
            message: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn config_error(what: &str) -> impl Fn(rustls::Error) -> TlsError + '_ {
    move |e| TlsError::Config {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// Whether a server asks for client certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Asked for, checked against the CA when sent, not required.
    Optional,
    /// Required and checked against the CA: no certificate, no connection.
    Required,
}

/// A TLS server configuration serving `cert_pem` (with `key_pem`), speaking
/// HTTP/1.1, and taking client certificates signed by `client_ca_pem`.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
    auth: ClientAuth,
) -> Result<Arc<ServerConfig>, TlsError> {
    let what = "the serving certificate";
    let roots = Arc::new(root_store(client_ca_pem, "the client CA")?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
    let verifier = match auth {
        ClientAuth::Optional => verifier.allow_unauthenticated(),
        ClientAuth::Required => verifier,
    }
    .build()
    .map_err(|e| TlsError::Config {
        what: "the client certificate verifier".into(),
        message: e.to_string(),
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error(what))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            cert_chain(cert_pem, what)?,
            private_key(key_pem, "the serving key")?,
        )
        .map_err(config_error(what))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How a client proves who it is and checks whom it talks to: what a
/// kubeconfig context resolves to (the CA, a client certificate or a bearer
/// token, and how to check the server).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The CA the server's certificate must chain to (`None`: the system's roots).
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate and its key (PEM).
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    /// A bearer token.
    pub token: Option<String>,
    /// Do not check the server's certificate at all.
    pub insecure_skip_tls_verify: bool,
    /// Check the server's certificate against this name instead of the URL's host.
    pub tls_server_name: Option<String>,
}

impl std::fmt::Debug for Credentials {
    /// Never prints keys or tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.client_cert_pem.is_some())
            .field("token", &self.token.is_some())
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .finish()
    }
}

impl Credentials {
    /// The rustls configuration these credentials make.
    pub fn tls_config(&self) -> Result<ClientConfig, TlsError> {
        let check = if self.insecure_skip_tls_verify {
            ServerCheck::Nothing
        } else if let Some(name) = self.tls_server_name.as_ref().filter(|n| !n.is_empty()) {
            ServerCheck::Named(name.clone())
        } else {
            ServerCheck::Hostname
        };
        let identity = match (&self.client_cert_pem, &self.client_key_pem) {
            (Some(c), Some(k)) => Some((c.as_slice(), k.as_slice())),
            _ => None,
        };
        client_config(self.ca_pem.as_deref(), identity, check)
    }
}

/// How a client checks the server's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerCheck {
    /// Valid for the host name or address connected to (the usual check).
    Hostname,
    /// Valid for this DNS name, whatever address it was reached at: a node's
    /// agent must hold a certificate for its node name, so a Node whose address
    /// points elsewhere cannot make the controller (or a peer) talk to anyone
    /// else.
    Named(String),
    /// Not checked at all. Only for fetching a CA whose hash is then compared
    /// with the one a join token carries, and for `insecure-skip-tls-verify`.
    Nothing,
    /// Node `name`'s own certificate, wherever it was reached: valid for
    /// `NAME.node.tugboat.internal`, user `system:node:NAME` in group
    /// `system:nodes`, and — when `fingerprint` is given — the very certificate
    /// the controller last issued to it (a revoked or replaced one is refused).
    /// So a Node address pointing elsewhere makes the controller (or a peer)
    /// talk to no one else.
    Node {
        name: String,
        fingerprint: Option<String>,
    },
}

/// A TLS client configuration trusting `ca_pem` (the system's roots when
/// `None`), presenting `identity` (certificate and key PEM) when given.
pub fn client_config(
    ca_pem: Option<&[u8]>,
    identity: Option<(&[u8], &[u8])>,
    check: ServerCheck,
) -> Result<ClientConfig, TlsError> {
    let what = "the client TLS configuration";
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error(what))?;
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(server_verifier(ca_pem, check)?);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                cert_chain(cert, "the client certificate")?,
                private_key(key, "the client key")?,
            )
            .map_err(config_error("the client certificate"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// How a client checks servers: the certificate chain against `ca_pem` (the
/// system's roots when `None`), and the name per `check`.
pub fn server_verifier(
    ca_pem: Option<&[u8]>,
    check: ServerCheck,
) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    let what = "the server certificate verifier";
    let roots = || -> Result<Arc<RootCertStore>, TlsError> {
        let roots = match ca_pem {
            Some(pem) => root_store(pem, "the certificate authority")?,
            None => system_roots(),
        };
        if roots.is_empty() {
            return Err(TlsError::Config {
                what: what.into(),
                message: "no certificate authority to check the server with: none was given (a kubeconfig's certificate-authority-data) and this system has no trusted roots".into(),
            });
        }
        Ok(Arc::new(roots))
    };
    let webpki = |roots| {
        WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| TlsError::Config {
                what: what.into(),
                message: e.to_string(),
            })
    };
    Ok(match check {
        ServerCheck::Hostname => webpki(roots()?)?,
        ServerCheck::Named(name) => {
            let inner = webpki(roots()?)?;
            let name = ServerName::try_from(name.clone()).map_err(|_| TlsError::Config {
                what: what.into(),
                message: format!("{name:?} is not a DNS name"),
            })?;
            Arc::new(NamedPeer { inner, name })
        }
        ServerCheck::Nothing => Arc::new(Unchecked(provider())),
        ServerCheck::Node { name, fingerprint } => {
            let inner = webpki(roots()?)?;
            let dns = crate::identity::node_dns_name(&name);
            let server_name = ServerName::try_from(dns.clone()).map_err(|_| TlsError::Config {
                what: what.into(),
                message: format!("{dns:?} is not a DNS name"),
            })?;
            Arc::new(NodePeer {
                named: NamedPeer {
                    inner,
                    name: server_name,
                },
                node: name,
                fingerprint,
            })
        }
    })
}

/// A node's certificate, checked as [`ServerCheck::Node`] says.
#[derive(Debug)]
struct NodePeer {
    named: NamedPeer,
    node: String,
    fingerprint: Option<String>,
}

impl ServerCertVerifier for NodePeer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.named.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let bad = |why: String| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(TlsError::Parse(why)),
            )))
        };
        let id =
            crate::identity::CertIdentity::from_der(end_entity).map_err(|e| bad(e.to_string()))?;
        if id.node() != Some(self.node.as_str()) {
            return Err(bad(format!(
                "the certificate is {:?}'s, not node {}'s",
                id.user, self.node
            )));
        }
        if let Some(fp) = &self.fingerprint
            && *fp != id.fingerprint
        {
            return Err(bad(format!(
                "node {}'s certificate is not the one the controller last issued to it (revoked or replaced)",
                self.node
            )));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.named.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.named.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.named.supported_verify_schemes()
    }
}

/// The system's trusted roots (for servers with publicly trusted certificates,
/// when a kubeconfig names no CA).
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!(error = %e, "cannot load some of the system's root certificates");
    }
    let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    roots
}

/// Checks the chain as usual, but against a fixed name instead of the one
/// connected to.
#[derive(Debug)]
struct NamedPeer {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedPeer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any certificate (the handshake's signatures are still checked).
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{Authority, Leaf};

    fn node_cert(ca: &Authority, node: &str) -> crate::ca::Issued {
        ca.issue(&Leaf {
            common_name: format!("system:node:{node}"),
            groups: vec!["system:nodes".into()],
            dns_names: vec![crate::identity::node_dns_name(node)],
            server: true,
            client: true,
            ..Default::default()
        })
        .unwrap()
    }

    fn check(
        verifier: &Arc<dyn ServerCertVerifier>,
        cert_pem: &str,
        connected_to: &str,
    ) -> Result<(), rustls::Error> {
        let der = cert_chain(cert_pem.as_bytes(), "test").unwrap().remove(0);
        verifier
            .verify_server_cert(
                &der,
                &[],
                &ServerName::try_from(connected_to.to_string()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    #[test]
    fn a_node_peer_must_hold_that_nodes_certificate_wherever_it_is_reached() {
        let ca = Authority::generate("ca").unwrap();
        let n1 = node_cert(&ca, "n1");
        let n2 = node_cert(&ca, "n2");
        let node1 = |fingerprint: Option<String>| {
            server_verifier(
                Some(ca.cert_pem().as_bytes()),
                ServerCheck::Node {
                    name: "n1".into(),
                    fingerprint,
                },
            )
            .unwrap()
        };
        check(&node1(None), &n1.cert_pem, "10.0.0.9").unwrap();
        assert!(check(&node1(None), &n2.cert_pem, "10.0.0.9").is_err());
        // A certificate naming n1's DNS name but not issued to node n1.
        let impostor = ca
            .issue(&Leaf {
                common_name: "tugboat-apiserver".into(),
                dns_names: vec![crate::identity::node_dns_name("n1")],
                server: true,
                ..Default::default()
            })
            .unwrap();
        assert!(check(&node1(None), &impostor.cert_pem, "10.0.0.9").is_err());
        // Pinned: only the certificate last issued to n1.
        let der = cert_chain(n1.cert_pem.as_bytes(), "n1").unwrap().remove(0);
        let fp = crate::sha256_hex(&der);
        check(&node1(Some(fp.clone())), &n1.cert_pem, "10.0.0.9").unwrap();
        let n1_again = node_cert(&ca, "n1");
        assert!(check(&node1(Some(fp)), &n1_again.cert_pem, "10.0.0.9").is_err());
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused() {
        let ca = Authority::generate("ca").unwrap();
        let other = Authority::generate("other").unwrap();
        let config = server_verifier(
            Some(ca.cert_pem().as_bytes()),
            ServerCheck::Node {
                name: "n1".into(),
                fingerprint: None,
            },
        )
        .unwrap();
        assert!(check(&config, &node_cert(&other, "n1").cert_pem, "n1").is_err());
    }

    #[test]
    fn configurations_build_from_issued_material() {
        let ca = Authority::generate("ca").unwrap();
        let n1 = node_cert(&ca, "n1");
        server_config(
            n1.cert_pem.as_bytes(),
            n1.key_pem.as_bytes(),
            ca.cert_pem().as_bytes(),
            ClientAuth::Required,
        )
        .unwrap();
        client_config(
            Some(ca.cert_pem().as_bytes()),
            Some((n1.cert_pem.as_bytes(), n1.key_pem.as_bytes())),
            ServerCheck::Hostname,
        )
        .unwrap();
        let err = cert_chain(b"nothing here", "the thing").unwrap_err();
        assert!(err.to_string().contains("the thing"), "{err}");
    }
}
