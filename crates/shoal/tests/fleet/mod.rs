//! The fleet the swarm tests run: a `shoal tracker` and `shoal agent`s as real processes on
//! loopback, killed on drop.

#![allow(dead_code)] // Each test file uses its own part of this module.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_core::wire::SwarmInfo;
use shoal_core::Manifest;
use shoal_testkit::{sha256_hex, Origin};

use crate::common;

pub(crate) const FLEET: &str = "fleet-secret-aaaaaaaaaaaaaaaa";
pub(crate) const READER: &str = "reader-secret-bbbbbbbbbbbbbb";
pub(crate) const MIB: usize = 1 << 20;

/// A process killed (SIGKILL) on drop.
pub(crate) struct Process {
    pub(crate) child: Child,
    pub(crate) port: u16,
    /// An agent's data directory (empty for the tracker).
    pub(crate) data: PathBuf,
}

impl Process {
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) struct Fleet {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) tracker: Process,
    /// The tracker's own flags (its certificate, for a fleet on TLS).
    tracker_args: Vec<String>,
    /// `http` or `https`: how agents reach the tracker.
    pub(crate) scheme: &'static str,
}

impl Fleet {
    pub(crate) fn start() -> Fleet {
        Self::start_with(|_| Vec::new(), "http")
    }

    /// A fleet whose tracker serves HTTPS with a certificate `ca` signed.
    pub(crate) fn start_tls(ca: &shoal_testkit::TestCa) -> Fleet {
        Self::start_with(
            |dir| {
                let files = ca.issue(dir, "tracker");
                vec![
                    "--tls-cert".into(),
                    files.cert.display().to_string(),
                    "--tls-key".into(),
                    files.key.display().to_string(),
                ]
            },
            "https",
        )
    }

