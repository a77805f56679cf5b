//! The CLI's side of the control API: where the agent is ([`AgentLocation`]: its Unix socket
//! or a TCP control listener) and [`request`], a small HTTP/1 client over either (reqwest for
//! a listener that serves HTTPS).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use shoal_core::wire::ErrorBody;
use shoal_engine::ca::{self, ExtraRoots};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use url::Url;

use super::{ControlEvent, FetchRequest, FETCH_PATH};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where `shoal get --agent` finds the agent: `unix:PATH` (or `unix://PATH`, as Docker writes
/// it), or `http://HOST:PORT` for a TCP control listener (`https://HOST:PORT` when the agent
/// serves TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentLocation {
    /// The agent's control socket.
    Unix(PathBuf),
    /// A TCP control listener (`--control-listen`), `http` or `https`.
    Http(Url),
}

/// An `--agent` value that names neither a socket nor an `http(s)` URL.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is neither unix:PATH (the agent's control.sock) nor http(s)://HOST:PORT")]
pub struct BadLocation(String);

impl FromStr for AgentLocation {
    type Err = BadLocation;

    fn from_str(text: &str) -> Result<Self, BadLocation> {
        if let Some(path) = text.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(BadLocation(text.to_string()));
            }
            return Ok(AgentLocation::Unix(PathBuf::from(path)));
        }
        match Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Ok(AgentLocation::Http(url))
            }
            _ => Err(BadLocation(text.to_string())),
        }
    }
}

impl fmt::Display for AgentLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentLocation::Unix(path) => write!(f, "unix:{}", path.display()),
            AgentLocation::Http(url) => f.write_str(&shoal_core::redact::redacted(url)),
        }
    }
}

