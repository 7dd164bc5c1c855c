//! Tugboat's TLS and credentials, shared by the controller, the agent and `tug`:
//!
//! - [`ca`]: the cluster CA — made on the controller's first start — and the
//!   certificates it issues (the API server's, admins', nodes', the controller's
//!   own client certificate), from parameters or from an agent's CSR;
//! - [`identity`]: who a client certificate names (user and groups, as Kubernetes
//!   reads them from CN and O) and the names Tugboat gives its identities;
//! - [`config`]: rustls server and client configurations, including the verifier
//!   that accepts a peer only if its certificate names the node it meant to reach;
//! - [`kubeconfig`]: reading, resolving and writing kubeconfig files as kubectl
//!   does, so `tug` and kubectl share credentials;
//! - [`token`]: join and API tokens (`K10<sha256 of the CA>::<id>.<secret>`, as
//!   k3s and kubeadm write them).
//!
//! One crypto provider everywhere, ring: [`install_default_provider`] makes it the
//! process default for whatever builds its own TLS configuration (reqwest, kube).

pub mod ca;
pub mod config;
pub mod identity;
pub mod kubeconfig;
pub mod token;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: {message}")]
    Pem { what: String, message: String },
    #[error("cannot make a certificate ({what}): {source}")]
    Certificate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("TLS set-up failed ({what}): {message}")]
    Config { what: String, message: String },
    #[error("cannot read the certificate: {0}")]
    Parse(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("{0}")]
    Token(String),
}

/// The crypto provider every TLS configuration here uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide default provider (what reqwest and kube use when
/// they build a TLS configuration themselves). Harmless when already done.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Lower-case hex SHA-256 of `bytes`: the CA hash in join tokens, certificate
/// fingerprints, stored token secrets.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Writes `contents` to `path` readable by its owner only (private keys,
/// kubeconfigs): written beside and renamed over, so a reader never sees half a
/// file, and never briefly readable by others.
pub fn write_private(path: &std::path::Path, contents: &[u8]) -> Result<(), TlsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn sha256_hex_is_the_well_known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn private_files_are_owner_only_and_replace_what_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key.pem");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
