//! The registry mirror on the agents' proxy listener, with real binaries: a `docker-registry`
//! the test pushes an image of random layers to, `shoal tracker` and `shoal agent`s, and
//! `skopeo copy` pulling through an agent's mirror (a `registries.conf` whose registry is a
//! dead loopback port, so that skopeo cannot fall back to the registry behind the mirror's
//! back).

mod common;
mod fleet;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fleet::{Fleet, Process, MIB};
use shoal_testkit::{sha256_hex, Credentials, OciImage, Registry, RegistryConfig};

/// An agent whose proxy listener mirrors `registry`.
struct Mirror {
    agent: Process,
    port: u16,
}

/// Starts the registry, or says SKIP when `docker-registry` (or skopeo) is not installed.
fn registry(config: RegistryConfig) -> Option<Registry> {
    if !Path::new("/usr/bin/skopeo").exists() {
        println!("SKIP: skopeo is not installed (apt-get install skopeo)");
        return None;
    }
    match Registry::start(config) {
        Ok(registry) => Some(registry),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("SKIP: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn mirror(fleet: &Fleet, id: &str, registry: &Registry) -> Mirror {
    let port = common::free_port();
    let mut agent = fleet.agent(
        id,
        None,
        &[
            "--proxy-listen",
            &format!("127.0.0.1:{port}"),
            "--registry-upstream",
            &registry.url(),
        ],
    );
    common::wait_listening(&mut agent.child, port, "the agent's proxy listener");
    Mirror { agent, port }
}

/// A `registries.conf` sending pulls of `127.0.0.1:DEAD/...` to the mirror on `port`.
fn registries_conf(fleet: &Fleet, name: &str, port: u16) -> (PathBuf, String) {
    let dead = common::free_port();
    let path = fleet.path(name);
    std::fs::write(
        &path,
        format!(
            "[[registry]]\nlocation = \"127.0.0.1:{dead}\"\ninsecure = true\n\
             [[registry.mirror]]\nlocation = \"127.0.0.1:{port}\"\ninsecure = true\n"
        ),
    )
    .unwrap();
    (path, format!("127.0.0.1:{dead}"))
}

/// `skopeo copy docker://HOST/NAME:TAG dir:OUT` through the mirror on `port`; the exit code
/// and skopeo's stderr.
fn pull(
    fleet: &Fleet,
    port: u16,
    reference: &str,
    out: &str,
    credentials: Option<&Credentials>,
) -> (i32, String) {
    let (conf, host) = registries_conf(fleet, &format!("{out}.conf"), port);
    let mut skopeo = Command::new("skopeo");
    skopeo
        .arg("--registries-conf")
        .arg(&conf)
        .args(["--insecure-policy", "copy", "--retry-times", "0"])
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY");
    // skopeo never sends a registry's credentials (--src-creds) to its mirror: it sends those
    // stored for the mirror's own address, as `podman login 127.0.0.1:PORT` stores them.
    let auths = match credentials {
        Some(c) => {
            let auth = c.basic().trim_start_matches("Basic ").to_string();
            serde_json::json!({ format!("127.0.0.1:{port}"): { "auth": auth } })
        }
        None => serde_json::json!({}),
    };
    let authfile = fleet.path(&format!("{out}.auth.json"));
    std::fs::write(&authfile, serde_json::json!({ "auths": auths }).to_string()).unwrap();
    skopeo.arg("--authfile").arg(&authfile);
    let child = skopeo
        .arg(format!("docker://{host}/{reference}"))
        .arg(format!("dir:{}", fleet.path(out).display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn skopeo");
    let done = common::finish(child);
    (done.code, done.stderr)
}

/// Every layer of `image` in the `dir:` copy `out`, hashing to its digest.
fn assert_layers(fleet: &Fleet, out: &str, image: &OciImage) {
    for layer in &image.layers {
        let path = fleet.path(out).join(&layer.hex);
        assert_eq!(
            common::sha256_of(&path),
            layer.hex,
            "{} in {out}",
            layer.digest()
        );
    }
}

/// The agent's `shoal_agent_received_bytes_total` from `source` (`origin` or `peer`).
fn received(mirror: &Mirror, source: &str) -> u64 {
    let (status, _, body, _) = raw_get(mirror.agent.port, "/metrics", &[]);
    assert_eq!(status, 200);
    let sample = format!("shoal_agent_received_bytes_total{{source=\"{source}\"}} ");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|line| line.strip_prefix(sample.as_str()))
        .map(|value| value.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or_else(|| panic!("no {sample} in /metrics"))
}

/// One `GET` through the mirror on `port`: the status, the header block (lowercased) and the
/// body, and whether the body was whole (as long as its `Content-Length`).
fn raw_get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>, bool) {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let whole_read = stream.read_to_end(&mut answer).is_ok();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let body = answer[split + 4..].to_vec();
    let status = head[9..12].parse().unwrap();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|l| l.trim().parse::<usize>().unwrap());
    let whole = whole_read && length.is_none_or(|l| l == body.len());
    (status, head, body, whole)
}

#[test]
fn an_image_pulled_through_two_agents_leaves_the_registry_about_once() {
    let Some(registry) = registry(RegistryConfig::default()) else {
        return;
    };
    let fleet = Fleet::start();
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::build(dir.path(), "v1", &[3 * MIB, 2 * MIB + 5000, MIB / 2], 70).unwrap();
    image.push(&registry, "team/app", None).unwrap();
    // The same layers under another name: one content in the swarm.
    image.push(&registry, "other/app", None).unwrap();
    let a = mirror(&fleet, "a", &registry);
    let b = mirror(&fleet, "b", &registry);

    let (code, stderr) = pull(&fleet, a.port, "team/app:v1", "out-a", None);
    assert_eq!(code, 0, "skopeo through a: {stderr}\n{}", fleet.log("a"));
    assert_layers(&fleet, "out-a", &image);
    let (code, stderr) = pull(&fleet, b.port, "other/app:v1", "out-b", None);
    assert_eq!(code, 0, "skopeo through b: {stderr}\n{}", fleet.log("b"));
    assert_layers(&fleet, "out-b", &image);

    // What the agents' downloads read from the registry. The registry's own log counts what it
    // wrote into sockets, which overstates a request the leader cuts short (its first range
    // becomes several) by up to a socket buffer, megabytes on loopback.
    let from_registry = received(&a, "origin") + received(&b, "origin");
    let blobs = image.blobs_size();
    assert!(
        from_registry >= image.layers.iter().map(|l| l.size).sum::<u64>()
            && from_registry <= blobs + blobs / 10,
        "the agents read {from_registry} bytes from the registry for two pulls of {blobs} bytes of blobs\n--- a:\n{}\n--- b:\n{}",
        fleet.log("a"),
        fleet.log("b")
    );
    assert!(
        received(&b, "peer") >= image.layers[0].size,
        "b's pull did not come from a:\n{}",
        fleet.log("b")
    );
    for layer in &image.layers {
        assert!(
            !registry.blob_gets(&layer.hex).is_empty(),
            "{} never left the registry",
            layer.digest()
        );
    }
    drop((a.agent, b.agent));
}

/// The tracker hears that the agent holds a blob before it maps the blob's digest to it: an
/// agent that finds the mapping finds a peer too. (When the holding came only with the
/// announcer's next batch, an agent pulling in between read the whole layer from the
/// registry, the swarm's origin, with no peer to ask.)
#[test]
fn a_blob_is_held_at_the_tracker_before_its_digest_is_mapped_to_it() {
    let Some(registry) = registry(RegistryConfig::default()) else {
        return;
    };
    let fleet = Fleet::start();
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::build(dir.path(), "v1", &[2 * MIB, MIB + 7], 71).unwrap();
    image.push(&registry, "team/app", None).unwrap();
    let a = mirror(&fleet, "a", &registry);
    let latest = |hex: &str| {
        fleet.tracker_call(
            "GET",
            &format!("/v1/urls/latest?url=https%3A%2F%2Fsha256.invalid%2F{hex}"),
        )
    };
    std::thread::scope(|scope| {
        let pulled = scope.spawn(|| pull(&fleet, a.port, "team/app:v1", "out-a", None));
        // Each layer's mapping is looked at as soon as it appears, with the holders then.
        let mut pending: Vec<&str> = image.layers.iter().map(|l| l.hex.as_str()).collect();
        let deadline = std::time::Instant::now() + common::DEADLINE;
        while !pending.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "never mapped: {pending:?}\n{}",
                fleet.log("a")
            );
            pending.retain(|hex| {
                let (status, mapping) = latest(hex);
                if status != 200 {
                    return true;
                }
                let mapping: serde_json::Value = serde_json::from_str(&mapping).unwrap();
                let content = mapping["content"].as_str().expect("a content id");
                let (status, peers) =
                    fleet.tracker_call("GET", &format!("/v1/content/{content}/peers"));
                assert_eq!(status, 200, "{peers}");
                assert!(
                    peers.contains("\"a\""),
                    "sha256:{hex} mapped to {content}, which nobody holds yet: {peers}"
                );
                false
            });
            std::thread::sleep(Duration::from_millis(2));
        }
        let (code, stderr) = pulled.join().unwrap();
        assert_eq!(code, 0, "skopeo through a: {stderr}\n{}", fleet.log("a"));
    });
    assert_layers(&fleet, "out-a", &image);
    drop(a.agent);
}

