//! The agent's HTTP proxy door (`--proxy-listen`): any HTTP client that takes a proxy
//! (`http_proxy=http://127.0.0.1:7702 curl …`) gets large files through the swarm, fetched
//! once across the fleet, without being rewritten.
//!
//! One listener, three kinds of request:
//!
//! - **absolute-form `http://` requests** go to the forward proxy ([`forward`]): the
//!   request goes to the origin as sent; an answer the [`Rules`] pick is served from the
//!   swarm in file order ([`crate::ordered`]), everything else passes through unchanged;
//! - **origin-form requests under `/v2/`** are the OCI registry mirror's
//!   ([`crate::registry`]);
//! - **`CONNECT`** opens a plain tunnel ([`tunnel`]): TLS inside is not intercepted, so
//!   `https://` URLs never come from the swarm;
//!
//! and anything else is answered `400`.
//!
//! Safety, as on the agent's other servers: the proxy listens on loopback unless
//! `--proxy-allow` names who else may use it (a non-loopback listen address without it is
//! refused at start: an open proxy on a fleet's network is a gift to anyone on it); clients
//! outside those blocks get `403`; nothing is forwarded or tunnelled to the agent's own
//! listeners ([`Proxy::new`]'s `own`); connections are capped and timed out by
//! [`shoal_serve`] like every other server's.
//!
//! An origin or upstream registry that stops answering holds no client for longer than
//! [`ProxyOptions::upstream_timeout`] (`--proxy-timeout`): the head of an answer passed
//! through must come within it (else `504`), and its body may not pause for longer.

mod cidr;
mod forward;
mod rules;
#[cfg(test)]
mod timeout_tests;
mod tunnel;
mod upstream;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use thiserror::Error;
use tokio::net::TcpListener;
use tracing::debug;

pub use self::cidr::{Cidr, CidrError};
pub use self::rules::{Rules, UrlPattern, UrlPatternError, DEFAULT_MIN_SIZE};
use crate::ordered::Ordered;
use crate::registry::{Mirror, MirrorOptions, Upstreams};

/// How long an origin may keep the proxy waiting by default (`--proxy-timeout`): as nginx's
/// `proxy_read_timeout`.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// How many layers the registry mirror fetches ahead of a client by default
/// (`--registry-read-ahead`): one keeps the link busy between two layers of a client that
/// pulls one at a time, and costs a client that skips the next layer one layer's download.
pub const DEFAULT_READ_AHEAD: usize = 1;

/// Where the proxy listens, who may use it, and what it serves through the swarm.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// The proxy's address; `None`: no proxy.
    pub listen: Option<SocketAddr>,
    /// Who may use the proxy besides clients on loopback; required to listen on an address
    /// that is not loopback.
    pub allow: Vec<Cidr>,
    /// Which answers go through the swarm.
    pub rules: Rules,
    /// The registries the mirror under `/v2/` forwards to (`--registry-upstream`).
    pub registry: Upstreams,
    /// How many layers after the one a client asks for the mirror fetches before it asks
    /// (`--registry-read-ahead`).
    pub registry_read_ahead: usize,
    /// How long an origin (or upstream registry) may stay silent on an answer passed
    /// through: for its head, from the request's end (then `504`), and between two reads of
    /// its body (then the client's connection is cut short).
    pub upstream_timeout: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            listen: None,
            allow: Vec::new(),
            rules: Rules::default(),
            registry: Upstreams::default(),
            registry_read_ahead: DEFAULT_READ_AHEAD,
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
        }
    }
}

/// Why the proxy could not start.
#[derive(Debug, Error)]
pub enum ProxyError {
    /// A non-loopback listen address without `--proxy-allow`.
    #[error(
        "--proxy-listen {addr} is not a loopback address, and without --proxy-allow anyone \
         who reaches it could use this agent as an open proxy: name who may with \
         --proxy-allow CIDR (repeatable, e.g. --proxy-allow 10.0.0.0/8), or listen on \
         127.0.0.1"
    )]
    Open {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// A `--registry-upstream` that reaches one of the agent's own listeners: the mirror would
    /// forward every request to itself, without end.
    #[error(
        "--registry-upstream {upstream} is this agent's own listener {addr}: the mirror would \
         forward every request to itself; name the registry's own address"
    )]
    OwnUpstream {
        /// The upstream's host and port as given.
        upstream: String,
        /// The agent's listener it reaches.
        addr: SocketAddr,
    },
    /// Binding the listen address failed.
    #[error("listening for the proxy on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// Binds the proxy's listener, if one is asked for; refuses a non-loopback address unless
