//! Network checks run from inside the workload (what a test asks a pod to do, so
//! that it runs with the pod's own resolver and routes): `GET /resolve?name=N`
//! looks a name up through the system resolver (resolv.conf, search path and
//! all) and answers the addresses, space-separated; `GET /fetch?addr=HOST:PORT`
//! sends `GET /` there and answers with the body it got.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::routes::{Reply, query_param};

/// How long a lookup or a fetch may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes a fetch reads.
const MAX_FETCH: u64 = 64 * 1024;

/// The answer to `path?query` when it is one of the network checks.
pub async fn route(method: &str, path: &str, query: Option<&str>) -> Option<Reply> {
    if method != "GET" {
        return None;
    }
    match path {
        "/resolve" => Some(match query_param(query, "name").filter(|n| !n.is_empty()) {
            None => Reply::text(400, "query parameter name: expected a host name"),
            Some(name) => resolve(name).await,
        }),
        "/fetch" => Some(match query_param(query, "addr").filter(|a| !a.is_empty()) {
            None => Reply::text(400, "query parameter addr: expected HOST:PORT"),
            Some(addr) => fetch(addr).await,
        }),
        _ => None,
    }
}

async fn resolve(name: &str) -> Reply {
    match tokio::time::timeout(TIMEOUT, tokio::net::lookup_host((name, 0))).await {
        Ok(Ok(addrs)) => {
            let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            ips.sort();
            ips.dedup();
            Reply::text(200, ips.join(" "))
        }
        Ok(Err(e)) => Reply::text(502, format!("cannot resolve {name}: {e}")),
        Err(_) => Reply::text(504, format!("resolving {name} timed out")),
    }
}

async fn fetch(addr: &str) -> Reply {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await?;
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        s.write_all(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        s.take(MAX_FETCH).read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    match tokio::time::timeout(TIMEOUT, attempt).await {
        Ok(Ok(raw)) => {
            let text = String::from_utf8_lossy(&raw);
            match text.split_once("\r\n\r\n") {
                Some((_, body)) => Reply::text(200, body),
                None => Reply::text(502, format!("{addr} answered no HTTP response")),
            }
        }
        Ok(Err(e)) => Reply::text(502, format!("cannot fetch {addr}: {e}")),
        Err(_) => Reply::text(504, format!("fetching {addr} timed out")),
    }
}
