//! TLS between shoal's own processes and to origins, through the real binary on loopback: a
//! tracker and agents whose certificates a private CA signed (the test kit's `TestCa`), `--ca`
//! to trust it, and what each refuses without it.

mod common;
mod fleet;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use shoal_testkit::{random_bytes, Origin, OriginConfig, TestCa};
use tempfile::TempDir;

use common::{assert_code, assert_saved, run};
use fleet::{content_id, done, Fleet, FLEET, MIB};

/// `--tls-cert`, `--tls-key` and `--ca` for agent `id`: a certificate `ca` signed, and `ca`
/// trusted.
fn tls_flags(fleet: &Fleet, ca: &TestCa, id: &str) -> Vec<String> {
    let files = ca.issue(fleet.dir.path(), id);
    let ca_file = fleet.path("ca.pem");
    ca.write_cert(&ca_file);
    vec![
        "--tls-cert".into(),
        files.cert.display().to_string(),
        "--tls-key".into(),
        files.key.display().to_string(),
        "--ca".into(),
        ca_file.display().to_string(),
    ]
}

fn strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

/// Waits until `shoal ls --ca` (over HTTPS to the tracker) lists `holders` complete holders of
/// `content`.
fn wait_holders_over_tls(fleet: &Fleet, content: &str, holders: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let tracker = format!("https://127.0.0.1:{}", fleet.tracker.port);
    let (token, ca) = (fleet.path("admin-token"), fleet.path("ca.pem"));
    let (token, ca) = (token.display().to_string(), ca.display().to_string());
    loop {
        let listed = common::finish(
            common::shoal(&[
                "ls",
                "--tracker",
                &tracker,
                "--token-file",
                &token,
                "--ca",
                &ca,
            ])
            .spawn()
            .expect("spawn shoal ls"),
        );
        assert_code(&listed, 0);
        let complete = listed
            .stdout
            .lines()
            .find(|line| line.starts_with(content))
            .and_then(|line| line.split_whitespace().nth(3)?.parse::<u32>().ok());
        if complete >= Some(holders) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{content} never had {holders} complete holders:\n{}",
            listed.stdout
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_tracker_and_agents_on_tls_with_a_private_ca_complete_a_swarm() {
    let ca = TestCa::new();
    let fleet = Fleet::start_tls(&ca);
    let data = random_bytes(4 * MIB, 21);
    let share = fleet.share("share", "disk.img", &data);
    let seed = fleet.agent("a", Some(&share), &strs(&tls_flags(&fleet, &ca, "a")));
    let b = fleet.agent("b", None, &strs(&tls_flags(&fleet, &ca, "b")));
    // c's TCP control listener serves HTTPS too.
    let control = common::free_port();
    let mut c_flags = tls_flags(&fleet, &ca, "c");
    c_flags.extend(["--control-listen".into(), format!("127.0.0.1:{control}")]);
    let c = fleet.agent("c", None, &strs(&c_flags));
    let id = content_id(&data);
    wait_holders_over_tls(&fleet, &id, 1);

    // Only the seed holds it: b and c fetch its pieces from it (and each other) over HTTPS.
    let what = format!("shoal:blake3:{id}");
    let through_tls = common::get(
        fleet.dir.path(),
        &["--progress", "none", &what, "-o", "out-c"],
    )
    .arg("--agent")
    .arg(format!("https://127.0.0.1:{control}"))
    .arg("--agent-token-file")
    .arg(c.data.join("control.token"))
    .arg("--ca")
    .arg(fleet.path("ca.pem"))
    .spawn()
    .expect("spawn shoal get");
    let gets = [fleet.get(&b, &what, "out-b"), through_tls];
    for get in gets {
        done(get, &fleet, &["a", "b", "c"]);
    }
    fleet.assert_file("out-b", &data);
    fleet.assert_file("out-c", &data);
    wait_holders_over_tls(&fleet, &id, 3);
    for agent in ["a", "b", "c"] {
        assert!(
            !fleet.log(agent).contains("pass --ca"),
            "{agent} refused a certificate:\n{}",
            fleet.log(agent)
        );
    }

    // The seed's piece server answers no plain HTTP, with or without the token.
    let mut plain = TcpStream::connect((Ipv4Addr::LOCALHOST, seed.port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "GET /v1/pieces/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {FLEET}\r\n\
         Range: bytes=0-1023\r\nConnection: close\r\n\r\n"
    );
    // The server may close on the first bytes, before the rest is written (a broken pipe):
    // what it answered, if anything, is what is checked.
    let _ = plain.write_all(request.as_bytes());
    let mut answer = Vec::new();
    // A TLS server closes (or sends an alert) on bytes that are no handshake.
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn an_agent_without_ca_refuses_the_private_cas_tracker_and_says_to_pass_ca() {
    let ca = TestCa::new();
    let fleet = Fleet::start_tls(&ca);
    let _agent = fleet.agent("lone", None, &[]);
    let tracker = format!("https://127.0.0.1:{}", fleet.tracker.port);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Bounded by the deadline.
    let warning = loop {
        let log = fleet.log("lone");
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("not signed by a trusted CA"))
        {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no certificate refusal within 30 s:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(warning.contains(&tracker), "{warning}");
    assert!(warning.contains("pass --ca FILE"), "{warning}");
}

#[test]
fn an_agent_with_a_ca_file_that_is_no_pem_exits_naming_it() {
    let fleet = Fleet::start();
    let bad = fleet.path("not-a-ca.pem");
    std::fs::write(&bad, "hello\n").unwrap();
    let data = fleet.path("bad-data");
    let mut cmd = fleet.agent_command("bad", common::free_port(), &data, "bad.log");
    cmd.arg("--ca").arg(&bad);
    let status = cmd.status().expect("run shoal agent");
    assert_eq!(status.code(), Some(2));
    let log = fleet.log("bad");
    assert!(
        log.contains(&bad.display().to_string()) && log.contains("PEM"),
        "{log}"
    );
}

#[test]
fn get_trusts_a_private_ca_given_with_ca_and_refuses_it_without() {
    let origin = Origin::start_blocking(OriginConfig {
        content: random_bytes(2 * MIB, 5),
        tls: true,
        ..OriginConfig::default()
    });
    let dir = TempDir::new().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, origin.ca_cert_pem().unwrap()).unwrap();
    let url = origin.url("/file.bin");

    let refused = run(dir.path(), &["--max-tries", "1", "-o", "no-ca.bin", &url]);
    assert_code(&refused, 3);
    assert!(
        refused.stderr.contains(&url) && refused.stderr.contains("pass --ca FILE"),
        "{}",
        refused.stderr
    );
    assert!(!dir.path().join("no-ca.bin").exists());

    let ca_arg = ca.display().to_string();
    let trusted = run(dir.path(), &["--ca", &ca_arg, "-o", "out.bin", &url]);
    assert_code(&trusted, 0);
    assert_saved(&dir.path().join("out.bin"), &origin);

    let missing = dir.path().join("missing.pem").display().to_string();
    let bad = run(dir.path(), &["--ca", &missing, "-o", "x.bin", &url]);
    assert_code(&bad, 2);
    assert!(bad.stderr.contains(&missing), "{}", bad.stderr);
}
