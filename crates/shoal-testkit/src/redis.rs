//! A real `redis-server` for tests: no persistence (`--save ''`, `--appendonly no`), its working
//! directory a temporary one, listening on a free loopback port. It can be stopped and started
//! again on the same port, to test clients that must survive Redis going away.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `redis-server` package puts the binary.
const DEFAULT_BINARY: &str = "/usr/bin/redis-server";
/// How long a start waits for Redis to accept connections.
const START_LIMIT: Duration = Duration::from_secs(5);
/// Fresh ports to try when another process grabbed the one picked.
const PORT_ATTEMPTS: u32 = 5;

/// A running `redis-server`; dropping it kills the process and removes its directory.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    binary: PathBuf,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts `redis-server` from `/usr/bin` and waits until it accepts connections.
    ///
    /// # Errors
    /// When the binary is missing, or Redis exits or does not listen within 5 s; the error
    /// carries Redis's log.
    pub fn start() -> io::Result<Redis> {
        let binary = PathBuf::from(DEFAULT_BINARY);
        if !binary.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "redis-server not found at {} (apt-get install redis-server)",
                    binary.display()
                ),
            ));
        }
        let mut redis = Redis {
            child: None,
            port: free_port()?,
            binary,
            dir: tempfile::Builder::new().prefix("shoal-redis-").tempdir()?,
        };
        let mut attempts = 1;
        // Bounded by PORT_ATTEMPTS.
        loop {
            match redis.launch() {
                Ok(()) => return Ok(redis),
                Err(error)
                    if error.kind() == io::ErrorKind::AddrInUse && attempts < PORT_ATTEMPTS =>
                {
                    attempts += 1;
                    redis.port = free_port()?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// `redis://127.0.0.1:PORT/DB`.
    pub fn url(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    /// The loopback port Redis listens on (the same across [`Redis::stop`] and
    /// [`Redis::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server; its data is gone (nothing is persisted).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    ///
    /// # Errors
    /// When Redis exits or does not listen within 5 s (e.g. another process took the port).
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.launch()
    }

    fn launch(&mut self) -> io::Result<()> {
        let log = self.dir.path().join("redis.log");
        let _ = fs::remove_file(&log);
        let mut child = Command::new(&self.binary)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("spawn {}: {e}", self.binary.display()))
            })?;
        let deadline = Instant::now() + START_LIMIT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        // Bounded by START_LIMIT.
        loop {
            if let Some(status) = child.try_wait()? {
                let logs = fs::read_to_string(&log).unwrap_or_default();
                let kind = if logs.contains("Address already in use") {
                    io::ErrorKind::AddrInUse
                } else {
                    io::ErrorKind::Other
                };
                return Err(io::Error::new(
                    kind,
                    format!("redis-server exited ({status}):\n{logs}"),
                ));
            }
            // Redis logs "Ready to accept connections" only after binding, so a successful
            // connect then is to this Redis and not to whoever else might hold the port.
            let ready = fs::read_to_string(&log)
                .is_ok_and(|logs| logs.contains("Ready to accept connections"));
            if ready && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let logs = fs::read_to_string(&log).unwrap_or_default();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("redis-server did not listen within {START_LIMIT:?}:\n{logs}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn ping(port: u16) -> io::Result<String> {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"PING\r\n")?;
        let mut reply = [0; 7];
        stream.read_exact(&mut reply)?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    #[test]
    fn starts_stops_and_restarts_on_the_same_port() {
        let mut redis = Redis::start().unwrap();
        let port = redis.port();
        assert_eq!(ping(port).unwrap(), "+PONG\r\n");
        assert_eq!(redis.url(3), format!("redis://127.0.0.1:{port}/3"));
        redis.stop();
        assert!(ping(port).is_err());
        redis.restart().unwrap();
        assert_eq!(redis.port(), port);
        assert_eq!(ping(port).unwrap(), "+PONG\r\n");
    }
}
