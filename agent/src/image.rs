//! The sample workload image (`tugboat/sample:latest`), built on this host from our
//! own `tug-sample` binary: no registry is needed or reachable.
//!
//! The image is `FROM scratch` holding the binary at `/tug-sample` and the shared
//! libraries `ldd` lists for it, each at its own absolute path, so a normally
//! (dynamically) linked build runs in it. A fully static build has no libraries to
//! copy and the image is the binary alone: `cargo rustc --release -p tugboat-sample
//! --bin tug-sample -- -C target-feature=+crt-static` makes one (glibc's static
//! libraries come with libc6-dev). Plain `cargo build` cannot: `+crt-static` in
//! `RUSTFLAGS` also reaches proc-macro crates, which cannot be built with it unless
//! `--target` is given, and that moves the binary out of `target/<profile>`. Every
//! image built here carries the label [`IMAGE_LABEL`]`=sample`, so cleanup can find
//! them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;

use crate::runtime::ContainerRuntime;
use crate::runtime::docker::DockerRuntime;

/// The tag the sample workload runs under in manifests and tests.
pub const SAMPLE_IMAGE: &str = "tugboat/sample:latest";
/// The label on every image Tugboat builds (value: which one, `sample`).
pub const IMAGE_LABEL: &str = "io.tugboat.image";
/// The binary's file name, as cargo builds it.
pub const SAMPLE_BINARY: &str = "tug-sample";
/// Overrides where the binary is looked for.
pub const SAMPLE_BINARY_ENV: &str = "TUG_SAMPLE_BIN";

const BUILD_HINT: &str =
    "build it with `cargo build -p tugboat-sample` (or `cargo build --release -p tugboat-sample`)";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("the sample workload binary {} does not exist: {BUILD_HINT}", path.display())]
    BinaryMissing { path: PathBuf },
    #[error(
        "the sample workload binary {SAMPLE_BINARY} was not found next to {}: {BUILD_HINT}, \
         or set {SAMPLE_BINARY_ENV} to its path", exe.display()
    )]
    BinaryNotFound { exe: PathBuf },
    #[error("listing the shared libraries of {} with ldd: {message}", binary.display())]
    Ldd { binary: PathBuf, message: String },
    #[error("packing the build context for {}: {source}", binary.display())]
    Tar {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The engine refused the build; the message is Docker's.
    #[error("building image {tag}: {message}")]
    Build { tag: String, message: String },
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
}

/// Where `tug-sample` is: `$TUG_SAMPLE_BIN` if set (whether or not it exists, so a
/// wrong setting is reported rather than ignored); else next to the running
/// executable; else one directory up (tests run from `target/<profile>/deps`, the
/// binary is in `target/<profile>`).
pub fn find_sample_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(SAMPLE_BINARY_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|dir| dir.join(SAMPLE_BINARY))
        .find(|candidate| candidate.is_file())
}

/// [`find_sample_binary`], or an error saying how to build it.
pub fn require_sample_binary() -> Result<PathBuf, ImageError> {
    find_sample_binary().ok_or_else(|| ImageError::BinaryNotFound {
        exe: std::env::current_exe().unwrap_or_default(),
    })
}

/// Returns the ID of image `tag`, building it from `binary` first if it is not there
/// or `rebuild` is set. Rebuilding an unchanged binary is cheap (the engine's build
/// cache answers) and yields the same ID.
pub async fn ensure_sample_image(
    runtime: &DockerRuntime,
    binary: &Path,
    tag: &str,
    rebuild: bool,
) -> Result<String, ImageError> {
    ensure_image(runtime, binary, tag, &SAMPLE, rebuild).await
}

/// How an image is made from one of our binaries.
#[derive(Clone, Copy, Debug)]
pub struct Recipe {
    /// The binary's name inside the image (at `/`).
    pub binary_name: &'static str,
    pub cmd: &'static str,
    pub expose: Option<u16>,
    /// The value of the `io.tugboat.image` label.
    pub label: &'static str,
}

/// The sample workload: `/tug-sample serve`.
pub const SAMPLE: Recipe = Recipe {
    binary_name: SAMPLE_BINARY,
    cmd: "serve",
    expose: Some(8080),
    label: "sample",
};

/// Tugboat itself, to run agents as containers (multi-host tests): `/tug agent`.
pub const AGENT: Recipe = Recipe {
    binary_name: "tug",
    cmd: "agent",
    expose: None,
    label: "agent",
};

/// The node's service sandbox: `/tug pause`, which only waits to be stopped (its
/// network namespace is what matters; see `proxy::sandbox`).
pub const SANDBOX: Recipe = Recipe {
    binary_name: "tug",
    cmd: "pause",
    expose: None,
    label: "sandbox",
};

