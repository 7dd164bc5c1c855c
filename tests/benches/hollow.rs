//! Benchmark (not a test): the control plane at scale, on hollow nodes.
//!
//! A real `tug controller` process over HTTPS; N hollow nodes in this process
//! (real agents, each with its own credential, Lease, pod watch and status
//! writes, on the in-memory engine: see `tugboat_tests::hollow`); Deployments
//! of N × PODS_PER_NODE pods in all. For each N it reports:
//! - the time until every pod is bound and until every pod is Running, and
//!   pods/s (pods ÷ time to all Running, from the first create request);
//! - API latency p50/p99 during the run, from a client that GETs a Node, LISTs
//!   one Deployment's pods (a label selector, one page of 500) and PATCHes a pod
//!   bound to node 0 every 100 ms; and the watch fan-out lag: from that PATCH's
//!   answer until a watch with `fieldSelector=spec.nodeName=<node 0>` (as every
//!   agent's) delivers it;
//! - the controller's resident and peak memory, its CPU seconds over the run,
//!   the store's size on disk; and the time a SIGKILLed controller takes to
//!   serve again with everything stored (until it answers a full list).
//!
//! `HOLLOW_NODES=100,1000 HOLLOW_PODS_PER_NODE=30 cargo bench -p tugboat-tests --bench hollow`
//! (`HOLLOW_START_DELAY_MS`, default 100: how long a hollow container takes to
//! start). Needs no Docker. The hollow nodes share the machine's cores with the
//! controller: the CPU the controller gets is what is left.
//!
//! `HOLLOW_LIMIT_S=N` stops waiting after N seconds (default 120 + pods/100) and
//! reports how far the run got.
//!
//! `HOLLOW_PERF=DIR` also samples the controller and this process (the hollow
//! nodes) with `perf record -g` (99 Hz) from the first create until every pod is
//! Running, into `DIR/perf-<nodes>.data` (read it with `perf report -i …
//! --pid <controller's>`; both PIDs are printed). A symbolized profile needs an unstripped
//! build: `CARGO_PROFILE_RELEASE_STRIP=none RUSTFLAGS="-C force-frame-pointers=yes"`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tugboat_api::resource::{DEPLOYMENTS, NODES, PODS};
use tugboat_api::{Client, ListParams, PatchType};
use tugboat_tests::TestController;
use tugboat_tests::bench::{git_describe, loadavg, rss_mb, utc_now};
use tugboat_tests::hollow::{
    HollowConfig, HollowNodes, cpu_seconds, deployment, dir_bytes, peak_rss_mb, wait_ready,
};

/// Pods per Deployment (Kubernetes' density tests use Deployments of this order).
const PER_DEPLOYMENT: usize = 1_000;
const NS: &str = "default";
const PROBE_EVERY: Duration = Duration::from_millis(100);

struct Row {
    nodes: usize,
    pods: usize,
    nodes_ready: Duration,
    all_bound: Duration,
    all_running: Duration,
    get: Percentiles,
    list: Percentiles,
    write: Percentiles,
    watch_lag: Percentiles,
    rss_mb: f64,
    peak_mb: f64,
    cpu_s: f64,
    hollow_cpu_s: f64,
    store_mb: f64,
    restart: Duration,
    /// Store writes (revisions) during the run.
    writes: u64,
}

#[derive(Clone, Copy, Default)]
struct Percentiles {
    p50: f64,
    p99: f64,
}

fn percentiles(mut v: Vec<Duration>) -> Percentiles {
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Percentiles {
        p50: at(0.50).as_secs_f64() * 1000.0,
        p99: at(0.99).as_secs_f64() * 1000.0,
    }
}

