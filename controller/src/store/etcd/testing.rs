//! Real etcd servers for tests: one member, or several forming one cluster, on
//! loopback ports in a temporary directory, stopped and removed when dropped
//! (even when the test fails).
//!
//! The `etcd` binary is Debian's `etcd-server` (3.4), found on `PATH` or at
//! `$TUGBOAT_ETCD`. A test that needs it fails, naming what to install, rather
//! than passing without it.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::testing::watchdog;

/// How long a member may take to serve after it is started.
const READY: Duration = Duration::from_secs(30);

/// One etcd member this test started.
pub struct Member {
    pub name: String,
    /// `127.0.0.1:PORT`, for clients.
    pub client: String,
    /// `http://127.0.0.1:PORT`, for the other members.
    pub peer: String,
    pub data_dir: PathBuf,
    child: Option<Child>,
    watchdog: Option<Child>,
    cluster: String,
}

/// An etcd cluster this test started; dropped, it kills its members and
/// removes their data.
pub struct EtcdCluster {
    pub members: Vec<Member>,
    dir: PathBuf,
}

/// `count` distinct free loopback ports. Every listener is held until all are
/// chosen: a port closed and asked for again can come back, and two members
/// given one port left the second unable to start (a "3-member" cluster of 2,
/// which one killed member took below quorum).
fn free_ports(count: usize) -> std::io::Result<Vec<u16>> {
    let held = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// Options for asking a member whether it serves: quick to give up.
fn quick() -> etcd_client::ConnectOptions {
    etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(2))
}

/// How many times [`EtcdCluster::start`] starts afresh, on new ports, when a
/// member could not listen on its port (another process took it between its
/// choice and etcd's start).
const START_ATTEMPTS: usize = 3;

fn binary() -> String {
    std::env::var("TUGBOAT_ETCD").unwrap_or_else(|_| "etcd".to_string())
}

impl Member {
    fn spawn(&mut self, state: &str) -> std::io::Result<()> {
        let log = std::fs::File::create(self.data_dir.with_extension("log"))?;
        let child = Command::new(binary())
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(format!("http://{}", self.client))
            .arg("--advertise-client-urls")
            .arg(format!("http://{}", self.client))
            .arg("--listen-peer-urls")
            .arg(&self.peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&self.peer)
            .arg("--initial-cluster")
            .arg(&self.cluster)
            .arg("--initial-cluster-state")
            .arg(state)
            .arg("--initial-cluster-token")
            .arg("tugboat-test")
            .arg("--logger")
            .arg("zap")
            .arg("--log-level")
            .arg("warn")
            // Elections in a few hundred milliseconds, for fail-over tests.
            .arg("--heartbeat-interval")
            .arg("50")
            .arg("--election-timeout")
            .arg("500")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot start {} ({e}): install Debian's etcd-server, or set TUGBOAT_ETCD to an etcd binary",
                        binary()
                    ),
                )
            })?;
        self.watchdog = watchdog(child.id()).ok();
        self.child = Some(child);
        Ok(())
    }

    /// Kills the member (SIGKILL), keeping its data.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }

    /// Starts a killed member again on its data.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.spawn("existing")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// How the member's process ended, when it was started and ended by itself.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }

    /// The member's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl EtcdCluster {
    /// Starts `size` members and waits until every one of them serves.
    pub async fn start(size: usize) -> std::io::Result<EtcdCluster> {
        let mut attempt = 1;
        loop {
            let mut cluster = Self::spawn(size.max(1))?;
            match cluster.wait_ready().await {
                Ok(()) => return Ok(cluster),
                Err(e)
                    if attempt < START_ATTEMPTS
                        && e.to_string().contains("address already in use") =>
                {
                    eprintln!(
                        "an etcd member's port was taken; starting the cluster again on other ports"
                    );
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn spawn(size: usize) -> std::io::Result<EtcdCluster> {
        let dir = std::env::temp_dir().join(format!(
            "tugboat-etcd-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        let ports = free_ports(2 * size)?;
        let members = ports
            .chunks(2)
            .enumerate()
            .map(|(i, pair)| Member {
                name: format!("m{i}"),
                client: format!("127.0.0.1:{}", pair[0]),
                peer: format!("http://127.0.0.1:{}", pair[1]),
                data_dir: dir.join(format!("m{i}")),
                child: None,
                watchdog: None,
                cluster: String::new(),
            })
            .collect::<Vec<_>>();
        let cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        // Dropped on an error below, it kills what it started.
        let mut out = EtcdCluster { members, dir };
        for member in &mut out.members {
            member.cluster = cluster.clone();
            member.spawn("new")?;
        }
        Ok(out)
    }

    /// `etcd://HOST:PORT,…` for `tug controller --store`.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.clone()).collect()
    }

    /// A client of every member, for a test to read or watch etcd itself.
    pub async fn client(&self) -> Result<etcd_client::Client, etcd_client::Error> {
        let endpoints: Vec<String> = self
            .endpoints()
            .iter()
            .map(|e| format!("http://{e}"))
            .collect();
        etcd_client::Client::connect(endpoints, None).await
    }

    /// Which running member leads the cluster now, as the members say.
    pub async fn leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leader = None;
        for (i, member) in self.members.iter().enumerate() {
            if !member.is_running() {
                continue;
            }
            let endpoint = format!("http://{}", member.client);
            let Ok(mut one) = etcd_client::Client::connect([endpoint], Some(quick())).await else {
                continue;
            };
            let Ok(status) = one.status().await else {
                continue;
            };
            if let Some(header) = status.header() {
                ids.push((i, header.member_id()));
            }
            leader = leader.or(Some(status.leader()).filter(|id| *id != 0));
        }
        let leader = leader?;
        ids.iter().find(|(_, id)| *id == leader).map(|(i, _)| *i)
    }

    /// Waits until every running member answers on its own client port and a
    /// write through them succeeds (the cluster has a leader and a quorum).
    /// A member whose process ended fails the wait at once, with its log.
    pub async fn wait_ready(&mut self) -> std::io::Result<()> {
        let deadline = Instant::now() + READY;
        let endpoints: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.is_running())
            .map(|m| format!("http://{}", m.client))
            .collect();
        loop {
            for member in &mut self.members {
                if let Some(status) = member.exited() {
                    return Err(std::io::Error::other(format!(
                        "etcd member {} ({}) ended by itself ({status}); its log:\n{}",
                        member.name,
                        member.client,
                        member.log()
                    )));
                }
            }
            let ready = async {
                for endpoint in &endpoints {
                    let mut one = etcd_client::Client::connect([endpoint], Some(quick()))
                        .await
                        .ok()?;
                    one.status().await.ok()?;
                }
                let mut client = etcd_client::Client::connect(&endpoints, Some(quick()))
                    .await
                    .ok()?;
                client.put("/tugboat-test/ready", "", None).await.ok()
            }
            .await;
            if ready.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self.members.iter().map(Member::log).collect();
                return Err(std::io::Error::other(format!(
                    "etcd did not serve within {} s; its logs:\n{}",
                    READY.as_secs(),
                    logs.join("\n")
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
