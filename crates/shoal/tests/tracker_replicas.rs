//! `shoal tracker --store redis://…`: two real tracker processes on one real Redis answer for
//! each other, and one of them killed loses nothing.

mod common;

use std::process::{Child, Command, Stdio};

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
    let port = common::free_port();
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
    common::wait_listening(&mut tracker.child, port, "shoal tracker");
    tracker
}

fn call(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    common::call(port, SECRET, method, path, body)
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
