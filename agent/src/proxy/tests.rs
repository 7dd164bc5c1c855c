//! The proxy on real loopback sockets: retry on a refused endpoint, the tunnel to
//! another node's endpoint, and UDP through both.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::table::{Endpoint, Frontend, Protocol, Route};
use super::{Shared, Slot, tcp, tunnel, udp};

const WAIT: Duration = Duration::from_secs(10);

/// A TCP server answering every connection with `name` and closing.
async fn named_server(name: &'static str, stop: CancellationToken) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                c = l.accept() => if let Ok((mut c, _)) = c {
                    let _ = c.write_all(name.as_bytes()).await;
                },
            }
        }
    });
    addr
}

/// A port nothing listens on (bound, then closed).
async fn refused_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn endpoint(addr: SocketAddr, route: Route) -> Endpoint {
    Endpoint {
        addr,
        node: None,
        route,
        ready: true,
        serving: true,
        terminating: false,
    }
}

fn frontend(protocol: Protocol, endpoints: Vec<Endpoint>) -> Arc<Frontend> {
    Arc::new(Frontend {
        key: "ns/web:80".into(),
        protocol,
        node_port: None,
        cluster: None,
        endpoints,
        affinity: None,
        external_local: false,
        internal_local: false,
        activator: None,
    })
}

async fn read_all(addr: SocketAddr) -> String {
    let mut c = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    let mut s = String::new();
    tokio::time::timeout(WAIT, c.read_to_string(&mut s))
        .await
        .unwrap()
        .unwrap();
    s
}

#[tokio::test]
async fn a_refused_endpoint_is_skipped_and_every_connection_is_served() {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let good = named_server("good", stop.clone()).await;
    let dead = refused_port().await;
    let shared = Arc::new(Shared::default());
    let slot = Arc::new(Slot::new(frontend(
        Protocol::Tcp,
        vec![endpoint(dead, Route::Local), endpoint(good, Route::Local)],
    )));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tracker.spawn(tcp::serve(
        listener,
        slot,
        shared.clone(),
        true,
        tracker.clone(),
        stop.clone(),
    ));
    for _ in 0..10 {
        assert_eq!(read_all(addr).await, "good");
    }
    assert!(shared.failed_recently(dead), "the refusal is remembered");
    stop.cancel();
}

#[tokio::test]
async fn another_nodes_endpoint_is_reached_through_its_tunnel_and_only_an_endpoint() {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let remote = named_server("remote", stop.clone()).await;
    let other = named_server("not-an-endpoint", stop.clone()).await;
    // The other node's agent: its tunnel, knowing `remote` as its local endpoint.
    let via = their_tunnel(Shared::default(), (Protocol::Tcp, remote), &tracker, &stop).await;

    let err = match tunnel::connect(None, via, "them", Protocol::Tcp, other, WAIT).await {
        Ok(_) => panic!("the tunnel connected to a non-endpoint"),
        Err(e) => e,
    };
    assert!(
        err.to_string().contains("is not an endpoint"),
        "the tunnel is not an open proxy: {err}"
    );

    let ours = Arc::new(Shared::default());
    let slot = Arc::new(Slot::new(frontend(
        Protocol::Tcp,
        vec![endpoint(
            remote,
            Route::Via {
                addr: via,
                node: "them".into(),
            },
        )],
    )));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tracker.spawn(tcp::serve(
        listener,
        slot,
        ours,
        true,
        tracker.clone(),
        stop.clone(),
    ));
    assert_eq!(read_all(addr).await, "remote");
    stop.cancel();
}

/// A UDP server echoing every datagram prefixed with `name`.
async fn udp_echo(name: &'static str, stop: CancellationToken) -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = s.recv_from(&mut buf) => if let Ok((n, from)) = r {
                    let mut out = name.as_bytes().to_vec();
                    out.extend_from_slice(&buf[..n]);
                    let _ = s.send_to(&out, from).await;
                },
            }
        }
    });
    addr
}

