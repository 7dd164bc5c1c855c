//! The controller's certificates, kept in `DATA_DIR/tls`: the cluster CA (made on
//! the first start and never replaced), the API server's serving certificate
//! (issued again whenever it is missing, close to expiry, or not valid for an
//! address the controller now serves on), and the admin kubeconfig in
//! `DATA_DIR/admin.kubeconfig`. Private keys and the kubeconfig are mode 0600.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tugboat_tls::ca::{Authority, Issued, Leaf};
use tugboat_tls::identity::{ADMIN_USER, CONTROLLER_USER, GROUP_CONTROLLERS, GROUP_MASTERS};
use tugboat_tls::kubeconfig::Kubeconfig;
use tugboat_tls::{TlsError, config};

/// A certificate closer than this to its end is issued again at start.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The name of the cluster, user and context in the admin kubeconfig.
pub const KUBECONFIG_CONTEXT: &str = "tugboat";
pub const KUBECONFIG_USER: &str = "tugboat-admin";
/// The admin kubeconfig's file name in the data directory.
pub const ADMIN_KUBECONFIG: &str = "admin.kubeconfig";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the controller's TLS needs at run time.
pub struct Pki {
    pub ca: Arc<Authority>,
    /// The API server's TLS configuration (client certificates optional).
    pub server: Arc<rustls::ServerConfig>,
    /// The controller's own client certificate, for agents.
    pub controller: Issued,
    /// Where the admin kubeconfig was written.
    pub admin_kubeconfig: PathBuf,
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_public(path: &Path, text: &str) -> Result<(), PkiError> {
    std::fs::write(path, text).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn fresh_enough(cert_pem: &str) -> bool {
    let now = jiff::Timestamp::now().as_second();
    tugboat_tls::ca::not_after(cert_pem).is_ok_and(|end| end - now > RENEW_BEFORE.as_secs() as i64)
}

/// The names and addresses the serving certificate must be valid for: the
/// address listened on (every interface's address when it is unspecified, with
/// the host name), loopback and `localhost` for local clients, and `extra`
/// (`--tls-san`).
pub fn serving_names(listen: SocketAddr, extra: &[String]) -> (BTreeSet<IpAddr>, BTreeSet<String>) {
    let mut ips = BTreeSet::new();
    let mut names = BTreeSet::new();
    ips.insert(IpAddr::from([127, 0, 0, 1]));
    ips.insert(IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
    names.insert("localhost".to_string());
    if listen.ip().is_unspecified() {
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for a in addrs {
                let ip = a.address.as_ref().and_then(|s| {
                    s.as_sockaddr_in()
                        .map(|v4| IpAddr::V4(v4.ip()))
                        .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                });
                if let Some(ip) = ip {
                    ips.insert(ip);
                }
            }
        }
        if let Ok(host) = nix::unistd::gethostname()
            && let Some(host) = host.to_str()
            && !host.is_empty()
        {
            names.insert(host.to_string());
        }
    } else {
        ips.insert(listen.ip());
    }
    for san in extra.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        match san.parse::<IpAddr>() {
            Ok(ip) => ips.insert(ip),
            Err(_) => names.insert(san.to_string()),
        };
    }
    (ips, names)
}

/// The cluster CA in `data_dir` (certificate and key, PEM), if it has one.
pub fn local_ca(data_dir: &Path) -> Result<Option<(String, String)>, PkiError> {
    let dir = data_dir.join("tls");
    Ok(read(&dir.join("ca.crt"))?.zip(read(&dir.join("ca.key"))?))
}

/// Makes `cert` and `key` the cluster CA in `data_dir` (shared by several
/// controllers, it is the same in all of their data directories).
pub fn install_ca(data_dir: &Path, cert: &str, key: &str) -> Result<(), PkiError> {
    Authority::load(cert, key)?;
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir).map_err(|source| PkiError::Io {
        path: dir.clone(),
        source,
    })?;
    tugboat_tls::write_private(&dir.join("ca.key"), key.as_bytes())?;
    write_public(&dir.join("ca.crt"), cert)
}

/// A new cluster CA (certificate and key, PEM).
pub fn new_ca() -> Result<(String, String), PkiError> {
    let ca = Authority::generate("tugboat-ca")?;
    Ok((ca.cert_pem().to_string(), ca.key_pem().to_string()))
}

