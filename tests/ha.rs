//! Several controllers on one etcd cluster (`--store etcd://…`), as separate
//! `tug controller` processes on a real three-member etcd on loopback: every
//! controller serves the API, one leads, and when the leader is killed another
//! takes over and finishes what it was doing, with no pod created twice and no
//! running container restarted; losing one etcd member changes nothing; a
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

struct Cluster {
    etcd: EtcdCluster,
    controllers: Vec<TestController>,
    /// Every controller's URL, for clients that fail over.
    servers: String,
    agents: Vec<FakeAgent>,
}

impl Cluster {
    async fn start(controllers: usize, nodes: usize) -> anyhow::Result<Cluster> {
        let etcd = EtcdCluster::start(3).await?;
        let url = etcd.url();
        let mut started = Vec::new();
        // One at a time: the first puts the cluster CA in etcd, the others take it.
        for i in 0..controllers {
            let name = format!("c{i}");
            started.push(
                TestController::start_process_with(&[
                    "--store",
                    &url,
                    "--leader-elect-lease-duration",
                    LEASE,
                    "--leader-elect-renew-deadline",
                    RENEW,
                    "--leader-elect-retry-period",
                    RETRY,
                    "--leader-elect-identity",
                    &name,
                    // Node loss is not what these tests are about.
                    "--node-grace",
                    "30",
                ])
                .await?,
            );
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
/// pods that ran before run on untouched. Then one etcd member dies, and the
/// cluster goes on scaling.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leaders_death_during_a_scale_up_costs_no_pod_twice_and_no_restart()
-> anyhow::Result<()> {
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

    // One etcd member down: the others are a quorum.
    let member = cluster
        .etcd
        .members
        .iter()
        .position(|m| m.is_running())
        .unwrap_or(0);
    cluster.etcd.members[member].kill();
    scale(&client, 10).await?;
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
