//! The agent's HTTP proxy door (`--proxy-listen`) as users reach it: real `curl` and `wget`
//! with `http_proxy`, real `shoal agent` and `shoal tracker` processes, the testkit origin on
//! loopback. Large answers come from the swarm (one copy from the origin for the fleet),
//! everything else passes through as sent, a failure mid-stream resets the client (so does a
//! content the tracker maps the URL to that the origin disagrees with), and the proxy never
//! becomes an open proxy or a way into the agent's own ports.

mod common;
mod fleet;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet::{content_id, Fleet, Process, MIB};
use shoal_testkit::{random_bytes, sha256_hex, Origin, OriginConfig};

/// An agent of `fleet` with its proxy on a port of its own; the proxy's port.
fn proxied(fleet: &Fleet, id: &str, extra: &[&str]) -> (Process, u16) {
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--proxy-listen", listen.as_str()];
    args.extend_from_slice(extra);
    let mut agent = fleet.agent(id, None, &args);
    common::wait_listening(&mut agent.child, port, "the agent's proxy");
    (agent, port)
}

/// `tool` (`curl` or `wget`) with `http_proxy` set to the proxy on `port`, run in `dir`.
fn client(tool: &str, dir: &Path, port: u16, args: &[&str]) -> Command {
    let mut cmd = Command::new(tool);
    cmd.args(args)
        .current_dir(dir)
        .env("http_proxy", format!("http://127.0.0.1:{port}"))
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Whether `tool` runs here; says so visibly when it does not.
fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIP: {tool} is not installed (scripts/test installs it)");
    }
    found
}

fn origin(content: bytes::Bytes, rate: Option<u64>) -> Origin {
    Origin::start_blocking(OriginConfig {
        content,
        rate_limit: rate,
        ..OriginConfig::default()
    })
}