impl Pki {
    /// Loads what `data_dir` holds, making what is missing or stale; writes the
    /// admin kubeconfig for `server_url`.
    pub fn load_or_create(
        data_dir: &Path,
        listen: SocketAddr,
        extra_sans: &[String],
        server_url: &str,
    ) -> Result<Pki, PkiError> {
        let dir = data_dir.join("tls");
        std::fs::create_dir_all(&dir).map_err(|source| PkiError::Io {
            path: dir.clone(),
            source,
        })?;
        let ca_crt = dir.join("ca.crt");
        let ca_key = dir.join("ca.key");
        let ca = match (read(&ca_crt)?, read(&ca_key)?) {
            (Some(cert), Some(key)) => Authority::load(&cert, &key)?,
            (None, None) => {
                let ca = Authority::generate("tugboat-ca")?;
                tugboat_tls::write_private(&ca_key, ca.key_pem().as_bytes())?;
                write_public(&ca_crt, ca.cert_pem())?;
                tracing::info!(dir = %dir.display(), hash = %ca.hash(), "made the cluster CA");
                ca
            }
            _ => {
                return Err(PkiError::Io {
                    path: dir.clone(),
                    source: std::io::Error::other(
                        "ca.crt or ca.key is missing while the other exists; restore it (nodes and kubeconfigs trust this CA), or remove both to start a new cluster CA",
                    ),
                });
            }
        };
        let (ips, names) = serving_names(listen, extra_sans);
        let server = Self::serving_certificate(&ca, &dir, ips, names)?;
        let server = config::server_config(
            server.cert_pem.as_bytes(),
            server.key_pem.as_bytes(),
            ca.cert_pem().as_bytes(),
            config::ClientAuth::Optional,
        )?;
        // The API speaks HTTP/2 to clients that ask (kubectl, client-go, kube-rs,
        // agents), as kube-apiserver does, and HTTP/1.1 to the rest and for
        // upgrades.
        let mut server = (*server).clone();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let server = Arc::new(server);
        let controller = ca.issue(&Leaf {
            common_name: CONTROLLER_USER.into(),
            groups: vec![GROUP_CONTROLLERS.into()],
            client: true,
            ..Default::default()
        })?;
        let admin_kubeconfig = data_dir.join(ADMIN_KUBECONFIG);
        Self::admin_kubeconfig(&ca, &admin_kubeconfig, server_url)?;
        Ok(Pki {
            ca: Arc::new(ca),
            server,
            controller,
            admin_kubeconfig,
        })
    }

    /// The serving certificate from `dir`, or a new one when it is missing,
    /// expiring, or not valid for all of `ips` and `names` (the new one keeps the
    /// names the old one had, so clients that used them keep working).
    fn serving_certificate(
        ca: &Authority,
        dir: &Path,
        mut ips: BTreeSet<IpAddr>,
        mut names: BTreeSet<String>,
    ) -> Result<Issued, PkiError> {
        let crt = dir.join("server.crt");
        let key = dir.join("server.key");
        if let (Some(cert_pem), Some(key_pem)) = (read(&crt)?, read(&key)?) {
            let (have_ips, have_names) =
                tugboat_tls::ca::subject_alt_names(&cert_pem).unwrap_or_default();
            let covered = ips.iter().all(|ip| have_ips.contains(ip))
                && names.iter().all(|n| have_names.contains(n));
            let signed_by_ca = config::server_verifier(
                Some(ca.cert_pem().as_bytes()),
                config::ServerCheck::Named("localhost".into()),
            )
            .ok()
            .zip(config::cert_chain(cert_pem.as_bytes(), "server.crt").ok())
            .is_some_and(|(v, chain)| {
                v.verify_server_cert(
                    &chain[0],
                    &chain[1..],
                    &rustls_pki_types::ServerName::try_from("localhost").expect("a DNS name"),
                    &[],
                    rustls_pki_types::UnixTime::now(),
                )
                .is_ok()
            });
            if covered && signed_by_ca && fresh_enough(&cert_pem) {
                return Ok(Issued { cert_pem, key_pem });
            }
            ips.extend(have_ips);
            names.extend(have_names);
        }
        let issued = ca.issue(&Leaf {
            common_name: "tugboat-apiserver".into(),
            dns_names: names.iter().cloned().collect(),
            ips: ips.iter().copied().collect(),
            server: true,
            ..Default::default()
        })?;
        tugboat_tls::write_private(&key, issued.key_pem.as_bytes())?;
        write_public(&crt, &issued.cert_pem)?;
        tracing::info!(ips = ?ips, names = ?names, "issued the API server's certificate");
        Ok(issued)
    }

