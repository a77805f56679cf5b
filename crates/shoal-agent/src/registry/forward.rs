//! Passing a registry request through to its upstream and the answer back as it is: the
//! `/v2/` ping, manifests, tags, blob `HEAD`s and the token challenges (`401` with
//! `WWW-Authenticate`). Redirects go back to the client, which follows them itself; only the
//! hop-by-hop headers of either side are left out.
//!
//! An upstream that cannot be reached is a `502`; one that takes the request and sends no
//! answer within the mirror's timeout (`--proxy-timeout`) is a `504`, as the proxy answers
//! an origin that does the same.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::stream;
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Response, StatusCode};
use serde_json::json;
use shoal_core::redact::SafeUrl;
use tracing::{debug, warn};

/// The largest request body passed through: the mirror is for pulls, whose requests have none.
pub(super) const MAX_REQUEST_BODY: usize = 1 << 20;

/// Headers that belong to one connection, not to the request or answer (RFC 9110 §7.6.1),
/// and `Host`, which names the mirror.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
];

/// The mirror's clients of the upstreams.
#[derive(Clone)]
pub(super) struct Clients {
    /// Redirects go back to the client: for passing through.
    pub(super) as_is: reqwest::Client,
    /// Redirects followed (credentials dropped when the host changes): for checking a
    /// client's access to a blob, which a registry may answer from a CDN.
    pub(super) followed: reqwest::Client,
    /// How long an upstream may stay silent: for the head of an answer, or between two
    /// reads of its body.
    pub(super) timeout: Duration,
}

impl Clients {
    /// Clients that connect within 10 s and give up on an upstream silent for `timeout`
    /// (for the head of an answer, or between two reads of its body).
    pub(super) fn new(timeout: Duration) -> Self {
        // Only one provider is compiled in; a second install attempt fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = || {
            reqwest::Client::builder()
                .http1_only()
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(timeout)
                .user_agent(concat!("shoal-agent/", env!("CARGO_PKG_VERSION")))
        };
        Self {
            as_is: builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a client without TLS settings builds"),
            followed: builder()
                .redirect(reqwest::redirect::Policy::limited(5))
                .build()
                .expect("a client without TLS settings builds"),
            timeout,
        }
    }
}

/// The client's headers as the upstream gets them: all but the hop-by-hop ones.
pub(super) fn upstream_headers(client: &HeaderMap) -> HeaderMap {
    let mut headers = client.clone();
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers
}

/// Sends `method url` with `headers` and `body` through `clients.as_is`, and answers what
/// came back as it is (the body streamed), or [`unanswered`].
pub(super) async fn forward(
    clients: &Clients,
    method: Method,
    url: &SafeUrl,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let head = method == Method::HEAD;
    match send(clients, method, url, headers, body).await {
        Ok(answer) => answered(answer, head),
        Err(response) => response,
    }
}

/// Sends `method url` with `headers` and `body` through `clients.as_is`: the upstream's
/// answer, or the client's answer when there is none ([`unanswered`]).
pub(super) async fn send(
    clients: &Clients,
    method: Method,
    url: &SafeUrl,
    headers: HeaderMap,
    body: Bytes,
) -> Result<reqwest::Response, Response<Body>> {
    clients
        .as_is
        .request(method, url.as_url().clone())
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| unanswered(url, &e, clients.timeout))
}

/// Like [`answered`], but a `200` whose `Content-Length` is at most `max` is read whole first
/// and its bytes come back beside the answer, for the mirror to read too. A body that breaks
/// off while read is the upstream not answering ([`unanswered`]).
pub(super) async fn answered_read(
    answer: reqwest::Response,
    max: u64,
    url: &SafeUrl,
    timeout: Duration,
) -> (Response<Body>, Option<Bytes>) {
    let small = answer.content_length().is_some_and(|n| n <= max);
    if answer.status() != StatusCode::OK || !small {
        return (answered(answer, false), None);
    }
    let mut response = Response::builder().status(answer.status());
    let headers = response.headers_mut().expect("a fresh builder");
    *headers = answer.headers().clone();
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    match answer.bytes().await {
        Ok(bytes) => {
            let response = response
                .body(Body::from(bytes.clone()))
                .expect("status and headers from a valid answer");
            (response, Some(bytes))
        }
        Err(e) => (unanswered(url, &e, timeout), None),
    }
}

/// The client's answer when the request to `url` failed with `e`: a `504` when the upstream
/// took it and sent no answer within `timeout`, else a `502` saying why; both name `url`.
pub(super) fn unanswered(url: &SafeUrl, e: &reqwest::Error, timeout: Duration) -> Response<Body> {
    // A connect timeout is the upstream not being reached, as a refused connection is.
    if e.is_timeout() && !e.is_connect() {
        warn!(%url, "the upstream registry sent no answer within {timeout:?}; answering 504");
        return error(
            StatusCode::GATEWAY_TIMEOUT,
            "UNAVAILABLE",
            &format!(
                "the upstream registry at {url} sent no answer within {timeout:?} (--proxy-timeout)"
            ),
        );
    }
    debug!(%url, "the upstream registry did not answer: {e}");
    error(
        StatusCode::BAD_GATEWAY,
        "UNAVAILABLE",
        &format!(
            "the upstream registry at {url} did not answer ({}); check --registry-upstream and that the agent reaches it",
            shoal_core::chain::chain(e)
        ),
    )
}

/// The upstream's `answer` as the client's answer: status and headers as they are, the body
/// streamed (none for a `HEAD`). A body that breaks off ends the client's with an error, so
/// the client never takes a short body as whole.
pub(super) fn answered(answer: reqwest::Response, head: bool) -> Response<Body> {
    let mut response = Response::builder().status(answer.status());
    let headers = response.headers_mut().expect("a fresh builder");
    *headers = answer.headers().clone();
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let body = if head {
        Body::empty()
    } else {
        Body::from_stream(stream::unfold(answer, |mut answer| async move {
            match answer.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), answer)),
                Ok(None) => None,
                Err(e) => Some((Err(e), answer)),
            }
        }))
    };
    response
        .body(body)
        .expect("status and headers from a valid answer")
}

/// The upstream's answer to a `HEAD` given to a `GET`: status and headers as they are, without
/// the length of a body the answer does not have.
pub(super) fn answered_without_body(answer: &reqwest::Response) -> Response<Body> {
    let mut response = Response::builder().status(answer.status());
    let headers = response.headers_mut().expect("a fresh builder");
    *headers = answer.headers().clone();
    for name in HOP_BY_HOP.iter().chain([&header::CONTENT_LENGTH]) {
        headers.remove(name);
    }
    response
        .body(Body::empty())
        .expect("status and headers from a valid answer")
}

/// An error in the registry API's form (`{"errors":[{"code","message"}]}`), which registry
/// clients show to their users.
pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = json!({"errors": [{"code": code, "message": message}]});
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_host_stay_behind() {
        let mut client = HeaderMap::new();
        client.insert(header::HOST, "127.0.0.1:7702".parse().unwrap());
        client.insert(header::CONNECTION, "keep-alive".parse().unwrap());
        client.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        client.insert(
            header::ACCEPT,
            "application/vnd.oci.image.manifest.v1+json"
                .parse()
                .unwrap(),
        );
        let sent = upstream_headers(&client);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[header::AUTHORIZATION], "Bearer abc");
        assert!(sent.contains_key(header::ACCEPT));
    }
}
