//! Reaching an origin for the proxy: the host named by the client resolved, the agent's own
//! listeners refused, and a TCP connection to an address that was checked (not a second
//! resolution, which could answer otherwise).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpStream;

/// How long connecting to an origin may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why an origin could not be reached.
#[derive(Debug, Error)]
pub(super) enum UpstreamError {
    #[error("cannot resolve {host}: {message}")]
    Resolve { host: String, message: String },
    #[error(
        "{host}:{port} is this agent's own listener ({addr}); the proxy never forwards to \
         the agent itself"
    )]
    Own {
        host: String,
        port: u16,
        addr: SocketAddr,
    },
    #[error("connecting to {addr} ({host}) failed: {message}")]
    Connect {
        host: String,
        addr: SocketAddr,
        message: String,
    },
}

/// Connects to `host`:`port`, unless it is one of `own`.
pub(super) async fn connect(
    host: &str,
    port: u16,
    own: &[SocketAddr],
) -> Result<TcpStream, UpstreamError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| UpstreamError::Resolve {
            host: host.to_string(),
            message: e.to_string(),
        })?
        .collect();
    if let Some(&addr) = addrs.iter().find(|a| is_own(**a, own)) {
        return Err(UpstreamError::Own {
            host: host.to_string(),
            port,
            addr,
        });
    }
    let Some(&addr) = addrs.first() else {
        return Err(UpstreamError::Resolve {
            host: host.to_string(),
            message: "no address".to_string(),
        });
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(UpstreamError::Connect {
            host: host.to_string(),
            addr,
            message: e.to_string(),
        }),
        Err(_) => Err(UpstreamError::Connect {
            host: host.to_string(),
            addr,
            message: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
        }),
    }
}

/// Whether connecting to `target` would reach one of the listeners bound to `own`: the same
/// port on the same address, or on any address of this machine for a listener bound to all
/// of them.
fn is_own(target: SocketAddr, own: &[SocketAddr]) -> bool {
    let ip = target.ip().to_canonical();
    own.iter().filter(|o| o.port() == target.port()).any(|o| {
        let bound = o.ip().to_canonical();
        bound == ip || ip.is_unspecified() || (bound.is_unspecified() && is_local(ip))
    })
}

/// Whether `ip` is an address of this machine: only those can be bound.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || UdpSocket::bind((ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_agents_own_listeners_are_recognised() {
        let own = [addr("127.0.0.1:7702"), addr("0.0.0.0:7701")];
        assert!(is_own(addr("127.0.0.1:7702"), &own));
        assert!(is_own(addr("0.0.0.0:7702"), &own));
        assert!(is_own(addr("127.0.0.1:7701"), &own));
        assert!(is_own(addr("127.3.2.1:7701"), &own));
        assert!(is_own(addr("[::ffff:127.0.0.1]:7701"), &own));
        assert!(!is_own(addr("127.0.0.2:7702"), &own));
        assert!(!is_own(addr("127.0.0.1:8080"), &own));
        // TEST-NET-1 is no address of this machine.
        assert!(!is_own(addr("192.0.2.1:7701"), &own));
    }
}
