//! The upstream timeout on answers passed through, in process: the proxy served as the agent
//! serves it, a client and origins that misbehave on loopback, each speaking raw HTTP/1.1 so
//! the tests see exactly what crossed each socket.

use std::net::SocketAddr;
use std::time::Duration;

use shoal_engine::CancellationToken;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::*;

/// A proxy in an agent of its own, its origins given up on after `timeout`.
struct Running {
    addr: SocketAddr,
    stop: CancellationToken,
    _data: TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn proxy(timeout: Duration) -> Running {
    let data = TempDir::new().unwrap();
    let fetcher = crate::testing::lone_fetcher("proxy-test", data.path());
    let stop = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = ProxyOptions {
        listen: Some(addr),
        upstream_timeout: timeout,
        ..ProxyOptions::default()
    };
    let proxy = Proxy::new(
        Ordered::new(fetcher, stop.clone()),
        &options,
        vec![addr],
        Duration::from_secs(30),
    );
    tokio::spawn(shoal_serve::serve(
        listener,
        app(proxy),
        shoal_serve::ServeLimits::default(),
        stop.clone().cancelled_owned(),
    ));
    Running {
        addr,
        stop,
        _data: data,
    }
}

/// An origin on loopback that takes one connection, reads the request's head (told through
/// the receiver) and then does `then` with the connection; its address.
async fn origin<F, Fut>(then: F) -> (SocketAddr, oneshot::Receiver<String>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, heard) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let head = read_head(&mut stream).await;
        let _ = seen.send(head);
        then(stream).await;
    });
    (addr, heard)
}

/// What a client gets through a proxy with a 1 s timeout from an origin that sends `start`
/// of its answer and then nothing.
async fn stalled_answer(start: &'static [u8]) -> Seen {
    let proxy = proxy(Duration::from_secs(1)).await;
    let (origin, _heard) = origin(move |mut stream| async move {
        stream.write_all(start).await.unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    ask(proxy.addr, &get(origin, "/stalls")).await
}

/// Reads up to the end of a request's head.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// What a client saw: the bytes before the connection ended, and whether it ended with an
/// error (a reset) rather than a clean close.
struct Seen {
    head: String,
    body: Vec<u8>,
    reset: bool,
}

/// Sends `request` to the proxy at `proxy` and reads until the connection ends.
async fn ask(proxy: SocketAddr, request: &[u8]) -> Seen {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_answer(&mut stream).await
}

async fn read_answer(stream: &mut TcpStream) -> Seen {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let reset = loop {
        match stream.read(&mut buf).await {
            Ok(0) => break false,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => break true,
        }
    };
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an answer's head");
    Seen {
        head: String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase(),
        body: bytes[end + 4..].to_vec(),
        reset,
    }
}

fn get(origin: SocketAddr, path: &str) -> Vec<u8> {
    format!("GET http://{origin}{path} HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

#[tokio::test]
async fn an_origin_that_never_answers_is_a_504_naming_the_url() {
    let proxy = proxy(Duration::from_secs(1)).await;
    let (origin, heard) = origin(|stream| async move {
        // Accepts, reads, and never writes, holding the connection open.
        std::future::pending::<()>().await;
        drop(stream);
    })
    .await;
    let seen = ask(proxy.addr, &get(origin, "/never")).await;
    assert!(
        seen.head.starts_with("http/1.1 504 gateway timeout"),
        "{}",
        seen.head
    );
    assert_eq!(
        String::from_utf8_lossy(&seen.body),
        format!("shoal agent proxy: http://{origin}/never did not answer within 1s\n")
    );
    assert!(!seen.reset);
    assert!(
        heard.await.unwrap().starts_with("GET /never HTTP/1.1\r\n"),
        "the origin got the request in origin form"
    );
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_short_of_its_content_length() {
    let seen = stalled_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789").await;
    assert!(seen.head.starts_with("http/1.1 200 ok"), "{}", seen.head);
    assert!(seen.head.contains("content-length: 1000"), "{}", seen.head);
    assert_eq!(
        seen.body, b"0123456789",
        "the bytes the origin sent, and no more"
    );
}

#[tokio::test]
async fn a_chunked_body_that_stalls_never_gets_its_last_chunk() {
    let seen =
        stalled_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n")
            .await;
    assert!(seen.head.starts_with("http/1.1 200 ok"), "{}", seen.head);
    assert!(
        seen.head.contains("transfer-encoding: chunked"),
        "{}",
        seen.head
    );
    // The one chunk the origin sent (its size in hex, in either case), and no last chunk.
    assert_eq!(seen.body.to_ascii_lowercase(), b"a\r\n0123456789\r\n");
}

#[tokio::test]
async fn a_slow_origin_within_the_timeout_between_reads_passes_through_whole() {
    // Each pause is well under the timeout; together they are well over it.
    let proxy = proxy(Duration::from_secs(2)).await;
    let pause = Duration::from_millis(400);
    let (origin, _heard) = origin(move |mut stream| async move {
        tokio::time::sleep(pause).await;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 80\r\n\r\n")
            .await
            .unwrap();
        for i in 0..8u8 {
            tokio::time::sleep(pause).await;
            stream.write_all(&[b'a' + i; 10]).await.unwrap();
        }
    })
    .await;
    let seen = ask(proxy.addr, &get(origin, "/slow")).await;
    assert!(seen.head.starts_with("http/1.1 200 ok"), "{}", seen.head);
    let expected: Vec<u8> = (0..8u8).flat_map(|i| [b'a' + i; 10]).collect();
    assert_eq!(seen.body, expected);
    assert!(!seen.reset);
}

#[tokio::test]
async fn the_head_is_waited_for_from_the_end_of_a_slow_upload() {
    let proxy = proxy(Duration::from_secs(1)).await;
    let (origin, heard) = origin(|mut stream| async move {
        let mut body = [0u8; 10];
        stream.read_exact(&mut body).await.unwrap();
        assert_eq!(&body, b"0123456789");
        stream
            .write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
            .await
            .unwrap();
    })
    .await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client
        .write_all(
            format!(
                "PUT http://{origin}/upload HTTP/1.1\r\nHost: {origin}\r\n\
                 Content-Length: 10\r\nConnection: close\r\n\r\n01234"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // The origin is waiting for the rest of the body, not silent: longer than the timeout.
    assert!(heard.await.unwrap().starts_with("PUT /upload HTTP/1.1\r\n"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.write_all(b"56789").await.unwrap();
    let seen = read_answer(&mut client).await;
    assert!(
        seen.head.starts_with("http/1.1 201 created"),
        "{}",
        seen.head
    );
    assert_eq!(seen.body, b"ok");
}
