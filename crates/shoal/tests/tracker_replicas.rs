//! `shoal tracker --store redis://…`: two real tracker processes on one real Redis answer for
//! each other, and one of them killed loses nothing.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_testkit::Redis;

const SECRET: &str = "fleet-secret-aaaaaaaaaaaa";

/// A `shoal tracker` process, killed on drop.
struct Tracker {
    child: Child,
    port: u16,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_tracker(tokens: &std::path::Path, store: &str) -> Tracker {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "tracker",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--store",
            store,
        ])
        .arg("--tokens")
        .arg(tokens)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shoal tracker");
    let mut tracker = Tracker { child, port };
    let deadline = Instant::now() + common::DEADLINE;
    // Bounded by the deadline.
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        if let Some(status) = tracker.child.try_wait().unwrap() {
            panic!("shoal tracker exited: {status}");
        }
        assert!(Instant::now() < deadline, "shoal tracker did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    tracker
}

/// One HTTP/1.1 request; answers the status code and the body.
fn call(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {SECRET}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn two_tracker_processes_share_one_redis() {
    let redis = Redis::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!("[[token]]\nname = \"fleet\"\nsecret = \"{SECRET}\"\nrole = \"agent\"\n"),
    )
    .unwrap();
    let one = start_tracker(&tokens, &redis.url(0));
    let two = start_tracker(&tokens, &redis.url(0));

    let content = "ab".repeat(32);
    let register = format!(
        r#"{{"addr": "127.0.0.1:7001", "holdings": [{{"content": "{content}", "name": "a.iso",
            "layout": {{"size": 40, "piece_size": 4}}}}]}}"#
    );
    let (status, body) = call(one.port, "PUT", "/v1/agents/seeder", &register);
    assert_eq!(status, 200, "{body}");
    let peers = format!("/v1/content/{content}/peers");
    let (status, body) = call(two.port, "GET", &peers, "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""id":"seeder""#), "{body}");

    drop(one);
    let (status, body) = call(
        two.port,
        "POST",
        "/v1/agents/seeder/heartbeat",
        r#"{"load": 1}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(two.port, "GET", &peers, "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""load":1"#), "{body}");
}

#[test]
fn store_must_be_a_redis_url() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::finish(
        Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["tracker", "--tokens", "t.toml", "--store", "http://x"])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("expected a Redis URL"),
        "{}",
        run.stderr
    );
}