/// Asks the agent at `agent` to fetch, with `token` (a TCP control listener's) if given, and
/// hands every line of the answer to `on_event` as it arrives; returns the last one
/// (`finished` or `failed`). An `https` listener's certificate may be signed by one of
/// `roots` (`--ca`) as well as by a CA the system trusts.
pub async fn request(
    agent: &AgentLocation,
    token: Option<&str>,
    roots: Option<&ExtraRoots>,
    body: &FetchRequest,
    on_event: impl FnMut(&ControlEvent),
) -> Result<ControlEvent, ControlError> {
    if let AgentLocation::Http(url) = agent {
        if url.scheme() == "https" {
            return request_tls(url, token, roots, body, on_event).await;
        }
    }
    let shown = agent.to_string();
    let unreachable = |detail: String| ControlError::Unreachable {
        agent: shown.clone(),
        detail,
    };
    let mut request = Request::post(FETCH_PATH)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/x-ndjson");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let json = serde_json::to_vec(body).expect("a fetch request serializes");
    let response = match agent {
        AgentLocation::Unix(path) => {
            let stream = connect(UnixStream::connect(path)).await;
            let stream = stream.map_err(unreachable)?;
            let request = request.header(header::HOST, "localhost");
            send(stream, request.body(Full::from(json))).await
        }
        AgentLocation::Http(url) => {
            let host = url.host_str().unwrap_or_default();
            let port = url.port_or_known_default().unwrap_or(80);
            let stream = connect(TcpStream::connect((host, port))).await;
            let stream = stream.map_err(unreachable)?;
            let request = request.header(header::HOST, format!("{host}:{port}"));
            send(stream, request.body(Full::from(json))).await
        }
    }
    .map_err(unreachable)?;
    if !response.status().is_success() {
        let status = response.status().as_u16();
        let message = match response.into_body().collect().await {
            Ok(body) => serde_json::from_slice::<ErrorBody>(&body.to_bytes())
                .map(|b| b.error)
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        return Err(ControlError::Refused {
            agent: shown,
            status,
            message,
        });
    }
    read_lines(response.into_body(), on_event)
        .await
        .map_err(unreachable)
}

/// [`request`] to a control listener that serves HTTPS.
async fn request_tls(
    url: &Url,
    token: Option<&str>,
    roots: Option<&ExtraRoots>,
    body: &FetchRequest,
    on_event: impl FnMut(&ControlEvent),
) -> Result<ControlEvent, ControlError> {
    let shown = shoal_core::redact::redacted(url);
    let unreachable = |detail: String| ControlError::Unreachable {
        agent: shown.clone(),
        detail,
    };
    let client = ca::client_builder(roots)
        .connect_timeout(CONNECT_TIMEOUT)
        .http1_only()
        .no_proxy()
        .build()
        .map_err(|e| unreachable(shoal_core::chain::chain(&e)))?;
    let target = url
        .join(FETCH_PATH)
        .map_err(|e| unreachable(e.to_string()))?;
    let mut request = client
        .post(target)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/x-ndjson")
        .body(serde_json::to_vec(body).expect("a fetch request serializes"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = (request.send().await).map_err(|e| unreachable(ca::describe(&e)))?;
    if !response.status().is_success() {
        let status = response.status().as_u16();
        let message = (response.json::<ErrorBody>().await)
            .map(|b| b.error)
            .unwrap_or_default();
        return Err(ControlError::Refused {
            agent: shown,
            status,
            message,
        });
    }
    read_lines(reqwest::Body::from(response), on_event)
        .await
        .map_err(unreachable)
}

async fn connect<S>(
    connecting: impl std::future::Future<Output = std::io::Result<S>>,
) -> Result<S, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no connection within {}s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

/// One request on a new HTTP/1 connection over `stream`.
async fn send<S>(
    stream: S,
    request: http::Result<Request<Full<Bytes>>>,
) -> Result<http::Response<Incoming>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request = request.map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// Reads the answer's lines as they come; the last must end the download.
async fn read_lines<B>(
    mut body: B,
    mut on_event: impl FnMut(&ControlEvent),
) -> Result<ControlEvent, String>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: fmt::Display,
{
    let mut pending: Vec<u8> = Vec::new();
    let mut last = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the answer broke off: {e}"))?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let event: ControlEvent = serde_json::from_slice(&line)
                .map_err(|e| format!("unreadable answer line: {e}"))?;
            on_event(&event);
            last = Some(event);
        }
    }
    match last {
        Some(event @ (ControlEvent::Finished { .. } | ControlEvent::Failed { .. })) => Ok(event),
        _ => Err("the answer ended before the download did (did the agent stop?)".to_string()),
    }
}

/// Why [`request`] got no download result.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The agent's socket or address could not be reached, or the connection broke before the
    /// result.
    #[error("the agent at {agent} is unreachable: {detail}; is `shoal agent` running there?")]
    Unreachable {
        /// Where the agent was looked for (`unix:PATH` or `http://HOST:PORT`).
        agent: String,
        /// What failed.
        detail: String,
    },
    /// The agent answered the request with an error status.
    #[error("the agent at {agent} refused the request ({status}): {message}")]
    Refused {
        /// Where the agent was asked.
        agent: String,
        /// The HTTP status, e.g. 400 or 401.
        status: u16,
        /// The agent's error message; empty when its body was not an error body.
        message: String,
    },
}

impl ControlError {
    /// The HTTP status the agent refused with, if it did.
    pub fn status(&self) -> Option<u16> {
        match self {
            ControlError::Refused { status, .. } => Some(*status),
            ControlError::Unreachable { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_sockets_or_http() {
        let parse = |s: &str| s.parse::<AgentLocation>();
        assert_eq!(
            parse("unix:/var/lib/shoal/control.sock").unwrap(),
            AgentLocation::Unix("/var/lib/shoal/control.sock".into())
        );
        assert_eq!(
            parse("unix:///run/a.sock").unwrap(),
            AgentLocation::Unix("/run/a.sock".into())
        );
        assert_eq!(parse("unix:rel.sock").unwrap().to_string(), "unix:rel.sock");
        assert!(matches!(
            parse("http://127.0.0.1:7702").unwrap(),
            AgentLocation::Http(_)
        ));
        assert!(matches!(
            parse("https://127.0.0.1:7702").unwrap(),
            AgentLocation::Http(_)
        ));
        assert!(parse("ftp://127.0.0.1:7702").is_err());
        assert!(parse("unix:").is_err());
        assert!(parse("/run/a.sock").is_err());
    }
}
