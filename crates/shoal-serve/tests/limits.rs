//! The limits of `shoal_serve::serve` through real sockets on 127.0.0.1 (and 127.0.0.2 for a
//! second client address).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use shoal_serve::{serve, ServeLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Long enough never to fire in a test that does not mean it to.
const LONG: Duration = Duration::from_secs(600);
/// How long a test waits for something that should happen far sooner.
const PATIENCE: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(limits: ServeLimits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route(
        "/who",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { format!("{}|", peer.ip()) }),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = tokio::spawn(serve(listener, router, limits, shutdown));
    Server {
        addr,
        stop: Some(stop),
        task,
    }
}

async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends one request for `/who` and reads its answer: the client address the handler saw.
async fn ask(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /who HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0; 1024];
    while !answer.ends_with(b"|") {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "closed before answering: {}", answer.escape_ascii());
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(answer).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.rsplit("\r\n\r\n").next().unwrap();
    body.trim_end_matches('|').to_string()
}

/// Reads until the server closes the connection; panics if it does not within [`PATIENCE`].
async fn closed(stream: &mut TcpStream) {
    let mut buf = [0; 1024];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept the connection open"),
        }
    }
}

async fn stalled(from: &str, to: SocketAddr) -> TcpStream {
    let mut stream = connect_from(from, to).await;
    stream
        .write_all(b"GET /who HTTP/1.1\r\nHost: te")
        .await
        .unwrap();
    stream
}

async fn within<T>(what: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, what).await.expect("in time")
}

#[tokio::test]
async fn half_a_header_is_closed_within_the_header_timeout() {
    let server = start(ServeLimits {
        header_timeout: Duration::from_millis(300),
        idle_timeout: LONG,
        ..ServeLimits::default()
    })
    .await;
    let mut slow = stalled("127.0.0.1", server.addr).await;
    within(closed(&mut slow)).await;
    // The server still answers others.
    let mut fine = connect_from("127.0.0.1", server.addr).await;
    assert_eq!(ask(&mut fine).await, "127.0.0.1");
}

#[tokio::test]
async fn connections_beyond_the_per_address_cap_are_closed() {
    let server = start(ServeLimits {
        header_timeout: LONG,
        idle_timeout: LONG,
        max_per_address: 3,
        ..ServeLimits::default()
    })
    .await;
    let _stalled = [
        stalled("127.0.0.1", server.addr).await,
        stalled("127.0.0.1", server.addr).await,
    ];
    // The third connection is within the cap and is served.
    let mut third = connect_from("127.0.0.1", server.addr).await;
    assert_eq!(ask(&mut third).await, "127.0.0.1");
    // A fourth from the same address is closed unanswered.
    let mut fourth = connect_from("127.0.0.1", server.addr).await;
    fourth
        .write_all(b"GET /who HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = within(fourth.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "{}", rest.escape_ascii());
    // Another address has a budget of its own.
    let mut other = connect_from("127.0.0.2", server.addr).await;
    assert_eq!(ask(&mut other).await, "127.0.0.2");
    // Once one of the first three closes, the address may connect again.
    drop(third);
    let mut again = within(async {
        loop {
            let mut stream = connect_from("127.0.0.1", server.addr).await;
            stream
                .write_all(b"GET /who HTTP/1.1\r\nHost: test\r\n\r\n")
                .await
                .unwrap();
            let mut first = [0; 1];
            if matches!(stream.peek(&mut first).await, Ok(1)) {
                break stream;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut head = [0; 12];
    again.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
}

#[tokio::test]
async fn connections_beyond_the_total_cap_are_closed() {
    let server = start(ServeLimits {
        header_timeout: LONG,
        idle_timeout: LONG,
        max_connections: 2,
        ..ServeLimits::default()
    })
    .await;
    let _held = [
        stalled("127.0.0.1", server.addr).await,
        stalled("127.0.0.2", server.addr).await,
    ];
    let mut third = connect_from("127.0.0.3", server.addr).await;
    within(closed(&mut third)).await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let server = start(ServeLimits {
        header_timeout: LONG,
        idle_timeout: Duration::from_millis(300),
        ..ServeLimits::default()
    })
    .await;
    let mut kept = connect_from("127.0.0.1", server.addr).await;
    assert_eq!(ask(&mut kept).await, "127.0.0.1");
    within(closed(&mut kept)).await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_returns() {
    let mut server = start(ServeLimits {
        header_timeout: LONG,
        idle_timeout: LONG,
        ..ServeLimits::default()
    })
    .await;
    let mut kept = connect_from("127.0.0.1", server.addr).await;
    assert_eq!(ask(&mut kept).await, "127.0.0.1");
    server.stop.take().unwrap().send(()).unwrap();
    within(closed(&mut kept)).await;
    within(server.task).await.unwrap().unwrap();
}

#[test]
fn caps_fit_under_the_descriptor_limit() {
    let limits = ServeLimits::default().within_descriptors(1024);
    assert_eq!(limits.max_connections, 768);
    assert_eq!(limits.max_per_address, 256);
    let tiny = ServeLimits::default().within_descriptors(100);
    assert_eq!((tiny.max_connections, tiny.max_per_address), (75, 75));
    let roomy = ServeLimits::default().within_descriptors(1 << 20);
    assert_eq!(roomy, ServeLimits::default());
}

#[test]
fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
    let soft = shoal_serve::raise_nofile_limit().unwrap();
    let text = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let limits: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(limits, [soft, soft], "{line}");
}

/// Answers `101` and echoes whatever comes through the upgraded connection (a proxy's
/// tunnel, say) until the client closes it.
async fn upgrade(request: axum::extract::Request) -> axum::response::Response {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(request).await else {
            return;
        };
        let mut io = hyper_util::rt::TokioIo::new(upgraded);
        let mut buf = [0; 64];
        while let Ok(n @ 1..) = io.read(&mut buf).await {
            if io.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    axum::response::Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(axum::body::Body::empty())
        .unwrap()
}

#[tokio::test]
async fn an_upgraded_connection_counts_against_the_cap_until_it_closes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new()
        .route("/up", get(upgrade))
        .route("/who", get(|| async { "127.0.0.4|" }));
    let limits = ServeLimits {
        header_timeout: LONG,
        idle_timeout: LONG,
        max_connections: 1,
        ..ServeLimits::default()
    };
    tokio::spawn(serve(listener, router, limits, std::future::pending()));
    let mut tunnel = connect_from("127.0.0.1", addr).await;
    tunnel
        .write_all(b"GET /up HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") {
        within(tunnel.read_exact(&mut byte)).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", head.escape_ascii());
    tunnel.write_all(b"ping").await.unwrap();
    let mut echo = [0; 4];
    within(tunnel.read_exact(&mut echo)).await.unwrap();
    assert_eq!(&echo, b"ping");
    // The tunnel holds the only place.
    let mut second = connect_from("127.0.0.2", addr).await;
    within(closed(&mut second)).await;
    // Closed, it gives the place back.
    drop(tunnel);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut next = connect_from("127.0.0.3", addr).await;
        let sent = next
            .write_all(b"GET /who HTTP/1.1\r\nHost: t\r\n\r\n")
            .await;
        let mut buf = [0; 12];
        if sent.is_ok() && next.read_exact(&mut buf).await.is_ok() {
            assert_eq!(&buf, b"HTTP/1.1 200");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was never given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