/// The agent image's tag.
pub const AGENT_IMAGE: &str = "tugboat/agent:latest";

/// Like [`ensure_sample_image`], for any [`Recipe`].
pub async fn ensure_image(
    runtime: &DockerRuntime,
    binary: &Path,
    tag: &str,
    recipe: &Recipe,
    rebuild: bool,
) -> Result<String, ImageError> {
    let previous = runtime.image_id(tag).await?;
    if !rebuild && let Some(id) = previous {
        return Ok(id);
    }
    if !tokio::fs::metadata(binary).await.is_ok_and(|m| m.is_file()) {
        return Err(ImageError::BinaryMissing {
            path: binary.to_owned(),
        });
    }
    let libraries = shared_libraries(binary).await?;
    let context = {
        let binary = binary.to_owned();
        let recipe = *recipe;
        tokio::task::spawn_blocking(move || {
            build_context(&binary, &libraries, &recipe)
                .map_err(|source| ImageError::Tar { binary, source })
        })
        .await
        .expect("packing the build context does not panic")?
    };
    let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
        .t(tag)
        .rm(true)
        .forcerm(true)
        .build();
    let build_error = |message: String| ImageError::Build {
        tag: tag.to_owned(),
        message,
    };
    let mut progress = runtime.docker().build_image(
        options,
        None,
        Some(bollard::body_full(Bytes::from(context))),
    );
    while let Some(item) = progress.next().await {
        let info = item.map_err(|e| build_error(crate::runtime::docker::message_of(&e)))?;
        if let Some(line) = info
            .stream
            .as_deref()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
        {
            tracing::debug!(image = tag, "{line}");
        }
    }
    let id = runtime
        .image_id(tag)
        .await?
        .ok_or_else(|| build_error("the build finished but the image is not there".into()))?;
    // The image the tag pointed at before is ours and now untagged: remove it, unless
    // a container still uses it (then Docker refuses, and it stays).
    if let Some(old) = previous.filter(|old| *old != id) {
        let options = bollard::query_parameters::RemoveImageOptionsBuilder::default().build();
        if let Err(e) = runtime
            .docker()
            .remove_image(&old, Some(options), None)
            .await
        {
            tracing::debug!(image = %old, error = %e, "previous sample image kept");
        }
    }
    Ok(id)
}

/// The shared libraries `binary` needs, as `ldd` resolves them on this host; none for
/// a static binary.
async fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let ldd_error = |message: String| ImageError::Ldd {
        binary: binary.to_owned(),
        message,
    };
    let output = tokio::process::Command::new("ldd")
        .arg(binary)
        .output()
        .await
        .map_err(|e| ldd_error(format!("could not run ldd: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stdout.contains("not a dynamic executable") || stderr.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    if !output.status.success() {
        return Err(ldd_error(format!("{} ({})", stderr.trim(), output.status)));
    }
    parse_ldd(&stdout).map_err(ldd_error)
}

/// The absolute paths in `ldd`'s output: `libc.so.6 => /lib/…/libc.so.6 (0x…)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`; the vDSO has none. A library that is `not
/// found` is an error: the image would not run.
fn parse_ldd(output: &str) -> Result<Vec<PathBuf>, String> {
    let mut libraries = BTreeSet::new();
    for line in output.lines().map(str::trim) {
        if line.contains("statically linked") {
            return Ok(Vec::new());
        }
        let target = line
            .split_once("=>")
            .map_or(line, |(_, target)| target.trim());
        if target.starts_with("not found") {
            return Err(format!(
                "{} is not found on this host",
                line.split_whitespace().next().unwrap_or(line)
            ));
        }
        let path = target.split(" (0x").next().unwrap_or(target).trim();
        if path.starts_with('/') {
            libraries.insert(PathBuf::from(path));
        }
    }
    Ok(libraries.into_iter().collect())
}

fn dockerfile(recipe: &Recipe) -> String {
    let expose = recipe
        .expose
        .map(|p| format!("EXPOSE {p}\n"))
        .unwrap_or_default();
    format!(
        "FROM scratch\n\
         COPY rootfs/ /\n\
         ENTRYPOINT [\"/{}\"]\n\
         CMD [\"{}\"]\n\
         {expose}\
         LABEL {IMAGE_LABEL}={}\n",
        recipe.binary_name, recipe.cmd, recipe.label
    )
}

/// The build context: the Dockerfile, and under `rootfs/` what goes into the image
/// (the binary as `/tug-sample`, each library at its path). Symbolic links are
/// followed: the image gets the files' contents. Times are zeroed so the same inputs
/// give the same context, and the engine's build cache can answer.
fn build_context(
    binary: &Path,
    libraries: &[PathBuf],
    recipe: &Recipe,
) -> std::io::Result<Vec<u8>> {
    let mut files = vec![(
        PathBuf::from("rootfs").join(recipe.binary_name),
        binary.to_owned(),
    )];
    for library in libraries {
        let relative = library.strip_prefix("/").map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not absolute", library.display()),
            )
        })?;
        files.push((Path::new("rootfs").join(relative), library.clone()));
    }
    let directories: BTreeSet<PathBuf> = files
        .iter()
        .flat_map(|(inside, _)| {
            inside
                .ancestors()
                .skip(1)
                .filter(|d| !d.as_os_str().is_empty())
                .map(Path::to_owned)
        })
        .collect();

    let mut tar = tar::Builder::new(Vec::new());
    let dockerfile = dockerfile(recipe);
    tar.append_data(
        &mut header(tar::EntryType::Regular, 0o644, dockerfile.len()),
        "Dockerfile",
        dockerfile.as_bytes(),
    )?;
    for directory in &directories {
        tar.append_data(
            &mut header(tar::EntryType::Directory, 0o755, 0),
            directory,
            std::io::empty(),
        )?;
    }
    for (inside, source) in &files {
        let contents = std::fs::read(source)?;
        tar.append_data(
            &mut header(tar::EntryType::Regular, 0o755, contents.len()),
            inside,
            contents.as_slice(),
        )?;
    }
    tar.into_inner()
}

