//! The cluster CA and what it issues. ECDSA P-256 keys throughout (small, fast
//! and accepted by every Kubernetes client). The CA lives ten years; what it
//! issues lives [`LEAF_VALIDITY`] unless the caller says otherwise.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use crate::TlsError;

/// How long the CA certificate is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long issued certificates are valid by default.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// The longest a CSR's PEM may be.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// What an issued certificate is for.
#[derive(Clone, Debug, Default)]
pub struct Leaf {
    /// The subject's common name (the user, for client certificates).
    pub common_name: String,
    /// The subject's organizations (the groups).
    pub groups: Vec<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// May serve TLS.
    pub server: bool,
    /// May authenticate as a TLS client.
    pub client: bool,
    /// `None`: [`LEAF_VALIDITY`].
    pub valid_for: Option<Duration>,
}

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster CA: its certificate and the key that signs with it.
pub struct Authority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("hash", &self.hash())
            .finish_non_exhaustive()
    }
}

fn cert_error(what: &str) -> impl FnOnce(rcgen::Error) -> TlsError + '_ {
    move |source| TlsError::Certificate {
        what: what.to_string(),
        source,
    }
}

/// A random positive serial number (RFC 5280: at most 20 octets, positive).
fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, valid_for: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that are slightly behind.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::seconds(valid_for.as_secs() as i64);
}

impl Authority {
    /// A new CA named `common_name`.
    pub fn generate(common_name: &str) -> Result<Authority, TlsError> {
        let key = KeyPair::generate().map_err(cert_error("the CA key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(serial());
        validity(&mut params, CA_VALIDITY);
        let cert = params
            .self_signed(&key)
            .map_err(cert_error("the CA certificate"))?;
        let key_pem = key.serialize_pem();
        Ok(Authority {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA from its certificate and key (PEM), as [`Authority::cert_pem`] and
    /// [`Authority::key_pem`] wrote them.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Authority, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(cert_error("the CA key"))?;
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| TlsError::Pem {
                what: "the CA certificate".into(),
                message: e.to_string(),
            })?;
        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(cert_error("the CA certificate"))?;
        Ok(Authority {
            cert_pem: cert_pem.to_string(),
            cert_der,
            key_pem: key_pem.to_string(),
            issuer,
        })
    }

    /// The CA certificate, PEM: what `/cacerts` serves and kubeconfigs carry.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// SHA-256 of [`Authority::cert_pem`]'s bytes, hex: the hash a join token
    /// carries, so an agent can check it talks to this cluster before it sends
    /// the token's secret.
    pub fn hash(&self) -> String {
        crate::sha256_hex(self.cert_pem.as_bytes())
    }

    fn params(&self, leaf: &Leaf) -> Result<CertificateParams, TlsError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, leaf.common_name.as_str());
        for g in &leaf.groups {
            dn.push(DnType::OrganizationName, g.as_str());
        }
        params.distinguished_name = dn;
        for name in &leaf.dns_names {
            let name = name.clone().try_into().map_err(|e| TlsError::Certificate {
                what: format!("the DNS name {name:?}"),
                source: e,
            })?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        for ip in &leaf.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if leaf.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if leaf.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial());
        validity(&mut params, leaf.valid_for.unwrap_or(LEAF_VALIDITY));
        Ok(params)
    }

    /// A new key and a certificate for it.
    pub fn issue(&self, leaf: &Leaf) -> Result<Issued, TlsError> {
        let what = format!("a certificate for {}", leaf.common_name);
        let key = KeyPair::generate().map_err(cert_error(&what))?;
        let cert = self
            .params(leaf)?
            .signed_by(&key, &self.issuer)
            .map_err(cert_error(&what))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A certificate for the key of `csr_pem` (whose signature is checked); what
    /// the CSR asks for is ignored: subject, names and usages are `leaf`'s.
    pub fn sign_csr(&self, csr_pem: &str, leaf: &Leaf) -> Result<String, TlsError> {
        if csr_pem.len() > MAX_CSR_BYTES {
            return Err(TlsError::Pem {
                what: "the certificate signing request".into(),
                message: format!("longer than {MAX_CSR_BYTES} bytes"),
            });
        }
        let csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| TlsError::Pem {
                what: "the certificate signing request".into(),
                message: e.to_string(),
            })?;
        let cert = self
            .params(leaf)?
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(cert_error(&format!(
                "a certificate for {}",
                leaf.common_name
            )))?;
        Ok(cert.pem())
    }
}

/// A new key pair and a CSR for it (the agent's side of joining): the private
/// key never leaves the node. Returns (key PEM, CSR PEM).
pub fn key_and_csr(common_name: &str) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate().map_err(cert_error("the node key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .map_err(cert_error("the certificate signing request"))?;
    let pem = csr
        .pem()
        .map_err(cert_error("the certificate signing request"))?;
    Ok((key.serialize_pem(), pem))
}

/// When a PEM certificate expires (seconds since the epoch).
pub fn not_after(cert_pem: &str) -> Result<i64, TlsError> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| TlsError::Pem {
        what: "a certificate".into(),
        message: e.to_string(),
    })?;
    Ok(crate::identity::CertIdentity::from_der(&der)?.not_after)
}