fn env_usize_list(var: &str, default: &str) -> anyhow::Result<Vec<usize>> {
    std::env::var(var)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .with_context(|| format!("{var}: {s:?} is not a count"))
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes = env_usize_list("HOLLOW_NODES", "100,1000")?;
    let per_node = env_usize_list("HOLLOW_PODS_PER_NODE", "30")?[0];
    let start_delay =
        Duration::from_millis(env_usize_list("HOLLOW_START_DELAY_MS", "100")?[0] as u64);
    println!(
        "hollow-node benchmark — {} — commit {} — {} cores — load {}",
        utc_now(),
        git_describe(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    println!(
        "{per_node} pods per node, Deployments of {PER_DEPLOYMENT}, container start {start_delay:?}"
    );
    let mut rows = Vec::new();
    for n in sizes {
        match run(n, per_node, start_delay).await {
            Ok(row) => {
                print_table(std::slice::from_ref(&row));
                rows.push(row);
            }
            Err(e) => {
                eprintln!("{n} nodes: {e:#}");
                break;
            }
        }
    }
    println!("\nall runs:");
    print_table(&rows);
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!(
        "{:>6} {:>7} {:>7} {:>8} {:>8} {:>7} {:>13} {:>13} {:>13} {:>13} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>10}",
        "nodes",
        "pods",
        "ready s",
        "bound s",
        "run s",
        "pods/s",
        "get p50/p99",
        "list p50/p99",
        "write p50/p99",
        "watch p50/p99",
        "RSS MB",
        "peak MB",
        "CPU s",
        "node s",
        "disk MB",
        "restart",
        "writes/pod",
    );
    for r in rows {
        let pp = |p: Percentiles| format!("{:.1}/{:.1}", p.p50, p.p99);
        println!(
            "{:>6} {:>7} {:>7.1} {:>8.1} {:>8.1} {:>7.0} {:>13} {:>13} {:>13} {:>13} {:>7.0} {:>7.0} {:>7.1} {:>7.1} {:>7.1} {:>7.2}s {:>10.1}",
            r.nodes,
            r.pods,
            r.nodes_ready.as_secs_f64(),
            r.all_bound.as_secs_f64(),
            r.all_running.as_secs_f64(),
            r.pods as f64 / r.all_running.as_secs_f64(),
            pp(r.get),
            pp(r.list),
            pp(r.write),
            pp(r.watch_lag),
            r.rss_mb,
            r.peak_mb,
            r.cpu_s,
            r.hollow_cpu_s,
            r.store_mb,
            r.restart.as_secs_f64(),
            r.writes as f64 / r.pods as f64,
        );
    }
    println!(
        "(latencies in ms; `run s`: from the first create until every pod is Running; `node s`: \
         CPU seconds of this process's hollow nodes over the same time; `restart`: SIGKILL to a \
         full pod list served again)"
    );
}

/// Pods seen bound and Running, with the time each count was reached.
#[derive(Default)]
struct Progress {
    bound: HashMap<String, Instant>,
    running: HashMap<String, Instant>,
}

async fn run(nodes_n: usize, per_node: usize, start_delay: Duration) -> anyhow::Result<Row> {
    let total = nodes_n * per_node;
    eprintln!("== {nodes_n} nodes, {total} pods");
    // Every hollow node comes from 127.0.0.1 and holds two or three connections.
    let conns = (nodes_n * 4 + 1024).to_string();
    // Kubernetes' timing: Leases renewed every 10 s, a node lost after 40 s
    // without one (Tugboat's defaults, 1 s and 3 s, are for a handful of nodes).
    let mut tc = TestController::start_process_with(&[
        "--max-connections-per-client",
        &conns,
        "--max-connections",
        &conns,
        "--node-grace",
        "40",
    ])
    .await?;
    let pid = tc.pid().context("the controller has no PID")?;
    let hc = HollowConfig {
        start_delay,
        max_pods: (per_node as i64 + 10).max(110),
        ..HollowConfig::default()
    };
    let joined = Instant::now();
    let nodes = HollowNodes::start(&tc, "hollow", nodes_n, hc).await?;
    let ready_limit = Duration::from_secs(60 + nodes_n as u64 / 10);
    wait_ready(&tc.client, "hollow", nodes_n, ready_limit).await?;
    let nodes_ready = joined.elapsed();
    eprintln!("   {nodes_n} nodes Ready in {nodes_ready:.1?}");

    // The probe: a pod bound to node 0 by hand, patched every PROBE_EVERY.
    let probe_node = nodes.names[0].clone();
    let probe = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "probe", "labels": {"role": "probe"}},
        "spec": {"nodeName": probe_node, "containers": [{"name": "app", "image": tugboat_tests::hollow::IMAGE}]},
    });
    tc.client.create(&PODS, Some(NS), &probe).await?;

    let progress = Arc::new(Mutex::new(Progress::default()));
    // The tracker's watch starts before the first create: nothing is missed.
    let first = tc
        .client
        .watch(&PODS, Some(NS), &hollow_pods(), Some("0"))
        .await?;
    let done = Arc::new(AtomicBool::new(false));
    let tracker = tokio::spawn(track(tc.client.clone(), first, progress.clone(), total));

    let rev_before = revision(&tc.client).await?;
    let lists_before = nodes.engine_lists();
    let cpu_before = cpu_seconds(pid);
    let hollow_before = cpu_seconds(std::process::id());
    let probes = tokio::spawn(probe_loop(
        tc.client.clone(),
        probe_node.clone(),
        done.clone(),
    ));

    let perf = match std::env::var_os("HOLLOW_PERF") {
        Some(dir) => Some(start_perf(
            pid,
            &std::path::Path::new(&dir).join(format!("perf-{nodes_n}.data")),
        )?),
        None => None,
    };
    let t0 = Instant::now();
    let deployments = total.div_ceil(PER_DEPLOYMENT);
    let creates = (0..deployments).map(|i| {
        let replicas = PER_DEPLOYMENT.min(total - i * PER_DEPLOYMENT) as i64;
        let mut d = deployment(&format!("d{i}"), replicas);
        d["spec"]["template"]["metadata"]["labels"]["hollow"] = json!("1");
        let client = tc.client.clone();
        async move { client.create(&DEPLOYMENTS, Some(NS), &d).await }
    });
    for r in futures::future::join_all(creates).await {
        r?;
    }
    // `HOLLOW_LIMIT_S` caps the wait, for a run that is to report how far it got.
    let limit = match std::env::var("HOLLOW_LIMIT_S") {
        Ok(s) => Duration::from_secs(
            s.trim()
                .parse()
                .with_context(|| format!("HOLLOW_LIMIT_S: {s:?} is not a number of seconds"))?,
        ),
        Err(_) => Duration::from_secs(120 + total as u64 / 100),
    };
    let outcome = tokio::time::timeout(limit, tracker).await;
    done.store(true, Ordering::Relaxed);
    if let Some(perf) = perf {
        stop_perf(perf).await;
    }
    let (get, list, write, watch_lag) = probes.await??;
    let cpu_s = cpu_seconds(pid) - cpu_before;
    let writes = revision(&tc.client).await?.saturating_sub(rev_before);
    let hollow_cpu_s = cpu_seconds(std::process::id()) - hollow_before;
    let engine_lists = nodes.engine_lists() - lists_before;
    let p = progress.lock().await;
    match outcome {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => bail!("the pod watch failed: {e:#}"),
        Ok(Err(e)) => bail!("the pod watch panicked: {e}"),
        Err(_) => bail!(
            "after {limit:?}: {} of {total} pods bound, {} Running ({} hollow containers); \
             controller {:.0} MB resident, {cpu_s:.1} CPU s; hollow nodes {:.0} MB, {hollow_cpu_s:.1} CPU s",
            p.bound.len(),
            p.running.len(),
            nodes.containers(),
            rss_mb(Some(pid)),
            rss_mb(Some(std::process::id())),
        ),
    }
    let last = |m: &HashMap<String, Instant>| {
        m.values()
            .max()
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(t0))
    };
    let all_bound = last(&p.bound);
    let all_running = last(&p.running);
    drop(p);
    let rss = rss_mb(Some(pid));
    let peak = peak_rss_mb(pid);
    let store_mb = dir_bytes(&tc.data_dir().join("data")) as f64 / 1e6;
    eprintln!(
        "   all {total} bound at {all_bound:.1?}, Running at {all_running:.1?}; controller {cpu_s:.1} CPU s; \
         {:.1} engine container lists per pod; hollow nodes {:.0} MB resident",
        engine_lists as f64 / total as f64,
        rss_mb(Some(std::process::id()))
    );

    // Restart with everything stored: until the full list is served again.
    tc.kill9().await?;
    let killed = Instant::now();
    tc.restart_process().await?;
    let listed = tc
        .client
        .list(&PODS, Some(NS), &ListParams::default())
        .await?;
    let restart = killed.elapsed();
    let count = listed["items"].as_array().map_or(0, Vec::len);
    if count < total {
        bail!("after the restart the controller lists {count} pods, not {total}");
    }
    // Nodes stay Ready across the restart (their agents reconnect).
    let nodes_after = tc.client.list(&NODES, None, &ListParams::default()).await?;
    let n_after = nodes_after["items"].as_array().map_or(0, Vec::len);
    if n_after < nodes_n {
        bail!("after the restart the controller lists {n_after} nodes, not {nodes_n}");
    }
    nodes.stop(Duration::from_secs(30)).await;
    drop(tc);
    Ok(Row {
        nodes: nodes_n,
        pods: total,
        nodes_ready,
        all_bound,
        all_running,
        get,
        list,
        write,
        watch_lag,
        rss_mb: rss,
        peak_mb: peak,
        cpu_s,
        hollow_cpu_s,
        store_mb,
        restart,
        writes,
    })
}

