//! Where `tug` finds things: the client config file (`{"server": "http://…"}`), the
//! API server URL (flag, then `TUG_SERVER`, then the config file, then the default) and
//! the controller's data directory. Environment values come in through [`Env`] so
//! tests can inject them instead of touching the user's real files.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;
use tugboat_api::client::DEFAULT_SERVER;

/// The environment variables `tug` reads, captured once. Empty values count as unset.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub tug_server: Option<String>,
    pub tug_config: Option<PathBuf>,
    pub xdg_config_home: Option<PathBuf>,
    pub xdg_data_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
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
            xdg_config_home: path("XDG_CONFIG_HOME"),
            xdg_data_home: path("XDG_DATA_HOME"),
            home: path("HOME"),
        }
    }
}

/// The client config file's content.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClientConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
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

/// How the server URL was chosen, so a connection error can say so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerSource {
    Flag,
    Env,
    ConfigFile(PathBuf),
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
}
