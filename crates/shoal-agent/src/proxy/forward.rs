//! The forward proxy: an absolute-form `http://` request goes to its origin as sent (one
//! request, hop-by-hop headers aside). When the [`Rules`](super::Rules) pick the origin's
//! answer, its body is dropped unread (the connection closed: the origin sends what fits in
//! the sockets' buffers, not the file) and the content is served from the swarm in file
//! order, with the origin's status, `Content-Length`, `Content-Type`, `ETag` and
//! `Last-Modified`, and a client's `Range` answered from the same content. Any other answer
//! passes through unchanged, streamed as it comes.
//!
//! An answer that passes through is bounded by the proxy's upstream timeout
//! ([`upstream::answer_within`], [`upstream::Watched`]): no head within it is a `504` naming
//! the URL; a body that pauses for longer is cut short, so the client sees an error.
//!
//! When the swarm cannot serve it after all (the origin does not answer ranges, say), nothing
//! has gone to the client yet: the request is sent to the origin again and its answer passes
//! through.
//!
//! Why one `GET` and not a `HEAD` first: an answer that passes through (most of them: small
//! files, other methods, errors) costs one round trip, as without the proxy; a `HEAD` first
//! would add one to every request, and many servers answer `HEAD` wrongly. The cost is the
//! part of the body in flight when the connection is closed, paid once per client request
//! that goes through the swarm.

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{
    self, HeaderMap, HeaderName, HeaderValue, ACCEPT_RANGES, AUTHORIZATION, CONTENT_LENGTH,
    CONTENT_RANGE, CONTENT_TYPE, ETAG, LAST_MODIFIED, RANGE, VIA,
};
use axum::http::{Method, StatusCode, Uri, Version};
use axum::response::Response;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use shoal_core::SafeUrl;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use url::Url;

use super::rules::Verdict;
use super::upstream::{self, UpstreamError};
use super::{refuse, Proxy};
use crate::ordered::{ContentRequest, OrderedError};

/// Headers about one connection, not the message: never passed on (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// Where a forwarded request goes.
struct Target {
    host: String,
    port: u16,
    /// The URL for messages and logs.
    shown: SafeUrl,
}

/// What is sent to the origin: the client's request head in origin form.
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

/// Forwards one absolute-form `http://` request.
pub(super) async fn forward(proxy: &Proxy, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let url = match Url::parse(&parts.uri.to_string()) {
        Ok(url) if url.host_str().is_some() => url,
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("{} is not a URL this proxy can reach", parts.uri),
            )
        }
    };
    let target = Target {
        host: url.host_str().unwrap_or_default().to_string(),
        port: url.port_or_known_default().unwrap_or(80),
        shown: SafeUrl::new(url.clone()),
    };
    let client = parts.headers.clone();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    if !headers.contains_key(header::HOST) {
        if let Some(authority) = parts.uri.authority() {
            if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
                headers.insert(header::HOST, value);
            }
        }
    }
    let head = Head {
        method: parts.method,
        uri: parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<Uri>()
            .unwrap_or_else(|_| Uri::from_static("/")),
        headers,
    };
    let (answer, connection) = match send(proxy, &target, &head, body).await {
        Ok(sent) => sent,
        Err(refusal) => return refusal,
    };
    let looped = client.get_all(VIA).iter().any(|via| via == proxy.inner.via);
    let verdict = if looped {
        Verdict::Pass("the agent's own download, sent through its proxy")
    } else {
        proxy.inner.rules.judge(
            &head.method,
            url.as_str(),
            &client,
            answer.status(),
            answer.headers(),
        )
    };
    let shown = &target.shown;
    let size = match verdict {
        Verdict::Pass(why) => {
            debug!(url = %shown, status = answer.status().as_u16(), "passing through: {why}");
            return pass(proxy, &target, answer, connection);
        }
        Verdict::Swarm { size } => size,
    };
    let kept = keep(answer.headers());
    // Not a byte more from the origin on this connection: the swarm fetches it.
    drop(answer);
    connection.abort();
    info!(url = %shown, size, "serving through the swarm");
    match from_swarm(proxy, url, &client, kept).await {
        Ok(response) => response,
        // Nothing went to the client yet: it gets the origin's answer instead.
        Err(e) => {
            warn!(url = %shown, "{e}; passing the request through instead");
            match send(proxy, &target, &head, Body::empty()).await {
                Ok((answer, connection)) => pass(proxy, &target, answer, connection),
                Err(refusal) => refusal,
            }
        }
    }
}

