//! Where `tug` finds things: the API server and the credentials to use with it,
//! and the controller's data directory. Environment values come in through
//! [`Env`] so tests can inject them instead of touching the user's real files.
//!
//! Credentials come from a kubeconfig, read as kubectl reads it, so `tug` and
//! kubectl share them:
//!
//! 1. `--kubeconfig FILE`, `$KUBECONFIG` (a `:`-separated list) or `--context`
//!    given: those files (or `~/.kube/config`), that context (or the current one);
//! 2. else the kubeconfig recorded in tug's client config file by the
//!    `tug controller` or `tug up` that ran on this machine
//!    (`{"server": "https://…", "kubeconfig": "…/admin.kubeconfig"}`);
//! 3. else `~/.kube/config` if it exists;
//! 4. else no credentials (enough for a controller run with `--insecure-http`).
//!
//! `--server` or `$TUG_SERVER` replace the server URL whichever way it was
//! found (as kubectl's `--server` does).

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;
use tugboat_api::client::DEFAULT_SERVER;

/// What `tug` reads from its surroundings, captured once: environment variables
/// (empty values count as unset) and whether its output is a terminal.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub tug_server: Option<String>,
    pub tug_config: Option<PathBuf>,
    /// `KUBECONFIG`, as given (a `:`-separated list).
    pub kubeconfig: Option<String>,
    pub xdg_config_home: Option<PathBuf>,
    pub xdg_data_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
    /// Standard output is a terminal: progress is drawn in place (`rollout
    /// status`) instead of printed a line per change. Decided here, not by the
    /// verb, because a verb writes to whatever `Context::out` is.
    pub terminal: bool,
}

impl Env {
    /// The real process environment.
    pub fn from_process() -> Env {
        fn var(name: &str) -> Option<String> {
            std::env::var(name).ok().filter(|v| !v.is_empty())
        }
        fn path(name: &str) -> Option<PathBuf> {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        }
        Env {
            tug_server: var("TUG_SERVER"),
            tug_config: path("TUG_CONFIG"),
            kubeconfig: var("KUBECONFIG"),
            xdg_config_home: path("XDG_CONFIG_HOME"),
            xdg_data_home: path("XDG_DATA_HOME"),
            home: path("HOME"),
            terminal: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        }
    }
}

/// The client config file's content.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClientConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The admin kubeconfig of the controller that wrote this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
}

/// Where the client config file lives: `TUG_CONFIG`, else
/// `$XDG_CONFIG_HOME/tugboat/config.json`, else `$HOME/.config/tugboat/config.json`.
/// `None` only when none of those variables is set.
pub fn config_path(env: &Env) -> Option<PathBuf> {
    if let Some(p) = &env.tug_config {
        return Some(p.clone());
    }
    let base = env
        .xdg_config_home
        .clone()
        .or_else(|| env.home.as_ref().map(|h| h.join(".config")))?;
    Some(base.join("tugboat").join("config.json"))
}

/// The controller's default data directory: `$XDG_DATA_HOME/tugboat`, else
/// `$HOME/.local/share/tugboat`.
pub fn data_dir(env: &Env) -> Option<PathBuf> {
    let base = env
        .xdg_data_home
        .clone()
        .or_else(|| env.home.as_ref().map(|h| h.join(".local").join("share")))?;
    Some(base.join("tugboat"))
}

/// Reads the config file; `Ok(None)` when it does not exist.
pub fn read_config(path: &Path) -> anyhow::Result<Option<ClientConfig>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read the client config file {}", path.display()));
        }
    };
    let config = serde_json::from_str(&text).with_context(|| {
        format!(
            "the client config file {} is not valid JSON of the form {{\"server\": \"http://127.0.0.1:6443\"}}; fix or delete it",
            path.display()
        )
    })?;
    Ok(Some(config))
}

/// Writes the config file, creating its directory. Keys this version does not know are
/// kept, so an older `tug controller` does not erase what a newer `tug` stored there.
pub fn write_config(path: &Path, config: &ClientConfig) -> anyhow::Result<()> {
    let mut doc = match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str::<Value>(&text)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| Value::Object(Default::default())),
        Err(_) => Value::Object(Default::default()),
    };
    if let (Value::Object(map), Value::Object(new)) = (&mut doc, serde_json::to_value(config)?) {
        map.extend(new);
        // A controller without TLS has no kubeconfig: an old one must not linger.
        if config.kubeconfig.is_none() {
            map.remove("kubeconfig");
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create the directory {} for the client config",
                dir.display()
            )
        })?;
    }
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    // Written beside and renamed over, so a reader never sees half a file.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)
        .with_context(|| format!("cannot write the client config file {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot write the client config file {}", path.display()))?;
    Ok(())
}