#[test]
fn curl_and_wget_through_two_agents_get_one_copy_from_the_origin() {
    if !(have("curl") && have("wget")) {
        return;
    }
    let size = 12 * MIB;
    let data = random_bytes(size, 151);
    // 16 MiB/s per connection: long enough for both clients to meet in one URL swarm.
    let origin = origin(data.clone(), Some(16 << 20));
    let fleet = Fleet::start();
    let (a, proxy_a) = proxied(&fleet, "proxy-a", &[]);
    let (b, proxy_b) = proxied(&fleet, "proxy-b", &[]);
    let url = origin.url("/models/model-7b.bin");
    let dir = fleet.dir.path();
    let curl = client(
        "curl",
        dir,
        proxy_a,
        &["-sS", "--fail", "-o", "by-curl", &url],
    )
    .spawn()
    .unwrap();
    let wget = client("wget", dir, proxy_b, &["-q", "-O", "by-wget", &url])
        .spawn()
        .unwrap();
    for (name, child) in [("curl", curl), ("wget", wget)] {
        let run = common::finish(child);
        if run.code != 0 {
            eprintln!(
                "--- proxy-a\n{}\n--- proxy-b\n{}",
                fleet.log("proxy-a"),
                fleet.log("proxy-b")
            );
        }
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
    }
    fleet.assert_file("by-curl", &data);
    fleet.assert_file("by-wget", &data);
    let sent = origin.bytes_sent();
    // One copy, and what was in flight on the two answers dropped for the swarm.
    assert!(
        sent <= size as u64 * 3 / 2,
        "the origin sent {sent} bytes for a {size}-byte file fetched by two agents"
    );
    // A client's range is answered from the same content, now in both agents.
    let before = origin.requests().len();
    let run = common::finish(
        client(
            "curl",
            dir,
            proxy_b,
            &[
                "-sS",
                "--fail",
                "-D",
                "head",
                "-r",
                "1000-1999",
                "-o",
                "range",
                &url,
            ],
        )
        .spawn()
        .unwrap(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(std::fs::read(dir.join("range")).unwrap(), &data[1000..2000]);
    let head = std::fs::read_to_string(dir.join("head"))
        .unwrap()
        .to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 206"), "{head}");
    assert!(
        head.contains(&format!("content-range: bytes 1000-1999/{size}")),
        "{head}"
    );
    assert!(
        head.contains("etag: \""),
        "the origin's ETag is kept: {head}"
    );
    // Served from the content proxy-b holds: its log says so for both of its requests.
    let served = fleet
        .log("proxy-b")
        .matches("serving through the swarm")
        .count();
    assert_eq!(served, 2, "{}", fleet.log("proxy-b"));
    // The origin sent the range only on the answer the proxy dropped: its probe.
    let after: Vec<_> = origin.requests()[before..]
        .iter()
        .map(|r| (r.range.clone(), r.body_bytes))
        .collect();
    assert!(after.iter().all(|(_, sent)| *sent <= 1000), "{after:?}");
    drop((a, b));
}

#[test]
fn small_answers_posts_and_heads_pass_through_as_sent() {
    if !have("curl") {
        return;
    }
    let data = random_bytes(200 << 10, 152);
    let origin = origin(data.clone(), None);
    let fleet = Fleet::start();
    let (_agent, proxy) = proxied(&fleet, "pass", &[]);
    let dir = fleet.dir.path();
    let url = origin.url("/small.bin?v=1");
    let run = common::finish(
        client(
            "curl",
            dir,
            proxy,
            &[
                "-sS",
                "--fail",
                "-H",
                "X-Asked: by-test",
                "-o",
                "small",
                &url,
            ],
        )
        .spawn()
        .unwrap(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        sha256_hex(&std::fs::read(dir.join("small")).unwrap()),
        sha256_hex(&data)
    );
    // Through a CONNECT tunnel: the bytes cross untouched, and the origin sees curl's request.
    let run = common::finish(
        client(
            "curl",
            dir,
            proxy,
            &["-sS", "--fail", "-p", "-o", "tunnelled", &url],
        )
        .spawn()
        .unwrap(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        sha256_hex(&std::fs::read(dir.join("tunnelled")).unwrap()),
        sha256_hex(&data)
    );
    let run = common::finish(
        client(
            "curl",
            dir,
            proxy,
            &[
                "-sS",
                "-o",
                "posted",
                "-w",
                "%{http_code}",
                "--data-binary",
                "hello",
                &url,
            ],
        )
        .spawn()
        .unwrap(),
    );
    assert_eq!(
        run.stdout.trim(),
        "405",
        "the origin's answer to the POST: {}",
        run.stderr
    );
    let run = common::finish(
        client("curl", dir, proxy, &["-sS", "--fail", "-I", &url])
            .spawn()
            .unwrap(),
    );
    assert!(
        run.stdout
            .to_ascii_lowercase()
            .contains(&format!("content-length: {}", data.len())),
        "{}",
        run.stdout
    );
    let seen: Vec<_> = origin
        .requests()
        .into_iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.headers.clone()))
        .collect();
    let methods: Vec<&str> = seen.iter().map(|(m, _, _)| m.as_str()).collect();
    assert_eq!(
        methods,
        ["GET", "GET", "POST", "HEAD"],
        "one request each, as sent"
    );
    for (_, path, headers) in &seen {
        assert_eq!(path, "/small.bin?v=1");
        let agent = headers.get("user-agent").and_then(|v| v.to_str().ok());
        assert!(agent.is_some_and(|a| a.starts_with("curl/")), "{headers:?}");
    }
    assert_eq!(seen[0].2.get("x-asked").unwrap(), "by-test");
    assert_eq!(seen[2].2.get("content-length").unwrap(), "5");
}

#[test]
fn an_origin_failing_mid_stream_resets_the_client() {
    if !have("curl") {
        return;
    }
    let size = 16 * MIB;
    let data = random_bytes(size, 153);
    // Slow enough that the origin goes down with most of the file unsent.
    let origin = origin(data, Some(1 << 20));
    let fleet = Fleet::start();
    let (_agent, proxy) = proxied(&fleet, "cut", &["--max-wait", "2s"]);
    let dir = fleet.dir.path();
    let url = origin.url("/cut.bin");
    let curl = client("curl", dir, proxy, &["-sS", "--fail", "-o", "cut", &url])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(dir.join("cut")).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < deadline, "no byte reached curl");
        std::thread::sleep(Duration::from_millis(20));
    }
    origin.go_down();
    let run = common::finish(curl);
    let got = std::fs::metadata(dir.join("cut")).map_or(0, |m| m.len());
    assert_ne!(run.code, 0, "curl took {got} of {size} bytes as complete");
    assert!(got < size as u64, "{got}");
    assert!(
        run.stderr.contains("transfer closed")
            || run.stderr.contains("(18)")
            || run.stderr.contains("(56)"),
        "curl was cut short: {}",
        run.stderr
    );
}

