//! The agent's control API as users and attackers reach it, through real processes: its Unix
//! socket (mode 0600) serves `shoal get --agent unix:…`; a TCP control listener serves only
//! requests with the token, and neither serves what a web page can send.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shoal_testkit::{random_bytes, Origin, OriginConfig};

/// `shoal agent` without a tracker, killed on drop.
struct Agent {
    child: Child,
    port: u16,
    control: u16,
    data: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// With a TCP control listener on `control_ip`.
    fn start(dir: &Path, control_ip: &str) -> Agent {
        std::fs::write(dir.join("token"), "fleet-secret").unwrap();
        let data = dir.join("data");
        let (port, control) = (common::free_port(), common::free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["agent", "--id", "solo"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--control-listen", &format!("{control_ip}:{control}")])
            .arg("--token-file")
            .arg(dir.join("token"))
            .arg("--data")
            .arg(&data)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn shoal agent");
        common::wait_listening(&mut child, control, "shoal agent");
        common::wait_socket(&data.join("control.sock"));
        Agent {
            child,
            port,
            control,
            data,
        }
    }

    fn socket(&self) -> PathBuf {
        self.data.join("control.sock")
    }
}

/// One raw request to `port` on loopback with `headers`; the status.
fn post(port: u16, headers: &[&str], body: &str) -> u16 {
    post_to(Ipv4Addr::LOCALHOST, port, headers, body)
}

fn post_to(ip: Ipv4Addr, port: u16, headers: &[&str], body: &str) -> u16 {
    let mut stream = TcpStream::connect((ip, port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = format!("POST /v1/fetch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    write!(
        stream,
        "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response[9..12]).parse().unwrap()
}

fn origin() -> Origin {
    Origin::start_blocking(OriginConfig {
        content: random_bytes(300_000, 8),
        ..OriginConfig::default()
    })
}

#[test]
fn the_control_socket_is_private_and_serves_shoal_get() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), "127.0.0.1");
    let meta = std::fs::metadata(agent.socket()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let token = std::fs::metadata(agent.data.join("control.token")).unwrap();
    assert_eq!(token.permissions().mode() & 0o777, 0o600);

    let origin = origin();
    let url = origin.url("/f.bin");
    let place = format!("unix:{}", agent.socket().display());
    let run = common::run(
        dir.path(),
        &["--agent", &place, "--progress", "none", &url, "-o", "out"],
    );
    common::assert_code(&run, 0);
    common::assert_saved(&dir.path().join("out"), &origin);

    // SHOAL_AGENT takes the same form.
    let run = common::finish(
        common::get(dir.path(), &["--progress", "none", &url, "-o", "again"])
            .env("SHOAL_AGENT", &place)
            .spawn()
            .unwrap(),
    );
    common::assert_code(&run, 0);
    common::assert_saved(&dir.path().join("again"), &origin);
}

#[test]
fn the_tcp_control_listener_wants_the_token_and_refuses_web_pages() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), "127.0.0.1");
    let origin = origin();
    let url = origin.url("/f.bin");
    let body = format!("{{\"url\":\"{url}\"}}");
    let token = std::fs::read_to_string(agent.data.join("control.token")).unwrap();
    let bearer = format!("Authorization: Bearer {}", token.trim());

    // What a web page can send: a cross-site POST, text/plain, with its Origin.
    let cross_site = ["Content-Type: text/plain", "Origin: http://evil"];
    assert_eq!(post(agent.control, &cross_site, &body), 403);
    let with_token = [bearer.as_str(), "Content-Type: text/plain"];
    assert_eq!(post(agent.control, &with_token, &body), 415);
    assert_eq!(
        post(agent.control, &["Content-Type: application/json"], &body),
        401
    );
    // The piece server's port is no control API any more.
    assert_eq!(
        post(
            agent.port,
            &[&bearer, "Content-Type: application/json"],
            &body
        ),
        404
    );

    let http = format!("http://127.0.0.1:{}", agent.control);
    let run = common::run(
        dir.path(),
        &["--agent", &http, "--progress", "none", &url, "-o", "out"],
    );
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("--agent-token-file"), "{}", run.stderr);
    assert!(!dir.path().join("out").exists());

    let token_file = agent.data.join("control.token");
    let run = common::run(
        dir.path(),
        &[
            "--agent",
            &http,
            "--agent-token-file",
            token_file.to_str().unwrap(),
            "--progress",
            "none",
            &url,
            "-o",
            "out",
        ],
    );
    common::assert_code(&run, 0);
    common::assert_saved(&dir.path().join("out"), &origin);
}