/// Sends `head` and `body` to the origin; the answer and the connection's task, or the
/// answer for the client when the origin cannot be reached or its head does not come within
/// the upstream timeout (`504`).
async fn send(
    proxy: &Proxy,
    target: &Target,
    head: &Head,
    body: Body,
) -> Result<
    (
        http::Response<Incoming>,
        JoinHandle<Result<(), hyper::Error>>,
    ),
    Response,
> {
    let shown = &target.shown;
    let stream = match upstream::connect(&target.host, target.port, &proxy.inner.own).await {
        Ok(stream) => stream,
        Err(e @ UpstreamError::Own { .. }) => {
            info!(url = %shown, "proxy request refused: {e}");
            return Err(refuse(StatusCode::FORBIDDEN, e.to_string()));
        }
        Err(e) => return Err(refuse(e.status(), format!("{shown}: {e}"))),
    };
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| refuse(StatusCode::BAD_GATEWAY, format!("{shown}: {e}")))?;
    let connection = tokio::spawn(connection);
    let (body, sent) = upstream::Sending::new(body);
    let mut request = http::Request::new(body);
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = head.uri.clone();
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = head.headers.clone();
    let timeout = proxy.inner.upstream_timeout;
    match upstream::answer_within(sender.send_request(request), sent, timeout).await {
        Some(Ok(answer)) => Ok((answer, connection)),
        Some(Err(e)) => Err(refuse(
            StatusCode::BAD_GATEWAY,
            format!("{shown}: the origin did not answer: {e}"),
        )),
        None => {
            connection.abort();
            let within = upstream::seconds(timeout);
            warn!(url = %shown, "the origin did not answer within {within}; answering 504");
            Err(refuse(
                StatusCode::GATEWAY_TIMEOUT,
                format!("{shown} did not answer within {within}"),
            ))
        }
    }
}

/// The origin's answer as the client gets it when it passes through: streamed as it comes,
/// cut short if the origin pauses for longer than the upstream timeout.
fn pass(
    proxy: &Proxy,
    target: &Target,
    answer: http::Response<Incoming>,
    connection: JoinHandle<Result<(), hyper::Error>>,
) -> Response {
    let (mut parts, incoming) = answer.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = upstream::Watched::new(
        incoming,
        target.shown.clone(),
        proxy.inner.upstream_timeout,
        connection,
    );
    Response::from_parts(parts, Body::new(body))
}

/// Serves `url` from the swarm, with the origin's `kept` headers; `Err` when the swarm cannot
/// serve it (before any byte of the answer).
async fn from_swarm(
    proxy: &Proxy,
    url: Url,
    client: &HeaderMap,
    kept: HeaderMap,
) -> Result<Response, OrderedError> {
    let shown = SafeUrl::new(url.clone());
    let mut upstream = HeaderMap::new();
    upstream.insert(VIA, proxy.inner.via.clone());
    if proxy.inner.rules.share_authorized {
        if let Some(auth) = client.get(AUTHORIZATION) {
            upstream.insert(AUTHORIZATION, auth.clone());
        }
    }
    let request = ContentRequest::new(url)
        .with_headers(upstream)
        .with_range(client.get(RANGE).cloned());
    let (meta, body) = match proxy.ordered().open(request).await {
        Ok(opened) => opened,
        Err(OrderedError::Unsatisfiable { size }) => {
            let mut response = refuse(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("{shown} has {size} bytes; the range asked for is outside them"),
            );
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(CONTENT_RANGE, value);
            }
            return Ok(response);
        }
        Err(e) => return Err(e),
    };
    let mut response = Response::new(body);
    *response.headers_mut() = kept;
    let headers = response.headers_mut();
    headers.insert(CONTENT_LENGTH, HeaderValue::from(meta.body_len()));
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(range) = meta
        .content_range()
        .and_then(|r| HeaderValue::from_str(&r).ok())
    {
        headers.insert(CONTENT_RANGE, range);
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(response)
}

/// The headers of the origin's answer a client served from the swarm gets.
fn keep(origin: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in [CONTENT_TYPE, ETAG, LAST_MODIFIED] {
        if let Some(value) = origin.get(&name) {
            kept.insert(name, value.clone());
        }
    }
    kept
}

/// Removes the headers about one connection, and those its `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}