fn header(kind: tar::EntryType, mode: u32, size: usize) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size as u64);
    header.set_mtime(0);
    header
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    const LDD: &str = "\tlinux-vdso.so.1 (0x00007ffc6b3f2000)\n\
        \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0f1c5a0000)\n\
        \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0f1c3bf000)\n\
        \t/lib64/ld-linux-x86-64.so.2 (0x00007f0f1c60a000)\n";

    #[test]
    fn ldd_output_gives_every_library_path() {
        let libraries = parse_ldd(LDD).unwrap();
        assert_eq!(
            libraries,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn a_static_binary_needs_no_libraries() {
        assert_eq!(
            parse_ldd("\tstatically linked\n").unwrap(),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn a_missing_library_is_an_error() {
        let error = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert_eq!(error, "libfoo.so.1 is not found on this host");
    }

    #[test]
    fn the_context_holds_the_dockerfile_the_binary_and_its_libraries() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("some-build-output");
        std::fs::write(&binary, b"\x7fELF fake binary").unwrap();
        let real_lib = dir.path().join("libc.so.6.real");
        std::fs::write(&real_lib, b"fake libc").unwrap();
        // A symbolic link, as /lib is on merged-/usr systems: its target's contents go in.
        let lib = dir.path().join("libc.so.6");
        std::os::unix::fs::symlink(&real_lib, &lib).unwrap();

        let context = build_context(&binary, std::slice::from_ref(&lib), &SAMPLE).unwrap();
        let mut archive = tar::Archive::new(context.as_slice());
        let mut entries = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_owned();
            let mut contents = String::new();
            entry.read_to_string(&mut contents).unwrap();
            entries.push((
                path,
                entry.header().entry_type(),
                entry.header().mode().unwrap(),
                contents,
            ));
        }
        let find = |path: &str| {
            entries
                .iter()
                .find(|e| e.0 == path)
                .unwrap_or_else(|| panic!("{path} in {entries:?}"))
        };

        let dockerfile = &find("Dockerfile").3;
        assert!(dockerfile.starts_with("FROM scratch\n"));
        for line in [
            "COPY rootfs/ /",
            "ENTRYPOINT [\"/tug-sample\"]",
            "CMD [\"serve\"]",
            "EXPOSE 8080",
            "LABEL io.tugboat.image=sample",
        ] {
            assert!(
                dockerfile.lines().any(|l| l == line),
                "{line} in {dockerfile}"
            );
        }
        let bin = find("rootfs/tug-sample");
        assert_eq!(
            (bin.1, bin.2, bin.3.as_str()),
            (tar::EntryType::Regular, 0o755, "\x7fELF fake binary")
        );
        let inside = format!("rootfs{}", lib.display());
        let lib_entry = find(&inside);
        assert_eq!(
            (lib_entry.1, lib_entry.3.as_str()),
            (tar::EntryType::Regular, "fake libc")
        );
        assert_eq!(find("rootfs").1, tar::EntryType::Directory);
        let parent = format!("rootfs{}", dir.path().display());
        assert_eq!(find(&parent).1, tar::EntryType::Directory);
        // Directories come before what is in them.
        let position = |path: &str| entries.iter().position(|e| e.0 == path).unwrap();
        assert!(position(&parent) < position(&inside));
    }

    #[test]
    fn a_relative_library_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("bin");
        std::fs::write(&binary, b"x").unwrap();
        assert!(build_context(&binary, &[PathBuf::from("lib/libc.so.6")], &SAMPLE).is_err());
    }
}