    fn start_with(tracker_args: impl FnOnce(&Path) -> Vec<String>, scheme: &'static str) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens.toml");
        std::fs::write(
            &tokens,
            format!(
                "[[token]]\nname = \"fleet\"\nsecret = \"{FLEET}\"\nrole = \"agent\"\n\
                 [[token]]\nname = \"ops\"\nsecret = \"{READER}\"\nrole = \"admin\"\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("token"), FLEET).unwrap();
        std::fs::write(dir.path().join("admin-token"), READER).unwrap();
        let port = common::free_port();
        let tracker_args = tracker_args(dir.path());
        let tracker = spawn_tracker(dir.path(), port, &tracker_args);
        Fleet {
            dir,
            tracker,
            tracker_args,
            scheme,
        }
    }

    /// Starts the tracker again, on its port and `--data`, after [`Process::kill`].
    pub(crate) fn restart_tracker(&mut self) {
        self.tracker = spawn_tracker(self.dir.path(), self.tracker.port, &self.tracker_args);
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `shoal agent --id ID` with its own data directory, sharing `share` if given.
    pub(crate) fn agent(&self, id: &str, share: Option<&Path>, extra: &[&str]) -> Process {
        let data = self.path(&format!("{id}-data"));
        let port = common::free_port();
        let mut cmd = self.agent_command(id, port, &data, &format!("{id}.log"));
        cmd.args(extra);
        if let Some(share) = share {
            cmd.arg("--share").arg(share);
        }
        let mut child = cmd.spawn().expect("spawn shoal agent");
        common::wait_listening(&mut child, port, "shoal agent");
        common::wait_socket(&data.join("control.sock"));
        Process { child, port, data }
    }

    /// The command line of `shoal agent --id ID` on `port` with `data`, logging to `log` in
    /// the fleet's directory.
    pub(crate) fn agent_command(&self, id: &str, port: u16, data: &Path, log: &str) -> Command {
        let log = std::fs::File::create(self.path(log)).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
        cmd.args([
            "agent",
            "--id",
            id,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args([
            "--tracker",
            &format!("{}://127.0.0.1:{}", self.scheme, self.tracker.port),
        ])
        .arg("--token-file")
        .arg(self.path("token"))
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "shoal_agent=debug,shoal_engine=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
        cmd
    }

    /// A directory holding `data` as `name`, to share.
    pub(crate) fn share(&self, dir: &str, name: &str, data: &[u8]) -> PathBuf {
        let path = self.path(dir);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join(name), data).unwrap();
        path
    }

    /// `shoal get --agent` through `agent`, saving to `out` in the fleet's directory.
    pub(crate) fn get(&self, agent: &Process, what: &str, out: &str) -> Child {
        common::get(self.dir.path(), &["--progress", "none", what, "-o", out])
            .env(
                "SHOAL_AGENT",
                format!("unix:{}", agent.data.join("control.sock").display()),
            )
            .spawn()
            .expect("spawn shoal get")
    }

    /// One request to the tracker as the admin; the status and the body.
    pub(crate) fn tracker_call(&self, method: &str, path: &str) -> (u16, String) {
        common::call(self.tracker.port, READER, method, path, "")
    }

    /// Maps `url`, in the version `origin` serves now (its size and validators), to
    /// `content` at the tracker, as a holder of the fleet's token may.
    pub(crate) fn map_url(&self, origin: &Origin, url: &str, content: &str) {
        let key = serde_json::json!({"url": url, "size": origin.content().len(),
            "etag": origin.etag(), "last_modified": origin.last_modified()});
        let publish = serde_json::json!({"key": key, "content": content}).to_string();
        let (status, body) = common::call(self.tracker.port, FLEET, "POST", "/v1/urls", &publish);
        assert_eq!(status, 201, "{body}");
    }

    /// Waits until the tracker lists `holders` complete holders of `content`.
    pub(crate) fn wait_holders(&self, content: &str, holders: u32) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.tracker_call("GET", &format!("/v1/content/{content}"));
            if status == 200 {
                let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
                if summary["complete_holders"].as_u64() >= Some(u64::from(holders)) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{content} never had {holders} complete holders: {status} {body}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `log` (in the fleet's directory) says `needle`, or `child` exits.
    pub(crate) fn wait_log(&self, child: &mut Child, log: &str, needle: &str) {
        let deadline = Instant::now() + common::DEADLINE;
        while !self.log(log).contains(needle) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "{log} exited ({status}) before saying {needle:?}:\n{}",
                    self.log(log)
                );
            }
            assert!(Instant::now() < deadline, "{log} never said {needle:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The id of the URL swarm agent `name` said it leads.
    pub(crate) fn swarm_led_by(&self, name: &str) -> String {
        let log = self.log(name);
        log.lines()
            .find(|l| l.contains("leading the swarm"))
            .and_then(|l| l.split("swarm=").nth(1))
            .map(|rest| rest[..64].to_string())
            .unwrap_or_else(|| panic!("no swarm id in {name}'s log:\n{log}"))
    }

    /// The URL swarm `swarm` as the tracker has it.
    pub(crate) fn swarm(&self, swarm: &str) -> SwarmInfo {
        let (status, body) = self.tracker_call("GET", &format!("/v1/swarms/{swarm}"));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// How many digests the leaders of `swarm` published.
    pub(crate) fn published(&self, swarm: &str) -> usize {
        let info = self.swarm(swarm);
        let digests = info.digests.to_digests(info.layout.piece_count()).unwrap();
        digests.iter().filter(|d| d.is_some()).count()
    }

    pub(crate) fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    pub(crate) fn assert_file(&self, out: &str, data: &[u8]) {
        assert_eq!(
            common::sha256_of(&self.path(out)),
            sha256_hex(data),
            "{out} differs from the original"
        );
    }
}

/// `shoal tracker` on `port` with its data in `dir` and `extra` flags, logging to
/// `dir/tracker.log` (appended to, so a restart keeps what the first run said).
pub(crate) fn spawn_tracker(dir: &Path, port: u16, extra: &[String]) -> Process {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join("tracker.log"))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["tracker", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data")
        .arg(dir.join("tracker"))
        .arg("--tokens")
        .arg(dir.join("tokens.toml"))
        .args(["--lease", "5"])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn shoal tracker");
    common::wait_listening(&mut child, port, "shoal tracker");
    Process {
        child,
        port,
        data: PathBuf::new(),
    }
}

/// Waits until `origin` has sent at least `bytes`.
pub(crate) fn wait_sent(origin: &Origin, bytes: u64) {
    let deadline = Instant::now() + common::DEADLINE;
    while origin.bytes_sent() < bytes {
        assert!(
            Instant::now() < deadline,
            "the origin never sent {bytes} bytes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The content id an agent sharing `data` publishes: its manifest at the agent's piece size.
pub(crate) fn content_id(data: &[u8]) -> String {
    let piece = shoal_agent::piece_size::for_size(data.len() as u64);
    Manifest::of_bytes(data, piece).unwrap().id().to_string()
}

pub(crate) fn done(child: Child, fleet: &Fleet, agents: &[&str]) {
    let run = common::finish(child);
    if run.code != 0 {
        for agent in agents {
            eprintln!("--- {agent}.log\n{}", fleet.log(agent));
        }
    }
    common::assert_code(&run, 0);
}
