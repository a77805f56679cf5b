//! The forward proxy: an absolute-form `http://` request goes to its origin as sent (one
//! request, hop-by-hop headers aside). When the [`Rules`](super::Rules) pick the origin's
//! answer, its body is dropped unread (the connection closed: the origin sends what fits in
//! the sockets' buffers, not the file) and the content is served from the swarm in file
//! order, with the origin's status, `Content-Length`, `Content-Type`, `ETag` and
//! `Last-Modified`, and a client's `Range` answered from the same content. Any other answer
//! passes through unchanged, streamed as it comes.
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
use axum::http::{StatusCode, Uri, Version};
use axum::response::Response;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use shoal_core::SafeUrl;
use tracing::{debug, info};
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

/// Forwards one absolute-form `http://` request.
pub(super) async fn forward(proxy: &Proxy, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let url = match Url::parse(&parts.uri.to_string()) {
        Ok(url) if url.host_str().is_some() => url,
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("{} is not a URL this proxy can reach", parts.uri),
            )
        }
    };
    let shown = SafeUrl::new(url.clone());
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let stream = match upstream::connect(&host, port, &proxy.inner.own).await {
        Ok(stream) => stream,
        Err(e @ UpstreamError::Own { .. }) => {
            info!(url = %shown, "proxy request refused: {e}");
            return refuse(StatusCode::FORBIDDEN, e.to_string());
        }
        Err(e) => return refuse(StatusCode::BAD_GATEWAY, format!("{shown}: {e}")),
    };
    let client_headers = parts.headers.clone();
    strip_hop_by_hop(&mut parts.headers);
    if !parts.headers.contains_key(header::HOST) {
        if let Some(authority) = parts.uri.authority() {
            if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(header::HOST, value);
            }
        }
    }
    let method = parts.method.clone();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse::<Uri>()
        .unwrap_or_else(|_| Uri::from_static("/"));
    parts.uri = path;
    parts.version = Version::HTTP_11;
    let upstream_request = Request::from_parts(parts, body);
    let (mut sender, connection) = match http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(e) => return refuse(StatusCode::BAD_GATEWAY, format!("{shown}: {e}")),
    };
    let connection = tokio::spawn(connection);
    let answer = match sender.send_request(upstream_request).await {
        Ok(answer) => answer,
        Err(e) => {
            return refuse(
                StatusCode::BAD_GATEWAY,
                format!("{shown}: the origin did not answer: {e}"),
            )
        }
    };
    let looped = client_headers
        .get_all(VIA)
        .iter()
        .any(|via| via == proxy.inner.via);
    let verdict = if looped {
        Verdict::Pass("the agent's own download, sent through its proxy")
    } else {
        proxy.inner.rules.judge(
            &method,
            url.as_str(),
            &client_headers,
            answer.status(),
            answer.headers(),
        )
    };
    match verdict {
        Verdict::Pass(why) => {
            debug!(url = %shown, status = answer.status().as_u16(), "passing through: {why}");
            let (mut parts, incoming) = answer.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(incoming))
        }
        Verdict::Swarm { size } => {
            let kept = keep(answer.headers());
            // Not a byte more from the origin on this connection: the swarm fetches it.
            drop(answer);
            connection.abort();
            info!(url = %shown, size, "serving through the swarm");
            from_swarm(proxy, url, &client_headers, kept).await
        }
    }
}

/// Serves `url` from the swarm, with the origin's `kept` headers.
async fn from_swarm(proxy: &Proxy, url: Url, client: &HeaderMap, kept: HeaderMap) -> Response {
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
            return response;
        }
        Err(e) => {
            return refuse(
                StatusCode::BAD_GATEWAY,
                format!("{e}; try again, or fetch it without the proxy"),
            )
        }
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
    response
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
