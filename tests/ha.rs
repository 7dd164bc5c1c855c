//! Several controllers on one etcd cluster (`--store etcd://…`), as separate
//! `tug controller` processes on a real three-member etcd on loopback: every
//! controller serves the API, one leads, and when the leader is killed another
//! takes over and finishes what it was doing, with no pod created twice and no
//! running container restarted; losing one etcd member (the leader) changes nothing; a
//! controller cut off from etcd stops reconciling before another leads.
//!
//! The nodes are in-process agents on the in-memory runtime, given every
//! controller's address so they fail over as real agents do.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tugboat_api::resource::{DEPLOYMENTS, LEASES, PODS};
use tugboat_api::{Client, ListParams, PatchType};
use tugboat_controller::store::etcd::etcd_client;
use tugboat_controller::store::etcd::testing::EtcdCluster;
use tugboat_tests::fake_agent::FakeAgent;
use tugboat_tests::{TestController, deployment, eventually_within, within};

const NS: &str = "default";
/// Short election timings, so a test sees several terms (client-go's are 15/10/2 s).
const LEASE: &str = "3";
const RENEW: &str = "2";
const RETRY: &str = "0.5";
/// Long enough for anything the test waits for; hitting it fails the test.
const WAIT: Duration = Duration::from_secs(120);
/// One test at a time: each runs a 3-member etcd and several controllers with
/// a 3 s lease, and on 2 cores three at once starve each other's renewals.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Cluster {
    etcd: EtcdCluster,
    controllers: Vec<TestController>,
    /// Every controller's URL, for clients that fail over.
    servers: String,
    agents: Vec<FakeAgent>,
}

/// A `tug controller` process on `store` (`etcd://…`), named `name` in the
/// election, with the short timings.
async fn start_controller(store: &str, name: &str) -> anyhow::Result<TestController> {
    TestController::start_process_with(&[
        "--store",
        store,
        "--leader-elect-lease-duration",
        LEASE,
        "--leader-elect-renew-deadline",
        RENEW,
        "--leader-elect-retry-period",
        RETRY,
        "--leader-elect-identity",
        name,
        // Node loss is not what these tests are about.
        "--node-grace",
        "60",
    ])
    .await
}

impl Cluster {
    async fn start(controllers: usize, nodes: usize) -> anyhow::Result<Cluster> {
        let etcd = EtcdCluster::start(3).await?;
        let url = etcd.url();
        let mut started = Vec::new();
        // One at a time: the first puts the cluster CA in etcd, the others take it.
        for i in 0..controllers {
            started.push(start_controller(&url, &format!("c{i}")).await?);
        }
        let servers = started
            .iter()
            .map(|c| c.url.clone())
            .collect::<Vec<_>>()
            .join(",");
        let mut agents = Vec::new();
        for n in 0..nodes {
            let mut config = started[n % controllers]
                .agent_config(&format!("node-{n}"))
                .await?;
            config.server = servers.clone();
            agents.push(FakeAgent::start_with(config));
        }
        Ok(Cluster {
            etcd,
            controllers: started,
            servers,
            agents,
        })
    }

    /// An admin client that fails over between the controllers.
    fn client(&self) -> anyhow::Result<Client> {
        let creds = self.controllers[0]
            .credentials
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no admin credentials"))?;
        Ok(Client::with_credentials(&self.servers, &creds)?)
    }

    /// The leader's index, from the Lease.
    async fn leader(&self, client: &Client) -> Option<usize> {
        let lease = client
            .get(&LEASES, Some("kube-system"), "tugboat-controller")
            .await
            .ok()?;
        let holder = lease["spec"]["holderIdentity"].as_str()?;
        holder.strip_prefix('c')?.parse().ok()
    }
}

async fn pods(client: &Client) -> Vec<Value> {
    client
        .list(&PODS, Some(NS), &ListParams::default())
        .await
        .ok()
        .and_then(|l| l["items"].as_array().cloned())
        .unwrap_or_default()
}

