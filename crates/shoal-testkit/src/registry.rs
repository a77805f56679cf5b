//! A real OCI registry for tests: Debian's `docker-registry` (the CNCF distribution registry)
//! serving a temporary directory on a free loopback port, optionally behind htpasswd (Basic)
//! authentication, with its access log kept so a test can count what it sent.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `docker-registry` package puts the binary.
const DEFAULT_BINARY: &str = "/usr/bin/docker-registry";
/// Where Debian's `apache2-utils` puts `htpasswd`.
const HTPASSWD: &str = "/usr/bin/htpasswd";
/// How long `start` waits for the registry to accept connections.
const START_LIMIT: Duration = Duration::from_secs(10);
/// Fresh ports to try when another process grabbed the one picked.
const PORT_ATTEMPTS: u32 = 5;

/// A user the registry knows, for [`RegistryConfig::auth`].
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl Credentials {
    /// `user:password`, as skopeo's `--creds` takes it.
    pub fn joined(&self) -> String {
        format!("{}:{}", self.user, self.password)
    }

    /// The `Authorization: Basic …` value for these credentials.
    pub fn basic(&self) -> String {
        format!("Basic {}", crate::http1::base64(&self.joined()))
    }
}

/// How to run the registry.
#[derive(Clone, Debug, Default)]
pub struct RegistryConfig {
    /// When set, every request needs these credentials (htpasswd, bcrypt by `htpasswd -B`);
    /// others get `401` with `WWW-Authenticate: Basic realm="shoal-test"`.
    pub auth: Option<Credentials>,
}

/// A running registry; dropping it kills the process and removes its directory (storage
/// included).
pub struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts `docker-registry serve CONFIG` and waits until it answers `/v2/`.
    ///
    /// # Errors
    /// When the binary (or `htpasswd`, with auth) is missing, or the registry exits or does
    /// not answer within 10 s; the error carries the registry's log.
    pub fn start(config: RegistryConfig) -> io::Result<Registry> {
        let binary = PathBuf::from(DEFAULT_BINARY);
        if !binary.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "docker-registry not found at {} (apt-get install docker-registry)",
                    binary.display()
                ),
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("shoal-registry-")
            .tempdir()?;
        if let Some(credentials) = &config.auth {
            write_htpasswd(&dir.path().join("htpasswd"), credentials)?;
        }
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let conf = dir.path().join("config.yml");
            fs::write(&conf, render(&config, dir.path(), port))?;
            match launch(&binary, dir.path(), &conf, port)? {
                Launch::Up(child) => return Ok(Registry { child, port, dir }),
                Launch::PortTaken(error) => last_error = Some(error),
                Launch::Failed(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("docker-registry did not start")))
    }

    /// `127.0.0.1:PORT`, the registry's host as image references name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// The loopback port the registry listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The registry's output so far: its access log (combined format, one line per request)
    /// and its warnings.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The body bytes of every `GET` of blob `sha256:HEX` the registry answered `200` or `206`
    /// (a range), in order (any repository name).
    pub fn blob_gets(&self, hex: &str) -> Vec<u64> {
        let blob = format!("/blobs/sha256:{hex}");
        access_lines(&self.log())
            .filter(|line| line.answered_get() && line.path.ends_with(&blob))
            .map(|line| line.bytes)
            .collect()
    }

    /// The body bytes of every `GET` of any blob the registry answered `200` or `206`, summed:
    /// its egress for layers and configs.
    pub fn blob_bytes_sent(&self) -> u64 {
        access_lines(&self.log())
            .filter(AccessLine::answered_get)
            .filter(|line| line.path.contains("/blobs/"))
            .map(|line| line.bytes)
            .sum()
    }

    /// Where the registry keeps blob `sha256:HEX` (its filesystem storage driver serves the file
    /// as it is, so a test can make the registry send wrong bytes by rewriting it).
    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One access-log line: `IP - - [time] "METHOD PATH HTTP/1.1" STATUS BYTES "referer" "agent"`.