/// The IP addresses and DNS names a PEM certificate is valid for.
pub fn subject_alt_names(cert_pem: &str) -> Result<(Vec<IpAddr>, Vec<String>), TlsError> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| TlsError::Pem {
        what: "a certificate".into(),
        message: e.to_string(),
    })?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| TlsError::Parse(e.to_string()))?;
    let mut ips = Vec::new();
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => names.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok((ips, names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::CertIdentity;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn an_issued_client_certificate_names_its_user_and_groups() {
        let ca = Authority::generate("tugboat-ca").unwrap();
        let issued = ca
            .issue(&Leaf {
                common_name: "system:admin".into(),
                groups: vec!["system:masters".into()],
                client: true,
                ..Default::default()
            })
            .unwrap();
        let id = CertIdentity::from_der(&der(&issued.cert_pem)).unwrap();
        assert_eq!(id.user, "system:admin");
        assert_eq!(id.groups, vec!["system:masters".to_string()]);
        assert!(id.not_after > time::OffsetDateTime::now_utc().unix_timestamp());
    }

    #[test]
    fn a_ca_reloaded_from_its_files_signs_what_the_original_trusts() {
        let ca = Authority::generate("tugboat-ca").unwrap();
        let again = Authority::load(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(again.hash(), ca.hash());
        let issued = again
            .issue(&Leaf {
                common_name: "server".into(),
                ips: vec!["127.0.0.1".parse().unwrap()],
                dns_names: vec!["localhost".into()],
                server: true,
                ..Default::default()
            })
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.into(),
            crate::provider(),
        )
        .build()
        .unwrap();
        use rustls::client::danger::ServerCertVerifier as _;
        verifier
            .verify_server_cert(
                &der(&issued.cert_pem),
                &[],
                &rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(),
                &[],
                rustls_pki_types::UnixTime::now(),
            )
            .unwrap();
        let (ips, names) = subject_alt_names(&issued.cert_pem).unwrap();
        assert_eq!(ips, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(names, vec!["localhost".to_string()]);
    }

    #[test]
    fn a_csr_is_signed_with_the_subject_the_ca_chooses() {
        let ca = Authority::generate("tugboat-ca").unwrap();
        let (_key, csr) = key_and_csr("system:node:evil").unwrap();
        let cert = ca
            .sign_csr(
                &csr,
                &Leaf {
                    common_name: "system:node:n1".into(),
                    groups: vec!["system:nodes".into()],
                    dns_names: vec!["n1".into()],
                    client: true,
                    server: true,
                    ..Default::default()
                },
            )
            .unwrap();
        let id = CertIdentity::from_der(&der(&cert)).unwrap();
        assert_eq!(id.user, "system:node:n1");
        assert_eq!(id.node(), Some("n1"));
        assert_eq!(id.dns_names, vec!["n1".to_string()]);
    }

    #[test]
    fn garbage_is_not_a_csr() {
        let ca = Authority::generate("tugboat-ca").unwrap();
        let err = ca
            .sign_csr(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                &Leaf::default(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("signing request"), "{err}");
        let long = "x".repeat(MAX_CSR_BYTES + 1);
        assert!(ca.sign_csr(&long, &Leaf::default()).is_err());
    }
}
