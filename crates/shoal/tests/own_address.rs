//! A request from the machine's own non-loopback address is not refused as "not this
//! machine" when the agent's TCP control listener and piece server name that one address
//! (issue 13, item 8). The address lives in a network namespace the test creates (a veth pair
//! with 10.213.0.1/24 and 10.213.0.2/24, both ends inside it), where the agent and its clients
//! run through `ip netns exec`; the host's interfaces are never touched. Without root or
//! namespaces the test prints a `SKIP` line (`.config/nextest.toml` shows it).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use shoal_core::Manifest;
use shoal_testkit::{random_bytes, sha256_hex};

use common::{assert_code, finish, Finished};

/// The agent's addresses inside the namespace: 10.213.0.1 is not loopback, and a connection
/// to it from the same machine comes from it.
const PIECES: &str = "10.213.0.1:7701";
const CONTROL: &str = "10.213.0.1:7702";
const TOKEN: &str = "fleet-secret-for-the-namespace";

/// A network namespace of this test's own, and the agent run in it; both gone on drop.
struct Namespace {
    name: String,
    agent: Option<Child>,
}

impl Namespace {
    /// `None` after a `SKIP` line when namespaces cannot be made here (not root, no
    /// CAP_SYS_ADMIN, no `ip`).
    fn create(test: &str) -> Option<Namespace> {
        let name = format!("shoal-own-{}", std::process::id());
        let made = ip(&["netns", "add", &name]);
        if !made {
            eprintln!("SKIP: {test}: needs root and `ip netns` to create a network namespace");
            return None;
        }
        // From here on, drop deletes the namespace, whatever fails next.
        let ns = Namespace { name, agent: None };
        let n = ns.name.as_str();
        let steps: [&[&str]; 6] = [
            &["-n", n, "link", "set", "lo", "up"],
            &[
                "-n", n, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
            ],
            &["-n", n, "addr", "add", "10.213.0.1/24", "dev", "v0"],
            &["-n", n, "addr", "add", "10.213.0.2/24", "dev", "v1"],
            &["-n", n, "link", "set", "v0", "up"],
            &["-n", n, "link", "set", "v1", "up"],
        ];
        for step in steps {
            assert!(ip(step), "ip {}", step.join(" "));
        }
        Some(ns)
    }

    /// `shoal ARGS` inside the namespace, without the caller's `SHOAL_*`, `RUST_LOG` or proxy
    /// settings, with stdout and stderr captured.
    fn shoal(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, env!("CARGO_BIN_EXE_shoal")])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            if text.starts_with("SHOAL_") || text == "RUST_LOG" || text.ends_with("_proxy") {
                cmd.env_remove(&name);
            }
            if text.ends_with("_PROXY") {
                cmd.env_remove(&name);
            }
        }
        cmd
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn shows(run: &Finished) -> String {
    format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr)
}

#[test]
fn own_address_is_served_by_the_control_listener_and_the_piece_server() {
    let test = "own_address_is_served_by_the_control_listener_and_the_piece_server";
    let Some(mut ns) = Namespace::create(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(2 << 20, 8);
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("disk.img"), &data).unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let agent_data = dir.path().join("data");
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let path = |p: &Path| p.display().to_string();
    let agent = ns
        .shoal(&["agent", "--id", "own", "--listen", PIECES])
        .args(["--control-listen", CONTROL])
        .args(["--token-file", &path(&dir.path().join("token"))])
        .args(["--data", &path(&agent_data)])
        .args(["--share", &path(&share)])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn shoal agent in the namespace");
    ns.agent = Some(agent);
    common::wait_socket(&agent_data.join("control.sock"));
    let agent_log = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();

    // The control listener, asked from the machine's own 10.213.0.1 (the source address of a
    // connection to it), serves `shoal get --agent` with its token.
    let piece = shoal_agent::piece_size::for_size(data.len() as u64);
    let id = Manifest::of_bytes(&data, piece).unwrap().id();
    let out = dir.path().join("out.img");
    let token_file = agent_data.join("control.token");
    let got = finish(
        ns.shoal(&["get", "--progress", "none"])
            .args(["--agent", &format!("http://{CONTROL}")])
            .args(["--agent-token-file", &path(&token_file)])
            .args([&format!("shoal:blake3:{id}"), "-o", &path(&out)])
            .spawn()
            .expect("spawn shoal get in the namespace"),
    );
    assert_eq!(got.code, 0, "{}\nagent:\n{}", shows(&got), agent_log());
    assert_eq!(sha256_hex(&std::fs::read(&out).unwrap()), sha256_hex(&data));

    // The piece server named by the same address serves a peer on this machine too.
    let piece = dir.path().join("piece.bin");
    let fetched = finish(
        ns.shoal(&["get", "--progress", "none"])
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .args(["-o", &path(&piece)])
            .arg(format!("http://{PIECES}/v1/pieces/{id}"))
            .spawn()
            .expect("spawn shoal get in the namespace"),
    );
    assert_code(&fetched, 0);
    assert_eq!(
        sha256_hex(&std::fs::read(&piece).unwrap()),
        sha256_hex(&data)
    );
}