#[test]
fn the_proxy_never_forwards_to_the_agents_own_ports() {
    if !have("curl") {
        return;
    }
    let fleet = Fleet::start();
    let (agent, proxy) = proxied(&fleet, "own", &[]);
    let dir = fleet.dir.path();
    for port in [agent.port, proxy] {
        let url = format!("http://127.0.0.1:{port}/healthz");
        let run = common::finish(
            client(
                "curl",
                dir,
                proxy,
                &["-sS", "-o", "-", "-w", "\n%{http_code}", &url],
            )
            .spawn()
            .unwrap(),
        );
        assert!(run.stdout.ends_with("403"), "{url}: {}", run.stdout);
        assert!(
            run.stdout.contains("never forwards to the agent itself"),
            "{}",
            run.stdout
        );
        // Nor through a tunnel.
        let run = common::finish(
            client("curl", dir, proxy, &["-sS", "-p", "-o", "/dev/null", &url])
                .spawn()
                .unwrap(),
        );
        assert_ne!(run.code, 0, "a tunnel to {url} was opened");
        assert!(run.stderr.contains("403"), "{}", run.stderr);
    }
}

#[test]
fn a_non_loopback_proxy_needs_proxy_allow() {
    let fleet = Fleet::start();
    let port = common::free_port();
    let data = fleet.path("open-data");
    let run = common::finish(
        fleet
            .agent_command("open", common::free_port(), &data, "open.log")
            .args(["--proxy-listen", &format!("0.0.0.0:{port}")])
            .spawn()
            .unwrap(),
    );
    let log = fleet.log("open");
    assert_eq!(run.code, 2, "{log}");
    assert!(log.contains("--proxy-allow CIDR"), "{log}");
    assert!(log.contains(&format!("0.0.0.0:{port}")), "{log}");
}

#[test]
fn an_agent_whose_environment_names_its_own_proxy_does_not_loop() {
    if !have("curl") {
        return;
    }
    let size = 6 * MIB;
    let data = random_bytes(size, 154);
    let origin = origin(data.clone(), None);
    let fleet = Fleet::start();
    let (port, proxy) = (common::free_port(), common::free_port());
    let data_dir = fleet.path("loop-data");
    // Its own downloads go through its own proxy, as a machine-wide http_proxy makes them.
    let mut agent = fleet
        .agent_command("loop", port, &data_dir, "loop.log")
        .args(["--proxy-listen", &format!("127.0.0.1:{proxy}")])
        .env("http_proxy", format!("http://127.0.0.1:{proxy}"))
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .spawn()
        .unwrap();
    common::wait_listening(&mut agent, proxy, "the agent's proxy");
    let dir = fleet.dir.path();
    let url = origin.url("/looped.bin");
    let run = common::finish(
        client(
            "curl",
            dir,
            proxy,
            &["-sS", "--fail", "--max-time", "30", "-o", "looped", &url],
        )
        .spawn()
        .unwrap(),
    );
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, fleet.log("loop"));
    fleet.assert_file("looped", &data);
    assert!(
        fleet.log("loop").contains("sent through its proxy"),
        "{}",
        fleet.log("loop")
    );
}