/// A client asking for a layer starts the download of the next one (read-ahead 1), and its
/// request for that layer is then served from it: the registry sends the layer once. A
/// manifest alone starts nothing, and nothing past the next layer starts.
#[test]
fn a_layer_asked_for_starts_the_next_and_a_manifest_alone_starts_none() {
    let Some(registry) = registry(RegistryConfig::default()) else {
        return;
    };
    let fleet = Fleet::start();
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::build(dir.path(), "v1", &[2 * MIB, 3 * MIB, MIB], 71).unwrap();
    image.push(&registry, "team/app", None).unwrap();
    let a = mirror(&fleet, "a", &registry);
    let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
    let (status, _, manifest, whole) = raw_get(a.port, "/v2/team/app/manifests/v1", &accept);
    assert_eq!((status, whole), (200, true));
    assert_eq!(
        sha256_hex(&manifest),
        image.manifest.hex,
        "the manifest as sent"
    );
    // A download the manifest started would have asked the registry by now.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(registry.blob_bytes_sent(), 0, "{}", registry.log());

    let blob = |n: usize| format!("/v2/team/app/blobs/{}", image.layers[n].digest());
    let (status, _, first, whole) = raw_get(a.port, &blob(0), &[]);
    assert_eq!((status, whole), (200, true));
    assert_eq!(sha256_hex(&first), image.layers[0].hex);
    let next = &image.layers[1];
    let fetched = || registry.blob_gets(&next.hex).iter().sum::<u64>();
    let deadline = std::time::Instant::now() + common::DEADLINE;
    while fetched() < next.size {
        assert!(
            std::time::Instant::now() < deadline,
            "the next layer was not fetched ahead:\n{}\n{}",
            registry.log(),
            fleet.log("a")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Settled: the download ahead is whole and its requests (a probe of a byte or so, the
    // body) are in the registry's log.
    std::thread::sleep(Duration::from_millis(300));
    let fetched_ahead = fetched();
    assert!(fetched_ahead < next.size + 1024, "{}", registry.log());
    assert!(registry.blob_gets(&image.layers[2].hex).is_empty());

    let (status, _, second, whole) = raw_get(a.port, &blob(1), &[]);
    assert_eq!((status, whole), (200, true));
    assert_eq!(sha256_hex(&second), next.hex);
    assert!(
        fetched() < fetched_ahead + 1024,
        "the layer fetched ahead was fetched again ({} bytes, then {}):\n{}",
        fetched_ahead,
        fetched(),
        fleet.log("a")
    );
    drop(a.agent);
}

#[test]
fn a_private_registry_answers_for_its_blobs_even_when_a_peer_holds_them() {
    let user = Credentials {
        user: "ci".into(),
        password: "pull-secret-1".into(),
    };
    let Some(registry) = registry(RegistryConfig {
        auth: Some(user.clone()),
    }) else {
        return;
    };
    let fleet = Fleet::start();
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::build(dir.path(), "v1", &[2 * MIB, MIB], 71).unwrap();
    image.push(&registry, "private/app", Some(&user)).unwrap();
    let a = mirror(&fleet, "a", &registry);
    let b = mirror(&fleet, "b", &registry);

    let (code, stderr) = pull(&fleet, a.port, "private/app:v1", "out-a", Some(&user));
    assert_eq!(
        code,
        0,
        "skopeo through a: {stderr}\n{}\n{}",
        fleet.log("a"),
        registry.log()
    );
    assert_layers(&fleet, "out-a", &image);

    // a holds every layer now; neither a's cache nor b's peer may hand it out unasked.
    let layer = &image.layers[0];
    let path = format!("/v2/private/app/blobs/{}", layer.digest());
    for mirror in [&a, &b] {
        let (status, head, body, _) = raw_get(mirror.port, &path, &[]);
        assert_eq!(status, 401, "{head}");
        assert!(
            head.contains("www-authenticate: basic realm=\"shoal-test\""),
            "{head}"
        );
        assert!(body.len() < 1000, "a refusal, not the layer");
        let (status, head, _, _) = raw_get(
            mirror.port,
            &path,
            &[("Authorization", "Basic Y2k6d3Jvbmc=")],
        );
        assert_eq!(status, 401, "wrong password: {head}");
    }
    let (code, _) = pull(&fleet, b.port, "private/app:v1", "out-anonymous", None);
    assert_ne!(code, 0, "an anonymous pull of a private image worked");

    let (code, stderr) = pull(&fleet, b.port, "private/app:v1", "out-b", Some(&user));
    assert_eq!(code, 0, "skopeo through b: {stderr}\n{}", fleet.log("b"));
    assert_layers(&fleet, "out-b", &image);
    let (status, _, body, whole) = raw_get(b.port, &path, &[("Authorization", &user.basic())]);
    assert_eq!((status, whole), (200, true));
    assert_eq!(sha256_hex(&body), layer.hex);
    assert!(
        received(&b, "peer") >= layer.size,
        "b's layers did not come from a:\n{}",
        fleet.log("b")
    );
}

#[test]
fn a_blob_whose_upstream_bytes_are_wrong_resets_the_client() {
    let Some(registry) = registry(RegistryConfig::default()) else {
        return;
    };
    let fleet = Fleet::start();
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::build(dir.path(), "v1", &[2 * MIB, MIB], 72).unwrap();
    image.push(&registry, "team/bad", None).unwrap();
    // Same length, one byte different, in the registry's storage: it serves it as it is.
    let bad = &image.layers[0];
    let stored = registry.blob_path(&bad.hex);
    let mut bytes = std::fs::read(&stored).unwrap();
    let last = bytes.len() - 600;
    bytes[last] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();
    let a = mirror(&fleet, "a", &registry);

    let path = format!("/v2/team/bad/blobs/{}", bad.digest());
    let (status, head, body, whole) = raw_get(a.port, &path, &[]);
    assert_eq!(status, 200, "{head}");
    assert!(
        !whole,
        "a body that does not match its digest arrived whole"
    );
    assert!(
        (body.len() as u64) < bad.size,
        "all {} bytes went out before the digest was checked",
        body.len()
    );

    let (code, stderr) = pull(&fleet, a.port, "team/bad:v1", "out", None);
    assert_ne!(
        code, 0,
        "skopeo took a layer that does not match its digest"
    );
    let out = fleet.path("out");
    let kept = out.join(&bad.hex);
    assert!(
        !kept.exists() || common::sha256_of(&kept) == bad.hex,
        "a corrupt layer was kept: {stderr}"
    );
    drop(a.agent);
}

/// containerd, in a root of its own under the test's directory; `None` (and a SKIP line) when
/// it is not installed or cannot run here.
struct Containerd {
    child: std::process::Child,
    socket: PathBuf,
}

impl Containerd {
    fn start(dir: &Path) -> Option<Containerd> {
        if !Path::new("/usr/bin/containerd").exists() || !Path::new("/usr/bin/ctr").exists() {
            println!("SKIP: containerd is not installed (apt-get install containerd)");
            return None;
        }
        let socket = dir.join("containerd.sock");
        let config = dir.join("containerd.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{}\"\n",
                dir.join("root").display(),
                dir.join("state").display(),
                socket.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let mut containerd = Containerd { child, socket };
        // Bounded: 100 tries, 100 ms apart.
        for _ in 0..100 {
            if containerd.ctr(&["version"]).0 == 0 {
                return Some(containerd);
            }
            if let Ok(Some(status)) = containerd.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default();
                println!("SKIP: containerd cannot run here ({status}): {log}");
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("SKIP: containerd did not answer within 10 s");
        None
    }

    fn ctr(&self, args: &[&str]) -> (i32, String) {
        let child = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ctr");
        let done = common::finish(child);
        (done.code, format!("{}{}", done.stdout, done.stderr))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn containerd_pulls_through_the_mirror_with_ns() {
    let Some(registry) = registry(RegistryConfig::default()) else {
        return;
    };
    let fleet = Fleet::start();
    let Some(containerd) = Containerd::start(&fleet.path("")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::build(dir.path(), "v1", &[2 * MIB, MIB], 73).unwrap();
    image.push(&registry, "team/ctr", None).unwrap();
    let a = mirror(&fleet, "a", &registry);
    // hosts.toml: the registry is the server, the agent its mirror; containerd adds ns=HOST.
    let hosts = fleet.path("certs.d").join(registry.host());
    std::fs::create_dir_all(&hosts).unwrap();
    std::fs::write(
        hosts.join("hosts.toml"),
        format!(
            "server = \"{}\"\n\n[host.\"http://127.0.0.1:{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            registry.url(),
            a.port
        ),
    )
    .unwrap();
    let reference = format!("{}/team/ctr:v1", registry.host());
    let (code, output) = containerd.ctr(&[
        "images",
        "pull",
        "--snapshotter",
        "native",
        "--hosts-dir",
        fleet.path("certs.d").to_str().unwrap(),
        &reference,
    ]);
    assert_eq!(code, 0, "ctr images pull: {output}\n{}", fleet.log("a"));
    let log = fleet.log("a");
    for layer in &image.layers {
        assert!(
            log.contains(&layer.digest()),
            "{} did not come through the mirror:\n{log}",
            layer.digest()
        );
        let (code, listed) = containerd.ctr(&["content", "ls", "-q"]);
        assert_eq!(code, 0);
        assert!(listed.contains(&layer.digest()), "{listed}");
    }
    drop(a.agent);
}
