//! Web pages of other origins and the RPC (`--rpc-allow-origin`), on a real listener through
//! raw HTTP/1.1 on 127.0.0.1, as a browser sends it: by default a page of another origin gets
//! no CORS answer (its browser then hides the RPC's answers from it) and no WebSocket; an
//! allowed origin (AriaNg's, say) gets both, named back, and every other origin still nothing.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{engine_queue, SECRET};
use shoal_agent::rpc::{self, AllowedOrigins, Rpc};
use shoal_engine::CancellationToken;
use shoal_serve::{serve, ServeLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ARIANG: &str = "http://ariang.example:6880";
const EVIL: &str = "http://evil.example";

async fn start(
    dir: &std::path::Path,
    origins: AllowedOrigins,
    stop: &CancellationToken,
) -> SocketAddr {
    let queue = engine_queue(&dir.join("data"), &dir.join("out"), 1, stop).await;
    let app = rpc::app(Rpc::new(queue, SECRET.into(), stop.clone()).allowing(origins));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = stop.clone();
    tokio::spawn(serve(listener, app, ServeLimits::default(), async move {
        stop.cancelled().await
    }));
    addr
}

/// Sends `head` (and `body`) on a fresh connection; the answer's head, lower-cased, and body.
async fn exchange(to: SocketAddr, head: &str, body: &str) -> (String, String) {
    let mut stream = TcpStream::connect(to).await.unwrap();
    let request = format!(
        "{head}Host: {to}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    // The connection may stay open (a `101`, or keep-alive): an answer ends with its head and
    // `Content-Length` bytes of body.
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || complete(&answer) {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_ascii_lowercase(), body.to_string())
}

fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    head.starts_with("HTTP/1.1 101") || body.len() >= length
}

async fn preflight(to: SocketAddr, origin: &str) -> String {
    let head = format!(
        "OPTIONS {} HTTP/1.1\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: content-type\r\nConnection: close\r\n",
        rpc::RPC_PATH
    );
    exchange(to, &head, "").await.0
}

async fn post(to: SocketAddr, origin: &str) -> (String, String) {
    let head = format!(
        "POST {} HTTP/1.1\r\nOrigin: {origin}\r\nContent-Type: application/json\r\n\
         Connection: close\r\n",
        rpc::RPC_PATH
    );
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"aria2.getVersion","params":["token:{SECRET}"]}}"#
    );
    exchange(to, &head, &body).await
}

async fn websocket(to: SocketAddr, origin: &str) -> String {
    let head = format!(
        "GET {} HTTP/1.1\r\nOrigin: {origin}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        rpc::RPC_PATH
    );
    exchange(to, &head, "").await.0
}

#[tokio::test]
async fn pages_of_other_origins_are_served_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let own = start(&dir.path().join("own"), AllowedOrigins::OwnOnly, &stop).await;
    let allowed = AllowedOrigins::parse(&[ARIANG.into()]).unwrap();
    let open = start(&dir.path().join("open"), allowed, &stop).await;

    // By default: no preflight, no CORS header on an answer, no WebSocket.
    assert!(preflight(own, ARIANG).await.starts_with("http/1.1 403"));
    let (head, body) = post(own, ARIANG).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    assert!(body.contains("\"version\""), "{body}");
    assert!(websocket(own, ARIANG).await.starts_with("http/1.1 403"));
    // The listener's own pages always may.
    assert!(websocket(own, &format!("http://{own}"))
        .await
        .starts_with("http/1.1 101"));

    // Allowed: the preflight says yes, the answer names the origin back, the socket opens.
    let head = preflight(open, ARIANG).await;
    assert!(head.starts_with("http/1.1 204"), "{head}");
    assert!(
        head.contains(&format!("access-control-allow-origin: {ARIANG}")),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-headers: content-type"),
        "{head}"
    );
    let (head, body) = post(open, ARIANG).await;
    assert!(
        head.contains(&format!("access-control-allow-origin: {ARIANG}")),
        "{head}"
    );
    assert!(body.contains("\"version\""), "{body}");
    assert!(websocket(open, ARIANG).await.starts_with("http/1.1 101"));
    // ... and only that origin.
    assert!(preflight(open, EVIL).await.starts_with("http/1.1 403"));
    assert!(!post(open, EVIL)
        .await
        .0
        .contains("access-control-allow-origin"));
    assert!(websocket(open, EVIL).await.starts_with("http/1.1 403"));
    stop.cancel();
}
