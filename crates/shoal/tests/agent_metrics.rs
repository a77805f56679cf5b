//! The agent's `/metrics` and `/healthz` as an operator's Prometheus and probes see them,
//! through real processes: the text parses with Prometheus' own Python parser
//! (`prometheus-client`, which scripts/test installs in its virtualenv; without it the test
//! says SKIP for that part and checks the samples itself), counters move while a download
//! runs, `promtool check metrics` finds nothing to say of the agent's and the tracker's names
//! (SKIP without it), and health turns 503 with a reason when the tracker is gone for longer
//! than its lease or the data directory cannot be written.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_testkit::{random_bytes, Origin, OriginConfig};

const SECRET: &str = "fleet-secret-aaaaaaaaaaaa";

/// A child process killed on drop, unless taken back.
struct Killed(Option<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(command: &mut Command) -> Child {
    command
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn shoal")
}

/// `shoal tracker` with leases of `lease` seconds; its port.
fn tracker(dir: &Path, lease: &str) -> (Killed, u16) {
    let tokens = dir.join("tokens.toml");
    std::fs::write(
        &tokens,
        format!("[[token]]\nname = \"fleet\"\nsecret = \"{SECRET}\"\nrole = \"agent\"\n"),
    )
    .unwrap();
    let port = common::free_port();
    let mut child = spawn(
        Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["tracker", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--lease", lease])
            .arg("--tokens")
            .arg(&tokens)
            .arg("--data")
            .arg(dir.join("tracker")),
    );
    common::wait_listening(&mut child, port, "shoal tracker");
    (Killed(Some(child)), port)
}

/// `shoal agent` reporting to the tracker on `tracker_port`; its listener's port.
fn agent(dir: &Path, data: &Path, tracker_port: u16) -> (Killed, u16) {
    std::fs::write(dir.join("token"), SECRET).unwrap();
    let port = common::free_port();
    let mut child = spawn(
        Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["agent", "--id", "metrics-1"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--tracker", &format!("http://127.0.0.1:{tracker_port}/")])
            .arg("--token-file")
            .arg(dir.join("token"))
            .arg("--data")
            .arg(data),
    );
    common::wait_listening(&mut child, port, "shoal agent");
    (Killed(Some(child)), port)
}

/// `GET path` on loopback: the status and body.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    (status, body)
}

/// A sample's name with its labels, as written: `name{a="b",c="d"}`.
type Samples = BTreeMap<String, f64>;

/// The samples of an exposition, read line by line (the format is simple enough, and the
/// real parser checks the syntax where it is installed).
fn samples(text: &str) -> Samples {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').expect("name value");
            (name.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

fn scrape(port: u16) -> Samples {
    let (status, text) = get(port, "/metrics");
    assert_eq!(status, 200, "{text}");
    samples(&text)
}

fn value(samples: &Samples, name: &str) -> f64 {
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("no sample {name} in {samples:#?}"))
}

/// Parses `text` with prometheus_client's parser: the families' names and types, or why it
/// could not run.
fn parse_with_prometheus(text: &str) -> Result<BTreeMap<String, String>, String> {
    const PARSE: &str = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        for f in text_string_to_metric_families(sys.stdin.read()):\n    print(f.name, f.type)\n";
    let python = std::env::var("SHOAL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import prometheus_client"])
        .output()
        .map_err(|e| format!("{python} cannot run: {e}"))?;
    if !probe.status.success() {
        return Err(format!(
            "{python} has no prometheus_client (pip install prometheus-client)"
        ));
    }
    let mut child = Command::new(&python)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (name, kind) = line.split_once(' ').unwrap();
            (name.to_string(), kind.to_string())
        })
        .collect())
}