/// The swarm path fails before any byte went out (an origin without ranges cannot be shared):
/// the client gets the origin's answer instead of an error.
#[test]
fn an_origin_without_ranges_still_serves_through_the_proxy() {
    if !have("curl") {
        return;
    }
    let size = 6 * MIB;
    let data = random_bytes(size, 155);
    let origin = Origin::start_blocking(OriginConfig {
        content: data.clone(),
        ranges: false,
        ..OriginConfig::default()
    });
    let fleet = Fleet::start();
    let (_agent, proxy) = proxied(&fleet, "noranges", &[]);
    let dir = fleet.dir.path();
    let url = origin.url("/whole-only.bin");
    let run = common::finish(
        client("curl", dir, proxy, &["-sS", "--fail", "-o", "whole", &url])
            .spawn()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stderr, fleet.log("noranges"));
    fleet.assert_file("whole", &data);
    // The swarm could not take it (no ranges), so the origin's answer passed through.
    let log = fleet.log("noranges");
    assert!(log.contains("passing the request through instead"), "{log}");
}

/// A `GET` of an `http://` URL sent through a proxy by hand, so that a test reads its body
/// as it comes and sees how it ends.
struct Fetching {
    tcp: TcpStream,
    status: u16,
    /// The `Content-Length` promised.
    length: usize,
    body: Vec<u8>,
}