/// `perf record` sampling process `pid` and this one into `out`, until [`stop_perf`].
fn start_perf(pid: u32, out: &std::path::Path) -> anyhow::Result<tokio::process::Child> {
    eprintln!(
        "   perf record into {}: controller PID {pid}, hollow nodes PID {}",
        out.display(),
        std::process::id()
    );
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    tokio::process::Command::new("perf")
        .args(["record", "-F", "99", "-g", "-o"])
        .arg(out)
        .args(["-p", &format!("{pid},{}", std::process::id())])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("HOLLOW_PERF is set but `perf` cannot be started (Debian: linux-perf)")
}

/// Ends a `perf record` the way Ctrl-C does (it then writes its file), at most 30 s.
async fn stop_perf(mut perf: tokio::process::Child) {
    if let Some(pid) = perf.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGINT,
        );
    }
    if tokio::time::timeout(Duration::from_secs(30), perf.wait())
        .await
        .is_err()
    {
        eprintln!("   perf record did not stop within 30 s; killed");
        let _ = perf.kill().await;
    }
}

/// The store's latest revision, as a list reports it.
async fn revision(client: &Client) -> anyhow::Result<u64> {
    let list = client
        .list(
            &tugboat_api::resource::NAMESPACES,
            None,
            &ListParams::default(),
        )
        .await?;
    list.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .context("a list without a resourceVersion")
}