/// Runs `promtool check metrics` (Prometheus' own linter of names, types, units and help) on
/// `text`: `Ok` with what it found wrong (nothing when clean), or why it could not run.
fn promtool_check(text: &str) -> Result<String, String> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            return Err(format!(
                "promtool cannot run ({e}); apt-get install prometheus"
            ))
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(if out.status.success() {
        String::new()
    } else {
        said
    })
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + common::DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_parse_and_move_while_a_download_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (_tracker, tracker_port) = tracker(dir.path(), "30");
    let data = dir.path().join("data");
    let (_agent, port) = agent(dir.path(), &data, tracker_port);
    let registered = "shoal_agent_tracker_request_duration_seconds_count\
                      {method=\"PUT\",route=\"/v1/agents/{id}\"}";
    wait_for("the agent to register", || {
        scrape(port).get(registered).is_some_and(|&n| n >= 1.0)
    });

    let (status, text) = get(port, "/metrics");
    assert_eq!(status, 200);
    match parse_with_prometheus(&text) {
        Ok(families) => {
            for (family, kind) in [
                ("shoal_agent_served_bytes", "counter"),
                ("shoal_agent_received_bytes", "counter"),
                ("shoal_agent_pieces_verified", "counter"),
                ("shoal_agent_pieces_rejected", "counter"),
                ("shoal_agent_active_uploads", "gauge"),
                ("shoal_agent_active_downloads", "gauge"),
                ("shoal_agent_cache_bytes", "gauge"),
                ("shoal_agent_cache_evictions", "counter"),
                ("shoal_agent_tracker_request_duration_seconds", "histogram"),
                ("shoal_agent_tracker_request_errors", "counter"),
                ("shoal_agent_tracker_unreachable_seconds", "gauge"),
            ] {
                assert_eq!(
                    families.get(family).map(String::as_str),
                    Some(kind),
                    "{family} in {families:?}"
                );
            }
        }
        Err(why) => eprintln!("SKIP (Prometheus parser): {why}; checked the samples only"),
    }
    let (status, tracker_text) = get(tracker_port, "/metrics");
    assert_eq!(status, 200);
    for (whose, text) in [("agent", &text), ("tracker", &tracker_text)] {
        match promtool_check(text) {
            Ok(problems) => assert!(
                problems.is_empty(),
                "promtool on the {whose}'s /metrics: {problems}\n{text}"
            ),
            Err(why) => eprintln!("SKIP (promtool, {whose}): {why}"),
        }
    }
    let before = samples(&text);
    let origin_bytes = "shoal_agent_received_bytes_total{source=\"origin\"}";
    assert_eq!(value(&before, origin_bytes), 0.0);
    assert_eq!(value(&before, "shoal_agent_active_downloads"), 0.0);

    // 6 MiB at 2 MiB/s: the download takes at least three seconds, however fast the machine.
    let size = 6 << 20;
    let origin = Origin::start_blocking(OriginConfig {
        content: random_bytes(size, 21),
        rate_limit: Some(2 << 20),
        ..OriginConfig::default()
    });
    let url = origin.url("/big.bin");
    let socket = format!("unix:{}", data.join("control.sock").display());
    let mut get_run = Killed(Some(
        common::get(
            dir.path(),
            &["--agent", &socket, "--progress", "none", &url, "-o", "out"],
        )
        .spawn()
        .unwrap(),
    ));
    let mut seen_midway = None;
    wait_for("bytes counted while the download runs", || {
        let now = scrape(port);
        let bytes = value(&now, origin_bytes);
        if bytes > 0.0 && bytes < size as f64 && value(&now, "shoal_agent_active_downloads") == 1.0
        {
            seen_midway = Some(now);
        }
        seen_midway.is_some()
    });
    let finished = common::finish(get_run.0.take().unwrap());
    common::assert_code(&finished, 0);
    common::assert_saved(&dir.path().join("out"), &origin);

    let after = scrape(port);
    let midway = seen_midway.unwrap();
    assert!(value(&after, origin_bytes) >= size as f64, "{after:#?}");
    assert_eq!(value(&after, "shoal_agent_active_downloads"), 0.0);
    assert_eq!(value(&after, "shoal_agent_cache_bytes"), size as f64);
    let verified = "shoal_agent_pieces_verified_total";
    assert!(
        value(&after, verified) > value(&midway, verified),
        "{after:#?}"
    );
    assert_eq!(value(&after, "shoal_agent_pieces_rejected_total"), 0.0);
    assert_eq!(value(&after, "shoal_agent_served_bytes_total"), 0.0);
    let published = "shoal_agent_tracker_request_duration_seconds_count\
                     {method=\"POST\",route=\"/v1/swarms/{id}/digests\"}";
    assert!(value(&after, published) >= 1.0, "{after:#?}");
    assert_eq!(
        value(&after, "shoal_agent_tracker_unreachable_seconds"),
        0.0
    );
}

#[test]
fn health_names_a_tracker_gone_past_its_lease_and_an_unwritable_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (tracker, tracker_port) = tracker(dir.path(), "2");
    let data: PathBuf = dir.path().join("data");
    let (_agent, port) = agent(dir.path(), &data, tracker_port);
    wait_for("the agent to register", || {
        scrape(port)
            .keys()
            .any(|k| k.starts_with("shoal_agent_tracker_request_duration_seconds_count"))
    });
    assert_eq!(get(port, "/healthz"), (200, "ok\n".to_string()));

    drop(tracker);
    let mut last = (0, String::new());
    wait_for("healthz to say the tracker is gone", || {
        last = get(port, "/healthz");
        last.0 == 503
    });
    assert!(
        last.1.contains(&format!(
            "the tracker http://127.0.0.1:{tracker_port}/ has not answered"
        )) && last.1.contains("longer than its 2s lease"),
        "{}",
        last.1
    );
    let errors = scrape(port);
    assert!(
        errors.iter().any(
            |(k, v)| k.starts_with("shoal_agent_tracker_request_errors_total")
                && k.contains("kind=\"unreachable\"")
                && *v >= 1.0
        ),
        "{errors:#?}"
    );

    // Root writes anywhere, so the directory is taken away rather than made read-only.
    std::fs::rename(&data, dir.path().join("moved")).unwrap();
    wait_for("healthz to name the data directory", || {
        last = get(port, "/healthz");
        last.1.contains("the data directory")
    });
    assert_eq!(last.0, 503);
    assert!(
        last.1.contains(&format!(
            "the data directory {} cannot be written",
            data.display()
        )),
        "{}",
        last.1
    );
}