/// `~/.kube/config`.
pub fn default_kubeconfig(env: &Env) -> Option<PathBuf> {
    env.home.as_ref().map(|h| h.join(".kube").join("config"))
}

/// How the server URL was chosen, so a connection error can say so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerSource {
    Flag,
    Env,
    ConfigFile(PathBuf),
    /// A kubeconfig context.
    Kubeconfig {
        files: String,
        context: String,
    },
    /// Nothing was set; `config` is where a config file was looked for.
    Default {
        config: Option<PathBuf>,
    },
}

impl fmt::Display for ServerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerSource::Flag => write!(f, "from --server"),
            ServerSource::Env => write!(f, "from $TUG_SERVER"),
            ServerSource::ConfigFile(p) => write!(f, "from the config file {}", p.display()),
            ServerSource::Kubeconfig { files, context } => {
                write!(f, "from context {context:?} of the kubeconfig {files}")
            }
            ServerSource::Default { config: Some(p) } => write!(
                f,
                "the default: no --server, no $TUG_SERVER and no server in {}",
                p.display()
            ),
            ServerSource::Default { config: None } => {
                write!(
                    f,
                    "the default: no --server, no $TUG_SERVER and no config file"
                )
            }
        }
    }
}

/// The API server to talk to and how it was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub url: String,
    pub source: ServerSource,
}

/// The flags that choose a server and credentials.
#[derive(Clone, Debug, Default)]
pub struct Flags<'a> {
    pub server: Option<&'a str>,
    pub kubeconfig: Option<&'a Path>,
    pub context: Option<&'a str>,
    /// tug's client config file (`--config`, else from the environment).
    pub config: Option<&'a Path>,
}

/// The server, how it was chosen, the credentials for it and the context's
/// namespace.
#[derive(Clone, Debug)]
pub struct Target {
    pub server: Server,
    pub credentials: tugboat_api::Credentials,
    pub namespace: Option<String>,
}

/// Chooses the server and credentials the documented way (see the module).
pub fn resolve(flags: &Flags<'_>, env: &Env) -> anyhow::Result<Target> {
    use tugboat_tls::kubeconfig::Kubeconfig;
    let explicit =
        flags.kubeconfig.is_some() || env.kubeconfig.is_some() || flags.context.is_some();
    let files: Option<Vec<PathBuf>> = if let Some(k) = flags.kubeconfig {
        Some(vec![k.to_path_buf()])
    } else if let Some(list) = env.kubeconfig.as_deref() {
        Some(
            std::env::split_paths(list)
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
        )
    } else if explicit {
        default_kubeconfig(env).map(|p| vec![p])
    } else {
        let recorded = match flags.config {
            Some(path) => read_config(path)?.and_then(|c| c.kubeconfig),
            None => None,
        };
        match recorded {
            Some(k) if !k.exists() => anyhow::bail!(
                "the kubeconfig {} that the local controller recorded in {} does not exist (yet): is the controller running? (`tug up` or `tug controller`)",
                k.display(),
                flags
                    .config
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            Some(k) => Some(vec![k]),
            None => default_kubeconfig(env)
                .filter(|p| p.exists())
                .map(|p| vec![p]),
        }
    };
    let mut target = match files {
        Some(files) if !files.is_empty() => {
            let shown = files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":");
            if flags.kubeconfig.is_some() && !files[0].exists() {
                anyhow::bail!("--kubeconfig {shown}: no such file");
            }
            let merged = Kubeconfig::read_merged(&files)?;
            let r = merged.resolve(flags.context, &shown)?;
            Target {
                server: Server {
                    url: r.server.clone(),
                    source: ServerSource::Kubeconfig {
                        files: shown,
                        context: r.context.clone(),
                    },
                },
                namespace: r.namespace.clone(),
                credentials: r.into(),
            }
        }
        _ => Target {
            server: resolve_server(None, env, flags.config)?,
            credentials: Default::default(),
            namespace: None,
        },
    };
    if let Some(url) = flags.server.filter(|u| !u.is_empty()) {
        target.server = Server {
            url: url.to_string(),
            source: ServerSource::Flag,
        };
    } else if let Some(url) = env.tug_server.as_deref().filter(|u| !u.is_empty()) {
        target.server = Server {
            url: url.to_string(),
            source: ServerSource::Env,
        };
    }
    Ok(target)
}

