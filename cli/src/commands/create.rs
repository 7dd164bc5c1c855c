//! `tug create namespace|configmap|secret|serviceaccount` (and `job|cronjob`, in
//! [`super::create_batch`]): objects made from
//! arguments rather than manifests, as kubectl makes them. ConfigMap and Secret keys
//! come from `--from-literal`, `--from-file` (a file, or each file of a directory)
//! and `--from-env-file`; `--dry-run=client` prints the object without sending it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::ByteString;
use serde_json::{Value, json};
use tugboat_api::ResourceInfo;
use tugboat_api::resource::{CONFIGMAPS, NAMESPACES, SECRETS, SERVICEACCOUNTS};
use tugboat_api::validation::config_key;

use crate::args::{
    CreateArgs, CreateCommand, CreateCommon, CreateOutput, CreateSecretCommand, DataSources, DryRun,
};
use crate::context::Context;
use crate::output::{self, qualified_name};

pub async fn run(args: CreateArgs, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    match args.what {
        CreateCommand::Namespace { name } => {
            let client = ctx.client()?;
            let ns = json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name},
            });
            client.create(&NAMESPACES, None, &ns).await?;
            writeln!(ctx.out, "{} created", qualified_name(&NAMESPACES, &name))?;
        }
        CreateCommand::ConfigMap(a) => {
            let keys = gather(&a.data, "ConfigMap", &a.name)?;
            let obj = config_map(&a.name, keys);
            submit(ctx, &CONFIGMAPS, obj, &a.common).await?;
        }
        CreateCommand::Secret { what } => {
            let (obj, common) = match what {
                CreateSecretCommand::Generic {
                    name,
                    data,
                    type_,
                    common,
                } => {
                    let keys = gather(&data, "Secret", &name)?;
                    (secret(&name, type_.as_deref(), keys), common)
                }
                CreateSecretCommand::Tls {
                    name,
                    cert,
                    key,
                    common,
                } => (
                    tls_secret(&name, Path::new(&cert), Path::new(&key))?,
                    common,
                ),
                CreateSecretCommand::DockerRegistry {
                    name,
                    docker_server,
                    docker_username,
                    docker_password,
                    docker_email,
                    files,
                    common,
                } => {
                    let keys = if files.is_empty() {
                        let (Some(user), Some(password)) = (docker_username, docker_password)
                        else {
                            bail!(
                                "either --from-file or the combination of --docker-username, --docker-password and --docker-server is required"
                            );
                        };
                        let config = docker_config(
                            &docker_server,
                            &user,
                            &password,
                            docker_email.as_deref(),
                        );
                        vec![(".dockerconfigjson".to_string(), config.into_bytes())]
                    } else {
                        let sources = DataSources {
                            literals: Vec::new(),
                            files,
                            env_files: Vec::new(),
                        };
                        gather(&sources, "Secret", &name)?
                    };
                    (
                        secret(&name, Some("kubernetes.io/dockerconfigjson"), keys),
                        common,
                    )
                }
            };
            submit(ctx, &SECRETS, obj, &common).await?;
        }
        CreateCommand::Job {
            name,
            image,
            from,
            command,
        } => super::create_batch::create_job(ctx, name, image, from, command).await?,
        CreateCommand::Cronjob {
            name,
            image,
            schedule,
            restart,
            command,
        } => {
            super::create_batch::create_cronjob(ctx, name, image, schedule, restart, command)
                .await?
        }
        CreateCommand::ServiceAccount { name, common } => {
            let obj = json!({
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name},
            });
            submit(ctx, &SERVICEACCOUNTS, obj, &common).await?;
        }
    }
    Ok(())
}

/// Creates `obj` (or, with `--dry-run`, only shows it or has the server check it)
/// and prints the result as `-o` asks, else `kind/name created`.
async fn submit(
    ctx: &mut Context<'_>,
    r: &ResourceInfo,
    mut obj: Value,
    common: &CreateCommon,
) -> anyhow::Result<()> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let ns = ctx.namespace().to_string();
    let shown = match common.dry_run {
        DryRun::Client => {
            // As kubectl: the namespace appears only when one was asked for.
            if let Some(ns) = &ctx.namespace_flag {
                obj["metadata"]["namespace"] = Value::String(ns.clone());
            }
            obj
        }
        DryRun::Server => {
            let client = ctx.client()?;
            let path = format!("{}?dryRun=All", r.collection_path(Some(&ns)));
            client.post_path(&path, &obj).await?
        }
        DryRun::None => ctx.client()?.create(r, Some(&ns), &obj).await?,
    };
    let suffix = match common.dry_run {
        DryRun::None => "",
        DryRun::Client => " (dry run)",
        DryRun::Server => " (server dry run)",
    };
    match common.output {
        None => writeln!(ctx.out, "{} created{suffix}", qualified_name(r, &name))?,
        Some(CreateOutput::Name) => writeln!(ctx.out, "{}", qualified_name(r, &name))?,
        Some(CreateOutput::Json) => output::write_json(ctx.out, &shown)?,
        Some(CreateOutput::Yaml) => output::write_yaml(ctx.out, &shown)?,
    }
    Ok(())
}

