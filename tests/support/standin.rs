//! Stand-ins for the public images that example manifests name (`perl`,
//! `alpine:3`, `nginx`…), built from the test busybox image, since nothing can
//! be pulled here. A stand-in is built only when the engine has no image of that
//! name, or when the one it has is a stand-in of ours (label
//! `io.tugboat.image=standin`): a real image is never replaced.

use std::time::Duration;

use futures::StreamExt as _;

use crate::docker::{BUSYBOX_IMAGE, build_context, busybox_image, docker};

/// The label value our stand-ins carry under `io.tugboat.image`.
const STANDIN: &str = "standin";

/// What a stand-in adds to busybox: files `(path in the image, contents, mode)`
/// and the default command.
pub struct Standin<'a> {
    pub tag: &'a str,
    pub files: &'a [(&'a str, &'a [u8], u32)],
    pub cmd: &'a [&'a str],
}

/// `perl`: prints π for `perl -Mbignum=bpi -wle 'print bpi(N)'`.
pub const PERL: Standin<'static> = Standin {
    tag: "perl",
    files: &[(
        "usr/bin/perl",
        include_bytes!("../fixtures/kubernetes-docs/perl-standin.sh"),
        0o755,
    )],
    cmd: &["perl", "-v"],
};

/// `alpine:3`: a shell and the usual tools.
pub const ALPINE: Standin<'static> = Standin {
    tag: "alpine:3",
    files: &[],
    cmd: &["/bin/sh"],
};

/// `nginx`: busybox's httpd serving nginx's default document root on port 80.
pub const NGINX: Standin<'static> = Standin {
    tag: "nginx",
    files: &[],
    cmd: &["httpd", "-f", "-p", "80", "-h", "/usr/share/nginx/html"],
};

/// The fluentd image of the DaemonSet example: it only has to keep running.
pub const FLUENTD: Standin<'static> = Standin {
    tag: "k8s.gcr.io/fluentd-elasticsearch:1.20",
    files: &[],
    cmd: &["sleep", "2147483647"],
};

/// Builds `s` unless the engine has a real image of that name.
pub async fn ensure(s: &Standin<'_>) -> anyhow::Result<()> {
    let label = format!(
        "{{{{index .Config.Labels \"{}\"}}}}",
        tugboat_agent::image::IMAGE_LABEL
    );
    if let Ok(found) = docker(&["image", "inspect", "-f", &label, s.tag])
        && found.trim() != STANDIN
    {
        return Ok(());
    }
    busybox_image().await?;
    let mut dockerfile = format!("FROM {BUSYBOX_IMAGE}\n");
    let mut files: Vec<(&str, &[u8], u32)> = Vec::new();
    for (i, (path, contents, mode)) in s.files.iter().enumerate() {
        let name: &'static str = ["f0", "f1", "f2", "f3"]
            .get(i)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("at most 4 files per stand-in"))?;
        dockerfile.push_str(&format!("COPY {name} /{path}\n"));
        files.push((name, contents, *mode));
    }
    let cmd = serde_json::to_string(s.cmd)?;
    dockerfile.push_str(&format!(
        "LABEL {}={STANDIN}\nCMD {cmd}\n",
        tugboat_agent::image::IMAGE_LABEL
    ));
    files.push(("Dockerfile", dockerfile.as_bytes(), 0o644));
    let context = build_context(&files)?;
    let runtime = tugboat_agent::runtime::docker::DockerRuntime::connect(None).await?;
    let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
        .t(s.tag)
        .rm(true)
        .forcerm(true)
        .build();
    let mut progress = runtime.docker().build_image(
        options,
        None,
        Some(bollard::body_full(bytes::Bytes::from(context))),
    );
    let tag = s.tag;
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(item) = progress.next().await {
            let info = item.map_err(|e| anyhow::anyhow!("building the stand-in {tag}: {e}"))?;
            if let Some(error) = info.error_detail.and_then(|d| d.message) {
                anyhow::bail!("building the stand-in {tag}: {error}");
            }
        }
        Ok(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("building the stand-in {tag} took over 120 s"))?
}
