//! The usage summary an agent serves the controller (`GET /stats/summary`, the
//! controller's client certificate only): what the node measured of itself, of its
//! pods' containers, and of the connections its Service proxy opened. The
//! controller serves metrics.k8s.io NodeMetrics and PodMetrics from it and runs
//! HorizontalPodAutoscalers on it.
//!
//! CPU is a rate (nanocores: billionths of a CPU) over `window`, ending at
//! `timestamp`, as metrics.k8s.io has it; memory is the working set at that
//! moment (usage less the inactive file pages, what the kubelet reports and the
//! OOM killer goes by). Connections are counters since the agent started, per
//! endpoint IP, so the controller takes their rate between two scrapes (a
//! counter that went down means the agent restarted or the IP was reused).
//!
//! A pod is listed once every running container of it has two samples (a rate
//! needs two; a pod with some of its containers missing would read as using
//! less than it does); a container that stopped is left out.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where an agent serves its [`Summary`].
pub const SUMMARY_PATH: &str = "/stats/summary";

/// The metric of new connections per second a Service's proxies opened to a
/// pod (an autoscaler's `Pods` metric), or to all of a Service's pods (an
/// `Object` metric on the Service): for HTTP, requests per second when each
/// request opens its own connection.
pub const CONNECTIONS_PER_SECOND: &str = "connections_per_second";
/// The metric of connections open now to a pod (or a Service's pods).
pub const ACTIVE_CONNECTIONS: &str = "active_connections";

/// On a Service: the HorizontalPodAutoscaler (by name, in the Service's
/// namespace) that scales the pods behind it from zero. A node proxy holds a
/// connection to such a Service while it has no endpoints, asks the controller
/// to activate it ([`ACTIVATE_PATH`]) and sends the connection on once an
/// endpoint is ready.
pub const ACTIVATOR_ANNOTATION: &str = "autoscaling.tugboat.io/activator";

/// Where a node proxy holding a connection to a Service scaled to zero asks
/// the controller to scale it up (`POST {"namespace", "service"}`).
pub const ACTIVATE_PATH: &str = "/v1-tugboat/activate";

/// Everything one scrape of an agent returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub node: NodeUsage,
    #[serde(default)]
    pub pods: Vec<PodUsage>,
    #[serde(default)]
    pub endpoints: Vec<EndpointConnections>,
}

/// The whole node: the host as the kernel counts it (everything on it, not only
/// pods), or, on a hollow node whose containers are simulated, the sum of its pods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeUsage {
    /// The Node's name.
    pub name: String,
    /// When the later of the two samples behind the rate was taken (RFC 3339).
    pub timestamp: jiff::Timestamp,
    /// The time between the two samples, in seconds.
    #[serde(with = "seconds")]
    pub window: Duration,
    pub cpu_nano_cores: u64,
    pub memory_working_set_bytes: u64,
}

/// One pod on the node, by its identity in the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodUsage {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The oldest of its containers' timestamps: every figure is at least this
    /// recent.
    pub timestamp: jiff::Timestamp,
    /// The longest of its containers' windows, in seconds.
    #[serde(with = "seconds")]
    pub window: Duration,
    pub containers: Vec<ContainerUsage>,
}

/// One running container of a pod (the latest attempt, after restarts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerUsage {
    /// The container's name in the pod spec.
    pub name: String,
    pub cpu_nano_cores: u64,
    pub memory_working_set_bytes: u64,
}

/// Connections (and UDP flows) this node's Service proxy opened to one endpoint
/// pod IP, counted once, on the node whose proxy accepted the client (a
/// connection relayed through another node's tunnel is that other node's
/// business only as far as carrying it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointConnections {
    pub ip: IpAddr,
    /// Opened since the agent started (a counter).
    pub connections_total: u64,
    /// Open now.
    pub active: u64,
}

/// A [`Duration`] as a number of seconds (fractions allowed), as metrics.k8s.io's
/// `window` reads in JSON once parsed.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs)
            .map_err(|e| D::Error::custom(format!("window {secs}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_reads_as_the_agent_writes_it() {
        let summary = Summary {
            node: NodeUsage {
                name: "n1".into(),
                timestamp: "2026-12-02T10:00:01.5Z".parse().unwrap(),
                window: Duration::from_millis(1500),
                cpu_nano_cores: 250_000_000,
                memory_working_set_bytes: 64 << 20,
            },
            pods: vec![PodUsage {
                namespace: "default".into(),
                name: "web-1".into(),
                uid: "u1".into(),
                timestamp: "2026-12-02T10:00:01Z".parse().unwrap(),
                window: Duration::from_secs(1),
                containers: vec![ContainerUsage {
                    name: "web".into(),
                    cpu_nano_cores: 100_000_000,
                    memory_working_set_bytes: 32 << 20,
                }],
            }],
            endpoints: vec![EndpointConnections {
                ip: "10.0.0.5".parse().unwrap(),
                connections_total: 12,
                active: 2,
            }],
        };
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["node"]["timestamp"], "2026-12-02T10:00:01.5Z");
        assert_eq!(json["node"]["window"], 1.5);
        assert_eq!(json["node"]["cpuNanoCores"], 250_000_000);
        assert_eq!(
            json["pods"][0]["containers"][0]["memoryWorkingSetBytes"],
            32 << 20
        );
        assert_eq!(json["endpoints"][0]["ip"], "10.0.0.5");
        assert_eq!(json["endpoints"][0]["connectionsTotal"], 12);
        let back: Summary = serde_json::from_value(json).unwrap();
        assert_eq!(back, summary);
    }

    #[test]
    fn a_negative_window_is_refused() {
        let json = serde_json::json!({"node": {"name": "n1", "timestamp": "2026-12-02T10:00:00Z",
            "window": -1.0, "cpuNanoCores": 0, "memoryWorkingSetBytes": 0}});
        let err = serde_json::from_value::<Summary>(json).unwrap_err();
        assert!(err.to_string().contains("window -1"), "{err}");
    }
}