    /// Writes `path` unless it already holds a fresh admin credential from this
    /// CA for `server_url`.
    fn admin_kubeconfig(ca: &Authority, path: &Path, server_url: &str) -> Result<(), PkiError> {
        if let Some(existing) = Kubeconfig::read(path)?
            && let Ok(r) = existing.resolve(None, &path.display().to_string())
            && r.server == server_url
            && r.credentials.ca_pem.as_deref() == Some(ca.cert_pem().as_bytes())
            && r.credentials
                .client_cert_pem
                .as_deref()
                .and_then(|c| std::str::from_utf8(c).ok())
                .is_some_and(fresh_enough)
        {
            return Ok(());
        }
        let admin = ca.issue(&Leaf {
            common_name: ADMIN_USER.into(),
            groups: vec![GROUP_MASTERS.into()],
            client: true,
            ..Default::default()
        })?;
        Kubeconfig::single(
            KUBECONFIG_CONTEXT,
            KUBECONFIG_USER,
            server_url,
            ca.cert_pem(),
            Some((&admin.cert_pem, &admin.key_pem)),
            None,
        )
        .write(path)?;
        tracing::info!(kubeconfig = %path.display(), server = server_url, "wrote the admin kubeconfig");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_start_keeps_the_ca_and_a_new_address_gets_a_new_serving_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let a: SocketAddr = "127.0.0.1:6443".parse().unwrap();
        let first = Pki::load_or_create(dir.path(), a, &[], "https://127.0.0.1:6443").unwrap();
        let cert1 = std::fs::read_to_string(dir.path().join("tls/server.crt")).unwrap();
        let second = Pki::load_or_create(dir.path(), a, &[], "https://127.0.0.1:6443").unwrap();
        assert_eq!(first.ca.hash(), second.ca.hash());
        assert_eq!(
            cert1,
            std::fs::read_to_string(dir.path().join("tls/server.crt")).unwrap()
        );
        Pki::load_or_create(
            dir.path(),
            a,
            &["tug.example".into(), "10.9.8.7".into()],
            "https://127.0.0.1:6443",
        )
        .unwrap();
        let cert3 = std::fs::read_to_string(dir.path().join("tls/server.crt")).unwrap();
        let (ips, names) = tugboat_tls::ca::subject_alt_names(&cert3).unwrap();
        assert!(
            ips.contains(&"10.9.8.7".parse().unwrap())
                && ips.contains(&"127.0.0.1".parse().unwrap())
        );
        assert!(names.contains(&"tug.example".to_string()));
        use std::os::unix::fs::PermissionsExt as _;
        for private in ["tls/ca.key", "tls/server.key", ADMIN_KUBECONFIG] {
            let mode = std::fs::metadata(dir.path().join(private))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{private}");
        }
    }

    #[test]
    fn the_admin_kubeconfig_names_the_server_and_an_admin() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(
            dir.path(),
            "127.0.0.1:1".parse().unwrap(),
            &[],
            "https://127.0.0.1:1",
        )
        .unwrap();
        let k = Kubeconfig::read(&pki.admin_kubeconfig).unwrap().unwrap();
        let r = k.resolve(None, "x").unwrap();
        assert_eq!(r.server, "https://127.0.0.1:1");
        let der = config::cert_chain(&r.credentials.client_cert_pem.unwrap(), "x")
            .unwrap()
            .remove(0);
        let id = tugboat_tls::identity::CertIdentity::from_der(&der).unwrap();
        assert!(id.in_group(GROUP_MASTERS));
    }

    #[test]
    fn half_a_ca_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        Pki::load_or_create(dir.path(), a, &[], "https://127.0.0.1:1").unwrap();
        std::fs::remove_file(dir.path().join("tls/ca.key")).unwrap();
        let err = Pki::load_or_create(dir.path(), a, &[], "https://127.0.0.1:1")
            .err()
            .unwrap();
        assert!(err.to_string().contains("restore it"), "{err}");
    }
}