impl Fetching {
    /// Sends the request to the proxy on `port` and reads the answer's head.
    fn start(port: u16, url: &str) -> Fetching {
        let mut tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        tcp.set_read_timeout(Some(common::DEADLINE)).unwrap();
        let host = url::Url::parse(url).unwrap();
        let host = format!("{}:{}", host.host_str().unwrap(), host.port().unwrap());
        write!(
            tcp,
            "GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0];
        while !head.ends_with(b"\r\n\r\n") {
            let read = tcp.read(&mut byte).expect("the answer's head");
            assert_eq!(read, 1, "the proxy closed before its answer's head");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .unwrap_or_else(|| panic!("no length: {head}"))
            .trim()
            .parse()
            .unwrap();
        Fetching {
            status: head[9..12].parse().unwrap(),
            tcp,
            length,
            body: Vec::new(),
        }
    }

    /// Reads until the body holds `bytes` bytes or more.
    fn read_at_least(&mut self, bytes: usize) {
        let mut chunk = vec![0; 64 << 10];
        while self.body.len() < bytes {
            let read = self.tcp.read(&mut chunk).expect("the body");
            assert_ne!(read, 0, "the body ended after {} bytes", self.body.len());
            self.body.extend_from_slice(&chunk[..read]);
        }
    }

    /// Reads to the end of the connection: `Err` when it was reset.
    fn read_to_end(&mut self) -> io::Result<()> {
        self.tcp.read_to_end(&mut self.body).map(drop)
    }
}

/// A URL mapped to another content (a publisher with the fleet's token lying): the client
/// gets the swarm's bytes as they come, while the origin holds the piece the agent checks
/// the content against; once the origin answers and the piece differs, the client's
/// connection is cut short of the promised length, never handed a wrong file as complete.
/// The agent fetches the URL from the origin instead, keeps that, and drops the other content;
/// the next request for the URL, the mapping still at the tracker, gets the origin's bytes.
#[test]
fn a_mapping_the_origin_disagrees_with_resets_a_client_that_got_its_bytes() {
    let size = 4 * MIB;
    let data = random_bytes(size, 156);
    let fake = random_bytes(size, 157);
    let origin = Origin::start_blocking(OriginConfig {
        content: data.clone(),
        // Any range but the probe's one byte: the check's piece.
        hold_ranges_of: Some(2),
        // Without validators the agent's own copy of the URL does not answer the second
        // request (see `a_version_held_already_…` in the agent): the mapping caught does.
        etag: false,
        last_modified: false,
        ..OriginConfig::default()
    });
    let url = origin.url("/poisoned.bin");
    let fleet = Fleet::start();
    let fake_dir = fleet.share("poisoner", "poisoned.bin", &fake);
    let _poisoner = fleet.agent("poisoner", Some(&fake_dir), &[]);
    let fake_id = content_id(&fake);
    fleet.wait_holders(&fake_id, 1);
    fleet.map_url(&origin, &url, &fake_id);
    let (agent, proxy) = proxied(&fleet, "checker", &[]);

    let mut answer = Fetching::start(proxy, &url);
    assert_eq!((answer.status, answer.length), (200, size));
    answer.read_at_least(MIB);
    assert_eq!(answer.body, fake[..answer.body.len()]);
    origin.release();
    let end = answer.read_to_end();
    assert!(
        answer.body.len() < size,
        "the client got all {size} bytes of another content as complete ({end:?})"
    );

    let log = || fleet.log("checker");
    fleet.wait_holders(&content_id(&data), 1);
    assert!(
        log().contains("reported a URL mapping the origin disagrees with"),
        "{}",
        log()
    );
    let objects: Vec<String> = std::fs::read_dir(agent.data.join("objects"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(objects.contains(&content_id(&data)), "{objects:?}");
    assert!(
        !objects.iter().any(|name| name.starts_with(&fake_id)),
        "{objects:?}"
    );

    let mut again = Fetching::start(proxy, &url);
    assert_eq!((again.status, again.length), (200, size));
    again.read_to_end().expect("the second answer, whole");
    assert!(
        again.body == data,
        "the second answer is not the origin's file"
    );
    assert!(
        log().contains("mapped to a content the origin disagreed with before"),
        "{}",
        log()
    );
}

/// A URL mapped to a content peers hold: the agent starts fetching it from them at once, and
/// asks the origin for the piece it checks the content against only once the first piece is
/// in, so that the client's first piece has the link to itself. With the only peer stopped
/// (SIGSTOP), the answer's head goes out (the download from peers started) and the origin has
/// not been asked for a piece; once the peer is back the client gets the file whole.
#[test]
fn a_mapped_url_is_checked_against_the_origin_only_once_a_piece_is_in() {
    let size = 4 * MIB;
    let data = random_bytes(size, 158);
    let origin = origin(data.clone(), None);
    let url = origin.url("/mapped.bin");
    let fleet = Fleet::start();
    let share = fleet.share("seeder", "mapped.bin", &data);
    let seeder = fleet.agent("seeder", Some(&share), &[]);
    let id = content_id(&data);
    fleet.wait_holders(&id, 1);
    fleet.map_url(&origin, &url, &id);
    let (_agent, proxy) = proxied(&fleet, "checker", &[]);
    let pieces_asked = || {
        origin
            .requests()
            .into_iter()
            // Not the probe's `bytes=0-0`.
            .filter_map(|r| {
                r.parsed_range
                    .filter(|&(start, end)| end.is_some_and(|end| end > start))
            })
            .collect::<Vec<_>>()
    };

    common::signal(&seeder.child, "-STOP");
    let mut answer = Fetching::start(proxy, &url);
    let asked = pieces_asked();
    common::signal(&seeder.child, "-CONT");
    assert_eq!((answer.status, answer.length), (200, size));
    assert_eq!(
        asked,
        [],
        "the origin was asked for a piece before any piece was in"
    );
    answer.read_to_end().unwrap();
    assert!(answer.body == data, "the client got other bytes");
    // The check's piece, once.
    let asked = pieces_asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    let (start, end) = asked[0];
    let piece = shoal_agent::piece_size::for_size(size as u64);
    assert_eq!(
        (start % piece, end.unwrap() + 1 - start),
        (0, piece),
        "{asked:?}"
    );
    assert!(
        fleet
            .log("checker")
            .contains("the origin agrees with the mapped content"),
        "{}",
        fleet.log("checker")
    );
}
