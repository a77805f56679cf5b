//! `shoal tracker --store redis://…`: two real tracker processes on one real Redis answer for
//! each other, and one of them killed loses nothing: agents given both move to the other.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_testkit::{random_bytes, sha256_hex, Origin, OriginConfig, Redis};

const SECRET: &str = "fleet-secret-aaaaaaaaaaaa";
const ADMIN: &str = "admin-secret-bbbbbbbbbbbb";

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

fn start_tracker(tokens: &Path, store: &str) -> Tracker {
    let port = common::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "tracker",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--store",
            store,
            "--lease",
            "5",
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

/// A `shoal agent` process given several trackers, killed on drop.
struct Agent {
    child: Child,
    data: PathBuf,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(dir: &Path, id: &str, trackers: &[u16]) -> Agent {
    let port = common::free_port();
    let data = dir.join(format!("{id}-data"));
    let log = dir.join(format!("{id}.log"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.args([
        "agent",
        "--id",
        id,
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .arg("--token-file")
    .arg(dir.join("token"))
    .arg("--data")
    .arg(&data)
    .env("RUST_LOG", "shoal_agent=debug,shoal_engine=info")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    for tracker in trackers {
        cmd.args(["--tracker", &format!("http://127.0.0.1:{tracker}")]);
    }
    let mut child = cmd.spawn().expect("spawn shoal agent");
    common::wait_listening(&mut child, port, "shoal agent");
    common::wait_socket(&data.join("control.sock"));
    Agent { child, data, log }
}

#[test]
fn agents_given_two_trackers_move_to_the_second_when_the_first_dies() {
    let redis = Redis::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[token]]\nname = \"fleet\"\nsecret = \"{SECRET}\"\nrole = \"agent\"\n\
             [[token]]\nname = \"ops\"\nsecret = \"{ADMIN}\"\nrole = \"admin\"\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("token"), SECRET).unwrap();
    let one = start_tracker(&tokens, &redis.url(0));
    let two = start_tracker(&tokens, &redis.url(0));

    let data = random_bytes(8 << 20, 11);
    let size = data.len() as u64;
    let origin = Origin::start_blocking(OriginConfig {
        content: data.clone(),
        rate_limit: Some(192 * 1024),
        ..OriginConfig::default()
    });
    let url = origin.url("/replicated.iso");
    let names = ["a1", "a2", "a3"];
    let agents: Vec<Agent> = names
        .iter()
        .map(|n| start_agent(dir.path(), n, &[one.port, two.port]))
        .collect();
    let gets: Vec<Child> = agents
        .iter()
        .enumerate()
        .map(|(i, agent)| {
            common::get(
                dir.path(),
                &["--progress", "none", &url, "-o", &format!("out{i}")],
            )
            .env(
                "SHOAL_AGENT",
                format!("unix:{}", agent.data.join("control.sock").display()),
            )
            .spawn()
            .expect("spawn shoal get")
        })
        .collect();
    let deadline = Instant::now() + common::DEADLINE;
    while origin.bytes_sent() < size * 3 / 10 {
        assert!(Instant::now() < deadline, "the origin never sent 30 %");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(one);

    for get in gets {
        let run = common::finish(get);
        if run.code != 0 {
            for agent in &agents {
                eprintln!(
                    "--- {}\n{}",
                    agent.log.display(),
                    std::fs::read_to_string(&agent.log).unwrap_or_default()
                );
            }
        }
        common::assert_code(&run, 0);
    }
    for i in 0..names.len() {
        let out = dir.path().join(format!("out{i}"));
        assert_eq!(
            common::sha256_of(&out),
            sha256_hex(&data),
            "{}",
            out.display()
        );
    }
    let sent = origin.bytes_sent();
    assert!(
        sent <= size * 12 / 10,
        "the origin sent {sent} bytes for three agents of a {size} byte file"
    );
    let moved = format!(
        "using the tracker http://127.0.0.1:{}/ from now on",
        two.port
    );
    for agent in &agents {
        let log = std::fs::read_to_string(&agent.log).unwrap();
        assert_eq!(log.matches(&moved).count(), 1, "{log}");
    }

    // The second tracker knows every agent and what it holds, complete.
    common::wait_complete_holdings(two.port, ADMIN, &names, "the second tracker");
}