struct AccessLine<'a> {
    method: &'a str,
    path: &'a str,
    status: u16,
    bytes: u64,
}

impl AccessLine<'_> {
    /// A `GET` that sent its body, whole or a range of it.
    fn answered_get(&self) -> bool {
        self.method == "GET" && matches!(self.status, 200 | 206)
    }
}

fn access_lines(log: &str) -> impl Iterator<Item = AccessLine<'_>> {
    log.lines().filter_map(|line| {
        let (_, rest) = line.split_once("] \"")?;
        let (request, rest) = rest.split_once("\" ")?;
        let mut request = request.split(' ');
        let (method, path) = (request.next()?, request.next()?);
        let mut numbers = rest.split(' ');
        let status = numbers.next()?.parse().ok()?;
        let bytes = numbers.next()?.parse().unwrap_or(0);
        Some(AccessLine {
            method,
            path,
            status,
            bytes,
        })
    })
}

fn write_htpasswd(path: &Path, credentials: &Credentials) -> io::Result<()> {
    let output = Command::new(HTPASSWD)
        .args(["-Bbn", &credentials.user, &credentials.password])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{HTPASSWD}: {e} (apt-get install apache2-utils)"),
            )
        })?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "htpasswd failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    fs::write(path, output.stdout)
}

enum Launch {
    Up(Child),
    PortTaken(io::Error),
    Failed(io::Error),
}

fn launch(binary: &Path, dir: &Path, conf: &Path, port: u16) -> io::Result<Launch> {
    let log = fs::File::create(dir.join("registry.log"))?;
    let mut child = Command::new(binary)
        .arg("serve")
        .arg(conf)
        .env_remove("REGISTRY_HTTP_ADDR")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("spawn {}: {e}", binary.display())))?;
    let deadline = Instant::now() + START_LIMIT;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // Bounded by START_LIMIT.
    loop {
        if let Some(status) = child.try_wait()? {
            let log = fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
            let error = io::Error::other(format!("docker-registry exited ({status}):\n{log}"));
            return Ok(if log.contains("address already in use") {
                Launch::PortTaken(error)
            } else {
                Launch::Failed(error)
            });
        }
        if answers_v2(addr) {
            return Ok(Launch::Up(child));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
            return Ok(Launch::Failed(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("docker-registry did not answer on {addr} within {START_LIMIT:?}:\n{log}"),
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a registry (and not whoever else may hold the port) answers `GET /v2/`: its answer
/// carries `Docker-Distribution-Api-Version`.
fn answers_v2(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let request = format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.take(64 * 1024).read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .to_ascii_lowercase()
        .contains("docker-distribution-api-version")
}

fn render(config: &RegistryConfig, dir: &Path, port: u16) -> String {
    let dir = dir.display();
    let mut conf = format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: \"{dir}/data\"\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: shoal-test-secret\n"
    );
    if config.auth.is_some() {
        conf.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: shoal-test\n    path: \"{dir}/htpasswd\"\n"
        ));
    }
    conf
}

/// A port that was free a moment ago; the registry may still lose a race for it, hence the
/// retries.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_read_method_path_status_and_bytes() {
        let log = "time=\"x\" level=warning msg=\"No HTTP secret\"\n\
                   127.0.0.1 - - [02/Dec/2026:08:02:54 +0000] \"GET /v2/a/blobs/sha256:ab HTTP/1.1\" 200 1234 \"\" \"skopeo\"\n\
                   127.0.0.1 - - [02/Dec/2026:08:02:54 +0000] \"HEAD /v2/a/blobs/sha256:ab HTTP/1.1\" 200 0 \"\" \"skopeo\"\n";
        let lines: Vec<_> = access_lines(log)
            .map(|l| (l.method, l.path, l.status, l.bytes))
            .collect();
        assert_eq!(
            lines,
            [
                ("GET", "/v2/a/blobs/sha256:ab", 200, 1234),
                ("HEAD", "/v2/a/blobs/sha256:ab", 200, 0)
            ]
        );
    }
}
