//! Running the real `shoal` binary from tests: a command with a clean environment, and a wait
//! that turns a hang into a failure instead of a stuck test run.

#![allow(dead_code)] // Each test file uses its own part of this module.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_testkit::sha256_hex;

/// Far longer than any test download takes; only a hung binary reaches it.
pub(crate) const DEADLINE: Duration = Duration::from_secs(120);

pub(crate) struct Finished {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// `shoal get ARGS` in `dir`, without `RUST_LOG` or proxy settings from the caller's
/// environment, with stdout and stderr captured.
pub(crate) fn get(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.arg("get")
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Sends `child` the signal `name` (`-STOP`, `-CONT`, `-INT`, …) with `kill`.
pub(crate) fn signal(child: &Child, name: &str) {
    let kill = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill {name} {}", child.id());
}

/// `shoal ARGS` without any `SHOAL_*` or `RUST_LOG` variable from the caller's environment,
/// with stdout and stderr captured.
pub(crate) fn shoal(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SHOAL_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

pub(crate) fn run(dir: &Path, args: &[&str]) -> Finished {
    finish(get(dir, args).spawn().expect("spawn shoal"))
}

/// Waits for the child, killing it past [`DEADLINE`] so a hang fails the test.
pub(crate) fn finish(mut child: Child) -> Finished {
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for shoal") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("shoal still running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout).unwrap();
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr).unwrap();
    }
    Finished {
        code: status.code().expect("shoal exited by a signal"),
        stdout,
        stderr,
    }
}

pub(crate) fn assert_code(run: &Finished, code: i32) {
    assert_eq!(
        run.code, code,
        "exit code; stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

pub(crate) fn sha256_of(path: &Path) -> String {
    sha256_hex(&std::fs::read(path).unwrap())
}

/// The file at `path` holds exactly what `origin` serves.
pub(crate) fn assert_saved(path: &Path, origin: &shoal_testkit::Origin) {
    assert_eq!(
        sha256_of(path),
        sha256_hex(&origin.content()),
        "{}",
        path.display()
    );
}

/// A loopback port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `child` (`what`, for messages) accepts connections on `port`.
pub(crate) fn wait_listening(child: &mut Child, port: u16, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    // Bounded by the deadline.
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 request with a bearer token and a JSON body; answers the status code and the
/// body.
pub(crate) fn call(port: u16, token: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
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

/// One `GET` of `path` with a bearer token and `Range: bytes=START-END` (inclusive), as a
/// peer asks an agent's piece server; answers the status code and the body's bytes.
pub(crate) fn get_range(port: u16, token: &str, path: &str, range: (u64, u64)) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Range: bytes={}-{}\r\nConnection: close\r\n\r\n",
        range.0, range.1
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let status = std::str::from_utf8(&response[9..12])
        .unwrap()
        .parse()
        .unwrap();
    let body = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| response[at + 4..].to_vec())
        .unwrap_or_default();
    (status, body)
}

/// Waits for an agent's control socket, which comes a moment after its piece server's port.
pub(crate) fn wait_socket(socket: &Path) {
    let deadline = Instant::now() + DEADLINE;
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the tracker on `port` (asked with `token`) lists every agent of `names` with a
/// complete holding; `tracker` names it in the failure.
pub(crate) fn wait_complete_holdings(port: u16, token: &str, names: &[&str], tracker: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = call(port, token, "GET", "/v1/agents", "");
        assert_eq!(status, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        let complete =
            |name: &str| {
                list["agents"].as_array().unwrap().iter().any(|a| {
                    a["id"] == name && a["complete_holdings"].as_u64().is_some_and(|n| n >= 1)
                })
            };
        if names.iter().all(|n| complete(n)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{tracker} does not list every agent's holdings: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
