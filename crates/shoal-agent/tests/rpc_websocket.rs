//! The RPC's WebSocket on a real listener (`shoal_serve::serve`), through raw sockets on
//! 127.0.0.1 (and 127.0.0.2, .3 for other client addresses): an open socket holds its
//! connection's place under the caps; a client that answers no ping is closed at the idle
//! timeout and gives the place back; one that answers keeps its socket, and its calls are
//! answered, however long it stays quiet.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{engine_queue, SECRET};
use serde_json::{json, Value};
use shoal_agent::rpc::{self, Rpc};
use shoal_engine::CancellationToken;
use shoal_serve::{serve, ServeLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The listener's idle timeout: a quiet socket is pinged after half of it.
const IDLE: Duration = Duration::from_secs(2);
/// How long a test waits for something that should happen far sooner.
const PATIENCE: Duration = Duration::from_secs(10);

const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

/// An RPC over a queue in `dir`, served with `limits`; its address.
async fn start(dir: &std::path::Path, limits: ServeLimits, stop: &CancellationToken) -> SocketAddr {
    let queue = engine_queue(&dir.join("data"), &dir.join("out"), 1, stop).await;
    let app = rpc::app(Rpc::new(queue, SECRET.into(), stop.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = stop.clone();
    tokio::spawn(serve(listener, app, limits, async move {
        stop.cancelled().await
    }));
    addr
}

async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

async fn within<F: std::future::Future>(what: F) -> F::Output {
    tokio::time::timeout(PATIENCE, what)
        .await
        .expect("it should have happened long before")
}

/// Opens the RPC's WebSocket from `from`; the stream after the server's `101`, or `None` when
/// the server closed the connection instead (over its caps).
async fn open_socket(from: &str, to: SocketAddr) -> Option<TcpStream> {
    let mut stream = connect_from(from, to).await;
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: {to}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        rpc::RPC_PATH
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    let mut head = Vec::new();
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match within(stream.read(&mut byte)).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", head.escape_ascii());
    Some(stream)
}

/// Reads one frame the server sent (unmasked, unfragmented): its opcode and payload; `None`
/// at the end of the stream.
async fn read_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut start = [0; 2];
    stream.read_exact(&mut start).await.ok()?;
    let len = match start[1] & 0x7f {
        126 => {
            let mut len = [0; 2];
            stream.read_exact(&mut len).await.ok()?;
            usize::from(u16::from_be_bytes(len))
        }
        127 => {
            let mut len = [0; 8];
            stream.read_exact(&mut len).await.ok()?;
            usize::try_from(u64::from_be_bytes(len)).unwrap()
        }
        n => usize::from(n),
    };
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some((start[0] & 0x0f, payload))
}

/// Sends one frame as a client must: masked (with a zero key, which leaves the payload as is).
async fn send_frame(stream: &mut TcpStream, opcode: u8, payload: &[u8]) {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend(u16::try_from(n).unwrap().to_be_bytes());
        }
    }
    frame.extend([0; 4]);
    frame.extend(payload);
    stream.write_all(&frame).await.unwrap();
}

/// Reads frames, answering pings, until a text frame comes: its JSON.
async fn next_text(stream: &mut TcpStream) -> Value {
    for _ in 0..100 {
        match within(read_frame(stream)).await {
            Some((TEXT, payload)) => return serde_json::from_slice(&payload).unwrap(),
            Some((PING, payload)) => send_frame(stream, PONG, &payload).await,
            other => panic!("the socket ended or sent an unexpected frame: {other:?}"),
        }
    }
    panic!("no text frame among a hundred")
}

#[tokio::test]
async fn an_rpc_websocket_counts_against_the_caps_and_closes_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let limits = ServeLimits {
        header_timeout: PATIENCE,
        idle_timeout: IDLE,
        max_connections: 1,
        ..ServeLimits::default()
    };
    let addr = start(dir.path(), limits, &stop).await;

    // A client that answers no ping holds the only place while it is open…
    let mut silent = open_socket("127.0.0.1", addr)
        .await
        .expect("the first socket");
    assert!(
        open_socket("127.0.0.2", addr).await.is_none(),
        "a second connection was let in beyond the cap"
    );
    // …and is pinged, then closed as idle (1001, "idle"), after the listener's idle timeout.
    let mut frames = Vec::new();
    while let Some((opcode, payload)) = within(read_frame(&mut silent)).await {
        frames.push((opcode, payload));
    }
    assert_eq!(frames.first().map(|f| f.0), Some(PING), "{frames:?}");
    let (opcode, payload) = frames.last().unwrap();
    assert_eq!(*opcode, CLOSE, "{frames:?}");
    assert_eq!(payload[..2], 1001u16.to_be_bytes(), "{frames:?}");
    assert_eq!(&payload[2..], b"idle");

    // Its place is given back (bounded retries: the server drops the socket just after).
    let mut answering = None;
    for _ in 0..100 {
        if let Some(stream) = open_socket("127.0.0.3", addr).await {
            answering = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut answering = answering.expect("the idle socket's place was never given back");

    // A client that answers pings keeps its socket through three idle timeouts of sending
    // nothing else, and its call is answered.
    let quiet_until = tokio::time::Instant::now() + 3 * IDLE;
    while tokio::time::Instant::now() < quiet_until {
        let frame = tokio::time::timeout_at(quiet_until, read_frame(&mut answering)).await;
        match frame {
            Err(_) => break,
            Ok(Some((PING, payload))) => send_frame(&mut answering, PONG, &payload).await,
            Ok(other) => panic!("a socket answering pings was closed: {other:?}"),
        }
    }
    let call = json!({
        "jsonrpc": "2.0", "id": "v", "method": "aria2.getVersion",
        "params": [format!("token:{SECRET}")]
    });
    send_frame(&mut answering, TEXT, call.to_string().as_bytes()).await;
    let answer = next_text(&mut answering).await;
    assert_eq!(answer["id"], "v", "{answer}");
    assert!(answer["result"]["version"].is_string(), "{answer}");
    stop.cancel();
}