/// Chooses the server: `flag`, else `env.tug_server`, else the `server` of the config
/// file at `config` (when it exists), else [`DEFAULT_SERVER`]. The file is read only
/// when needed, so a broken one does not get in the way of `--server`.
pub fn resolve_server(
    flag: Option<&str>,
    env: &Env,
    config: Option<&Path>,
) -> anyhow::Result<Server> {
    if let Some(url) = flag.filter(|u| !u.is_empty()) {
        return Ok(Server {
            url: url.to_string(),
            source: ServerSource::Flag,
        });
    }
    if let Some(url) = env.tug_server.as_deref().filter(|u| !u.is_empty()) {
        return Ok(Server {
            url: url.to_string(),
            source: ServerSource::Env,
        });
    }
    if let Some(path) = config
        && let Some(url) = read_config(path)?
            .and_then(|c| c.server)
            .filter(|u| !u.is_empty())
    {
        return Ok(Server {
            url,
            source: ServerSource::ConfigFile(path.to_path_buf()),
        });
    }
    Ok(Server {
        url: DEFAULT_SERVER.to_string(),
        source: ServerSource::Default {
            config: config.map(Path::to_path_buf),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with_server(server: Option<&str>) -> Env {
        Env {
            tug_server: server.map(str::to_string),
            ..Env::default()
        }
    }

    fn config_file(dir: &tempfile::TempDir, server: &str) -> PathBuf {
        let path = dir.path().join("config.json");
        write_config(
            &path,
            &ClientConfig {
                server: Some(server.to_string()),
                kubeconfig: None,
            },
        )
        .unwrap();
        path
    }

    #[test]
    fn the_flag_wins_over_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = config_file(&dir, "http://config:1");
        let s = resolve_server(
            Some("http://flag:1"),
            &env_with_server(Some("http://env:1")),
            Some(&path),
        )
        .unwrap();
        assert_eq!(s.url, "http://flag:1");
        assert_eq!(s.source, ServerSource::Flag);
    }

    #[test]
    fn the_environment_wins_over_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = config_file(&dir, "http://config:1");
        let s = resolve_server(None, &env_with_server(Some("http://env:1")), Some(&path)).unwrap();
        assert_eq!(s.url, "http://env:1");
        assert_eq!(s.source, ServerSource::Env);
    }

    #[test]
    fn the_config_file_wins_over_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = config_file(&dir, "http://config:1");
        let s = resolve_server(None, &env_with_server(None), Some(&path)).unwrap();
        assert_eq!(s.url, "http://config:1");
        assert_eq!(s.source, ServerSource::ConfigFile(path));
    }

    #[test]
    fn without_anything_the_default_server_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let s = resolve_server(None, &env_with_server(None), Some(&missing)).unwrap();
        assert_eq!(s.url, DEFAULT_SERVER);
        assert!(s.source.to_string().contains("nope.json"), "{}", s.source);
    }

    #[test]
    fn a_broken_config_file_is_an_error_naming_it_unless_something_else_decides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "not json").unwrap();
        let err = resolve_server(None, &env_with_server(None), Some(&path)).unwrap_err();
        assert!(format!("{err:#}").contains("config.json"), "{err:#}");
        assert!(resolve_server(Some("http://flag:1"), &env_with_server(None), Some(&path)).is_ok());
    }

    #[test]
    fn config_path_prefers_tug_config_then_xdg_then_home() {
        let mut env = Env {
            tug_config: Some("/a/c.json".into()),
            xdg_config_home: Some("/xdg".into()),
            home: Some("/home/u".into()),
            ..Env::default()
        };
        assert_eq!(config_path(&env), Some(PathBuf::from("/a/c.json")));
        env.tug_config = None;
        assert_eq!(
            config_path(&env),
            Some(PathBuf::from("/xdg/tugboat/config.json"))
        );
        env.xdg_config_home = None;
        assert_eq!(
            config_path(&env),
            Some(PathBuf::from("/home/u/.config/tugboat/config.json"))
        );
        env.home = None;
        assert_eq!(config_path(&env), None);
    }

    #[test]
    fn data_dir_prefers_xdg_data_home() {
        let mut env = Env {
            xdg_data_home: Some("/data".into()),
            home: Some("/home/u".into()),
            ..Env::default()
        };
        assert_eq!(data_dir(&env), Some(PathBuf::from("/data/tugboat")));
        env.xdg_data_home = None;
        assert_eq!(
            data_dir(&env),
            Some(PathBuf::from("/home/u/.local/share/tugboat"))
        );
    }

    #[test]
    fn writing_the_config_keeps_keys_it_does_not_know() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, r#"{"server":"http://old:1","theme":"dark"}"#).unwrap();
        write_config(
            &path,
            &ClientConfig {
                server: Some("http://new:2".into()),
                kubeconfig: None,
            },
        )
        .unwrap();
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["server"], "http://new:2");
        assert_eq!(doc["theme"], "dark");
        assert_eq!(
            read_config(&path).unwrap().unwrap().server.as_deref(),
            Some("http://new:2")
        );
    }

    fn kubeconfig(dir: &Path, file: &str, server: &str, namespace: Option<&str>) -> PathBuf {
        let path = dir.join(file);
        let mut k = tugboat_tls::kubeconfig::Kubeconfig::single(
            "ctx",
            "user",
            server,
            "CA",
            None,
            Some("token"),
        );
        k.contexts[0].context.namespace = namespace.map(str::to_string);
        k.write(&path).unwrap();
        path
    }

    #[test]
    fn credentials_come_from_the_flag_then_kubeconfig_then_the_local_controller_then_home() {
        let dir = tempfile::tempdir().unwrap();
        let flag = kubeconfig(dir.path(), "flag", "https://flag:1", None);
        let listed = kubeconfig(dir.path(), "listed", "https://listed:1", Some("team"));
        let recorded = kubeconfig(dir.path(), "recorded", "https://recorded:1", None);
        std::fs::create_dir_all(dir.path().join("home/.kube")).unwrap();
        let home_file = kubeconfig(
            &dir.path().join("home/.kube"),
            "config",
            "https://home:1",
            None,
        );
        assert!(home_file.exists());
        let config = dir.path().join("config.json");
        write_config(
            &config,
            &ClientConfig {
                server: Some("https://recorded:1".into()),
                kubeconfig: Some(recorded.clone()),
            },
        )
        .unwrap();
        let env = Env {
            kubeconfig: Some(format!(
                "{}:{}",
                dir.path().join("missing").display(),
                listed.display()
            )),
            home: Some(dir.path().join("home")),
            ..Env::default()
        };
        fn flags<'a>(k: Option<&'a Path>, config: &'a Path) -> Flags<'a> {
            Flags {
                kubeconfig: k,
                config: Some(config),
                ..Flags::default()
            }
        }
        let t = resolve(&flags(Some(&flag), &config), &env).unwrap();
        assert_eq!(t.server.url, "https://flag:1");
        assert_eq!(t.credentials.token.as_deref(), Some("token"));
        let t = resolve(&flags(None, &config), &env).unwrap();
        assert_eq!(t.server.url, "https://listed:1");
        assert_eq!(t.namespace.as_deref(), Some("team"));
        let no_env = Env {
            home: Some(dir.path().join("home")),
            ..Env::default()
        };
        let t = resolve(&flags(None, &config), &no_env).unwrap();
        assert_eq!(t.server.url, "https://recorded:1");
        let t = resolve(
            &Flags {
                config: None,
                ..Flags::default()
            },
            &no_env,
        )
        .unwrap();
        assert_eq!(t.server.url, "https://home:1");
        // --server replaces the URL, the credentials stay.
        let t = resolve(
            &Flags {
                server: Some("https://other:2"),
                ..flags(None, &config)
            },
            &no_env,
        )
        .unwrap();
        assert_eq!(t.server.url, "https://other:2");
        assert_eq!(t.credentials.token.as_deref(), Some("token"));
        // A recorded kubeconfig that is not there yet says so.
        std::fs::remove_file(&recorded).unwrap();
        let e = resolve(&flags(None, &config), &no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is the controller running"), "{e}");
    }
}