/// The pods, when there are `n`, all Running: name → (uid, container IDs).
async fn all_running(client: &Client, n: usize) -> Option<BTreeMap<String, (String, String)>> {
    let pods = pods(client).await;
    if pods.len() != n
        || !pods.iter().all(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
    {
        return None;
    }
    Some(
        pods.iter()
            .map(|p| {
                let ids = p["status"]["containerStatuses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        format!(
                            "{}#{}",
                            c["containerID"].as_str().unwrap_or(""),
                            c["restartCount"]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                (
                    p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    (p["metadata"]["uid"].as_str().unwrap_or("").to_string(), ids),
                )
            })
            .collect(),
    )
}

async fn scale(client: &Client, replicas: i64) -> anyhow::Result<()> {
    client
        .patch(
            &DEPLOYMENTS,
            Some(NS),
            "web",
            &json!({"spec": {"replicas": replicas}}),
            PatchType::Merge,
        )
        .await?;
    Ok(())
}

/// Kill -9 the leader during a scale-up: another controller leads within the
/// lease duration, the scale completes, every pod is created once, and the
/// pods that ran before run on untouched. Then etcd's leader dies, and the
/// cluster goes on scaling.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leaders_death_during_a_scale_up_costs_no_pod_twice_and_no_restart()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, 3).await?;
    let client = cluster.client()?;
    let leader = eventually_within(WAIT, "a controller leads", || cluster.leader(&client)).await?;
    eprintln!("c{leader} leads");
    client
        .create(&DEPLOYMENTS, Some(NS), &deployment("web", NS, 3))
        .await?;
    let before = eventually_within(WAIT, "3 pods run", || all_running(&client, 3)).await?;

    // Watch pods through a controller that stays, from now on.
    let watcher = (leader + 1) % 3;
    let watch_client = cluster.controllers[watcher].client.clone();
    let list = watch_client
        .list(&PODS, Some(NS), &ListParams::default())
        .await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let mut events = Box::pin(
        watch_client
            .watch(&PODS, Some(NS), &ListParams::default(), Some(&rv))
            .await?,
    );
    let added = tokio::spawn(async move {
        let mut added: Vec<String> = Vec::new();
        let mut deleted = 0;
        while let Ok(Some(Ok(e))) =
            tokio::time::timeout(Duration::from_secs(5), events.next()).await
        {
            match e.event_type.as_str() {
                "ADDED" => added.push(e.object["metadata"]["name"].as_str().unwrap_or("").into()),
                "DELETED" => deleted += 1,
                _ => {}
            }
        }
        (added, deleted)
    });

    scale(&client, 30).await?;
    // Let the leader get going, then kill it.
    eventually_within(WAIT, "the scale-up has started", || async {
        (pods(&client).await.len() > 3).then_some(())
    })
    .await?;
    let killed_at = Instant::now();
    cluster.controllers[leader].kill9().await?;
    let next = eventually_within(WAIT, "another controller leads", || async {
        cluster.leader(&client).await.filter(|l| *l != leader)
    })
    .await?;
    let takeover = killed_at.elapsed();
    eprintln!(
        "c{next} leads {:.2} s after c{leader} was killed (lease {LEASE} s, retry {RETRY} s)",
        takeover.as_secs_f64()
    );

    let after = eventually_within(WAIT, "30 pods run", || all_running(&client, 30)).await?;
    for (name, (uid, containers)) in &before {
        assert_eq!(
            after.get(name),
            Some(&(uid.clone(), containers.clone())),
            "pod {name} ran on with the same uid and containers, not restarted"
        );
    }
    let (added, deleted) = within("the pod watch to go quiet", added).await??;
    let unique: BTreeSet<&String> = added.iter().collect();
    assert_eq!(
        (added.len(), unique.len(), deleted),
        (27, 27, 0),
        "each new pod created once, none deleted: {added:?}"
    );

    // etcd's leader down: the others elect one and are a quorum. Meanwhile
    // the controllers answer 503 with Retry-After, and the client comes back.
    let member = cluster
        .etcd
        .leader()
        .await
        .ok_or_else(|| anyhow::anyhow!("no etcd member says which one leads"))?;
    cluster.etcd.members[member].kill();
    let killed_at = Instant::now();
    scale(&client, 10).await?;
    eprintln!(
        "a scale was accepted {:.2} s after etcd's leader (m{member}) was killed",
        killed_at.elapsed().as_secs_f64()
    );
    eventually_within(WAIT, "10 pods run with one etcd member down", || {
        all_running(&client, 10)
    })
    .await?;
    let leader_now = cluster.leader(&client).await;
    assert!(leader_now.is_some_and(|l| l != leader), "{leader_now:?}");
    for agent in cluster.agents.drain(..) {
        agent.stop().await?;
    }
    Ok(())
}

/// A TCP proxy to one etcd member that the test can cut (every connection
/// closed, new ones refused) and heal: a controller behind it is partitioned
/// from etcd while the others are not.
struct Proxy {
    addr: std::net::SocketAddr,
    target: String,
    cut: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: &str) -> anyhow::Result<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        Ok(Self::serve(listener, addr, target))
    }

    fn serve(listener: tokio::net::TcpListener, addr: std::net::SocketAddr, target: &str) -> Proxy {
        let cut = tokio_util::sync::CancellationToken::new();
        let token = cut.clone();
        let to = target.to_string();
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = token.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((mut inbound, _)) = accepted else {
                    return;
                };
                let to = to.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await else {
                        return;
                    };
                    tokio::select! {
                        () = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            target: target.to_string(),
            cut,
            task,
        }
    }

    /// Closes every connection and stops listening.
    async fn cut(&mut self) {
        self.cut.cancel();
        let _ = (&mut self.task).await;
    }

    /// Listens again on the same address.
    async fn heal(&mut self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        *self = Self::serve(listener, self.addr, &self.target.clone());
        Ok(())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut.cancel();
        self.task.abort();
    }
}