/// Follows the pods until `total` are Running.
fn hollow_pods() -> ListParams {
    ListParams {
        label_selector: Some("hollow".into()),
        ..Default::default()
    }
}

/// Notes when each pod is first seen bound and Running, from `first` and, if
/// the server ends that watch or cuts it off (a watcher that falls too far
/// behind gets `410 Gone`, as from kube-apiserver), from a relist and a new
/// watch, as a reflector does; a pod first seen in a relist counts from then.
async fn track(
    client: Client,
    first: impl futures::Stream<Item = Result<tugboat_api::WatchEvent, tugboat_api::ClientError>>
    + Send
    + 'static,
    progress: Arc<Mutex<Progress>>,
    total: usize,
) -> anyhow::Result<()> {
    let note = |p: &mut Progress, o: &Value, now: Instant| {
        let Some(name) = o.pointer("/metadata/name").and_then(Value::as_str) else {
            return;
        };
        if o.pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
        {
            p.bound.entry(name.to_string()).or_insert(now);
        }
        if o.pointer("/status/phase") == Some(&json!("Running")) {
            p.running.entry(name.to_string()).or_insert(now);
        }
    };
    let mut watch: std::pin::Pin<Box<dyn futures::Stream<Item = _> + Send>> = Box::pin(first);
    let mut relists = 0;
    loop {
        while let Some(ev) = watch.next().await {
            let Ok(ev) = ev else { break };
            if ev.event_type == "ERROR" {
                break;
            }
            let mut p = progress.lock().await;
            note(&mut p, &ev.object, Instant::now());
            if p.running.len() >= total {
                return Ok(());
            }
        }
        // Ended or cut off: list what is there now, and watch on from it.
        relists += 1;
        if relists > 50 {
            bail!("the pod watch ended {relists} times");
        }
        let listed = client.list(&PODS, Some(NS), &hollow_pods()).await?;
        let now = Instant::now();
        let mut p = progress.lock().await;
        for o in listed["items"].as_array().into_iter().flatten() {
            note(&mut p, o, now);
        }
        let done = p.running.len() >= total;
        drop(p);
        eprintln!("   (the bench's pod watch was cut off; relisted, {relists} so far)");
        if done {
            return Ok(());
        }
        let rv = listed
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        watch = Box::pin(
            client
                .watch(&PODS, Some(NS), &hollow_pods(), rv.as_deref())
                .await?,
        );
    }
}

