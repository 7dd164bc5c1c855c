//! Who a certificate names. As in Kubernetes, a client certificate's subject
//! common name is the user and its organizations are the groups; the names below
//! are the identities Tugboat issues certificates to.

use crate::TlsError;

/// The group whose members may do everything (Kubernetes' superuser group).
pub const GROUP_MASTERS: &str = "system:masters";
/// The group of every node credential.
pub const GROUP_NODES: &str = "system:nodes";
/// Node users are `system:node:NAME`.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The user of the admin kubeconfig.
pub const ADMIN_USER: &str = "system:admin";
/// The controller's own client certificate, for talking to agents.
pub const CONTROLLER_USER: &str = "system:tugboat-controller";
/// The group of the controller's client certificate.
pub const GROUP_CONTROLLERS: &str = "tugboat:controllers";

/// The domain under which node certificates name their nodes. No client of
/// the API connects to a name under it, so a node certificate can never pass
/// for the API server's (or any real host's); and a node named like a host or
/// an IP address still gets a name that can be checked.
pub const NODE_DOMAIN: &str = "node.tugboat.internal";

/// The DNS name in node `name`'s certificate: `NAME.node.tugboat.internal`.
pub fn node_dns_name(name: &str) -> String {
    format!("{name}.{NODE_DOMAIN}")
}

/// The longest node name that fits a DNS name with [`NODE_DOMAIN`] after it.
pub const MAX_NODE_NAME: usize = 253 - NODE_DOMAIN.len() - 1;

/// The user name of node `name`'s credential.
pub fn node_user(name: &str) -> String {
    format!("{NODE_USER_PREFIX}{name}")
}

/// The node a user name belongs to, if it is a node's.
pub fn node_of(user: &str) -> Option<&str> {
    user.strip_prefix(NODE_USER_PREFIX)
        .filter(|n| !n.is_empty())
}

/// What a certificate says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertIdentity {
    /// The subject's common name.
    pub user: String,
    /// The subject's organizations.
    pub groups: Vec<String>,
    /// The DNS names among its subject alternative names.
    pub dns_names: Vec<String>,
    /// Lower-case hex SHA-256 of the certificate's DER: what a stored credential
    /// record compares against.
    pub fingerprint: String,
    /// When it expires (seconds since the epoch).
    pub not_after: i64,
}

impl CertIdentity {
    /// Reads the identity from a DER certificate. Says nothing about whether the
    /// certificate is valid: that is the TLS handshake's job.
    pub fn from_der(der: &[u8]) -> Result<CertIdentity, TlsError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::Parse(e.to_string()))?;
        let subject = cert.subject();
        let user = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or("")
            .to_string();
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(str::to_string)
            .collect();
        let mut dns_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = name {
                    dns_names.push(d.to_string());
                }
            }
        }
        Ok(CertIdentity {
            user,
            groups,
            dns_names,
            fingerprint: crate::sha256_hex(der),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The node this certificate belongs to: user `system:node:NAME` in group
    /// `system:nodes`.
    pub fn node(&self) -> Option<&str> {
        node_of(&self.user).filter(|_| self.in_group(GROUP_NODES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_users_are_recognised_only_with_a_name() {
        assert_eq!(node_of("system:node:n1"), Some("n1"));
        assert_eq!(node_of("system:node:"), None);
        assert_eq!(node_of("system:admin"), None);
        assert_eq!(node_user("n1"), "system:node:n1");
    }
}
