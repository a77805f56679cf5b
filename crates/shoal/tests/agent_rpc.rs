//! `shoal agent --rpc-listen` as a download daemon without a tracker, driven by aria2p (the
//! aria2 client library, which scripts/test installs in its virtualenv; without it the test
//! says SKIP): a download watched to completion and its bytes checked, pause and unpause,
//! remove, aria2's notifications over the WebSocket, and after a `kill -9` the queue found
//! again, the paused download still paused and the running one finished from its part file.
//! With a tracker, the same queue's downloads go through the swarm, held to the overall cap
//! (changed at run time) and their own `max-download-limit`, after a `kill -9` too.

mod common;
mod fleet;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shoal_testkit::{random_bytes, sha256_hex, Origin, OriginConfig};

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aria2p/drive.py");

fn daemon(dir: &Path, rpc_port: u16) -> Killed {
    let mut child = common::shoal(&["agent", "--id", "daemon-1"])
        .args(["--listen", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--rpc-listen", &format!("127.0.0.1:{rpc_port}")])
        .arg("--rpc-secret-file")
        .arg(dir.join("rpc.secret"))
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--dir")
        .arg(dir.join("out"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shoal agent");
    common::wait_listening(&mut child, rpc_port, "shoal agent's RPC");
    Killed(child)
}

/// Runs the aria2p script with `args`; its JSON answer.
fn drive(python: &str, env: &[(&str, String)], args: &[&str]) -> Value {
    let mut command = Command::new(python);
    command.arg(SCRIPT).args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python");
    let done = common::finish(child);
    assert_eq!(
        done.code, 0,
        "the aria2p script failed:\n{}\n{}",
        done.stdout, done.stderr
    );
    serde_json::from_str(done.stdout.trim()).expect("the script prints JSON")
}

/// The virtualenv's Python if it has aria2p; `None` (after a SKIP line) otherwise.
fn python_with_aria2p() -> Option<String> {
    let python = std::env::var("SHOAL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import aria2p, websocket"])
        .output();
    match probe {
        Ok(out) if out.status.success() => Some(python),
        _ => {
            println!(
                "SKIP aria2p drives the agent's RPC: {python} has no aria2p \
                 (scripts/test installs it: pip install aria2p)"
            );
            None
        }
    }
}

#[test]
fn aria2p_drives_the_daemon_and_finds_its_queue_after_kill_9() {
    let Some(python) = python_with_aria2p() else {
        return;
    };
    let fast = Origin::start_blocking(OriginConfig {
        content: random_bytes(2 << 20, 61),
        ..OriginConfig::default()
    });
    // Slow enough that a download with one connection is still running when it is paused,
    // removed or killed: 4 MiB at 256 KiB/s is 16 s; it is sped up with more connections
    // for the run after the restart.
    let slow = Origin::start_blocking(OriginConfig {
        content: random_bytes(4 << 20, 62),
        rate_limit: Some(256 << 10),
        ..OriginConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    let secret = "aria2p-secret-0123456789";
    std::fs::write(dir.path().join("rpc.secret"), secret).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("rpc.secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let port = common::free_port();
    let env = [
        ("RPC_PORT", port.to_string()),
        ("RPC_SECRET", secret.to_string()),
        ("FAST_URL", fast.url("/fast.bin")),
        ("SLOW_URL", slow.url("/slow")),
        (
            "OUT_DIR",
            dir.path().join("out").to_string_lossy().into_owned(),
        ),
    ];

    let mut agent = daemon(dir.path(), port);
    let first = drive(&python, &env, &["first"]);
    assert_eq!(first["fast_sha256"], sha256_hex(&fast.content()));
    assert_eq!(first["notifications"], first["expected_notifications"]);
    let (paused, running) = (
        first["paused"].as_str().unwrap().to_string(),
        first["running"].as_str().unwrap().to_string(),
    );

    // SIGKILL once the engine's resume state records 512 KiB of e.bin as durable: nothing
    // is saved on the way out, and at least that much must not be fetched again.
    let state = shoal_engine::resume::state_path(&dir.path().join("out/e.bin"));
    let recorded = || {
        shoal_engine::resume::load(&state)
            .ok()
            .flatten()
            .map_or(0, |s| u64::from(s.done.count_ones()) * s.block)
    };
    let deadline = Instant::now() + common::DEADLINE;
    while recorded() < 512 << 10 {
        assert!(
            Instant::now() < deadline,
            "e.bin's resume state never reached 512 KiB"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    let sent_before = slow.bytes_sent();
    let _agent = daemon(dir.path(), port);
    let again = drive(&python, &env, &["again", &paused, &running]);
    assert_eq!(again["found"][&paused], "paused", "{again}");
    assert_eq!(again["paused_after"], "paused", "{again}");
    assert_eq!(again["running_sha256"], sha256_hex(&slow.content()));
    let size = slow.content().len() as u64;
    let sent_after = slow.bytes_sent() - sent_before;
    assert!(
        sent_after < size - (256 << 10),
        "the restarted download fetched {sent_after} of {size} bytes: it did not resume"
    );
}

/// The secret of the queue agents with a tracker take.
const SWARM_SECRET: &str = "swarm-rpc-secret";

/// The flags of an agent of `fleet` with its RPC on a port of its own, files going to
/// `out/`; the flags and the port.
fn rpc_flags(fleet: &fleet::Fleet) -> (Vec<String>, u16) {
    let secret = fleet.path("rpc.secret");
    std::fs::write(&secret, SWARM_SECRET).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let rpc_port = common::free_port();
    let flags = vec![
        "--rpc-listen".to_string(),
        format!("127.0.0.1:{rpc_port}"),
        "--rpc-secret-file".to_string(),
        secret.to_string_lossy().into_owned(),
        "--dir".to_string(),
        fleet.path("out").to_string_lossy().into_owned(),
    ];
    (flags, rpc_port)
}

/// An agent of `fleet` with a tracker and its RPC (see [`rpc_flags`]); the agent and the
/// RPC's port.
fn swarm_daemon(fleet: &fleet::Fleet, id: &str) -> (fleet::Process, u16) {
    let (flags, rpc_port) = rpc_flags(fleet);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut agent = fleet.agent(id, None, &flags);
    common::wait_listening(&mut agent.child, rpc_port, "shoal agent's RPC");
    (agent, rpc_port)
}

/// Calls `method` of the RPC on `port` over POST with [`SWARM_SECRET`]; its result.
fn swarm_rpc(port: u16, method: &str, params: Value) -> Value {
    let mut all = vec![json!(format!("token:{SWARM_SECRET}"))];
    all.extend(params.as_array().cloned().unwrap_or_default());
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": all});
    let (status, answer) = common::call(port, "", "POST", "/jsonrpc", &body.to_string());
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert!(answer.get("error").is_none(), "{method}: {answer}");
    answer["result"].clone()
}

/// Waits (bounded) for download `gid` to complete.
fn wait_complete(fleet: &fleet::Fleet, agent: &str, port: u16, gid: &Value) {
    let deadline = Instant::now() + common::DEADLINE;
    loop {
        let status = swarm_rpc(
            port,
            "aria2.tellStatus",
            json!([gid, ["status", "errorMessage"]]),
        );
        match status["status"].as_str() {
            Some("complete") => break,
            Some("error") => panic!("the download failed: {status}\n{}", fleet.log(agent)),
            _ => {}
        }
        assert!(Instant::now() < deadline, "no end: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// With `--tracker` the queue's downloads go through the swarm, as `shoal get --agent` does:
/// the tracker then lists the agent as a complete holder of the content, and the file is
/// placed in `--dir` under the `out` asked for. When another agent then takes the URL from
/// the swarm, `tellStatus` counts what this one uploaded of it, and reports the swarm's pieces.
#[test]
fn with_a_tracker_the_queues_downloads_go_through_the_swarm() {
    let data = random_bytes(3 << 20, 63);
    let origin = Origin::start_blocking(OriginConfig {
        content: data.clone(),
        ..OriginConfig::default()
    });
    let fleet = fleet::Fleet::start();
    let (agent, rpc_port) = swarm_daemon(&fleet, "queue-1");
    let gid = swarm_rpc(
        rpc_port,
        "aria2.addUri",
        json!([[origin.url("/big.bin")], {"out": "via-swarm.bin"}]),
    );
    wait_complete(&fleet, "queue-1", rpc_port, &gid);
    fleet.assert_file("out/via-swarm.bin", &data);
    fleet.wait_holders(&fleet::content_id(&data), 1);
    let keys = json!(["uploadLength", "totalLength", "numPieces", "pieceLength"]);
    let before = swarm_rpc(rpc_port, "aria2.tellStatus", json!([gid, keys]));
    assert_eq!(before["uploadLength"], "0", "{before}");

    // A second agent takes the URL from the swarm, whose only holder is this one (it checks
    // one piece against the origin too).
    let second = fleet.agent("queue-2", None, &[]);
    fleet::done(
        fleet.get(&second, &origin.url("/big.bin"), "second.bin"),
        &fleet,
        &["queue-1", "queue-2"],
    );
    fleet.assert_file("second.bin", &data);
    let status = swarm_rpc(rpc_port, "aria2.tellStatus", json!([gid, keys]));
    let number = |key: &str| -> u64 { status[key].as_str().unwrap().parse().unwrap() };
    let size = data.len() as u64;
    assert_eq!(number("totalLength"), size, "{status}");
    assert!(
        (1..=size).contains(&number("uploadLength")),
        "uploaded {} of a {size} byte file: {status}\n{}",
        number("uploadLength"),
        fleet.log("queue-1")
    );
    assert!(
        number("numPieces") * number("pieceLength") >= size,
        "{status}"
    );
    assert!(
        number("numPieces") > 1,
        "the swarm's pieces, not the whole file: {status}"
    );
    drop(agent);
}

/// The cap this test holds downloads to, in bytes a second.
const CAP: u64 = 128 << 10;
/// What a download may have beyond `CAP` times the time it ran: the reads each connection
/// made before the limiter held it.
const CAP_SLACK: u64 = 1 << 20;

/// Watches download `gid`, which started under [`CAP`] at `since`, for a second and a half:
/// it is still running and has no more than the cap let through (with `starts` times
/// [`CAP_SLACK`], one per start). The bound grows with the time the test measured, so a slow
/// machine only loosens it.
fn assert_held_to_the_cap(port: u16, gid: &Value, since: Instant, total: u64, starts: u64) {
    std::thread::sleep(Duration::from_millis(1500));
    let status = swarm_rpc(
        port,
        "aria2.tellStatus",
        json!([gid, ["status", "completedLength"]]),
    );
    let done: u64 = status["completedLength"].as_str().unwrap().parse().unwrap();
    let bound = (CAP as f64 * since.elapsed().as_secs_f64()) as u64 + starts * CAP_SLACK;
    assert!(
        done <= bound && done < total,
        "{done} of {total} bytes after {:?}, more than the cap of {CAP} B/s lets through ({bound}): {status}",
        since.elapsed()
    );
    assert_eq!(status["status"], "active", "{status}");
}

/// With `--tracker`, a queued download through the swarm keeps to the overall cap set at run
/// time (`changeGlobalOption`) and finishes once it is lifted, its bytes those the origin
/// sent; another keeps to its own `max-download-limit`.
#[test]
fn with_a_tracker_the_queues_swarm_downloads_keep_to_the_caps() {
    let total = 4 << 20;
    let (first, second) = (random_bytes(total, 64), random_bytes(total, 65));
    let origins = [&first, &second].map(|data| {
        Origin::start_blocking(OriginConfig {
            content: data.clone(),
            ..OriginConfig::default()
        })
    });
    let fleet = fleet::Fleet::start();
    let (_agent, port) = swarm_daemon(&fleet, "queue-caps");
    let limit = json!({"max-overall-download-limit": CAP.to_string()});
    swarm_rpc(port, "aria2.changeGlobalOption", json!([limit]));
    let since = Instant::now();
    let gid = swarm_rpc(
        port,
        "aria2.addUri",
        json!([[origins[0].url("/first.bin")], {"out": "first.bin"}]),
    );
    assert_held_to_the_cap(port, &gid, since, total as u64, 1);
    let lifted = json!({"max-overall-download-limit": "0"});
    swarm_rpc(port, "aria2.changeGlobalOption", json!([lifted]));
    wait_complete(&fleet, "queue-caps", port, &gid);
    fleet.assert_file("out/first.bin", &first);

    let since = Instant::now();
    let gid = swarm_rpc(
        port,
        "aria2.addUri",
        json!([
            [origins[1].url("/second.bin")],
            {"out": "second.bin", "max-download-limit": CAP.to_string()}
        ]),
    );
    assert_held_to_the_cap(port, &gid, since, total as u64, 1);
    swarm_rpc(port, "aria2.forceRemove", json!([gid]));
}

/// After a `kill -9` mid-download, the queue's download through the swarm resumes under the
/// overall cap it was set to (kept in the queue), rather than uncapped by the agent's own
/// resuming of unfinished fetches, and its bytes are the origin's once the cap is lifted.
#[test]
fn with_a_tracker_a_queued_download_resumes_under_the_cap_after_kill_9() {
    let total = 6 << 20;
    let data = random_bytes(total, 66);
    let origin = Origin::start_blocking(OriginConfig {
        content: data.clone(),
        ..OriginConfig::default()
    });
    let fleet = fleet::Fleet::start();
    let (mut agent, port) = swarm_daemon(&fleet, "queue-restart");
    let limit = json!({"max-overall-download-limit": CAP.to_string()});
    swarm_rpc(port, "aria2.changeGlobalOption", json!([limit]));
    let since = Instant::now();
    let gid = swarm_rpc(
        port,
        "aria2.addUri",
        json!([[origin.url("/restart.bin")], {"out": "restart.bin"}]),
    );
    std::thread::sleep(Duration::from_secs(1));
    agent.kill();
    // The same address: the tracker takes the id back only from there.
    let (flags, port) = rpc_flags(&fleet);
    let mut again = fleet.agent_command("queue-restart", agent.port, &agent.data, "again.log");
    let mut again = Killed(again.args(flags).spawn().expect("spawn shoal agent"));
    common::wait_listening(&mut again.0, port, "the restarted agent's RPC");
    assert_held_to_the_cap(port, &gid, since, total as u64, 2);
    let lifted = json!({"max-overall-download-limit": "0"});
    swarm_rpc(port, "aria2.changeGlobalOption", json!([lifted]));
    wait_complete(&fleet, "again", port, &gid);
    fleet.assert_file("out/restart.bin", &data);
}
