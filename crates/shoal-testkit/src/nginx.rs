//! A real nginx for tests: one process (`master_process off`, so killing it stops everything),
//! every file it writes inside a temporary directory, listening on a free loopback port.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `nginx-light` puts the binary.
const DEFAULT_BINARY: &str = "/usr/sbin/nginx";
/// How long `start` waits for nginx to accept connections.
const START_LIMIT: Duration = Duration::from_secs(5);
/// Fresh ports to try when another process grabbed the one picked.
const PORT_ATTEMPTS: u32 = 5;

/// How to run nginx.
#[derive(Clone, Debug, Default)]
pub struct NginxConfig {
    /// The directory served at `/`.
    pub root: PathBuf,
    /// nginx `limit_rate` per connection, e.g. `"16m"`.
    pub limit_rate: Option<String>,
    /// Directives added verbatim inside the `server` block.
    pub extra_server: Option<String>,
    /// The nginx binary (default `/usr/sbin/nginx`).
    pub binary: Option<PathBuf>,
}

/// A running nginx; dropping it kills the process and removes its directory.
pub struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx and waits until it accepts connections.
    ///
    /// # Errors
    /// When the binary is missing, `root` does not exist, or nginx exits or does not listen
    /// within 5 s; the error carries nginx's error log.
    pub fn start(config: NginxConfig) -> io::Result<Nginx> {
        let binary = config
            .binary
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BINARY));
        if !binary.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "nginx not found at {} (apt-get install nginx-light)",
                    binary.display()
                ),
            ));
        }
        let root = fs::canonicalize(&config.root).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("nginx root {}: {e}", config.root.display()),
            )
        })?;
        let dir = tempfile::Builder::new().prefix("shoal-nginx-").tempdir()?;
        let missing = missing_modules(&binary);
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let conf = dir.path().join("nginx.conf");
            fs::write(&conf, render(&config, &root, dir.path(), port, &missing))?;
            match launch(&binary, dir.path(), &conf, port)? {
                Launch::Up(child) => return Ok(Nginx { child, port, dir }),
                Launch::PortTaken(error) => last_error = Some(error),
                Launch::Failed(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("nginx did not start")))
    }

    /// `http://127.0.0.1:PORT/path`; a leading `/` in `path` is optional.
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// The loopback port nginx listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// nginx's access log so far (combined format, one line per request).
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // One process (master_process off), so SIGKILL leaves no orphaned workers behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Launch {
    Up(Child),
    PortTaken(io::Error),
    Failed(io::Error),
}

fn launch(binary: &Path, dir: &Path, conf: &Path, port: u16) -> io::Result<Launch> {
    let pid_file = dir.join("nginx.pid");
    let _ = fs::remove_file(&pid_file);
    let stderr = fs::File::create(dir.join("stderr.log"))?;
    let mut child = Command::new(binary)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("spawn {}: {e}", binary.display())))?;
    let deadline = Instant::now() + START_LIMIT;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // Bounded by START_LIMIT.
    loop {
        if let Some(status) = child.try_wait()? {
            let logs = logs(dir);
            let error = io::Error::other(format!("nginx exited ({status}):\n{logs}"));
            return Ok(if logs.contains("Address already in use") {
                Launch::PortTaken(error)
            } else {
                Launch::Failed(error)
            });
        }
        // nginx writes its pid file only after binding, so a successful connect then is to
        // nginx and not to whoever else might have taken the port meanwhile.
        let pid_written = fs::metadata(&pid_file).is_ok_and(|m| m.len() > 0);
        if pid_written && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(Launch::Up(child));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(Launch::Failed(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "nginx did not listen on {addr} within {START_LIMIT:?}:\n{}",
                    logs(dir)
                ),
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn logs(dir: &Path) -> String {
    ["stderr.log", "error.log"]
        .iter()
        .map(|name| fs::read_to_string(dir.join(name)).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("")
}

/// A port that was free a moment ago; nginx may still lose a race for it, hence the retries.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Temp-path directives whose module this nginx was built without (they would be unknown).
fn missing_modules(binary: &Path) -> Vec<&'static str> {
    let version = Command::new(binary)
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default();
    ["fastcgi", "uwsgi", "scgi", "proxy"]
        .into_iter()
        .filter(|module| version.contains(&format!("--without-http_{module}_module")))
        .collect()
}

fn render(config: &NginxConfig, root: &Path, dir: &Path, port: u16, missing: &[&str]) -> String {
    let dir = dir.display();
    let mut conf = String::new();
    // The worker would otherwise switch to `nobody`, who cannot read a root-owned temp dir.
    if running_as_root() {
        conf.push_str("user root;\n");
    }
    let _ = write!(
        conf,
        "daemon off;\n\
         master_process off;\n\
         worker_processes 1;\n\
         pid \"{dir}/nginx.pid\";\n\
         error_log \"{dir}/error.log\" warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
         \x20   access_log \"{dir}/access.log\";\n\
         \x20   client_body_temp_path \"{dir}/client_body\";\n"
    );
    // Without these, nginx creates its compiled-in temp dirs under /var/lib/nginx.
    for module in ["proxy", "fastcgi", "uwsgi", "scgi"] {
        if !missing.contains(&module) {
            let _ = writeln!(conf, "    {module}_temp_path \"{dir}/{module}\";");
        }
    }
    let _ = write!(
        conf,
        "    types {{ }}\n\
         \x20   default_type application/octet-stream;\n\
         \x20   sendfile on;\n\
         \x20   tcp_nopush on;\n\
         \x20   keepalive_requests 100000;\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{port};\n\
         \x20       server_name localhost;\n\
         \x20       root \"{}\";\n",
        root.display()
    );
    if let Some(rate) = &config.limit_rate {
        let _ = writeln!(conf, "        limit_rate {rate};");
    }
    if let Some(extra) = &config.extra_server {
        let _ = writeln!(conf, "        {extra}");
    }
    conf.push_str("    }\n}\n");
    conf
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