async fn udp_round_trip(service: SocketAddr, msg: &str) -> String {
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.connect(service).await.unwrap();
    c.send(msg.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1500];
    let n = tokio::time::timeout(WAIT, c.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn udp_goes_to_a_local_endpoint_and_through_a_tunnel() {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let local = udp_echo("local:", stop.clone()).await;
    let remote = udp_echo("remote:", stop.clone()).await;
    let via = their_tunnel(Shared::default(), (Protocol::Udp, remote), &tracker, &stop).await;

    for (target, route, want) in [
        (local, Route::Local, "local:ping"),
        (
            remote,
            Route::Via {
                addr: via,
                node: "them".into(),
            },
            "remote:ping",
        ),
    ] {
        let slot = Arc::new(Slot::new(frontend(
            Protocol::Udp,
            vec![endpoint(target, route)],
        )));
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tracker.spawn(udp::serve(
            socket,
            slot,
            Arc::new(Shared::default()),
            true,
            tracker.clone(),
            stop.clone(),
        ));
        assert_eq!(udp_round_trip(addr, "ping").await, want);
        // A second datagram of the same client rides the same flow.
        assert_eq!(udp_round_trip(addr, "ping").await, want);
    }
    stop.cancel();
}

/// Another node's agent: its tunnel, with `endpoint` as its local endpoint.
async fn their_tunnel(
    shared: impl Into<Arc<Shared>>,
    endpoint: (Protocol, SocketAddr),
    tracker: &TaskTracker,
    stop: &CancellationToken,
) -> SocketAddr {
    let shared = shared.into();
    shared.local.write().unwrap().insert(endpoint);
    let tl = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let via = tl.local_addr().unwrap();
    tracker.spawn(tunnel::serve(tl, shared, tracker.clone(), stop.clone()));
    via
}

/// A node's credential from `ca`, as joining gives it.
fn node_tls(ca: &tugboat_tls::ca::Authority, node: &str) -> Arc<crate::tls::NodeTls> {
    let issued = ca
        .issue(&tugboat_tls::ca::Leaf {
            common_name: format!("system:node:{node}"),
            groups: vec!["system:nodes".into()],
            dns_names: vec![tugboat_tls::identity::node_dns_name(node)],
            server: true,
            client: true,
            ..Default::default()
        })
        .unwrap();
    Arc::new(crate::tls::NodeTls::new(ca.cert_pem(), &issued.cert_pem, &issued.key_pem).unwrap())
}

#[tokio::test]
async fn tunnels_between_nodes_are_tls_and_take_only_the_node_meant() {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let remote = named_server("remote", stop.clone()).await;
    let ca = tugboat_tls::ca::Authority::generate("ca").unwrap();
    let via = their_tunnel(
        Shared {
            tls: Some(node_tls(&ca, "b")),
            ..Shared::default()
        },
        (Protocol::Tcp, remote),
        &tracker,
        &stop,
    )
    .await;

    // Node a reaches node b's endpoint over TLS.
    let a = node_tls(&ca, "a");
    let stream = tunnel::connect(Some(&a), via, "b", Protocol::Tcp, remote, WAIT).await;
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => panic!("the tunnel to b failed: {e}"),
    };
    let mut got = String::new();
    tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut got),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got, "remote");

    // Expecting node c at b's address: b's certificate is refused.
    let err = tunnel::connect(Some(&a), via, "c", Protocol::Tcp, remote, WAIT)
        .await
        .err()
        .expect("b's certificate does not name c");
    assert!(err.to_string().contains("TLS"), "{err}");

    // A caller without a certificate, or with one from another CA, gets nothing.
    for caller in [
        None,
        Some(node_tls(
            &tugboat_tls::ca::Authority::generate("x").unwrap(),
            "a",
        )),
    ] {
        let result = match &caller {
            None => {
                tunnel::connect(
                    None,
                    via,
                    "b",
                    Protocol::Tcp,
                    remote,
                    Duration::from_secs(3),
                )
                .await
            }
            Some(t) => {
                tunnel::connect(
                    Some(t),
                    via,
                    "b",
                    Protocol::Tcp,
                    remote,
                    Duration::from_secs(3),
                )
                .await
            }
        };
        assert!(
            result.is_err(),
            "a caller without a valid node certificate was served"
        );
    }
    stop.cancel();
}

/// A TCP server on `ip` that sends `name` and keeps each connection open until
/// the client closes it.
async fn holding_server(ip: &str, name: &'static str, stop: CancellationToken) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                c = l.accept() => if let Ok((mut c, _)) = c {
                    tokio::spawn(async move {
                        let _ = c.write_all(name.as_bytes()).await;
                        let mut rest = Vec::new();
                        let _ = c.read_to_end(&mut rest).await;
                    });
                },
            }
        }
    });
    addr
}

/// A Service port of `shared`'s node on loopback, sending to `endpoints`.
async fn tcp_service(
    shared: &Arc<Shared>,
    endpoints: Vec<Endpoint>,
    tracker: &TaskTracker,
    stop: &CancellationToken,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tracker.spawn(tcp::serve(
        listener,
        Arc::new(Slot::new(frontend(Protocol::Tcp, endpoints))),
        shared.clone(),
        true,
        tracker.clone(),
        stop.clone(),
    ));
    addr
}