/// Every write of an Event under the prefix, in revision order, with the
/// controller that reported it: etcd's own history, read from the start.
async fn event_writers(etcd: &EtcdCluster) -> anyhow::Result<Vec<(i64, String)>> {
    let last = etcd_revision(etcd).await?;
    let mut client = etcd.client().await?;
    let mut stream = client
        .watch(
            "/tugboat/events/",
            Some(
                etcd_client::WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(1),
            ),
        )
        .await?;
    let mut writes = Vec::new();
    let mut seen = 0;
    while seen < last {
        let Ok(Ok(Some(response))) =
            tokio::time::timeout(Duration::from_secs(5), stream.message()).await
        else {
            break;
        };
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            seen = seen.max(kv.mod_revision());
            if event.event_type() != etcd_client::EventType::Put {
                continue;
            }
            let value: Value = serde_json::from_slice(kv.value()).unwrap_or_default();
            if let Some(instance) = value["reportingInstance"].as_str()
                && value["source"]["host"].is_null()
            {
                writes.push((kv.mod_revision(), instance.to_string()));
            }
        }
        if response.events().is_empty() && !response.created() {
            break;
        }
    }
    Ok(writes)
}

/// A leader cut off from etcd stops reconciling before another controller
/// takes over: reading etcd's history of controller Events between the cut
/// and the heal, no write of the old leader comes after the new leader's
/// first. When the partition heals, the cluster goes on.
///
/// Each controller reaches etcd through proxies of its own, so whichever
/// leads when the test looks is the one cut off: under load a lease can
/// change hands before the cut, and the test does not depend on which
/// controller won the first election.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_from_etcd_stops_before_another_leads_and_never_writes_after_it()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let etcd = EtcdCluster::start(3).await?;
    let mut proxies: Vec<Vec<Proxy>> = Vec::new();
    let mut controllers = Vec::new();
    // One at a time: the first puts the cluster CA in etcd, the other takes it.
    for c in 0..2 {
        let mut mine = Vec::new();
        for endpoint in etcd.endpoints() {
            mine.push(Proxy::start(&endpoint).await?);
        }
        let store = format!(
            "etcd://{}",
            mine.iter()
                .map(|p| p.addr.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        proxies.push(mine);
        controllers.push(start_controller(&store, &format!("c{c}")).await?);
    }
    let cluster_servers = controllers
        .iter()
        .map(|c| c.url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let creds = controllers[0]
        .credentials
        .clone()
        .expect("admin credentials");
    let client = Client::with_credentials(&cluster_servers, &creds)?;
    let leader = |client: Client| async move {
        let lease = client
            .get(&LEASES, Some("kube-system"), "tugboat-controller")
            .await
            .ok()?;
        let holder = lease["spec"]["holderIdentity"].as_str()?;
        holder.strip_prefix('c')?.parse::<usize>().ok()
    };
    let mut agents = Vec::new();
    for n in 0..2 {
        let mut config = controllers[0].agent_config(&format!("node-{n}")).await?;
        config.server = cluster_servers.clone();
        agents.push(FakeAgent::start_with(config));
    }
    client
        .create(&DEPLOYMENTS, Some(NS), &deployment("web", NS, 2))
        .await?;
    eventually_within(WAIT, "2 pods run", || all_running(&client, 2)).await?;
    let old = eventually_within(WAIT, "a controller leads", || leader(client.clone())).await?;
    let new = 1 - old;
    let (old_name, new_name) = (format!("c{old}"), format!("c{new}"));

    let cut_revision = etcd_revision(&etcd).await?;
    for p in &mut proxies[old] {
        p.cut().await;
    }
    let cut_at = Instant::now();
    // A client that tries the cut-off controller first: it answers 503 with
    // Retry-After (it cannot reach etcd and wrote nothing), and the client
    // goes on to the other.
    let old_first = Client::with_credentials(
        &format!("{},{}", controllers[old].url, controllers[new].url),
        &creds,
    )?;
    scale(&old_first, 12).await?;
    assert_eq!(old_first.base_url(), controllers[new].url);
    eventually_within(WAIT, "the other controller leads", || async {
        (leader(client.clone()).await == Some(new)).then_some(())
    })
    .await?;
    eprintln!(
        "{new_name} leads {:.2} s after {old_name} was cut off from etcd",
        cut_at.elapsed().as_secs_f64()
    );
    eventually_within(WAIT, "12 pods run", || all_running(&client, 12)).await?;
    // What a load balancer in front of the controllers asks: the cut-off one
    // is not ready, the other is.
    let cut_off_readyz = controllers[old].client.get_text("/readyz").await;
    assert!(
        cut_off_readyz
            .as_ref()
            .is_err_and(|e| e.to_string().contains("etcd failed")),
        "{cut_off_readyz:?}"
    );
    assert_eq!(controllers[new].client.get_text("/readyz").await?, "ok");

    let heal_revision = etcd_revision(&etcd).await?;
    for p in &mut proxies[old] {
        p.heal().await?;
    }
    // The old leader is back (as a standby, unless the lease moves again);
    // the cluster goes on either way.
    eventually_within(WAIT, "the healed controller is ready again", || async {
        (controllers[old].client.get_text("/readyz").await.ok()? == "ok").then_some(())
    })
    .await?;
    scale(&client, 4).await?;
    eventually_within(WAIT, "4 pods run", || all_running(&client, 4)).await?;

    let writes = event_writers(&etcd).await?;
    assert!(
        writes.iter().any(|(rev, _)| *rev <= cut_revision),
        "the controllers' Events before the cut name their controller: {writes:?}"
    );
    let partitioned: Vec<_> = writes
        .iter()
        .filter(|(rev, _)| *rev > cut_revision && *rev <= heal_revision)
        .collect();
    let first_new = partitioned
        .iter()
        .position(|(_, w)| *w == new_name)
        .expect("the new leader wrote events while the old one was cut off");
    let late: Vec<_> = partitioned[first_new..]
        .iter()
        .filter(|(_, w)| *w != new_name)
        .collect();
    assert!(
        late.is_empty(),
        "writes of another controller after the new leader's first: {late:?} (all: {partitioned:?})"
    );
    for agent in agents {
        agent.stop().await?;
    }
    drop(controllers);
    Ok(())
}

/// etcd's current revision.
async fn etcd_revision(etcd: &EtcdCluster) -> anyhow::Result<i64> {
    let mut client = etcd.client().await?;
    let now = client
        .get(
            "/tugboat/",
            Some(etcd_client::GetOptions::new().with_count_only()),
        )
        .await?;
    now.header()
        .map(|h| h.revision())
        .ok_or_else(|| anyhow::anyhow!("etcd's answer has no header"))
}

/// From one controller to several: `tug controller migrate` copies every
/// object of a stopped controller's redb store, and its CA, into etcd; a
/// controller started on etcd with an empty data directory serves them all,
/// and the old admin credential still works (the CA came along).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_every_object_and_the_ca_from_redb_to_etcd() -> anyhow::Result<()> {
    use tugboat_api::resource::{CONFIGMAPS, NAMESPACES, SECRETS};
    let data = tempfile::tempdir()?;
    let tc = TestController::start_in(data.path()).await?;
    let c = &tc.client;
    c.create(&NAMESPACES, None, &json!({"metadata": {"name": "team"}}))
        .await?;
    let mut made = BTreeMap::new();
    for i in 0..40 {
        let cm = c
            .create(
                &CONFIGMAPS,
                Some("team"),
                &json!({"metadata": {"name": format!("cm-{i}"), "labels": {"i": i.to_string()}},
                        "data": {"value": "x".repeat(i * 10)}}),
            )
            .await?;
        made.insert(format!("cm-{i}"), cm["metadata"]["uid"].clone());
    }
    c.create(
        &SECRETS,
        Some("team"),
        &json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}}),
    )
    .await?;
    c.create(&DEPLOYMENTS, Some(NS), &deployment("web", NS, 2))
        .await?;
    let admin = tc.credentials.clone().expect("admin credentials");
    tc.stop().await?;

    let etcd = EtcdCluster::start(1).await?;
    let from = format!("redb:{}", data.path().display());
    let to = etcd.url();
    let args = ["controller", "migrate", "--from", &from, "--to", &to];
    let migrate = || tugboat_tests::tug("https://127.0.0.1:1", data.path(), &args);
    let out = migrate().await?;
    assert!(out.contains("configmaps\t40"), "{out}");
    assert!(out.contains("each checked"), "{out}");
    // A second migration into the same prefix is refused, naming what is there.
    let again = migrate().await;
    let err = again
        .expect_err("a second migration is refused")
        .to_string();
    assert!(err.contains("empty prefix"), "{err}");

    let on_etcd = TestController::start_process_with(&["--store", &etcd.url()]).await?;
    let client = Client::with_credentials(&on_etcd.url, &admin)?;
    let list = client
        .list(&CONFIGMAPS, Some("team"), &ListParams::default())
        .await?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let copied: BTreeMap<String, Value> = items
        .iter()
        .map(|cm| {
            (
                cm["metadata"]["name"].as_str().unwrap_or("").to_string(),
                cm["metadata"]["uid"].clone(),
            )
        })
        .collect();
    assert_eq!(copied, made, "every ConfigMap, with its uid");
    client.get(&SECRETS, Some("team"), "s").await?;
    client.get(&DEPLOYMENTS, Some(NS), "web").await?;
    Ok(())
}