/// `--proxy-allow` says who may use it.
pub async fn bind(options: &ProxyOptions) -> Result<Option<TcpListener>, ProxyError> {
    let Some(addr) = options.listen else {
        return Ok(None);
    };
    if !addr.ip().is_loopback() && options.allow.is_empty() {
        return Err(ProxyError::Open { addr });
    }
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|source| ProxyError::Bind { addr, source })
}

/// The proxy's state: what serves contents from the swarm, the rules, who may connect and
/// the agent's own addresses; cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    ordered: Ordered,
    mirror: Mirror,
    rules: Rules,
    allow: Vec<Cidr>,
    own: Vec<SocketAddr>,
    /// A tunnel across which no byte moved for this long is closed.
    idle: Duration,
    /// How long an origin may stay silent on an answer passed through.
    upstream_timeout: Duration,
    /// The `Via` this agent's own downloads for the proxy carry: one that comes back through
    /// the proxy (the agent's environment names the proxy as its own) passes through instead
    /// of starting the same download again.
    via: HeaderValue,
}

impl Proxy {
    /// A proxy serving from `ordered` by `options`; `own` lists the addresses the agent's
    /// listeners are bound to (the piece server, the control API's TCP door, the proxy, the
    /// RPC door): nothing is forwarded to them; a tunnel idle for `idle` (the listener's idle
    /// timeout) is closed.
    pub fn new(
        ordered: Ordered,
        options: &ProxyOptions,
        own: Vec<SocketAddr>,
        idle: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                mirror: Mirror::new(
                    MirrorOptions {
                        upstreams: options.registry.clone(),
                        timeout: options.upstream_timeout,
                        read_ahead: options.registry_read_ahead,
                    },
                    ordered.clone(),
                ),
                ordered,
                rules: options.rules.clone(),
                allow: options.allow.clone(),
                own,
                idle,
                upstream_timeout: options.upstream_timeout,
                via: HeaderValue::from_str(&format!(
                    "1.1 shoal-agent-{:016x}",
                    rand::random::<u64>()
                ))
                .expect("a valid header value"),
            }),
        }
    }

    /// What serves contents from the swarm in file order (for the registry mirror).
    pub fn ordered(&self) -> &Ordered {
        &self.inner.ordered
    }

    /// Whether a client at `ip` may use the proxy.
    fn admits(&self, ip: IpAddr) -> bool {
        admitted(&self.inner.allow, ip)
    }
}

/// How long the check of a registry upstream's addresses at start waits for the resolver.
const RESOLVE_AT_START: Duration = Duration::from_secs(2);

/// Refuses `registry` upstreams that reach one of `own` (the addresses the agent's listeners
/// are bound to). One that does not resolve within [`RESOLVE_AT_START`] passes: its name may
/// resolve only later, and a resolver that is down must not hold the agent's start.
pub async fn refuse_own_upstreams(
    registry: &Upstreams,
    own: &[SocketAddr],
) -> Result<(), ProxyError> {
    for upstream in registry.iter() {
        let (host, port) = upstream.authority();
        let resolved = tokio::time::timeout(
            RESOLVE_AT_START,
            upstream::resolve_not_own(&host, port, own),
        );
        if let Ok(Err(upstream::UpstreamError::Own { addr, .. })) = resolved.await {
            return Err(ProxyError::OwnUpstream {
                upstream: upstream.host(),
                addr,
            });
        }
    }
    Ok(())
}

/// Whether a client at `ip` may use a proxy that `allow`s these blocks: loopback always.
fn admitted(allow: &[Cidr], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback() || allow.iter().any(|block| block.contains(ip))
}