/// `(total, active)` of `ip` as `shared` counts it.
fn counts(shared: &Shared, ip: SocketAddr) -> (u64, u64) {
    shared
        .endpoint_connections()
        .iter()
        .find(|e| e.ip == ip.ip())
        .map_or((0, 0), |e| (e.connections_total, e.active))
}

async fn eventually_counts(shared: &Shared, ip: SocketAddr, want: (u64, u64)) {
    let reached = tokio::time::timeout(WAIT, async {
        while counts(shared, ip) != want {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "{ip}: want {want:?}, have {:?}",
        counts(shared, ip)
    );
}

#[tokio::test]
async fn each_client_connection_is_counted_once_on_the_node_that_accepted_it_even_through_a_tunnel()
{
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    // Distinct loopback addresses stand for pod IPs.
    let local = holding_server("127.0.0.2", "local", stop.clone()).await;
    let remote = holding_server("127.0.0.3", "remote", stop.clone()).await;
    let dead = refused_port().await;
    let theirs = Arc::new(Shared::default());
    let via = their_tunnel(theirs.clone(), (Protocol::Tcp, remote), &tracker, &stop).await;
    let ours = Arc::new(Shared::default());
    let to_remote = tcp_service(
        &ours,
        vec![endpoint(
            remote,
            Route::Via {
                addr: via,
                node: "them".into(),
            },
        )],
        &tracker,
        &stop,
    )
    .await;
    let to_local = tcp_service(
        &ours,
        vec![endpoint(dead, Route::Local), endpoint(local, Route::Local)],
        &tracker,
        &stop,
    )
    .await;

    let mut open = Vec::new();
    for (service, name) in [
        (to_remote, "remote"),
        (to_remote, "remote"),
        (to_local, "local"),
    ] {
        let mut c = TcpStream::connect(service).await.unwrap();
        let mut got = vec![0u8; name.len()];
        tokio::time::timeout(WAIT, c.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, name.as_bytes());
        open.push(c);
    }
    assert_eq!(counts(&ours, remote), (2, 2));
    assert_eq!(counts(&ours, local), (1, 1));
    assert_eq!(
        counts(&ours, dead),
        (0, 0),
        "an endpoint that refused opened nothing"
    );
    assert!(
        theirs.endpoint_connections().is_empty(),
        "the tunnel's node counts nothing: {:?}",
        theirs.endpoint_connections()
    );

    drop(open);
    eventually_counts(&ours, remote, (2, 0)).await;
    eventually_counts(&ours, local, (1, 0)).await;
    assert!(theirs.endpoint_connections().is_empty());
    stop.cancel();
}

#[tokio::test]
async fn a_udp_flow_counts_as_one_connection_on_the_node_that_received_it() {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let remote = udp_echo("remote:", stop.clone()).await;
    let theirs = Arc::new(Shared::default());
    let via = their_tunnel(theirs.clone(), (Protocol::Udp, remote), &tracker, &stop).await;
    let ours = Arc::new(Shared::default());
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let service = socket.local_addr().unwrap();
    tracker.spawn(udp::serve(
        socket,
        Arc::new(Slot::new(frontend(
            Protocol::Udp,
            vec![endpoint(
                remote,
                Route::Via {
                    addr: via,
                    node: "them".into(),
                },
            )],
        ))),
        ours.clone(),
        true,
        tracker.clone(),
        stop.clone(),
    ));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(service).await.unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        client.send(b"ping").await.unwrap();
        let n = tokio::time::timeout(WAIT, client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"remote:ping");
    }
    assert_eq!(counts(&ours, remote), (1, 1), "one client, one flow");
    assert!(theirs.endpoint_connections().is_empty());
    stop.cancel();
}

#[test]
fn counts_of_ips_that_are_no_endpoint_are_forgotten_once_nothing_is_open() {
    let shared = Shared::default();
    let (a, b): (std::net::IpAddr, std::net::IpAddr) =
        ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    drop(shared.opened(a));
    let open = shared.opened(b);
    shared.keep_counts_of(&Default::default());
    let left: Vec<_> = shared
        .endpoint_connections()
        .iter()
        .map(|e| (e.ip, e.connections_total, e.active))
        .collect();
    assert_eq!(left, [(b, 1, 1)], "b still has a connection open");
    drop(open);
    shared.keep_counts_of(&[b].into());
    assert_eq!(
        shared.endpoint_connections().len(),
        1,
        "b is still an endpoint"
    );
    shared.keep_counts_of(&Default::default());
    assert!(shared.endpoint_connections().is_empty());
}
