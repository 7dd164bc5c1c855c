//! kubeconfig files, read and written the way kubectl does, so that `tug` and
//! kubectl share credentials: clusters, users and contexts by name; several
//! files (`KUBECONFIG=a:b`) merged with the first definition of each name
//! winning; relative file references resolved against the file that holds them.
//!
//! Written by hand on serde rather than taken from kube-rs: its kubeconfig
//! module comes with its whole HTTP client stack, and the format is a handful of
//! fields. Fields Tugboat does not use (exec plugins, extensions…) are kept as
//! they are, so merging into a user's file loses nothing of theirs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::TlsError;
use crate::config::Credentials;

/// The largest kubeconfig file read.
pub const MAX_BYTES: u64 = 4 * 1024 * 1024;

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Kubeconfig {
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub clusters: Vec<NamedCluster>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub users: Vec<NamedUser>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub contexts: Vec<NamedContext>,
    #[serde(
        rename = "current-context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub current_context: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedCluster {
    pub name: String,
    #[serde(default)]
    pub cluster: Cluster,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_tls_verify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedUser {
    pub name: String,
    #[serde(default)]
    pub user: AuthInfo,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AuthInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(rename = "tokenFile", default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedContext {
    pub name: String,
    #[serde(default)]
    pub context: ContextEntry,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContextEntry {
    #[serde(default)]
    pub cluster: String,
    #[serde(default)]
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// What a client needs from a kubeconfig's context: the server, the
/// credentials (everything read, decoded and loaded from the files it names)
/// and the namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    pub context: String,
    pub server: String,
    pub credentials: Credentials,
    pub namespace: Option<String>,
}

impl From<Resolved> for Credentials {
    fn from(r: Resolved) -> Credentials {
        r.credentials
    }
}

fn err(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::Kubeconfig {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Makes a relative file reference absolute against the file's directory.
fn absolute(base: &Path, reference: &mut Option<String>) {
    if let Some(r) = reference.as_mut()
        && !r.is_empty()
        && Path::new(r.as_str()).is_relative()
        && let Some(dir) = base.parent()
    {
        *r = dir.join(r.as_str()).to_string_lossy().into_owned();
    }
}

impl Kubeconfig {
    /// Reads one file. `Ok(None)` when it does not exist.
    pub fn read(path: &Path) -> Result<Option<Kubeconfig>, TlsError> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(TlsError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let mut text = String::new();
        use std::io::Read as _;
        file.take(MAX_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|source| TlsError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if text.len() as u64 > MAX_BYTES {
            return Err(err(path, format!("larger than {MAX_BYTES} bytes")));
        }
        let mut config = Self::parse(&text).map_err(|m| err(path, m))?;
        for c in &mut config.clusters {
            absolute(path, &mut c.cluster.certificate_authority);
        }
        for u in &mut config.users {
            absolute(path, &mut u.user.client_certificate);
            absolute(path, &mut u.user.client_key);
            absolute(path, &mut u.user.token_file);
        }
        Ok(Some(config))
    }

    /// Parses kubeconfig YAML (or JSON); an empty document is an empty config.
    pub fn parse(text: &str) -> Result<Kubeconfig, String> {
        if text.trim().is_empty() {
            return Ok(Kubeconfig::default());
        }
        serde_saphyr::from_str(text).map_err(|e| format!("not a valid kubeconfig: {e}"))
    }

    /// Reads several files as kubectl does with `KUBECONFIG=a:b`: missing files
    /// are skipped; the first file to define a cluster, user or context name, or
    /// the current context, wins.
    pub fn read_merged(paths: &[PathBuf]) -> Result<Kubeconfig, TlsError> {
        let mut merged = Kubeconfig::default();
        for path in paths {
            if let Some(config) = Self::read(path)? {
                merged.merge_under(config);
            }
        }
        Ok(merged)
    }

    /// Adds what `other` defines and `self` does not.
    fn merge_under(&mut self, other: Kubeconfig) {
        for c in other.clusters {
            if !self.clusters.iter().any(|x| x.name == c.name) {
                self.clusters.push(c);
            }
        }
        for u in other.users {
            if !self.users.iter().any(|x| x.name == u.name) {
                self.users.push(u);
            }
        }
        for c in other.contexts {
            if !self.contexts.iter().any(|x| x.name == c.name) {
                self.contexts.push(c);
            }
        }
        if self.current_context.as_deref().is_none_or(str::is_empty) {
            self.current_context = other.current_context;
        }
        for (k, v) in other.other {
            self.other.entry(k).or_insert(v);
        }
    }

    /// Adds or replaces what `other` defines (its clusters, users and contexts
    /// by name), keeping everything else; makes `other`'s current context the
    /// current one when `switch`.
    pub fn merge_over(&mut self, other: &Kubeconfig, switch: bool) {
        for c in &other.clusters {
            self.clusters.retain(|x| x.name != c.name);
            self.clusters.push(c.clone());
        }
        for u in &other.users {
            self.users.retain(|x| x.name != u.name);
            self.users.push(u.clone());
        }
        for c in &other.contexts {
            self.contexts.retain(|x| x.name != c.name);
            self.contexts.push(c.clone());
        }
        if switch || self.current_context.as_deref().is_none_or(str::is_empty) {
            self.current_context = other.current_context.clone();
        }
        self.api_version.get_or_insert_with(|| "v1".into());
        self.kind.get_or_insert_with(|| "Config".into());
    }

    /// Removes context `name` with the cluster and user it names (when no other
    /// context uses them); unsets the current context if it was `name`. Whether
    /// anything was removed.
    pub fn remove_context(&mut self, name: &str) -> bool {
        let Some(pos) = self.contexts.iter().position(|c| c.name == name) else {
            return false;
        };
        let ctx = self.contexts.remove(pos);
        if !self
            .contexts
            .iter()
            .any(|c| c.context.cluster == ctx.context.cluster)
        {
            self.clusters.retain(|c| c.name != ctx.context.cluster);
        }
        if !self
            .contexts
            .iter()
            .any(|c| c.context.user == ctx.context.user)
        {
            self.users.retain(|u| u.name != ctx.context.user);
        }
        if self.current_context.as_deref() == Some(name) {
            self.current_context = None;
        }
        true
    }

    /// A kubeconfig with one cluster, user and context, all named `name`
    /// (the user `name-admin`…: `user_name`), embedding the CA and credential.
    pub fn single(
        name: &str,
        user_name: &str,
        server: &str,
        ca_pem: &str,
        client: Option<(&str, &str)>,
        token: Option<&str>,
    ) -> Kubeconfig {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        Kubeconfig {
            api_version: Some("v1".into()),
            kind: Some("Config".into()),
            clusters: vec![NamedCluster {
                name: name.into(),
                cluster: Cluster {
                    server: Some(server.into()),
                    certificate_authority_data: Some(b64(ca_pem)),
                    ..Default::default()
                },
            }],
            users: vec![NamedUser {
                name: user_name.into(),
                user: AuthInfo {
                    client_certificate_data: client.map(|(c, _)| b64(c)),
                    client_key_data: client.map(|(_, k)| b64(k)),
                    token: token.map(str::to_string),
                    ..Default::default()
                },
            }],
            contexts: vec![NamedContext {
                name: name.into(),
                context: ContextEntry {
                    cluster: name.into(),
                    user: user_name.into(),
                    ..Default::default()
                },
            }],
            current_context: Some(name.into()),
            other: BTreeMap::new(),
        }
    }

    pub fn to_yaml(&self) -> Result<String, TlsError> {
        serde_saphyr::to_string(self).map_err(|e| TlsError::Kubeconfig {
            path: "(new)".into(),
            message: e.to_string(),
        })
    }

    /// Writes the file, readable by its owner only (it holds keys).
    pub fn write(&self, path: &Path) -> Result<(), TlsError> {
        crate::write_private(path, self.to_yaml()?.as_bytes())
    }

    /// What `context` (the current context when `None`) says to use. `origin`
    /// names where the config came from, for errors.
    pub fn resolve(&self, context: Option<&str>, origin: &str) -> Result<Resolved, TlsError> {
        let here = Path::new(origin);
        let name = match context.filter(|c| !c.is_empty()) {
            Some(c) => c.to_string(),
            None => self
                .current_context
                .clone()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| err(here, "no current-context is set (pass --context)"))?,
        };
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.contexts.iter().map(|c| c.name.as_str()).collect();
                err(
                    here,
                    format!(
                        "context {name:?} is not defined (known: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
            })?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)
            .ok_or_else(|| {
                err(
                    here,
                    format!(
                        "context {name:?} names cluster {:?}, which is not defined",
                        ctx.context.cluster
                    ),
                )
            })?;
        let user = if ctx.context.user.is_empty() {
            AuthInfo::default()
        } else {
            self.users
                .iter()
                .find(|u| u.name == ctx.context.user)
                .map(|u| u.user.clone())
                .ok_or_else(|| {
                    err(
                        here,
                        format!(
                            "context {name:?} names user {:?}, which is not defined",
                            ctx.context.user
                        ),
                    )
                })?
        };
        let server = cluster
            .cluster
            .server
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| err(here, format!("cluster {:?} has no server", cluster.name)))?;
        let field = |what: &str| format!("{what} of {name:?}");
        let ca_pem = data_or_file(
            here,
            &field("certificate-authority"),
            cluster.cluster.certificate_authority_data.as_deref(),
            cluster.cluster.certificate_authority.as_deref(),
        )?;
        let client_cert_pem = data_or_file(
            here,
            &field("client-certificate"),
            user.client_certificate_data.as_deref(),
            user.client_certificate.as_deref(),
        )?;
        let client_key_pem = data_or_file(
            here,
            &field("client-key"),
            user.client_key_data.as_deref(),
            user.client_key.as_deref(),
        )?;
        if client_cert_pem.is_some() != client_key_pem.is_some() {
            return Err(err(
                here,
                format!(
                    "user {:?} has a client certificate without its key, or a key without its certificate",
                    ctx.context.user
                ),
            ));
        }
        let token = match (&user.token, &user.token_file) {
            (Some(t), _) if !t.is_empty() => Some(t.clone()),
            (_, Some(f)) if !f.is_empty() => Some(
                String::from_utf8_lossy(
                    &read_bounded(Path::new(f))
                        .map_err(|e| err(here, format!("tokenFile {f}: {e}")))?,
                )
                .trim()
                .to_string(),
            ),
            _ => None,
        };
        Ok(Resolved {
            context: name.clone(),
            server,
            credentials: Credentials {
                ca_pem,
                client_cert_pem,
                client_key_pem,
                token,
                insecure_skip_tls_verify: cluster.cluster.insecure_skip_tls_verify.unwrap_or(false),
                tls_server_name: cluster.cluster.tls_server_name.clone(),
            },
            namespace: ctx.context.namespace.clone().filter(|n| !n.is_empty()),
        })
    }
}

/// Inline base64 data, else the named file's contents.
fn data_or_file(
    origin: &Path,
    what: &str,
    data: Option<&str>,
    file: Option<&str>,
) -> Result<Option<Vec<u8>>, TlsError> {
    if let Some(d) = data.filter(|d| !d.is_empty()) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .map_err(|e| err(origin, format!("{what}-data is not base64: {e}")))?;
        return Ok(Some(bytes));
    }
    if let Some(f) = file.filter(|f| !f.is_empty()) {
        let bytes =
            read_bounded(Path::new(f)).map_err(|e| err(origin, format!("{what} {f}: {e}")))?;
        return Ok(Some(bytes));
    }
    Ok(None)
}

/// A file a kubeconfig names (a CA, a key, a token), at most [`MAX_BYTES`].
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_BYTES + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > MAX_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_BYTES} bytes"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_STYLE: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster:
    server: https://prod:6443
    certificate-authority: ca.pem
    extensions: [{name: x, extension: {a: 1}}]
users:
- name: me
  user:
    exec: {command: get-token, apiVersion: client.authentication.k8s.io/v1}
    token: abc
contexts:
- name: prod
  context: {cluster: prod, user: me, namespace: team}
current-context: prod
preferences: {}
"#;

    #[test]
    fn a_kubectl_file_resolves_with_relative_files_against_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "CA").unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, KUBECTL_STYLE).unwrap();
        let config = Kubeconfig::read(&path).unwrap().unwrap();
        let r = config.resolve(None, "x").unwrap();
        assert_eq!(r.server, "https://prod:6443");
        assert_eq!(r.credentials.ca_pem.as_deref(), Some(&b"CA"[..]));
        assert_eq!(r.credentials.token.as_deref(), Some("abc"));
        assert_eq!(r.namespace.as_deref(), Some("team"));
    }

    #[test]
    fn merging_over_a_users_file_keeps_what_tugboat_does_not_know() {
        let mut theirs = Kubeconfig::parse(KUBECTL_STYLE).unwrap();
        let ours = Kubeconfig::single(
            "tugboat",
            "tugboat-admin",
            "https://127.0.0.1:6443",
            "CA",
            Some(("C", "K")),
            None,
        );
        theirs.merge_over(&ours, true);
        let text = theirs.to_yaml().unwrap();
        let back = Kubeconfig::parse(&text).unwrap();
        assert_eq!(back.current_context.as_deref(), Some("tugboat"));
        assert_eq!(back.contexts.len(), 2);
        assert!(back.users[0].user.other.contains_key("exec"), "{text}");
        assert!(
            back.clusters[0].cluster.other.contains_key("extensions"),
            "{text}"
        );
        assert!(back.other.contains_key("preferences"), "{text}");
        let r = back.resolve(None, "x").unwrap();
        assert_eq!(r.credentials.client_cert_pem.as_deref(), Some(&b"C"[..]));
        assert_eq!(r.credentials.client_key_pem.as_deref(), Some(&b"K"[..]));
        assert_eq!(r.credentials.ca_pem.as_deref(), Some(&b"CA"[..]));
        // Merging again replaces rather than duplicates.
        let mut again = back.clone();
        again.merge_over(&ours, true);
        assert_eq!(again.contexts.len(), 2);
        // Removing it leaves theirs as it was, but for the current context.
        assert!(again.remove_context("tugboat"));
        assert_eq!(again.contexts.len(), 1);
        assert!(again.clusters.iter().all(|c| c.name != "tugboat"));
        assert!(again.users.iter().all(|u| u.name != "tugboat-admin"));
        assert_eq!(again.current_context, None);
        assert!(!again.remove_context("tugboat"));
    }

    #[test]
    fn the_first_file_to_define_a_name_wins_and_missing_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        Kubeconfig::single("one", "u", "https://a:1", "CA", None, Some("ta"))
            .write(&a)
            .unwrap();
        let mut second = Kubeconfig::single("one", "u", "https://b:1", "CA", None, Some("tb"));
        second.current_context = Some("two".into());
        second.contexts.push(NamedContext {
            name: "two".into(),
            context: ContextEntry {
                cluster: "one".into(),
                user: "u".into(),
                ..Default::default()
            },
        });
        second.write(&b).unwrap();
        let merged =
            Kubeconfig::read_merged(&[dir.path().join("missing"), a.clone(), b.clone()]).unwrap();
        let r = merged.resolve(None, "x").unwrap();
        assert_eq!(r.context, "one");
        assert_eq!(r.server, "https://a:1");
        assert_eq!(r.credentials.token.as_deref(), Some("ta"));
        assert_eq!(
            merged.resolve(Some("two"), "x").unwrap().server,
            "https://a:1"
        );
    }

    #[test]
    fn resolving_names_what_is_missing() {
        let config = Kubeconfig::parse(KUBECTL_STYLE).unwrap();
        let e = config.resolve(Some("nope"), "/k").unwrap_err().to_string();
        assert!(
            e.contains("\"nope\"") && e.contains("prod") && e.contains("/k"),
            "{e}"
        );
        let empty = Kubeconfig::parse("").unwrap();
        let e = empty.resolve(None, "/k").unwrap_err().to_string();
        assert!(e.contains("current-context"), "{e}");
        let bad = Kubeconfig::parse("clusters: 3").unwrap_err();
        assert!(bad.contains("kubeconfig"), "{bad}");
    }

    #[test]
    fn nulls_are_empty_lists() {
        let c =
            Kubeconfig::parse("apiVersion: v1\nclusters: null\nusers:\ncontexts: []\n").unwrap();
        assert!(c.clusters.is_empty() && c.users.is_empty());
    }
}