type Probes = (Percentiles, Percentiles, Percentiles, Percentiles);

/// Every PROBE_EVERY until `done`: a GET, a LIST and a PATCH, timed, and the
/// PATCH's arrival on a node-filtered watch.
async fn probe_loop(client: Client, node: String, done: Arc<AtomicBool>) -> anyhow::Result<Probes> {
    let arrivals: Arc<Mutex<HashMap<u64, Instant>>> = Default::default();
    let watch = client
        .watch(
            &PODS,
            Some(NS),
            &ListParams {
                field_selector: Some(format!("spec.nodeName={node}")),
                ..Default::default()
            },
            None,
        )
        .await?;
    let seen = arrivals.clone();
    let watcher = tokio::spawn(async move {
        let mut watch = std::pin::pin!(watch);
        while let Some(Ok(ev)) = watch.next().await {
            if let Some(seq) = ev
                .object
                .pointer("/metadata/annotations/probe")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<u64>().ok())
            {
                seen.lock().await.entry(seq).or_insert_with(Instant::now);
            }
        }
    });
    let (mut get, mut list, mut write) = (Vec::new(), Vec::new(), Vec::new());
    let mut acked: Vec<(u64, Instant)> = Vec::new();
    let list_path = format!("/api/v1/namespaces/{NS}/pods?labelSelector=app%3Dd0&limit=500");
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    while !done.load(Ordering::Relaxed) {
        tick.tick().await;
        let t = Instant::now();
        client.get(&NODES, None, &node).await?;
        get.push(t.elapsed());
        let t = Instant::now();
        client.get_path(&list_path).await?;
        list.push(t.elapsed());
        seq += 1;
        let patch = json!({"metadata": {"annotations": {"probe": seq.to_string()}}});
        let t = Instant::now();
        client
            .patch(&PODS, Some(NS), "probe", &patch, PatchType::Merge)
            .await?;
        let answered = Instant::now();
        write.push(answered - t);
        acked.push((seq, answered));
    }
    // The last patches' events get a moment to arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    watcher.abort();
    let seen = arrivals.lock().await;
    let mut lag = Vec::new();
    let mut missing = 0;
    for (seq, answered) in acked {
        match seen.get(&seq) {
            Some(at) => lag.push(at.saturating_duration_since(answered)),
            None => missing += 1,
        }
    }
    if missing > 0 {
        eprintln!("   {missing} probe patches never reached the node's watch");
    }
    Ok((
        percentiles(get),
        percentiles(list),
        percentiles(write),
        percentiles(lag),
    ))
}