/// The proxy's routes: every request goes to [`dispatch`].
pub fn app(proxy: Proxy) -> Router {
    Router::new().fallback(dispatch).with_state(proxy)
}

/// Sends a request to the part of the proxy its form names (see the module's doc).
async fn dispatch(
    State(proxy): State<Proxy>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    if !proxy.admits(peer.ip()) {
        debug!(%peer, "proxy request refused: the client is outside --proxy-allow");
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "{} may not use this proxy: add its network to the agent's --proxy-allow",
                peer.ip()
            ),
        );
    }
    if request.method() == Method::CONNECT {
        return tunnel::open(&proxy, request).await;
    }
    match request.uri().scheme_str() {
        Some("http") => forward::forward(&proxy, request).await,
        Some(scheme) => refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "this proxy forwards http:// URLs, not {scheme}://; an https:// URL goes \
                 through a CONNECT tunnel (curl and wget do that by themselves)"
            ),
        ),
        None if request.uri().path().starts_with("/v2/") => {
            proxy.inner.mirror.handle(request).await
        }
        None => refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "{} is not a proxy request: this is the agent's HTTP proxy; set \
                 http_proxy=http://THIS-ADDRESS and ask for the full http:// URL",
                request.uri().path()
            ),
        ),
    }
}

/// A plain-text answer with `status` and one line saying why and what to do.
pub(crate) fn refuse(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from(format!("shoal agent proxy: {message}\n")),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_on_loopback_and_in_the_allowed_blocks_are_admitted() {
        let allow: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(admitted(&[], ip("127.0.0.1")));
        assert!(admitted(&[], ip("::1")));
        assert!(!admitted(&[], ip("10.1.2.3")));
        assert!(admitted(&allow, ip("10.1.2.3")));
        assert!(admitted(&allow, ip("::ffff:10.1.2.3")));
        assert!(admitted(&allow, ip("fd00::7")));
        assert!(!admitted(&allow, ip("192.168.1.1")));
    }

    #[tokio::test]
    async fn a_non_loopback_listener_needs_an_allowed_block() {
        let open = ProxyOptions {
            listen: Some("0.0.0.0:0".parse().unwrap()),
            ..ProxyOptions::default()
        };
        let refused = bind(&open).await.unwrap_err();
        assert!(matches!(refused, ProxyError::Open { .. }), "{refused}");
        assert!(
            refused.to_string().contains("--proxy-allow CIDR"),
            "{refused}"
        );
        // Refused before anything is bound: the test listens on loopback only.
        let local = ProxyOptions {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..ProxyOptions::default()
        };
        assert!(bind(&local).await.unwrap().is_some());
        assert!(bind(&ProxyOptions::default()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_registry_upstream_on_the_agents_own_listener_is_refused() {
        let upstreams = |urls: &[&str]| {
            Upstreams::new(urls.iter().map(|u| u.parse().unwrap()).collect()).unwrap()
        };
        let own: Vec<SocketAddr> = vec![
            "127.0.0.1:17702".parse().unwrap(),
            "0.0.0.0:17701".parse().unwrap(),
        ];
        let refused = refuse_own_upstreams(&upstreams(&["http://127.0.0.1:17702"]), &own)
            .await
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "--registry-upstream 127.0.0.1:17702 is this agent's own listener 127.0.0.1:17702: \
             the mirror would forward every request to itself; name the registry's own address"
        );
        // A listener on every address is reached by any of this machine's, `localhost` too.
        let refused = refuse_own_upstreams(
            &upstreams(&["http://127.0.0.2:5000", "http://localhost:17701"]),
            &own,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&refused, ProxyError::OwnUpstream { upstream, .. } if upstream == "localhost:17701"),
            "{refused}"
        );
        // Another port of this machine passes (names other than localhost are left out: the
        // tests send nothing beyond loopback, a resolver's query included).
        refuse_own_upstreams(&upstreams(&["http://127.0.0.1:5000"]), &own)
            .await
            .unwrap();
    }
}