/// A ConfigMap: UTF-8 values in `data`, anything else in `binaryData`.
fn config_map(name: &str, keys: Vec<(String, Vec<u8>)>) -> Value {
    let mut data = BTreeMap::new();
    let mut binary = BTreeMap::new();
    for (k, v) in keys {
        match String::from_utf8(v) {
            Ok(text) => {
                data.insert(k, Value::String(text));
            }
            Err(e) => {
                binary.insert(k, base64(e.into_bytes()));
            }
        }
    }
    let mut obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    if !data.is_empty() {
        obj["data"] = json!(data);
    }
    if !binary.is_empty() {
        obj["binaryData"] = json!(binary);
    }
    obj
}

/// A Secret of `type_` (default `Opaque`), every value base64 in `data`.
fn secret(name: &str, type_: Option<&str>, keys: Vec<(String, Vec<u8>)>) -> Value {
    let data: BTreeMap<String, Value> = keys.into_iter().map(|(k, v)| (k, base64(v))).collect();
    let mut obj = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": type_.unwrap_or("Opaque"),
    });
    if !data.is_empty() {
        obj["data"] = json!(data);
    }
    obj
}

fn base64(bytes: Vec<u8>) -> Value {
    // ByteString serializes as standard base64, as the API carries bytes.
    serde_json::to_value(ByteString(bytes)).unwrap_or(Value::Null)
}

/// A `kubernetes.io/tls` Secret; both files must hold PEM blocks of the right kind.
fn tls_secret(name: &str, cert: &Path, key: &Path) -> anyhow::Result<Value> {
    let cert_pem = std::fs::read(cert)
        .with_context(|| format!("cannot read the certificate {}", cert.display()))?;
    let key_pem =
        std::fs::read(key).with_context(|| format!("cannot read the key {}", key.display()))?;
    let cert_text = String::from_utf8_lossy(&cert_pem);
    let key_text = String::from_utf8_lossy(&key_pem);
    if !cert_text.contains("-----BEGIN CERTIFICATE-----") {
        bail!(
            "--cert {}: no PEM certificate (\"-----BEGIN CERTIFICATE-----\") in it",
            cert.display()
        );
    }
    if !(key_text.contains("-----BEGIN") && key_text.contains("PRIVATE KEY-----")) {
        bail!(
            "--key {}: no PEM private key (\"-----BEGIN … PRIVATE KEY-----\") in it",
            key.display()
        );
    }
    Ok(secret(
        name,
        Some("kubernetes.io/tls"),
        vec![
            ("tls.crt".to_string(), cert_pem),
            ("tls.key".to_string(), key_pem),
        ],
    ))
}

/// A `.dockerconfigjson` for one registry, as kubectl writes it.
fn docker_config(server: &str, user: &str, password: &str, email: Option<&str>) -> String {
    let auth = base64(format!("{user}:{password}").into_bytes());
    let mut entry = json!({"username": user, "password": password, "auth": auth});
    if let Some(email) = email.filter(|e| !e.is_empty()) {
        entry["email"] = Value::String(email.to_string());
    }
    json!({"auths": {server: entry}}).to_string()
}

/// Every key and value the flags name, in flag order (literals, files, env
/// files), refusing a key twice as kubectl does.
fn gather(sources: &DataSources, kind: &str, name: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut keys: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |key: String, value: Vec<u8>| -> anyhow::Result<()> {
        if let Some(why) = config_key(&key) {
            bail!("{key:?} is not a valid key name for a {kind}: {why}");
        }
        if keys.iter().any(|(k, _)| *k == key) {
            bail!(
                "cannot add key {key:?}, another key by that name already exists in Data for {kind} {name:?}"
            );
        }
        keys.push((key, value));
        Ok(())
    };
    for literal in &sources.literals {
        let (key, value) = parse_literal(literal)?;
        add(key, value.into_bytes())?;
    }
    for source in &sources.files {
        for (key, value) in read_file_source(source)? {
            add(key, value)?;
        }
    }
    for path in &sources.env_files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the env file {path}"))?;
        for (key, value) in parse_env_file(&text, path, |k| std::env::var(k).ok())? {
            add(key, value.into_bytes())?;
        }
    }
    Ok(keys)
}

/// `--from-literal=KEY=VALUE` (the value may hold `=` and may be empty).
fn parse_literal(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("invalid literal source {s:?}, expected key=value"),
    }
}

/// `--from-file=[KEY=]PATH`: a file under KEY (default its name), or each regular
/// file of a directory under its own name.
fn read_file_source(source: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let (key, path) = match source.split_once('=') {
        None => (None, source),
        Some(("", _)) => bail!("key name for file path {source:?} missing"),
        Some((_, "")) => bail!("file path for key name {source:?} missing"),
        Some((_, p)) if p.contains('=') => {
            bail!("key names or file paths cannot contain '=': {source:?}")
        }
        Some((k, p)) => (Some(k), p),
    };
    let p = Path::new(path);
    let meta = std::fs::metadata(p).with_context(|| format!("cannot read {path}"))?;
    if meta.is_dir() {
        if key.is_some() {
            bail!("cannot give a key name for a directory path: {source:?}");
        }
        let mut entries: Vec<_> = std::fs::read_dir(p)
            .with_context(|| format!("cannot list the directory {path}"))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot list the directory {path}"))?;
        entries.sort_by_key(|e| e.file_name());
        let mut out = Vec::new();
        for e in entries {
            if !e.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let value = std::fs::read(e.path())
                .with_context(|| format!("cannot read {}", e.path().display()))?;
            out.push((name, value));
        }
        return Ok(out);
    }
    let key = match key {
        Some(k) => k.to_string(),
        None => p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| anyhow!("{path:?} names no file"))?,
    };
    let value = std::fs::read(p).with_context(|| format!("cannot read {path}"))?;
    Ok(vec![(key, value)])
}

/// kubectl's env file: `KEY=VALUE` lines; leading blanks, blank lines and `#`
/// comments ignored; a bare `KEY` takes the value `env` has for it (skipped when
/// it has none). Keys must be environment variable names.
fn parse_env_file(
    text: &str,
    path: &str,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<(String, String)>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (line, None),
        };
        let valid = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '-' || c == '.')
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            bail!(
                "{path}, line {}: {key:?} is not a valid key name: a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit",
                n + 1
            );
        }
        match value.or_else(|| env(key)) {
            Some(v) => out.push((key.to_string(), v)),
            None => continue,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_literal("url=http://x/?a=b").unwrap(),
            ("url".to_string(), "http://x/?a=b".to_string())
        );
        assert_eq!(parse_literal("empty=").unwrap().1, "");
        assert!(parse_literal("=v").is_err());
        assert!(parse_literal("novalue").is_err());
    }

    #[test]
    fn env_files_skip_comments_and_take_bare_keys_from_the_environment() {
        let text = "\u{feff}# settings\n\n  MODE=prod\nGREETING=a=b \nFROM_ENV\nUNSET\n";
        let env = |k: &str| (k == "FROM_ENV").then(|| "here".to_string());
        let pairs = parse_env_file(text, "app.env", env).unwrap();
        assert_eq!(
            pairs,
            [
                ("MODE".to_string(), "prod".to_string()),
                ("GREETING".to_string(), "a=b ".to_string()),
                ("FROM_ENV".to_string(), "here".to_string()),
            ]
        );
        let err = parse_env_file("1BAD=x\n", "app.env", |_| None).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn files_and_directories_become_keys_and_duplicates_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.conf"), "x=1\n").unwrap();
        std::fs::write(dir.path().join("b.bin"), [0xff, 0x00, 0x01]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let d = dir.path().to_string_lossy().into_owned();
        let sources = DataSources {
            literals: vec!["mode=prod".into()],
            files: vec![d.clone(), format!("renamed={d}/a.conf")],
            env_files: Vec::new(),
        };
        let keys = gather(&sources, "ConfigMap", "cfg").unwrap();
        let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["mode", "a.conf", "b.bin", "renamed"]);
        let cm = config_map("cfg", keys);
        assert_eq!(cm["data"]["a.conf"], "x=1\n");
        assert_eq!(cm["data"]["renamed"], "x=1\n");
        assert_eq!(cm["binaryData"]["b.bin"], "/wAB");
        let twice = DataSources {
            literals: vec!["a.conf=1".into()],
            files: vec![format!("{d}/a.conf")],
            env_files: Vec::new(),
        };
        let err = gather(&twice, "ConfigMap", "cfg").unwrap_err();
        assert!(
            err.to_string().contains("cannot add key \"a.conf\""),
            "{err}"
        );
        assert!(read_file_source(&format!("k={d}")).is_err());
        assert!(read_file_source("=x").is_err());
        let bad_key = DataSources {
            literals: vec!["no/slash=1".into()],
            files: Vec::new(),
            env_files: Vec::new(),
        };
        assert!(gather(&bad_key, "Secret", "s").is_err());
    }

    #[test]
    fn secrets_carry_base64_data_and_a_type() {
        let s = secret("db", None, vec![("password".into(), b"hunter2".to_vec())]);
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s["data"]["password"], "aHVudGVyMg==");
        let config = docker_config("https://r.example", "ann", "pw", None);
        let v: Value = serde_json::from_str(&config).unwrap();
        assert_eq!(v["auths"]["https://r.example"]["auth"], "YW5uOnB3");
        assert!(v["auths"]["https://r.example"].get("email").is_none());
    }

    #[test]
    fn tls_secrets_need_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let s = tls_secret("web-tls", &cert, &key).unwrap();
        assert_eq!(s["type"], "kubernetes.io/tls");
        assert!(s["data"]["tls.crt"].is_string() && s["data"]["tls.key"].is_string());
        let err = tls_secret("web-tls", &key, &cert).unwrap_err();
        assert!(err.to_string().contains("--cert"), "{err}");
    }
}
